"""DUMP and RESTORE in Redis' own serialization (an RDB object, its RDB version, CRC64).

DUMP writes the plain RDB encodings every Redis since 2.x loads: a string (type 0), a list
(1), a set (2), a hash (4) and a sorted set with binary scores (5), then RDB version 10
(Redis 7.0's) and the CRC64 (Jones) of it all, so ``redis-server`` RESTOREs what engramdb
DUMPs. RESTORE reads those types, strings in any of Redis' encodings (integers, LZF), so it
takes Redis' DUMP of any string; Redis' compact encodings of small collections (listpack,
ziplist, intset, quicklist: types 9 and up) are refused with an error naming the type,
never guessed at. IDLETIME and FREQ are accepted and ignored: they seed Redis' eviction
clock, and engramdb evicts nothing.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from engramdb.records.codec import encode_body
from engramdb.server.commands import RedisError, Reply, command
from engramdb.server.handlers import hashes, lists, sets, zsets
from engramdb.server.handlers.admin import OK
from engramdb.server.handlers.values import STRING_BIN, as_bytes, parse_int
from engramdb.server.structures import HASH, LIST, SET, ZSET, check_sizes, read, write

if TYPE_CHECKING:
    from engramdb.server.connection import Connection
    from engramdb.server.structures import Access, Found

RDB_VERSION = 10
_BAD_PAYLOAD = "ERR DUMP payload version or checksum are wrong"
_BAD_FORMAT = "ERR Bad data format"
_STRING, _LIST, _SET, _ZSET, _HASH, _ZSET_2 = 0, 1, 2, 3, 4, 5
_F64 = struct.Struct("<d")


def _crc64_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x95AC9329AC4BC9B5 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc64_table()


def crc64(data: bytes) -> int:
    """Redis' crc64 (Jones polynomial, reflected, no final xor)."""
    crc = 0
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


# writing -------------------------------------------------------------------------------


def _length(n: int) -> bytes:
    if n < 1 << 6:
        return bytes([n])
    if n < 1 << 14:
        return bytes([0x40 | (n >> 8), n & 0xFF])
    if n < 1 << 32:
        return b"\x80" + n.to_bytes(4, "big")
    return b"\x81" + n.to_bytes(8, "big")


def _string(value: bytes) -> bytes:
    return _length(len(value)) + value


def serialize(a: Access, found: Found) -> bytes:
    """``found``'s DUMP payload."""
    if found.kind == "string":
        body = bytes([_STRING]) + _string(as_bytes(found.bins()[STRING_BIN]))
    elif found.kind == LIST:
        items = lists._all(a, found)
        body = bytes([_LIST]) + _length(len(items)) + b"".join(map(_string, items))
    elif found.kind == SET:
        members = sets._members(a, found)
        body = bytes([_SET]) + _length(len(members)) + b"".join(map(_string, members))
    elif found.kind == ZSET:
        rows = list(zsets._members_of(a, found))
        body = bytes([_ZSET_2]) + _length(len(rows))
        body += b"".join(_string(m) + _F64.pack(score) for m, score in rows)
    else:
        fields = hashes._fields(a, found)
        body = bytes([_HASH]) + _length(len(fields))
        body += b"".join(_string(f) + _string(v) for f, v in fields)
    body += RDB_VERSION.to_bytes(2, "little")
    return body + crc64(body).to_bytes(8, "little")


# reading -------------------------------------------------------------------------------


def _lzf(data: bytes, size: int) -> bytes:
    out = bytearray()
    i = 0
    while i < len(data):
        ctrl = data[i]
        i += 1
        if ctrl < 32:  # a literal run
            out += data[i : i + ctrl + 1]
            i += ctrl + 1
            continue
        n = ctrl >> 5
        if n == 7:
            n += data[i]
            i += 1
        ref = len(out) - ((ctrl & 0x1F) << 8) - data[i] - 1
        i += 1
        if ref < 0:
            raise Reply(_BAD_FORMAT)
        for _ in range(n + 2):  # byte by byte: a back-reference may overlap its output
            out.append(out[ref])
            ref += 1
    if len(out) != size:
        raise Reply(_BAD_FORMAT)
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise Reply(_BAD_FORMAT)
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def length(self) -> tuple[int, bool]:
        """A length, or (encoding, True) for a specially encoded string."""
        first = self.take(1)[0]
        kind = first >> 6
        if kind == 0:
            return first & 0x3F, False
        if kind == 1:
            return ((first & 0x3F) << 8) | self.take(1)[0], False
        if kind == 3:
            return first & 0x3F, True
        if first == 0x80:
            return int.from_bytes(self.take(4), "big"), False
        if first == 0x81:
            return int.from_bytes(self.take(8), "big"), False
        raise Reply(_BAD_FORMAT)

    def count(self) -> int:
        n, special = self.length()
        if special:
            raise Reply(_BAD_FORMAT)
        return n

    def string(self) -> bytes:
        n, special = self.length()
        if not special:
            return self.take(n)
        if n in (0, 1, 2):  # an integer of 1, 2 or 4 bytes, little-endian, signed
            return b"%d" % int.from_bytes(self.take(1 << n), "little", signed=True)
        if n == 3:
            packed, size = self.count(), self.count()
            return _lzf(self.take(packed), size)
        raise Reply(_BAD_FORMAT)

    def old_double(self) -> float:
        n = self.take(1)[0]
        special = {253: float("nan"), 254: float("inf"), 255: float("-inf")}
        if n in special:
            return special[n]
        try:
            return float(self.take(n).decode("ascii"))
        except ValueError:
            raise Reply(_BAD_FORMAT) from None


