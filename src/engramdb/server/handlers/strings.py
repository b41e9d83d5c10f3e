"""Redis string commands over ``$string`` records."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engramdb.records.writes import KEEP, Current, Outcome
from engramdb.server.commands import Reply, Write, command
from engramdb.server.handlers.admin import OK
from engramdb.server.handlers.values import (
    STRING_BIN,
    key_of,
    kind_of,
    parse_int,
    wrongtype,
)

if TYPE_CHECKING:
    from engramdb.server.connection import Connection


def string_of(bins: dict[str, Any] | None, in_plan: bool = False) -> bytes | None:
    """The string value of a record (None when absent); WRONGTYPE for other kinds."""
    if bins is None:
        return None
    if kind_of(bins) != "string":
        raise wrongtype(in_plan)
    value = bins[STRING_BIN]
    return value if type(value) is bytes else bytes(value)


@command("get", 2, "readonly", "fast")
def get(conn: Connection, args: list[bytes]) -> Any:
    record = conn.records.get(key_of(args[0]))
    return None if record is None else string_of(record.bins)


_SET_FLAGS = {b"NX", b"XX", b"GET", b"KEEPTTL"}
_SET_TIMES = {b"EX": 1000, b"PX": 1, b"EXAT": -1000, b"PXAT": -1}


@command("set", -3, "write")
def set_(conn: Connection, args: list[bytes]) -> Any:
    key, value = key_of(args[0]), args[1]
    flags: set[bytes] = set()
    expiry: tuple[bytes, int] | None = None
    i = 2
    while i < len(args):
        option = args[i].upper()
        if option in _SET_FLAGS:
            flags.add(option)
            i += 1
        elif option in _SET_TIMES and i + 1 < len(args) and expiry is None:
            amount = parse_int(args[i + 1])
            if amount <= 0:
                raise Reply("ERR invalid expire time in 'set' command")
            expiry = (option, amount)
            i += 2
        else:
            raise Reply("ERR syntax error")
    if (b"NX" in flags and b"XX" in flags) or (b"KEEPTTL" in flags and expiry is not None):
        raise Reply("ERR syntax error")
    bins = {STRING_BIN: value}
    if not flags:
        ttl = None
        if expiry is not None:
            option, amount = expiry
            scale = _SET_TIMES[option]
            if scale < 0:
                return _set_at(conn, key, bins, flags, expiry)
            ttl = amount * scale / 1000
        return Write(conn.records._plan_put(key, bins, ttl=ttl), lambda _: OK)
    return _set_at(conn, key, bins, flags, expiry)


def _set_at(
    conn: Connection,
    key: Any,
    bins: dict[str, Any],
    flags: set[bytes],
    expiry: tuple[bytes, int] | None,
) -> Write:
    want_old = b"GET" in flags

    def apply(current: Current, now: int) -> Outcome:
        old = string_of(current.bins, in_plan=True) if want_old else None
        exists = current.bins is not None
        if (b"NX" in flags and exists) or (b"XX" in flags and not exists):
            return Outcome((False, old))
        if expiry is None:
            expires: Any = KEEP if b"KEEPTTL" in flags else 0
        else:
            option, amount = expiry
            scale = _SET_TIMES[option]
            expires = now + amount * scale if scale > 0 else amount * -scale
            if expires <= now:
                return Outcome((True, old), None)  # an absolute time in the past: gone at once
        return Outcome((True, old), bins, expires)

    def reply(result: tuple[bool, bytes | None]) -> Any:
        written, old = result
        if want_old:
            return old
        return OK if written else None

    return Write(conn.records._plan_transform([(key, apply)], single=True), reply)
