"""Native commands: the whole engramdb API over RESP, through one generic call path.

``ENGRAM <method> <payload>`` calls ``method`` (e.g. ``records.put``) with the arguments in
``payload``, msgpack ``[args, kwargs]``, and replies with the msgpack-encoded result as a bulk
string, or an error coded by ``protocol/errors.py``.

The surface is derived, not listed: every public method declared ``@remote`` (see
``engramdb/remote.py``) on the classes of ``dispatch.NAMESPACES`` is served under
``<namespace>.<method>``, run as its declaration says: ``read`` on the event loop, ``write``
as a plan submitted to group commit, ``slow`` on a worker thread. Before anything runs,
``dispatch`` binds the arguments to the method's signature: unknown, missing or duplicated
arguments, parameters that are ``local_only`` (server-side paths, functions) and sizes over
the declared caps are refused with ``InvalidArgument``. The embedded method then validates
values exactly as it does for an embedded caller, so every face applies the same rules.
Results travel as msgpack, the few types that need it in their wire form (``wire_result``).

``ENGRAM.DEBUG`` (reset, fake clock) exists only when the server runs with ``--testing``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from engramdb.dispatch import entry
from engramdb.errors import InvalidArgument
from engramdb.records.codec import decode_value, encode_value
from engramdb.server.commands import Offload, Reply, Write, command
from engramdb.wire import RESULTS as WIRE_RESULTS

if TYPE_CHECKING:
    from engramdb.server.connection import Connection

__all__ = ["RESULTS", "wire_result"]


def _without_paths(value: Any) -> Any:
    """Stats for a remote caller: the server's filesystem layout is none of its business."""
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if k != "path"}
    return value


# method -> its result's wire form, where the type alone does not say (see wire_result)
RESULTS: dict[str, Callable[[Any], Any]] = {
    "db.stats": _without_paths,
    "features.list_feature_views": lambda views: [msgspec.to_builtins(v) for v in views],
    "features.list_entities": lambda entities: [msgspec.to_builtins(v) for v in entities],
}


def wire_result(value: Any) -> Any:
    """A result as msgpack carries it: in its wire form (``engramdb.wire.RESULTS``) if it
    has one (handles as their definition, tables as Arrow IPC...), else as it is."""
    form = WIRE_RESULTS.get(type(value).__name__)
    return value if form is None else form.encode(value)


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
    return encode_value(wire_result(value))


def _is_write(args: list[bytes]) -> bool:
    method = entry(args[1].decode(errors="replace"), remote=True)
    return method is not None and method.kind == "write"


def _metric(args: list[bytes]) -> str:
    name = args[1].decode(errors="replace")
    return name if entry(name, remote=True) is not None else "engram"


@command("engram", 3, "write", keys=(0, 0, 0), writes=_is_write, metric=_metric)
def engram(conn: Connection, args: list[bytes]) -> Any:
    name = args[0].decode(errors="replace")
    method = entry(name, remote=True)
    if method is None:
        raise InvalidArgument(f"unknown method {name!r}")
    call_args, kwargs = _decode_payload(args[1])
    db = conn.db
    result = RESULTS.get(name)
    if name == "db.stats":  # with what a client must know of this server
        server = {"max_frame": conn.server.config.max_frame}
        result = lambda value: {**_without_paths(value), "server": server}  # noqa: E731
    encode = _encode_result if result is None else lambda value: _encode_result(result(value))
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