def parse_payload(payload: bytes) -> tuple[int, Any]:
    """(RDB type, value) of a DUMP payload; an error for a bad or unsupported one."""
    if len(payload) < 10:
        raise Reply(_BAD_PAYLOAD)
    body, footer = payload[:-8], payload[-8:]
    version = int.from_bytes(payload[-10:-8], "little")
    if version > RDB_VERSION or crc64(body) != int.from_bytes(footer, "little"):
        raise Reply(_BAD_PAYLOAD)
    r = _Reader(payload[:-10])
    kind = r.take(1)[0]
    value: Any
    if kind == _STRING:
        value = r.string()
    elif kind in (_LIST, _SET):
        value = [r.string() for _ in range(r.count())]
    elif kind == _HASH:
        value = [(r.string(), r.string()) for _ in range(r.count())]
    elif kind in (_ZSET, _ZSET_2):
        value = []
        for _ in range(r.count()):
            member = r.string()
            score = _F64.unpack(r.take(8))[0] if kind == _ZSET_2 else r.old_double()
            if score != score:
                raise Reply(_BAD_FORMAT)
            value.append((member, score))
    else:
        raise Reply(
            f"ERR RESTORE of RDB object type {kind} (a compact encoding) is not supported "
            "by engramdb"
        )
    if r.at != len(r.data):
        raise Reply(_BAD_FORMAT)
    return kind, value


def _store(a: Access, found: Found, kind: int, value: Any, expires_ms: int) -> None:
    if kind == _STRING:
        a.put_record(found, encode_body({STRING_BIN: value}, a.records._limits), expires_ms)
        return
    if kind == _LIST:
        a.create(found, LIST)
        lists._push(a, found, value, left=False)
    elif kind == _SET:
        a.create(found, SET)
        for member in dict.fromkeys(value):
            a.put(found, member, b"", new=True)
            found.length += 1
    elif kind == _HASH:
        a.create(found, HASH)
        for field, v in dict(value).items():
            a.put(found, field, v, new=True)
            found.length += 1
    else:
        a.create(found, ZSET)
        for member, score in dict(value).items():
            zsets._set(a, found, member, None, score)
    found.expires_ms = expires_ms
    a.save(found)


# the commands --------------------------------------------------------------------------


@command("dump", 2, "readonly")
def dump(conn: Connection, args: list[bytes]) -> Any:
    """The key's value serialized as Redis does (nil when absent)."""
    key = args[0]

    def fn(a: Access) -> bytes | None:
        found = a.find(key)
        return serialize(a, found) if found.exists else None

    return read(conn, fn)


@command("restore", -4, "write")
def restore(conn: Connection, args: list[bytes]) -> Any:
    """Create a key from a DUMP payload: TTL in ms (0: none; ABSTTL: a Unix time in ms),
    REPLACE to overwrite; BUSYKEY when the key exists otherwise."""
    key, raw_ttl, payload = args[0], args[1], args[2]
    replace = absolute = False
    idle = freq = False
    i = 3
    while i < len(args):
        option = args[i].upper()
        if option == b"REPLACE":
            replace = True
        elif option == b"ABSTTL":
            absolute = True
        elif option == b"IDLETIME" and i + 1 < len(args) and not freq:
            if parse_int(args[i + 1]) < 0:
                raise Reply("ERR Invalid IDLETIME value, must be >= 0")
            idle = True
            i += 1
        elif option == b"FREQ" and i + 1 < len(args) and not idle:
            if not 0 <= parse_int(args[i + 1]) <= 255:
                raise Reply("ERR Invalid FREQ value, must be >= 0 and <= 255")
            freq = True
            i += 1
        else:
            raise Reply("ERR syntax error")
        i += 1
    ttl = parse_int(raw_ttl)
    if ttl < 0:
        raise Reply("ERR Invalid TTL value, must be >= 0")
    kind, value = parse_payload(payload)
    if kind == _STRING:
        check_sizes([value], conn.db.limits.max_record_bytes)
    elif kind in (_LIST, _SET):
        check_sizes(value, conn.db.limits.max_record_bytes)
    elif kind == _HASH:
        check_sizes([x for pair in value for x in pair], conn.db.limits.max_record_bytes)
    else:
        check_sizes([member for member, _ in value], conn.db.limits.max_record_bytes)

    def apply(a: Access) -> Any:
        found = a.find(key)
        if found.exists and not replace:
            raise RedisError("BUSYKEY Target key name already exists.")
        expires = 0 if ttl == 0 else (ttl if absolute else a.now + ttl)
        a.remove(found)
        if expires and expires <= a.now:
            return OK  # already expired: Redis replies OK and leaves no key
        found = a.find(key)
        _store(a, found, kind, value, expires)
        return OK

    return write(conn, apply)
