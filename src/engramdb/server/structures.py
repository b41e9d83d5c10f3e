"""How Redis lists, hashes, sets and sorted sets are stored: one entry per element.

A structure is a **header record** plus one engine entry per element, written in the same
transaction, so every element operation is a few point reads and writes however long the
structure grows (no whole-value rewrite, no size cap but the engine's).

- The header is the record of the Redis key in the database's record set (``default``, or
  ``default.N`` after ``SELECT N``). It carries what the key as a whole has: the TTL, the
  generation (+1 per command that changes the structure, so WATCH, the change log and the
  engramdb API see one change per command), and four bins the engramdb API reads as
  ``{"$type": "list", "$len": 3, "$id": 1234, "$head": -1}``: the type, the number of
  elements, the structure's id and, for lists, the position of the first element. EXISTS,
  TYPE, TTL, EXPIRE, DEL, KEYS, SCAN and DBSIZE therefore work on the header alone.
- The elements are entries of the reserved set ``_redis`` (unreachable through the generic
  record API), keyed by the structure's id, not by its key::

      list   e | id | position (u64, biased)   -> item
      hash   e | id | field                    -> value
      set    e | id | member                   -> ""
      zset   e | id | "m" | member             -> score (f64)
             e | id | "s" | score (ordered) | member -> ""

  Fields and members are any bytes, empty included. A list is a deque of positions: the
  header's ``$head`` and ``$len`` make LPUSH/RPUSH/LPOP/RPOP O(1) and LINDEX/LSET position
  arithmetic; LINSERT and LREM move the shorter side, O(n) as in Redis. A sorted set's
  second index orders (score, member) by bytes (IEEE 754 made order-preserving), so score
  and lex ranges are range scans; a rank is O(rank). Element entries are internal state,
  written without change-log entries of their own: the header's change stands for them.
- The id is the change-log sequence of the header's creation, so an id is never reused.
  Because elements hang off the id, RENAME moves only the header, and removing a structure
  is one header change: from that commit on no read reaches its elements. They are
  reclaimed afterwards (``reclaim.py``): ``k | header rk -> id`` records which structure a
  key last owned and ``d | id`` the ids left to reclaim, so whatever removed the header
  (DEL, SET over it, expiry, FLUSHDB, the engramdb API, another process) the elements go,
  also after a crash.
- A header is recognised by its exact byte layout, which msgspec (hence the engramdb API)
  never produces (the type is a ``str8``); reads of other records keep the older mapping:
  ``$string`` is a string, a record whose only bin is ``$list`` is a list written by
  earlier versions (read as it is, converted to this layout on its first write), and any
  other record is a hash of its bins. Writes to such a hash keep it a record while every
  field is a valid bin name and it fits the record size limit; otherwise it is converted.

Reads outside a transaction run on the event loop against the engine and check that every
header they read is unchanged afterwards (so a read is one consistent state); a read that
would touch more than ``LOOP_ELEMENTS`` elements runs on a worker thread instead.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from engramdb.errors import RecordTooBig
from engramdb.records.codec import FORMAT, HEADER, HEADER_SIZE, decode_bins, with_header
from engramdb.records.keys import Key
from engramdb.recordset import RecordSet
from engramdb.server.commands import Offload, RedisError, Write

if TYPE_CHECKING:
    from engramdb.database import Database
    from engramdb.server.connection import Connection
    from engramdb.storage.base import WriteTxn

__all__ = [
    "DATABASES",
    "DEAD",
    "ELEMENTS",
    "ELEMENTS_SET",
    "HASH",
    "KINDS",
    "LIST",
    "LOOP_ELEMENTS",
    "OWNER",
    "SET",
    "SET_PREFIX",
    "STRUCTURE_BINS",
    "WRONGTYPE",
    "ZSET",
    "Access",
    "Found",
    "MoveOffLoop",
    "View",
    "check_sizes",
    "database_name",
    "key_of",
    "ordered_score",
    "position",
    "read",
    "record_set",
    "score_bytes",
    "score_of",
    "structure_kind",
    "write",
]

LIST, HASH, SET, ZSET = "list", "hash", "set", "zset"
KINDS = (LIST, HASH, SET, ZSET)
WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
# The bins of a header, as the engramdb API reads it.
STRUCTURE_BINS = frozenset({"$type", "$len", "$id", "$head"})

ELEMENTS_SET = "_redis"
DATABASES = 16  # SELECT 0-15
SET_PREFIX = b"_redis\x00"
ELEMENTS = SET_PREFIX + b"e"  # + id + element
OWNER = SET_PREFIX + b"k"  # + header rk -> id of the structure the key last held
DEAD = SET_PREFIX + b"d"  # + id -> "" (elements left to reclaim)

LOOP_ELEMENTS = 512  # a read touching more elements runs on a worker thread
INLINE_REMOVE = 64  # removing a structure this small deletes its elements at once
_ATTEMPTS = 3  # optimistic snapshot reads before reading inside a write transaction

_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
_BIAS = 1 << 63
_SIGN = 1 << 63
_ALL_ONES = (1 << 64) - 1
# The header body: a msgpack map of four bins at fixed offsets. "$type" is a str8, which
# msgspec never writes for a short string: no record written through the API can match.
_K_ID, _K_LEN = b"\xa3$id\xcf", b"\xa4$len\xcf"
_K_HEAD, _K_TYPE = b"\xa5$head\xd3", b"\xa5$type\xd9"
_BODY = struct.Struct(">B5sQ6sQ7sq7sB")
_TYPE_OF = {kind.encode(): kind for kind in KINDS}
_NAME_OF = {kind: kind.encode() for kind in KINDS}
_HEADER_PACK, _BODY_PACK = HEADER.pack, _BODY.pack
# Structure headers already parsed, by their stored bytes: (kind, sid, length, head,
# generation, expires_ms, prefix, end). What a header says is a function of its bytes
# alone, so this holds whoever wrote them (another process included). A command that
# saves a header puts it here, and the next command on that key (a hot list or hash)
# skips parsing it. Cleared when full; plain dict operations, safe across threads.
PARSED: dict[bytes, tuple[str, int, int, int, int, int, bytes, bytes]] = {}
_PARSED_MAX = 4096


def database_name(default_set: str, index: int) -> str:
    """The record set of Redis database ``index``: the default set, or ``default.N``."""
    return default_set if index == 0 else f"{default_set}.{index}"


def key_of(raw: bytes) -> Key:
    """The record key of a Redis key: its text when valid UTF-8, else its bytes."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def structure_kind(bins: dict[str, Any]) -> str | None:
    """The type a header's decoded bins name (None: not a header)."""
    if len(bins) == 4 and bins.keys() == STRUCTURE_BINS:
        kind = bins["$type"]
        if type(kind) is str and kind in KINDS:
            return kind
    return None


