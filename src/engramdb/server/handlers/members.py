"""What hash, set and sorted-set commands share: element cursors (HSCAN, SSCAN, ZSCAN),
random picks (HRANDFIELD, SRANDMEMBER, SPOP, ZRANDMEMBER) and the arguments of SINTERCARD
and ZINTERCARD.

A cursor is the last element key returned, written as a decimal integer as Redis clients
expect (``int.from_bytes(b"\\x01" + key)``): stateless, and it never misses an element that
exists for the whole scan. A structure of at most ``SMALL_SCAN`` elements is returned
whole by its first call (cursor 0), as Redis does for its compact encodings.

Random picks from a structure of at most ``SMALL_SAMPLE`` elements are uniform. Larger
ones probe a random point of the key space between the first and last element: every
element can come up, but not with equal chances (elements after a wide gap in byte
order come up more often).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from engramdb.server.commands import Reply
from engramdb.server.handlers.pattern import compile_pattern
from engramdb.server.handlers.values import parse_int, parse_numkeys
from engramdb.server.structures import Access, Found

__all__ = [
    "SMALL_SAMPLE",
    "SMALL_SCAN",
    "ScanOptions",
    "parse_intercard",
    "parse_scan",
    "sample",
    "scan_page",
]

SMALL_SCAN = 128
SMALL_SAMPLE = 1024
_rng = random.SystemRandom()


class ScanOptions:
    __slots__ = ("after", "count", "matches", "novalues")

    def __init__(
        self,
        after: bytes | None,
        count: int,
        matches: Callable[[bytes], Any] | None,
        novalues: bool,
    ) -> None:
        self.after = after
        self.count = count
        self.matches = matches
        self.novalues = novalues


def parse_scan(args: list[bytes], novalues: bool = False) -> ScanOptions:
    """``cursor [MATCH pattern] [COUNT n]`` (and ``NOVALUES`` for HSCAN)."""
    raw = args[0]
    if not raw.isdigit():
        raise Reply("ERR invalid cursor")
    number = int(raw)
    after: bytes | None = None
    if number:
        data = number.to_bytes((number.bit_length() + 7) // 8, "big")
        after = data[1:] if data[0] == 1 else data
    count = 10
    matches = None
    skip_values = False
    i = 1
    while i < len(args):
        option = args[i].upper()
        if option == b"NOVALUES" and novalues:
            skip_values = True
            i += 1
            continue
        if i + 1 >= len(args):
            raise Reply("ERR syntax error")
        if option == b"COUNT":
            count = parse_int(args[i + 1])
            if count < 1:
                raise Reply("ERR syntax error")
        elif option == b"MATCH":
            matches = None if args[i + 1] == b"*" else compile_pattern(args[i + 1])
        else:
            raise Reply("ERR syntax error")
        i += 2
    return ScanOptions(after, count, matches, skip_values)


def cursor_of(sub: bytes | None) -> bytes:
    return b"0" if sub is None else b"%d" % int.from_bytes(b"\x01" + sub, "big")


def scan_page(
    a: Access, found: Found, options: ScanOptions, lo: bytes = b"", hi: bytes | None = None
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The next page of elements (keys in ``[lo, hi)``) and the cursor after it."""
    if found.length <= SMALL_SCAN and options.after is None:
        rows = a.range(found, lo, hi)
        return b"0", rows
    start = lo if options.after is None else max(lo, options.after + b"\x00")
    rows = a.range(found, start, hi, options.count + 1)
    if len(rows) <= options.count:
        return b"0", rows
    rows = rows[: options.count]
    return cursor_of(rows[-1][0]), rows


def sample(
    a: Access,
    found: Found,
    count: int,
    distinct: bool,
    lo: bytes = b"",
    hi: bytes | None = None,
) -> list[tuple[bytes, bytes]]:
    """``count`` random elements (``distinct``: no repeats, at most all of them)."""
    size = found.length
    if count <= 0 or size <= 0:
        return []
    if distinct and count >= size:
        return a.range(found, lo, hi)
    if size <= SMALL_SAMPLE or (distinct and count * 3 > size):
        rows = a.range(found, lo, hi)
        if not rows:
            return []
        if distinct:
            return _rng.sample(rows, min(count, len(rows)))
        return [_rng.choice(rows) for _ in range(count)]
    first = a.range(found, lo, hi, 1)
    last = a.range(found, lo, hi, 1, reverse=True)
    if not first or not last:
        return []
    width = max(len(first[0][0]), len(last[0][0])) + 1
    low = int.from_bytes(first[0][0].ljust(width, b"\x00"), "big")
    high = int.from_bytes(last[0][0].ljust(width, b"\x00"), "big")

    def probe() -> tuple[bytes, bytes]:
        point = _rng.randint(low, high).to_bytes(width, "big")
        row = a.range(found, point, hi, 1)
        return row[0] if row else first[0]

    if not distinct:
        return [probe() for _ in range(count)]
    picked: dict[bytes, tuple[bytes, bytes]] = {}
    for _ in range(count * 4):
        row = probe()
        picked[row[0]] = row
        if len(picked) >= count:
            break
    if len(picked) < count:  # unlucky probes: fill up with the elements after a random one
        for row in a.pages(found, probe()[0], hi):
            picked.setdefault(row[0], row)
            if len(picked) >= count:
                break
        for row in a.pages(found, lo, hi):
            if len(picked) >= count:
                break
            picked.setdefault(row[0], row)
    return list(picked.values())[:count]


def random_count(args: list[bytes], name: bytes) -> tuple[int, bool]:
    """``count [WITHVALUES|WITHSCORES]`` of HRANDFIELD/ZRANDMEMBER: (count, with)."""
    count = parse_int(args[0])
    if count < -((1 << 63) - 1):
        raise Reply(
            "ERR value is out of range, value must between -9223372036854775807 and "
            "9223372036854775807"
        )
    with_values = False
    if len(args) == 2:
        if args[1].upper() != name:
            raise Reply("ERR syntax error")
        with_values = True
    elif len(args) > 2:
        raise Reply("ERR syntax error")
    return count, with_values


def parse_intercard(args: list[bytes], name: str) -> tuple[list[bytes], int]:
    """``numkeys key [key ...] [LIMIT limit]`` of SINTERCARD or ZINTERCARD (``name``): the
    keys and the limit (0: none), checked in Redis's order with its error texts (which
    differ between the two)."""
    if name == "zintercard":
        numkeys = parse_int(args[0])
        if numkeys < 1:
            raise Reply(f"ERR at least 1 input key is needed for '{name}' command")
        if numkeys > len(args) - 1:
            raise Reply("ERR syntax error")
    else:
        numkeys = parse_numkeys(args[0])
        if len(args) < numkeys + 1:
            raise Reply("ERR Number of keys can't be greater than number of args")
    keys, rest = args[1 : numkeys + 1], args[numkeys + 1 :]
    limit = 0
    while rest:
        if len(rest) < 2 or rest[0].upper() != b"LIMIT":
            raise Reply("ERR syntax error")
        try:
            limit = parse_int(rest[1])
        except Reply:
            limit = -1
        if limit < 0:
            raise Reply("ERR LIMIT can't be negative")
        rest = rest[2:]
    return keys, limit
