"""Native commands: the whole engramdb API over RESP, through one generic call path.

``ENGRAM <method> <payload>`` calls ``method`` (e.g. ``records.put``) with the arguments in
``payload``, msgpack ``[args, kwargs]``, and replies with the msgpack-encoded result as a bulk
string, or an error coded by ``protocol/errors.py``.

The surface is derived, not listed: every public method declared ``@remote`` (see
``engramdb/remote.py``) on the role classes below is served under ``<namespace>.<method>``,
run as its declaration says — ``read`` on the event loop, ``write`` as a plan submitted to
group commit, ``slow`` on a worker thread. Before anything runs, the arguments are bound to
the method's signature: unknown, missing or duplicated arguments, parameters that are
``local_only`` (server-side paths, functions) and sizes over the declared caps are refused
with ``InvalidArgument``. The embedded method then validates values exactly as it does for an
embedded caller, so every face applies the same rules. Only a few wire forms need
translating (operations, definitions, Arrow tables); they are the adapters below.

``ENGRAM.DEBUG`` (reset, fake clock) exists only when the server runs with ``--testing``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from engramdb.cache.core import CacheCore
from engramdb.database import Database
from engramdb.errors import InvalidArgument
from engramdb.features.online import OnlineResponse
from engramdb.features.store import FeatureStore, HistoricalResult, IngestResult, SkewReport
from engramdb.memory.store import MemoryStore
from engramdb.records.codec import decode_value, encode_value
from engramdb.recordset import RecordSet
from engramdb.remote import Kind, RemoteSpec, remote_methods
from engramdb.server.commands import Offload, Reply, Write, command
from engramdb.sessions.store import SessionStore
from engramdb.vectors.collection import Collection
from engramdb.vectors.store import VectorStore
from engramdb.wire import FORMS

if TYPE_CHECKING:
    from engramdb.server.connection import Connection

__all__ = ["NATIVE", "NativeMethod"]


@dataclass(frozen=True, slots=True)
class NativeMethod:
    kind: Kind
    writes: bool
    call: Callable[[Database, list[Any], dict[str, Any]], Any]


def _named(what: str) -> Callable[[list[Any]], tuple[str, list[Any]]]:
    def split(args: list[Any]) -> tuple[str, list[Any]]:
        if not args or type(args[0]) is not str:
            raise InvalidArgument(f"{what} calls take the {what} name first")
        return args[0], args[1:]

    return split


_set_first = _named("set")
_collection_first = _named("collection")


def _records_target(db: Database, args: list[Any]) -> tuple[Any, list[Any]]:
    name, rest = _set_first(args)
    return db.records(name), rest  # refuses the sets roles reserve


def _collection_target(db: Database, args: list[Any]) -> tuple[Any, list[Any]]:
    name, rest = _collection_first(args)
    return db.vectors.get_collection(name), rest


# namespace -> (the class whose declarations it serves, how a call finds its object)
NAMESPACES: dict[str, tuple[type, Callable[[Database, list[Any]], tuple[Any, list[Any]]]]] = {
    "records": (RecordSet, _records_target),
    "db": (Database, lambda db, args: (db, args)),
    "vectors": (VectorStore, lambda db, args: (db.vectors, args)),
    "collection": (Collection, _collection_target),
    "sessions": (SessionStore, lambda db, args: (db.sessions, args)),
    "memory": (MemoryStore, lambda db, args: (db.memory, args)),
    "cache": (CacheCore, lambda db, args: (db.cache.core, args)),
    "features": (FeatureStore, lambda db, args: (db.features, args)),
}


# wire forms ------------------------------------------------------------------------------


def _arrow_out(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _without_paths(value: Any) -> Any:
    """Stats for a remote caller: the server's filesystem layout is none of its business."""
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if k != "path"}
    return value


# method -> result -> wire form (results not listed go as msgpack, by their type below)
RESULTS: dict[str, Callable[[Any], Any]] = {
    "db.stats": _without_paths,
    "features.list_feature_views": lambda views: [msgspec.to_builtins(v) for v in views],
}


def _wire_result(value: Any) -> Any:
    kind = type(value)
    if kind is Collection:
        return value.info
    if kind is IngestResult:  # without offline_file: a server path
        return {"view": value.view, "rows": value.rows, "online_written": value.online_written}
    if kind is OnlineResponse:
        return {"columns": value.columns, "statuses": value.statuses}
    if kind is SkewReport:
        return {"view": value.view, "checked": value.checked, "mismatches": value.mismatches}
    if kind is HistoricalResult:
        return _arrow_out(value.to_arrow())
    return value


# the derived table -----------------------------------------------------------------------


def _binder(
    name: str,
    fn: Callable[..., Any],
    spec: RemoteSpec,
    target: Callable[[Database, list[Any]], tuple[Any, list[Any]]],
) -> Callable[[Database, list[Any], dict[str, Any]], Any]:
    signature = inspect.signature(fn)
    caps = spec.caps
    local_only = spec.local_only
    adapters = {parameter: FORMS[form].decode for parameter, form in spec.wire}
    method_name = spec.plan or fn.__name__
    result = RESULTS.get(name)

    def call(db: Database, args: list[Any], kwargs: dict[str, Any]) -> Any:
        obj, rest = target(db, args)
        try:
            bound = signature.bind(obj, *rest, **kwargs)
        except TypeError as e:  # binding only: a TypeError inside the method is a bug
            raise InvalidArgument(f"bad arguments for {name}: {e}") from None
        arguments = bound.arguments
        for parameter in local_only:
            if parameter in arguments:
                raise InvalidArgument(
                    f"{name}: {parameter}= names a server-side resource and cannot be sent "
                    "over the network"
                )
        for parameter, cap in caps:
            value = arguments.get(parameter)
            if type(value) is int and value > cap:
                raise InvalidArgument(
                    f"{name}: {parameter}={value} is over the server's maximum of {cap}; "
                    "page through the results instead"
                )
        for parameter, adapt in adapters.items():
            if parameter in arguments:
                arguments[parameter] = adapt(arguments[parameter])
        value = getattr(obj, method_name)(*bound.args[1:], **bound.kwargs)
        if spec.kind == "write":
            return value  # a write plan: its result comes back through group commit
        return result(value) if result is not None else value

    return call


def _build() -> dict[str, NativeMethod]:
    table: dict[str, NativeMethod] = {}
    for namespace, (cls, target) in NAMESPACES.items():
        for method, (fn, spec) in remote_methods(cls).items():
            name = f"{namespace}.{method}"
            table[name] = NativeMethod(spec.kind, spec.writes, _binder(name, fn, spec, target))
    return table


NATIVE: dict[str, NativeMethod] = _build()


def _decode_payload(payload: bytes) -> tuple[list[Any], dict[str, Any]]:
    try:
        decoded = decode_value(payload)
    except InvalidArgument as e:
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
    return encode_value(_wire_result(value))


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
    if method.kind == "read":
        return _encode_result(method.call(db, call_args, kwargs))
    if method.kind == "write":
        return Write(method.call(db, call_args, kwargs), _encode_result)
    return Offload(lambda: method.call(db, call_args, kwargs), _encode_result)


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
