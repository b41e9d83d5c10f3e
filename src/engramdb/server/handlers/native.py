"""Native commands: the whole engramdb API over RESP, through one generic call path.

``ENGRAM <method> <payload>`` calls ``method`` (e.g. ``records.put``) with the arguments in
``payload``, msgpack ``[args, kwargs]``, and replies with the msgpack-encoded result as a bulk
string, or an error coded by ``protocol/errors.py``. A traced caller adds its W3C trace
context (``traceparent [tracestate]``, ``observability.tracing``).

The surface is derived, not listed: every method ``engramdb.dispatch`` finds (declared
``@remote``) is served under its name, run as declared: ``read`` on the event loop, ``write``
as a plan submitted to group commit, ``slow`` on a worker thread. ``dispatch`` refuses bad
arguments before anything runs; the embedded method then validates values exactly as for an
embedded caller. Results travel as msgpack, the few types that need it in their wire form.

``ENGRAM.DEBUG`` (reset, fake clock) exists only when the server runs with ``--testing``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engramdb.dispatch import Entry, entry
from engramdb.errors import InvalidArgument
from engramdb.observability.calls import server_call
from engramdb.records.codec import decode_value, encode_value
from engramdb.remote import RESULTS as WIRE_RESULTS
from engramdb.server.commands import Offload, Reply, Write, command

if TYPE_CHECKING:
    from engramdb.server.connection import Connection

__all__ = ["engram", "engram_debug"]


def _without_paths(value: Any) -> Any:
    """Stats for a remote caller: the server's filesystem layout is none of its business."""
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if k != "path"}
    return value


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
    """A result as msgpack carries it: in its wire form (``engramdb.remote.RESULTS``) if it
    has one (handles as their definition, tables as Arrow IPC...), else as it is."""
    form = WIRE_RESULTS.get(type(value).__name__)
    return encode_value(value if form is None else form.encode(value))


def _is_write(args: list[bytes]) -> bool:
    method = entry(args[1].decode(errors="replace"), remote=True)
    return method is not None and method.kind == "write"


def _metric(args: list[bytes]) -> str:
    name = args[1].decode(errors="replace")
    return name if entry(name, remote=True) is not None else "engram"


@command("engram", -3, "write", keys=(0, 0, 0), writes=_is_write, metric=_metric)
def engram(conn: Connection, args: list[bytes]) -> Any:
    name = args[0].decode(errors="replace")
    method = entry(name, remote=True)
    if method is None:
        raise InvalidArgument(f"unknown method {name!r}")
    call_args, kwargs = _decode_payload(args[1])
    if len(args) > 2:  # the caller's W3C trace context: traceparent [tracestate]
        run = lambda: _call(conn, name, method, call_args, kwargs)  # noqa: E731
        return server_call(name, call_args, args[2:], run)
    return _call(conn, name, method, call_args, kwargs)


def _call(conn: Connection, name: str, method: Entry, call_args: list[Any], kwargs: Any) -> Any:
    db = conn.db
    encode = _encode_result
    if name == "db.stats":  # without server paths, with what a client must know of this server
        server = {"max_frame": conn.server.config.max_frame}
        encode = lambda value: _encode_result({**_without_paths(value), "server": server})  # noqa: E731
    if method.kind == "read":
        return encode(method.call(db, call_args, kwargs))
    if method.kind == "write":
        return Write(method.call(db, call_args, kwargs), encode)
    return Offload(lambda: method.call(db, call_args, kwargs), encode)


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
