"""The client's sans-I/O core, shared by the sync and async clients.

It turns a call into request bytes (``ENGRAM <method> <msgpack [args, kwargs]>``), and a
reply into a value of the method's declared result type, or into the same exception the
embedded API would raise. The transports (``client.sync``, ``engramdb.aio``) only move
bytes; which calls are safe to retry and how each result is rebuilt come from the generated
method table (``client/_generated.py``), itself derived from the ``@remote`` declarations.
"""

from __future__ import annotations

import typing
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
import msgspec

from engramdb.client import _generated
from engramdb.client._decode import Decoder, decoder_for
from engramdb.errors import EngramError, InvalidArgument, Timeout, Unavailable
from engramdb.protocol.errors import error_from_reply
from engramdb.protocol.resp import encode_command
from engramdb.records.codec import _enc_hook, _ext_hook, check_value
from engramdb.records.limits import Limits
from engramdb.records.ops import Op

__all__ = [
    "WRITES",
    "Address",
    "Decoders",
    "encode_call",
    "failed_attempt",
    "is_fatal",
    "parse_url",
    "result_of",
]

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
    if kind is list or kind is tuple:
        for item in value:
            if type(item) not in _SCALARS:
                _check(item, depth + 1)
        return
    if kind is dict:
        for item in value.values():
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


class Decoders:
    """How each method's reply becomes its declared result type, for one face (sync or
    asyncio: they differ in their handle types), built on first use of each method."""

    def __init__(self, prefix: str, localns: Mapping[str, Any]) -> None:
        self._prefix = prefix
        self._localns = dict(localns)
        self._made: dict[str, Decoder] = {}

    def __call__(self, method: str) -> Decoder:
        found = self._made.get(method)
        if found is None:
            face, name = _generated.METHODS[method]
            fn = getattr(getattr(_generated, f"{self._prefix}{face}Calls"), name)
            hints = typing.get_type_hints(fn, vars(_generated), self._localns)
            found = self._made[method] = decoder_for(hints["return"])
        return found


def result_of(method: str, reply: Any, decode: Callable[[Any, Any], Any], owner: Any) -> Any:
    """Decode a reply, raising the error it carries as the matching ``EngramError``."""
    if isinstance(reply, hiredis.ReplyError):
        raise error_from_reply(str(reply))
    if type(reply) is not bytes:
        raise EngramError(f"unexpected reply to {method}: {reply!r}")
    return decode(_decoder.decode(reply), owner)


def failed_attempt(
    method: str, error: OSError, *, idempotent: bool, last: bool, timeout: float
) -> EngramError | None:
    """What a connection failure after sending means: None to retry on a fresh connection
    (reads, while attempts remain), else the error to raise (one text for both clients)."""
    if not last:
        return None
    unknown = "" if idempotent else "; the write may or may not have been applied"
    if isinstance(error, TimeoutError):
        return Timeout(f"{method} timed out after {timeout}s{unknown}")
    return Unavailable(f"{method}: connection lost ({error}){unknown}")


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
