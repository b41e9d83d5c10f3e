"""The client's sans-I/O core, shared by the sync and async clients.

It turns a call into request bytes (``ENGRAM <method> <msgpack [args, kwargs]>``), and a
reply into a value of the method's declared result type, or into the same exception the
embedded API would raise. The transports (``client.sync``, ``engramdb.aio``) only move
bytes; which calls are safe to retry and how each result is rebuilt come from the generated
method table (``client/_generated.py``), itself derived from the ``@remote`` declarations.

Results are rebuilt from msgpack (maps, lists, scalars, numpy arrays) by the method's return
annotation: ``decoder_for(list[Record | None])`` makes a function that turns the reply into
records. msgspec cannot do this itself (record keys are ``str | bytes | int``, a union msgspec
refuses), so this walks the type once, on first use, and builds plain functions. Types the
walk cannot build from fields come in the wire form ``engramdb.remote.RESULTS`` names, or are
client handles (a collection) that build themselves with ``_from_reply``.
"""

from __future__ import annotations

import builtins
import collections.abc
import dataclasses
import threading
import types
import typing
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import hiredis
import msgspec

from engramdb.client import _generated
from engramdb.errors import EngramError, InvalidArgument, StorageError, Timeout, Unavailable
from engramdb.observability.calls import tracer_for
from engramdb.observability.metrics import Metrics
from engramdb.protocol.errors import error_from_reply
from engramdb.protocol.resp import encode_command
from engramdb.records.codec import _enc_hook, _ext_hook, check_value
from engramdb.records.limits import Limits
from engramdb.records.ops import Op
from engramdb.remote import RESULTS

__all__ = ["WRITES", "Address", "Pool", "decoder_for", "encode_call", "parse_url"]

DEFAULT_PORT = 7379
WRITES = _generated.WRITES  # calls that change data: never retried once sent

# The client checks only that values are storable (sets, datetimes and objects would be
# silently converted by msgpack); sizes are the server's limits to enforce.
_TYPE_ONLY = Limits(
    max_key_bytes=1 << 62, max_record_bytes=1 << 62, max_bin_name=1 << 62,
    max_set_name=1 << 62, max_vector_dim=1 << 62,
)  # fmt: skip
_MAX_DEPTH = 32
_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(ext_hook=_ext_hook)
_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})


def _check(value: Any, depth: int = 0) -> None:
    if depth > _MAX_DEPTH:
        raise InvalidArgument(f"arguments may nest at most {_MAX_DEPTH} levels deep")
    if isinstance(value, Op):
        if hasattr(value, "value"):
            check_value(value.value, _TYPE_ONLY, type(value).__name__)
        return
    kind = type(value)
    if kind is list or kind is tuple or kind is dict:
        for item in value.values() if kind is dict else value:
            if type(item) not in _SCALARS:
                _check(item, depth + 1)
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


def encode_call(
    method: str, args: Sequence[Any], kwargs: Mapping[str, Any], trace: Sequence[bytes] = ()
) -> bytes:
    """The request frame for one call, with the caller's W3C ``trace`` context if it has one
    (``observability.tracing``). Raises ``InvalidArgument`` for unstorable values."""
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
    return encode_command(b"ENGRAM", method.encode(), payload, *trace)


_MADE: dict[tuple[str, int], Decoder] = {}


def _decoder_of(method: str, face: int) -> Decoder:
    """How ``method``'s reply becomes its declared result type on ``face`` (0 sync, 1
    asyncio: they differ in their handle types), built on first use."""
    found = _MADE.get((method, face))
    if found is None:
        kind, name = _generated.METHODS[method]
        fn = getattr(_generated.KINDS[kind][face], name)
        returns = typing.get_type_hints(fn, vars(_generated))["return"]
        found = _MADE[(method, face)] = decoder_for(returns)
    return found