def _body(kind: str, sid: int, length: int, head: int) -> bytes:
    name = kind.encode()
    return _BODY.pack(0x84, _K_ID, sid, _K_LEN, length, _K_HEAD, head, _K_TYPE, len(name)) + name


def position(pos: int) -> bytes:
    """The element key of list position ``pos`` (signed), ordered like the positions."""
    return _U64.pack(pos + _BIAS)


def score_bytes(score: float) -> bytes:
    """``score`` as 8 bytes that sort like the numbers (-0.0 as 0.0)."""
    if score == 0:
        score = 0.0
    (bits,) = _U64.unpack(_F64.pack(score))
    return _U64.pack(bits ^ _ALL_ONES if bits >> 63 else bits | _SIGN)


def ordered_score(raw: bytes) -> float:
    """Inverse of ``score_bytes`` (reads the first 8 bytes of ``raw``)."""
    (bits,) = _U64.unpack_from(raw)
    value: float = _F64.unpack(_U64.pack(bits ^ _SIGN if bits >> 63 else bits ^ _ALL_ONES))[0]
    return value


def score_of(raw: bytes) -> float:
    """A stored score (a member's entry)."""
    value: float = _F64.unpack_from(raw)[0]
    return value


class Found:
    """A Redis key as stored now: its kind and, for a structure, its header."""

    __slots__ = (
        "bins_cache",
        "end",
        "expires_ms",
        "generation",
        "head",
        "kind",
        "legacy",
        "length",
        "logged",
        "prefix",
        "prev_expires_ms",
        "raw",
        "rk",
        "sid",
    )
    bins_cache: dict[str, Any] | None
    prev_expires_ms: int | None

    def __init__(self, rk: bytes, raw: bytes | None, now: int) -> None:
        self.rk = rk
        self.raw = raw
        if raw is not None:
            parsed = PARSED.get(raw)
            if parsed is not None and (not parsed[5] or parsed[5] > now):
                # The common case of a structure command on a hot key: no parsing.
                (self.kind, self.sid, self.length, self.head, self.generation,
                 self.expires_ms, self.prefix, self.end) = parsed  # fmt: skip
                self.prev_expires_ms = parsed[5]
                self.legacy = self.logged = False
                self.bins_cache = None
                return
        self.kind = "none"
        self.legacy = False  # a record (string, bins hash, $list): no element entries
        self.sid = 0
        self.length = 0
        self.head = 0
        self.prefix = self.end = b""
        self.logged = False  # its change is logged already in this write
        self.bins_cache: dict[str, Any] | None = None
        self.generation = 0
        self.expires_ms = 0
        self.prev_expires_ms: int | None = None
        if raw is None:
            return
        _, generation, expires_ms, _ = HEADER.unpack_from(raw)
        self.prev_expires_ms = expires_ms
        if expires_ms and expires_ms <= now:
            self.raw = None  # expired, awaiting the sweeper: absent
            return
        self.generation = generation
        self.expires_ms = expires_ms
        if len(raw) > HEADER_SIZE + _BODY.size and raw[HEADER_SIZE] == 0x84:
            fields = _BODY.unpack_from(raw, HEADER_SIZE)
            kind = _TYPE_OF.get(raw[HEADER_SIZE + _BODY.size :])
            if (
                kind is not None
                and fields[1] == _K_ID
                and fields[3] == _K_LEN
                and fields[5] == _K_HEAD
                and fields[7] == _K_TYPE
                and fields[8] == len(kind)
            ):
                self._structure(kind, fields[2], fields[4], fields[6])
                self._remember(raw)
                return
        self.legacy = True  # a record; what kind is known without decoding, mostly
        if raw.startswith(b"\x81\xa7$string", HEADER_SIZE):
            self.kind = "string"
        elif raw.startswith(b"\x81\xa5$list", HEADER_SIZE):
            self.kind = LIST
        elif raw.startswith(b"\x84", HEADER_SIZE):
            # Four bins: maybe a header written through the record API, taken at its word.
            bins = self.bins()
            kind = structure_kind(bins)
            if kind is not None:
                self.legacy = False
                self._structure(kind, *(_int(bins[name]) for name in ("$id", "$len", "$head")))
            else:
                self.kind = HASH
        else:
            self.kind = HASH

    def _structure(self, kind: str, sid: int, length: int, head: int) -> None:
        self.kind = kind
        self.sid = sid
        self.length = length
        self.head = head
        self.prefix = ELEMENTS + _U64.pack(sid)
        self.end = ELEMENTS + _U64.pack(sid + 1) if sid < (1 << 64) - 1 else ELEMENTS + b"\xff" * 9

    def _remember(self, raw: bytes) -> None:
        """Note that ``raw`` is the header of this structure as it now stands."""
        if len(PARSED) >= _PARSED_MAX:
            PARSED.clear()
        PARSED[raw] = (self.kind, self.sid, self.length, self.head, self.generation,
                        self.expires_ms, self.prefix, self.end)  # fmt: skip

    @property
    def exists(self) -> bool:
        return self.raw is not None

    @property
    def structure(self) -> bool:
        return self.sid != 0

    def bins(self) -> dict[str, Any]:
        """The decoded bins of a record (not of a structure's header)."""
        if self.bins_cache is None:
            assert self.raw is not None
            self.bins_cache = decode_bins(self.raw)
        return self.bins_cache

    def expect(self, kind: str) -> bool:
        """True if the key holds a ``kind``; False when absent; WRONGTYPE otherwise."""
        if self.kind == kind:
            return True
        if self.kind == "none":
            return False
        raise RedisError(WRONGTYPE)


