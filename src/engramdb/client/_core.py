"""The client's sans-I/O core, shared by the sync and async clients.

It turns a method call into request bytes (``ENGRAM <method> <msgpack [args, kwargs]>``),
and a reply into a value or the same exception the embedded API would raise. The sync and
async clients only move bytes; the remote record-set and database classes are written once
(``RecordSetCalls``/``DatabaseCalls``) over a ``_call`` that each transport provides.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
import msgspec

from engramdb.client._features import RESULTS as FEATURE_RESULTS
from engramdb.client._roles import RESULTS as ROLE_RESULTS
from engramdb.client._vectors import RESULTS
from engramdb.errors import EngramError, InvalidArgument
from engramdb.protocol.errors import error_from_reply
from engramdb.protocol.resp import encode_command
from engramdb.records.codec import _enc_hook, _ext_hook, check_value
from engramdb.records.keys import Key
from engramdb.records.limits import Limits
from engramdb.records.model import Change, Record, ScanPage
from engramdb.records.ops import Op

__all__ = ["METHODS", "Address", "Method", "encode_call", "is_fatal", "parse_url", "result_of"]

DEFAULT_PORT = 7379

# The client checks only that values are storable (sets, datetimes and objects would be
# silently converted by msgpack); sizes are the server's limits to enforce.
_TYPE_ONLY = Limits(
    max_key_bytes=1 << 62, max_record_bytes=1 << 62, max_bin_name=1 << 62,
    max_set_name=1 << 62, max_vector_dim=1 << 62,
)  # fmt: skip
_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)


@dataclass(frozen=True, slots=True)
class Method:
    """How a remote method's result is rebuilt, and whether a retry is safe."""

    name: str
    result: Callable[[Any], Any]
    idempotent: bool


# msgspec cannot decode the ``str | bytes | int`` key union into a typed struct, so results
# are decoded as plain msgpack and rebuilt into the public types here.
def _record(raw: Any) -> Record | None:
    return None if raw is None else Record(**raw)


def _records(raw: Any) -> list[Record | None]:
    return [_record(r) for r in raw]


def _page(raw: Any) -> ScanPage:
    return ScanPage([Record(**r) for r in raw["records"]], raw["cursor"])


def _changes(raw: Any) -> list[Change]:
    return [Change(**c) for c in raw]


def _same(raw: Any) -> Any:
    return raw


_TABLE: list[tuple[str, Callable[[Any], Any], bool]] = [
    ("records.get", _record, True),
    ("records.get_many", _records, True),
    ("records.exists", _same, True),
    ("records.count", _same, True),
    ("records.scan", _page, True),
    ("records.put", _same, False),
    ("records.update", _same, False),
    ("records.delete", _same, False),
    ("records.touch", _same, False),
    ("records.operate", _same, False),
    ("db.changes", _changes, True),
    ("db.last_sequence", _same, True),
    ("db.first_sequence", _same, True),
    ("db.sets", _same, True),
    ("db.stats", _same, True),
    ("db.sweep", _same, False),
]
METHODS: dict[str, Method] = {name: Method(name, result, idem) for name, result, idem in _TABLE}
METHODS.update({name: Method(name, result, idem) for name, (result, idem) in RESULTS.items()})
for _table in (ROLE_RESULTS, FEATURE_RESULTS):
    METHODS.update({name: Method(name, result, idem) for name, (result, idem) in _table.items()})
_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(ext_hook=_ext_hook)


def _check(value: Any) -> None:
    if isinstance(value, Op):
        for field in ("value",):
            if hasattr(value, field):
                check_value(getattr(value, field), _TYPE_ONLY, type(value).__name__)
        return
    if type(value) is list or type(value) is tuple:
        for item in value:
            _check(item)
        return
    if type(value) is dict:
        for item in value.values():
            _check(item)
        return
    check_value(value, _TYPE_ONLY, "argument")


def _wire(value: Any, top: bool = True) -> Any:
    """An argument as msgpack carries it, without changing what it means: read-only mappings
    become dicts and other sequences lists (a str stays a str, for the server to judge).
    Applied to an argument and to the items of a list argument (a list of metadata maps)."""
    kind = type(value)
    if kind is dict or kind is list or kind is tuple or kind in _SCALARS:
        if top and (kind is list or kind is tuple):
            return [v if type(v) in _SCALARS else _wire(v, False) for v in value]
        return value
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray):
        return list(value)
    return value


_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})


