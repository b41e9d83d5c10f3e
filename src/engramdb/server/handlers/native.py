"""Native commands: the whole engramdb API over RESP, through one generic call path.

``ENGRAM <method> <payload>`` calls ``method`` (e.g. ``records.put``) with the arguments in
``payload``, msgpack ``[args, kwargs]``, and replies with the msgpack-encoded result as a bulk
string, or an error coded by ``protocol/errors.py``. The table below is the whole surface:
an allowlist saying, per method, how it runs — ``read`` on the event loop (point reads),
``write`` as a plan submitted to group commit, ``slow`` on a worker thread. Roles of later
issues add rows here, so each is implemented once, server-side, and every client gets it.

``ENGRAM.DEBUG`` (reset, fake clock) exists only when the server runs with ``--testing``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from engramdb.database import Database
from engramdb.errors import InvalidArgument
from engramdb.records.codec import decode_value, encode_value
from engramdb.records.ops import Op
from engramdb.server.commands import Offload, Reply, Write, command
from engramdb.vectors.collection import Collection

if TYPE_CHECKING:
    from engramdb.server.connection import Connection

__all__ = ["NATIVE", "NativeMethod", "native_method"]

Kind = Literal["read", "write", "slow"]


@dataclass(frozen=True, slots=True)
class NativeMethod:
    kind: Kind
    call: Callable[[Database, list[Any], dict[str, Any]], Any]


NATIVE: dict[str, NativeMethod] = {}


def native_method(name: str, kind: Kind) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        NATIVE[name] = NativeMethod(kind, fn)
        return fn

    return register


def _set_and_rest(args: list[Any]) -> tuple[str, list[Any]]:
    if not args or type(args[0]) is not str:
        raise InvalidArgument("records calls take the set name first")
    return args[0], args[1:]


def _records_call(method: str, kind: Kind, plan: str | None = None) -> None:
    target = plan or method

    def call(db: Database, args: list[Any], kwargs: dict[str, Any]) -> Any:
        set_name, rest = _set_and_rest(args)
        return getattr(db.records(set_name), target)(*rest, **kwargs)

    NATIVE[f"records.{method}"] = NativeMethod(kind, call)


for _name in ("get", "get_many", "exists", "count"):
    _records_call(_name, "read")
_records_call("scan", "slow")
for _name in ("put", "update", "delete", "touch"):
    _records_call(_name, "write", f"_plan_{_name}")


@native_method("records.operate", "write")
def _operate(db: Database, args: list[Any], kwargs: dict[str, Any]) -> Any:
    set_name, rest = _set_and_rest(args)
    if len(rest) >= 2:
        rest[1] = _ops(rest[1])
    elif "ops" in kwargs:
        kwargs["ops"] = _ops(kwargs["ops"])
    return db.records(set_name)._plan_operate(*rest, **kwargs)


def _ops(raw: Any) -> list[Op]:
    try:
        return msgspec.convert(raw, list[Op])
    except msgspec.ValidationError as e:
        raise InvalidArgument(f"invalid operations: {e}") from None


@native_method("db.changes", "read")
def _changes(db: Database, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return db.changes(*args, **kwargs)


@native_method("db.last_sequence", "read")
def _last_sequence(db: Database, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return db.last_sequence()


@native_method("db.first_sequence", "read")
def _first_sequence(db: Database, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return db.first_sequence()


@native_method("db.sets", "read")
def _sets(db: Database, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return db.sets()


@native_method("db.stats", "read")
def _stats(db: Database, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return db.stats()


@native_method("db.sweep", "slow")
def _sweep(db: Database, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return db.sweep(*args, **kwargs)


# the embedding store ---------------------------------------------------------------------
# Collection calls take the collection name first. Searches and writes (which also index) run
# on worker threads; point reads stay on the loop.


def _vectors_call(method: str, kind: Kind) -> None:
    def call(db: Database, args: list[Any], kwargs: dict[str, Any]) -> Any:
        return getattr(db.vectors, method)(*args, **kwargs)

    NATIVE[f"vectors.{method}"] = NativeMethod(kind, call)


def _collection_call(method: str, kind: Kind) -> None:
    def call(db: Database, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if not args or type(args[0]) is not str:
            raise InvalidArgument("collection calls take the collection name first")
        collection = db.vectors.get_collection(args[0])
        return getattr(collection, method)(*args[1:], **kwargs)

    NATIVE[f"collection.{method}"] = NativeMethod(kind, call)


_vectors_call("create_collection", "slow")
_vectors_call("drop_collection", "slow")
_vectors_call("list_collections", "read")
NATIVE["vectors.get_collection"] = NativeMethod(
    "read", lambda db, args, kwargs: db.vectors.get_collection(*args, **kwargs).info
)
for _name in ("upsert", "delete", "touch", "search", "search_many", "text_search", "hybrid_search"):
    _collection_call(_name, "slow")
for _name in ("get", "count"):
    _collection_call(_name, "read")


# sessions and the cache ------------------------------------------------------------------
# Anything that may write (a session read can extend its TTL) runs on a worker thread.


def _role_call(role: str, method: str, kind: Kind) -> None:
    def call(db: Database, args: list[Any], kwargs: dict[str, Any]) -> Any:
        return getattr(getattr(db, role), method)(*args, **kwargs)

    NATIVE[f"{role}.{method}"] = NativeMethod(kind, call)


for _name in ("create", "get", "delete", "list", "replace", "append", "checkpoint"):
    _role_call("sessions", _name, "slow")
for _name in ("checkpoints", "get_checkpoint"):
    _role_call("sessions", _name, "read")


def _cache_core_call(method: str, kind: Kind) -> None:
    def call(db: Database, args: list[Any], kwargs: dict[str, Any]) -> Any:
        return getattr(db.cache._core, method)(*args, **kwargs)

    NATIVE[f"cache.{method}"] = NativeMethod(kind, call)


_cache_core_call("peek", "read")
for _name in ("acquire", "fill", "release", "delete", "set"):
    _cache_core_call(_name, "slow")


# the feature store -----------------------------------------------------------------------
# Tables travel as Arrow IPC streams (bytes); definitions as msgpack maps tagged by kind.


def _arrow_in(data: Any) -> Any:
    import pyarrow as pa

    if type(data) is not bytes:
        raise InvalidArgument("expected an Arrow IPC stream")
    try:
        return pa.ipc.open_stream(data).read_all()
    except pa.ArrowInvalid as e:
        raise InvalidArgument(f"not an Arrow IPC stream: {e}") from None


def _arrow_out(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _definitions(raw: Any) -> list[Any]:
    from engramdb.features.definitions import Entity, FeatureService, FeatureView

    kinds = {"entity": Entity, "view": FeatureView, "service": FeatureService}
    if not isinstance(raw, list):
        raise InvalidArgument("apply takes a list of definitions")
    out: list[Any] = []
    for item in raw:
        if not isinstance(item, dict) or item.get("kind") not in kinds:
            raise InvalidArgument("each definition is a map with kind entity, view or service")
        fields = {k: v for k, v in item.items() if k != "kind"}
        try:
            out.append(msgspec.convert(fields, kinds[item["kind"]]))
        except msgspec.ValidationError as e:
            raise InvalidArgument(f"bad definition: {e}") from None
    return out


NATIVE["features.apply"] = NativeMethod(
    "slow", lambda db, args, kwargs: db.features.apply(_definitions(args[0]))
)
NATIVE["features.ingest"] = NativeMethod(
    "slow",
    lambda db, args, kwargs: msgspec.structs.asdict(_ingest_result(db, args)),
)
NATIVE["features.materialize"] = NativeMethod(
    "slow", lambda db, args, kwargs: db.features.materialize(*args, **kwargs)
)


def _ingest_result(db: Database, args: list[Any]) -> Any:
    result = db.features.ingest(args[0], _arrow_in(args[1]))
    return _IngestReply(result.view, result.rows, result.online_written)


class _IngestReply(msgspec.Struct):
    view: str
    rows: int
    online_written: int


def _online(db: Database, args: list[Any], kwargs: dict[str, Any]) -> Any:
    response = db.features.get_online_features(*args, **kwargs)
    return {"columns": response.columns, "statuses": response.statuses}


def _historical(db: Database, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if len(args) != 2:
        raise InvalidArgument("get_historical_features takes entity rows and features")
    result = db.features.get_historical_features(_arrow_in(args[0]), args[1], **kwargs)
    return _arrow_out(result.to_arrow())


def _validate(db: Database, args: list[Any], kwargs: dict[str, Any]) -> Any:
    report = db.features.validate_online(*args, **kwargs)
    return {"view": report.view, "checked": report.checked, "mismatches": report.mismatches}


NATIVE["features.get_online_features"] = NativeMethod("read", _online)
NATIVE["features.get_historical_features"] = NativeMethod("slow", _historical)
NATIVE["features.validate_online"] = NativeMethod("slow", _validate)
NATIVE["features.list_feature_views"] = NativeMethod(
    "read",
    lambda db, args, kwargs: [msgspec.to_builtins(v) for v in db.features.list_feature_views()],
)


# long-term memory (embedded with the server's embedder unless the client sends vectors) ---

for _name in ("add", "update", "invalidate", "delete", "delete_all", "search"):
    _role_call("memory", _name, "slow")
for _name in ("get", "history", "list"):
    _role_call("memory", _name, "read")


def _decode_payload(payload: bytes) -> tuple[list[Any], dict[str, Any]]:
    try:
        decoded = decode_value(payload)
    except (msgspec.DecodeError, InvalidArgument) as e:
        raise InvalidArgument(f"the call payload is not valid msgpack: {e}") from None
    if (
        not isinstance(decoded, list)
        or len(decoded) != 2
        or not isinstance(decoded[0], list)
        or not isinstance(decoded[1], dict)
        or not all(type(k) is str for k in decoded[1])
    ):
        raise InvalidArgument("the call payload must be msgpack [args, {kwargs}]")
    return decoded[0], decoded[1]


def _encode_result(value: Any) -> bytes:
    if isinstance(value, Collection):
        value = value.info
    return encode_value(value)


def _is_write(args: list[bytes]) -> bool:
    method = NATIVE.get(args[1].decode(errors="replace"))
    return method is not None and method.kind == "write"


def _metric(args: list[bytes]) -> str:
    name = args[1].decode(errors="replace")
    return name if name in NATIVE else "engram"


@command("engram", 3, "write", keys=(0, 0, 0), writes=_is_write, metric=_metric)
def engram(conn: Connection, args: list[bytes]) -> Any:
    name = args[0].decode(errors="replace")
    method = NATIVE.get(name)
    if method is None:
        raise InvalidArgument(f"unknown method {name!r}")
    call_args, kwargs = _decode_payload(args[1])
    db = conn.db
    try:
        if method.kind == "read":
            return _encode_result(method.call(db, call_args, kwargs))
        if method.kind == "write":
            return Write(method.call(db, call_args, kwargs), _encode_result)
        return Offload(lambda: method.call(db, call_args, kwargs), _encode_result)
    except TypeError as e:
        raise InvalidArgument(f"bad arguments for {name}: {e}") from None


@command("engram.debug", -2, "admin", keys=(0, 0, 0))
def engram_debug(conn: Connection, args: list[bytes]) -> Any:
    server = conn.server
    if not server.config.testing:
        raise Reply("ERR ENGRAM.DEBUG is only available with --testing")
    what = args[0].upper()
    if what == b"RESET":
        options = decode_value(args[1]) if len(args) > 1 else {}
        if not isinstance(options, dict):
            raise Reply("ERR RESET takes a msgpack map of open() options")
        server.reset(options)
        return b"OK"
    if what == b"CLOCK" and len(args) == 3 and server.clock is not None:
        action, amount = args[1].upper(), float(args[2])
        if action == b"ADVANCE":
            server.clock.advance(amount)
        elif action == b"SET":
            server.clock.set(amount)
        else:
            raise Reply("ERR CLOCK takes ADVANCE or SET")
        return repr(server.clock()).encode()
    raise Reply("ERR unknown ENGRAM.DEBUG subcommand")