class Pool:
    """What the sync and asyncio network clients share: the address, idle connections (a
    lock, uncontended on asyncio, keeps the sync client thread-safe) and what failures mean:

    - Cannot connect: ``Unavailable`` (nothing was sent, so the call did not happen).
    - The connection breaks or times out after a request was sent: reads (idempotent) are
      retried (``retries``) on a fresh connection; writes and raw commands raise
      ``Unavailable``/``Timeout`` saying their outcome is unknown (it may have been applied).
    - ``-BUSY``: ``Overloaded`` (the server shed the request before running it; back off).
    - A request over the server's frame limit: ``RequestTooLarge`` (nothing was written).
    """

    _label = "engramdb.Client"
    _face: int

    def __init__(
        self, url: str, *, timeout: float = 5.0, pool_size: int = 16, retries: int = 1
    ) -> None:
        self.address = parse_url(url)
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self._owner = self
        self._pool_size = pool_size
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._sets: dict[str, Any] = {}
        self._closed = False
        self._meter = Metrics()
        self._tracer = tracer_for(self.address[:2])
        self._server_limits: Limits | None = None

    def __repr__(self) -> str:
        return f"<{self._label} {self.address.host}:{self.address.port}>"

    def _frame(
        self, method: str, args: Sequence[Any], kwargs: Mapping[str, Any], trace: Any
    ) -> bytes:
        if self._closed:
            raise StorageError("the client is closed")
        return encode_call(method, args, kwargs, trace)

    def _attempts(self, method: str) -> list[bool]:
        """Whether each attempt is the last: idempotent calls retry on a fresh connection."""
        count = 1 + (self.retries if _idempotent(method) else 0)
        return [i + 1 == count for i in range(count)]

    def _idle_conn(self) -> Any:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _release(self, conn: Any, reply: Any = None) -> Any:
        """Pool ``conn`` again, unless the server closes it after ``reply`` (a protocol
        error, such as a request over its ``--max-frame``); returns ``reply``."""
        fatal = isinstance(reply, hiredis.ReplyError) and str(reply).startswith(
            "ERR Protocol error"
        )
        with self._lock:
            if not fatal and not self._closed and len(self._idle) < self._pool_size:
                self._idle.append(conn)
                return reply
        conn.close()
        return reply

    def _failed(self, conn: Any, method: str, error: OSError, last: bool) -> None:
        """A connection failed after sending: retry (reads, while attempts remain), else
        raise what it means, saying when a write's outcome is unknown."""
        conn.close()
        if not last:
            return
        unknown = "" if _idempotent(method) else "; the write may or may not have been applied"
        if isinstance(error, TimeoutError):
            raise Timeout(f"{method} timed out after {self.timeout}s{unknown}") from error
        raise Unavailable(f"{method}: connection lost ({error}){unknown}") from error

    def _decoded(self, method: str, reply: Any) -> Any:
        """A reply as the method's result, or the error it carries as an ``EngramError``."""
        if isinstance(reply, hiredis.ReplyError):
            raise error_from_reply(str(reply))
        if type(reply) is not bytes:
            raise EngramError(f"unexpected reply to {method}: {reply!r}")
        return _decoder_of(method, self._face)(_decoder.decode(reply), self)

    def _with_client_figures(self, figures: dict[str, Any]) -> dict[str, Any]:
        figures["server_operations"] = figures.get("operations", {})
        figures["operations"] = self._meter.snapshot()
        return figures

    def _close_idle(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _idempotent(method: str) -> bool:
    return method in _generated.METHODS and method not in WRITES  # raw commands may write


class Address(NamedTuple):
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


# results rebuilt by their annotated types --------------------------------------------------------

Decoder = Callable[[Any, Any], Any]  # (reply, owner) -> value

_PLAIN = frozenset({int, float, str, bytes, bool, type(None), object})


def _same(raw: Any, owner: Any) -> Any:
    return raw


def decoder_for(tp: Any) -> Decoder:
    """A function rebuilding a value of type ``tp`` from its msgpack form."""
    if isinstance(tp, type) and hasattr(tp, "_from_reply"):
        return tp._from_reply  # type: ignore[no-any-return]
    if isinstance(tp, type) and tp.__name__ in RESULTS:
        decode = RESULTS[tp.__name__].decode
        return lambda raw, owner: decode(raw)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp in _PLAIN or isinstance(tp, typing.TypeVar) or origin is typing.Literal:
        return _same
    if origin is typing.Union or origin is types.UnionType:
        decoders = [decoder_for(a) for a in args if a is not type(None)]
        if all(d is _same for d in decoders):
            return _same  # e.g. str | bytes | int: msgpack already gives the right one
        if len(decoders) == 1:
            inner = decoders[0]
            return lambda raw, owner: None if raw is None else inner(raw, owner)
        raise TypeError(f"cannot decode the union {tp}: its members need telling apart")
    if origin in (list, builtins.list, collections.abc.Sequence, collections.abc.Iterable):
        item = decoder_for(args[0]) if args else _same
        if item is _same:
            return lambda raw, owner: list(raw)
        return lambda raw, owner: [item(x, owner) for x in raw]
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = decoder_for(args[0])
            return lambda raw, owner: tuple(item(x, owner) for x in raw)
        parts = [decoder_for(a) for a in args]
        return lambda raw, owner: tuple(d(x, owner) for d, x in zip(parts, raw))
    if origin in (dict, collections.abc.Mapping):
        value = decoder_for(args[1]) if args else _same
        if value is _same:
            return lambda raw, owner: dict(raw)
        return lambda raw, owner: {k: value(v, owner) for k, v in raw.items()}
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _fields(tp, tp.__struct_fields__)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _fields(tp, tuple(f.name for f in dataclasses.fields(tp)))
    if isinstance(tp, type) and tp is not object and tp.__module__ == "builtins":
        return _same
    raise TypeError(f"no decoder for {tp!r}: give it a wire form in engramdb.remote.RESULTS")


def _fields(cls: type, names: tuple[str, ...]) -> Decoder:
    hints = typing.get_type_hints(cls)
    decoders = {name: decoder_for(hints[name]) for name in names}
    if all(d is _same for d in decoders.values()):
        return lambda raw, owner: cls(**raw)

    def build(raw: Any, owner: Any) -> Any:
        return cls(**{k: decoders[k](v, owner) if k in decoders else v for k, v in raw.items()})

    return build