def _int(value: Any) -> int:
    return value if type(value) is int else 0


class View:
    """What reads need of an engine or a write transaction."""

    def get(self, rk: bytes) -> bytes | None:
        raise NotImplementedError

    def scan(
        self, start: bytes, end: bytes, limit: int, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        raise NotImplementedError


class MoveOffLoop(Exception):
    """A read on the event loop found more elements than it may touch there."""


class Access:
    """Reads (and, given a transaction, writes) of Redis keys of one record set.

    ``find`` returns the same ``Found`` for a key each time within one access, so a
    command naming a key twice (LMOVE a a) edits one state.
    """

    __slots__ = ("_budget", "_found", "_spent", "limit", "now", "records", "txn", "view")

    def __init__(
        self,
        view: Any,
        records: RecordSet,
        now: int,
        txn: WriteTxn | None = None,
        budget: int | None = None,
    ) -> None:
        self.view = view
        self.txn = txn
        self.records = records
        self.now = now
        self.limit = records._limits.max_record_bytes
        self._found: dict[bytes, Found] = {}
        self._budget = budget
        self._spent = 0

    # finding keys ------------------------------------------------------------------------

    def find(self, raw_key: bytes, records: RecordSet | None = None) -> Found:
        records = records or self.records
        # An ASCII key is its own UTF-8 text (``values.record_key``, inlined: once per key).
        rk = records._rk_of_text(raw_key) if raw_key.isascii() else records._rk(key_of(raw_key))
        found = self._found.get(rk)
        if found is None:
            found = self._found[rk] = Found(rk, self.view.get(rk), self.now)
        return found

    def unchanged(self, engine: Any) -> bool:
        """Whether every structure read is still as it was (for reads outside a txn)."""
        for found in self._found.values():
            if found.structure and engine.get(found.rk) != found.raw:
                return False
        return True

    def charge(self, elements: int) -> None:
        self._spent += elements
        if self._budget is not None and self._spent > self._budget:
            raise MoveOffLoop

    # reading elements --------------------------------------------------------------------

    def get(self, found: Found, sub: bytes) -> bytes | None:
        value: bytes | None = self.view.get(found.prefix + sub)
        return value

    def range(
        self,
        found: Found,
        lo: bytes = b"",
        hi: bytes | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[tuple[bytes, bytes]]:
        """Elements with ``lo <= sub < hi`` (sub: the element key after the id)."""
        if limit is None:
            limit = found.length + 1
        if limit <= 0:
            return []
        self.charge(min(limit, found.length))
        start = found.prefix + lo
        end = found.end if hi is None else found.prefix + hi
        cut = len(found.prefix)
        return [(rk[cut:], value) for rk, value in self.view.scan(start, end, limit, reverse)]

    def pages(
        self, found: Found, lo: bytes = b"", hi: bytes | None = None, reverse: bool = False
    ) -> Any:
        """Every element in ``[lo, hi)``, fetched a page at a time (a generator)."""
        while True:
            page = self.range(found, lo, hi, 256, reverse)
            yield from page
            if len(page) < 256:
                return
            if reverse:
                hi = page[-1][0]
            else:
                lo = page[-1][0] + b"\x00"

    # writing -----------------------------------------------------------------------------

    def _txn(self) -> WriteTxn:
        assert self.txn is not None, "a write outside a write transaction"
        return self.txn

    def put(self, found: Found, sub: bytes, value: bytes, new: bool) -> None:
        """Store an element (``new``: nothing is stored under it yet)."""
        txn = self.txn
        assert txn is not None, "a write outside a write transaction"
        txn.put(found.prefix + sub, value, 0, None if new else 0)

    def delete(self, found: Found, sub: bytes) -> None:
        txn = self.txn
        assert txn is not None, "a write outside a write transaction"
        txn.delete(found.prefix + sub, 0)

    def create(self, found: Found, kind: str) -> None:
        """Make ``found`` (absent, or a record being converted) an empty structure.

        The header is written and logged first, so the structure's id is the sequence of
        its own change and can never be another's."""
        txn = self._txn()
        now = self.now
        sid = txn.next_sequence()
        replacing = found.exists
        generation = found.generation + 1 if replacing else sid
        expires = found.expires_ms if replacing else 0
        raw = with_header(_body(kind, sid, 0, 0), generation, expires, now)
        txn.put(found.rk, raw, expires, found.prev_expires_ms)
        logged = txn.log("put", found.rk, generation, now)
        assert logged == sid, (logged, sid)
        found.raw = raw
        found.generation = generation
        found.expires_ms = found.prev_expires_ms = expires
        found.legacy = False
        found.bins_cache = None
        found.logged = True
        found._structure(kind, sid, 0, 0)
        self._own(found.rk, sid)

    def _own(self, rk: bytes, sid: int) -> None:
        """Record that ``rk`` holds structure ``sid``; an older one it held is dead."""
        txn = self._txn()
        owner = OWNER + rk
        old = txn.get(owner)
        mine = _U64.pack(sid)
        if old == mine:
            return
        if old is not None:
            self._bury(_U64.unpack(old)[0])
        txn.put(owner, mine, 0, None if old is None else 0)

    def _bury(self, sid: int) -> None:
        txn = self._txn()
        dead = DEAD + _U64.pack(sid)
        if txn.get(dead) is None:
            txn.put(dead, b"", 0, None)

    def save(self, found: Found) -> None:
        """Write ``found``'s header (one logged change per command); an empty structure is
        removed instead, as Redis does."""
        if found.length <= 0:
            self.remove(found)
            return
        txn = self._txn()
        generation = found.generation if found.logged else found.generation + 1
        raw = with_header(
            _body(found.kind, found.sid, found.length, found.head),
            generation,
            found.expires_ms,
            self.now,
        )
        txn.put(found.rk, raw, found.expires_ms, found.prev_expires_ms)
        if not found.logged:
            txn.log("put", found.rk, generation, self.now)
        found.raw = raw
        found.generation = generation
        found.prev_expires_ms = found.expires_ms
        found.logged = True
        found._remember(raw)

    def remove(self, found: Found) -> None:
        """Delete the key (any kind). A structure's elements go at once when few (or none
        are left), else they are left to the reclaimer: no read reaches them any more."""
        if not found.exists:
            return
        txn = self._txn()
        assert found.prev_expires_ms is not None
        txn.delete(found.rk, found.prev_expires_ms)
        txn.log("delete", found.rk, found.generation, self.now)
        if found.structure:
            owner = OWNER + found.rk
            if txn.get(owner) == _U64.pack(found.sid):
                txn.delete(owner, 0)
            entries = found.length * (2 if found.kind == ZSET else 1)  # zsets: two indexes
            if entries > INLINE_REMOVE:
                self._bury(found.sid)
            elif entries > 0:
                for rk, _ in txn.scan(found.prefix, found.end, entries + 1):
                    txn.delete(rk, 0)
        found.raw = None
        found.kind = "none"
        found.legacy = False
        found.sid = found.length = found.head = 0
        found.generation = 0
        found.expires_ms = 0
        found.prev_expires_ms = None
        found.bins_cache = None
        found.logged = False

    def detach(self, found: Found) -> None:
        """Delete a structure's header but keep its elements (RENAME moves them on)."""
        txn = self._txn()
        assert found.structure
        assert found.prev_expires_ms is not None
        txn.delete(found.rk, found.prev_expires_ms)
        txn.log("delete", found.rk, found.generation, self.now)
        owner = OWNER + found.rk
        if txn.get(owner) == _U64.pack(found.sid):
            txn.delete(owner, 0)
        found.raw = None
        found.kind = "none"
        found.sid = found.length = found.head = found.generation = found.expires_ms = 0
        found.prev_expires_ms = None
        found.logged = False

    def copy(self, source: Found, target: Found) -> None:
        """Make ``target`` (absent) a copy of the structure ``source``, elements and TTL."""
        txn = self._txn()
        self.create(target, source.kind)
        for sub, value in self.pages(source):
            txn.put(target.prefix + sub, value, 0, None)
        target.length, target.head = source.length, source.head
        target.expires_ms = source.expires_ms
        self.save(target)

    def put_record(self, found: Found, body: bytes, expires_ms: int | None = None) -> None:
        """Store a record body (a string, a bins hash) under the key, replacing whatever is
        there (a structure it held is then left to the reclaimer)."""
        txn = self._txn()
        if found.structure:
            self.remove(found)
        expires = found.expires_ms if expires_ms is None else expires_ms
        generation = found.generation + 1 if found.exists else txn.next_sequence()
        raw = with_header(body, generation, expires, self.now)
        txn.put(found.rk, raw, expires, found.prev_expires_ms)
        txn.log("put", found.rk, generation, self.now)
        found.raw = raw
        found.generation = generation
        found.expires_ms = found.prev_expires_ms = expires
        found.bins_cache = None
        found.legacy = True
        found.logged = True

    def adopt(self, found: Found, source: Found) -> None:
        """Make ``found`` the header of ``source``'s structure (RENAME): the elements stay
        where they are, only the header moves; ``source`` is detached from them."""
        txn = self._txn()
        kind, sid, length, head = source.kind, source.sid, source.length, source.head
        expires_ms = source.expires_ms
        self.detach(source)
        if found.exists:
            self.remove(found)
        generation = txn.next_sequence()
        raw = with_header(_body(kind, sid, length, head), generation, expires_ms, self.now)
        txn.put(found.rk, raw, expires_ms, found.prev_expires_ms)
        txn.log("put", found.rk, generation, self.now)
        found.raw = raw
        found.generation = generation
        found.expires_ms = found.prev_expires_ms = expires_ms
        found.logged = True
        found._structure(kind, sid, length, head)
        self._own(found.rk, sid)


def check_sizes(values: list[bytes], limit: int) -> None:
    """Each element must fit where a record would (``--max-record-bytes``)."""
    for value in values:
        if len(value) > limit:
            raise RecordTooBig(
                f"an element of {len(value)} bytes exceeds the record limit of {limit} bytes"
            )


# running reads and writes ----------------------------------------------------------------


def record_set(conn: Connection) -> RecordSet:
    """The record set a connection's commands address (the transaction's underlying one)."""
    records: Any = conn.records
    if type(records) is RecordSet:
        return records
    return cast(RecordSet, records._records)  # a transaction's view (TxnRecords)


def _same(value: Any) -> Any:
    return value


def read(conn: Connection, fn: Callable[[Access], Any]) -> Any:
    """Run the read ``fn`` as one consistent state: inside the transaction of a MULTI or a
    script, else on the engine (on a worker thread when it touches many elements)."""
    records = record_set(conn)
    txn: WriteTxn | None = getattr(conn, "txn", None)
    db = conn.db
    if txn is not None:
        return fn(Access(txn, records, db._now_ms(), txn))
    try:
        return _snapshot(db, records, fn, LOOP_ELEMENTS, on_loop=True)
    except MoveOffLoop:
        return Offload(lambda: _snapshot(db, records, fn, None, on_loop=False), _same)


def _snapshot(
    db: Database, records: RecordSet, fn: Callable[[Access], Any], budget: int | None, on_loop: bool
) -> Any:
    engine = db._engine
    for _ in range(_ATTEMPTS):
        access = Access(engine, records, db._now_ms(), None, budget)
        result = fn(access)
        if access.unchanged(engine):
            return result

    # Writers keep changing what we read: read it inside a write transaction instead.
    def plan(txn: WriteTxn) -> Any:
        return fn(Access(txn, records, db._now_ms(), txn))

    if on_loop:
        return Write(plan, _same)
    return db._write(plan)


# The fast path of one-key structure writes --------------------------------------------

# A parsed header: (kind, sid, length, head, generation, expires_ms, prefix, end).
Parsed = tuple[str, int, int, int, int, int, bytes, bytes]
# What a fast path returns when the general path must run instead (it wrote nothing).
GENERAL: Any = object()


def save_header(txn: WriteTxn, rk: bytes, parsed: Parsed, length: int, head: int, now: int) -> None:
    """``Access.save`` of a structure a fast path found (``length`` > 0): its header with the
    new length and head, one generation up, logged as one change."""
    kind, sid, _, _, generation, expires_ms, prefix, end = parsed
    generation += 1
    # ``with_header(_body(...))``, inlined: this runs once per structure write.
    raw = (
        _HEADER_PACK(FORMAT, generation, expires_ms, now)
        + _BODY_PACK(0x84, _K_ID, sid, _K_LEN, length, _K_HEAD, head, _K_TYPE, len(kind))
        + _NAME_OF[kind]
    )
    txn.put(rk, raw, expires_ms, expires_ms)
    txn.log("put", rk, generation, now)
    if len(PARSED) >= _PARSED_MAX:  # ``Found._remember``, inlined
        PARSED.clear()
    PARSED[raw] = (kind, sid, length, head, generation, expires_ms, prefix, end)


def hot_write(
    conn: Connection,
    raw_key: bytes,
    kind: str,
    fast: Callable[[WriteTxn, bytes, Parsed, int], Any],
    general: Callable[[Access], Any],
    then: Callable[[Any], Any] = _same,
) -> Any:
    """``write(conn, general, then)``, with a fast path for the common case of a command on
    a key whose header was just written or read (a hot list, set or hash): when the stored
    header is in the parse cache as a live ``kind``, ``fast(txn, rk, parsed, now)`` runs
    instead, with no parsing and no ``Access``. It must give the same answer and make the
    same writes as ``general`` would, or return ``GENERAL`` before writing anything (then
    ``general`` runs)."""
    records = conn.records
    if type(records) is not RecordSet or getattr(conn, "txn", None) is not None:
        return write(conn, general, then)  # MULTI, scripts: the general path
    rk = records._rk_of_text(raw_key) if raw_key.isascii() else records._rk(key_of(raw_key))
    now_ms = conn.db._now_ms

    def plan(txn: WriteTxn) -> Any:
        now = now_ms()
        raw = txn.get(rk)
        if raw is not None:
            parsed = PARSED.get(raw)
            if parsed is not None and parsed[0] == kind and (not parsed[5] or parsed[5] > now):
                result = fast(txn, rk, parsed, now)
                if result is not GENERAL:
                    return result
        return general(Access(txn, records, now, txn))

    return Write(plan, then)


def write(
    conn: Connection,
    fn: Callable[[Access], Any],
    then: Callable[[Any], Any] = _same,
    *,
    heavy: bool = False,
) -> Any:
    """A write plan running ``fn`` inside the write transaction. ``heavy`` (O(n) work)
    commits from a worker thread, so the event loop never runs it."""
    records = record_set(conn)
    db = conn.db

    def plan(txn: WriteTxn) -> Any:
        return fn(Access(txn, records, db._now_ms(), txn))

    if heavy and getattr(conn, "txn", None) is None:
        return Offload(lambda: db._write(plan), then)
    return Write(plan, then)