def encode_call(method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
    """The request frame for one call. Raises ``InvalidArgument`` for unstorable values."""
    args = [_wire(value) for value in args]
    kwargs = {name: _wire(value) for name, value in kwargs.items()}
    for value in args:
        _check(value)
    for value in kwargs.values():
        _check(value)
    try:
        payload = _encoder.encode((args, kwargs))
    except (TypeError, OverflowError, ValueError) as e:
        raise InvalidArgument(f"cannot send this argument: {e}") from None
    return encode_command(b"ENGRAM", method.encode(), payload)


def result_of(method: str, reply: Any) -> Any:
    """Decode a reply, raising the error it carries as the matching ``EngramError``."""
    if isinstance(reply, hiredis.ReplyError):
        raise error_from_reply(str(reply))
    if type(reply) is not bytes:
        raise EngramError(f"unexpected reply to {method}: {reply!r}")
    return METHODS[method].result(_decoder.decode(reply))


def is_fatal(reply: Any) -> bool:
    """Whether the server closes the connection after this reply (a protocol error, such as
    a request over its ``--max-frame``): the connection must not go back to the pool."""
    return isinstance(reply, hiredis.ReplyError) and str(reply).startswith("ERR Protocol error")


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int
    password: str | None


def parse_url(url: str) -> Address:
    """``engramdb://[:password@]host[:port]`` (port 7379 by default)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("engramdb", "tcp"):
        raise InvalidArgument(f"expected an engramdb://host:port URL, not {url!r}")
    if not parts.hostname:
        raise InvalidArgument(f"no host in {url!r}")
    password = urllib.parse.unquote(parts.password) if parts.password else None
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as e:
        raise InvalidArgument(f"bad port in {url!r}: {e}") from None
    return Address(parts.hostname, port, password)


class RecordSetCalls:
    """The record API of one remote set, written once for both transports.

    Each method returns ``self._call(...)``: a value for the sync client, an awaitable for
    the async client. Signatures match ``engramdb.RecordSet`` exactly (a test checks it).
    """

    def __init__(self, owner: Any, name: str) -> None:
        self._owner = owner
        self.name = name

    def __repr__(self) -> str:
        return f"<remote RecordSet {self.name!r}>"

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._owner._call(f"records.{method}", (self.name, *args), kwargs)

    def get(self, key: Key) -> Record | None:
        return self._call("get", key)  # type: ignore[no-any-return]

    def get_many(self, keys: Sequence[Key]) -> list[Record | None]:
        if isinstance(keys, str | bytes):
            raise InvalidArgument("get_many takes a sequence of keys")
        return self._call("get_many", list(keys))  # type: ignore[no-any-return]

    def exists(self, key: Key) -> bool:
        return self._call("exists", key)  # type: ignore[no-any-return]

    def count(self) -> int:
        return self._call("count")  # type: ignore[no-any-return]

    def scan(
        self,
        prefix: str | bytes | None = None,
        *,
        cursor: str | None = None,
        limit: int = 100,
    ) -> ScanPage:
        return self._call("scan", prefix, cursor=cursor, limit=limit)  # type: ignore[no-any-return]

    def put(
        self,
        key: Key,
        bins: Mapping[str, Any],
        *,
        ttl: float | None = None,
        expect_generation: int | None = None,
        create_only: bool = False,
        update_only: bool = False,
    ) -> int:
        return self._call(  # type: ignore[no-any-return]
            "put", key, bins, **_conditions(ttl, expect_generation, create_only, update_only)
        )

    def update(
        self,
        key: Key,
        bins: Mapping[str, Any],
        *,
        ttl: float | None = None,
        expect_generation: int | None = None,
        create_only: bool = False,
        update_only: bool = False,
    ) -> int:
        return self._call(  # type: ignore[no-any-return]
            "update", key, bins, **_conditions(ttl, expect_generation, create_only, update_only)
        )

    def delete(self, key: Key, *, expect_generation: int | None = None) -> bool:
        if expect_generation is None:
            return self._call("delete", key)  # type: ignore[no-any-return]
        return self._call("delete", key, expect_generation=expect_generation)  # type: ignore[no-any-return]

    def touch(self, key: Key, ttl: float, *, expect_generation: int | None = None) -> int:
        if expect_generation is None:
            return self._call("touch", key, ttl)  # type: ignore[no-any-return]
        return self._call("touch", key, ttl, expect_generation=expect_generation)  # type: ignore[no-any-return]

    def operate(
        self,
        key: Key,
        ops: Sequence[Op],
        *,
        ttl: float | None = None,
        expect_generation: int | None = None,
        create_only: bool = False,
        update_only: bool = False,
    ) -> list[Any]:
        return self._call(  # type: ignore[no-any-return]
            "operate", key, ops, **_conditions(ttl, expect_generation, create_only, update_only)
        )


def _conditions(
    ttl: float | None, expect_generation: int | None, create_only: bool, update_only: bool
) -> dict[str, Any]:
    # Only what differs from the defaults goes on the wire.
    out: dict[str, Any] = {}
    if ttl is not None:
        out["ttl"] = ttl
    if expect_generation is not None:
        out["expect_generation"] = expect_generation
    if create_only:
        out["create_only"] = create_only
    if update_only:
        out["update_only"] = update_only
    return out


class DatabaseCalls:
    """Database-level calls, written once for both transports (see ``RecordSetCalls``)."""

    def _call(self, method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def sets(self) -> list[str]:
        return self._call("db.sets", (), {})  # type: ignore[no-any-return]

    def changes(self, since: int = 0, *, limit: int = 1000) -> list[Change]:
        return self._call("db.changes", (since,), {"limit": limit})  # type: ignore[no-any-return]

    def last_sequence(self) -> int:
        return self._call("db.last_sequence", (), {})  # type: ignore[no-any-return]

    def first_sequence(self) -> int:
        return self._call("db.first_sequence", (), {})  # type: ignore[no-any-return]

    def sweep(self, *, limit: int = 10_000) -> int:
        return self._call("db.sweep", (), {"limit": limit})  # type: ignore[no-any-return]
