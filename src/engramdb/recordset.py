"""``RecordSet``: the record API of one set, over any engine.

Every write is a function of one engine transaction that reads the stored record, checks its
conditions, computes the new value and only then stages it. Validation and encoding that do
not depend on the stored record happen before the transaction, so bad input never reaches the
engine, and a write that fails leaves nothing behind.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

from engramdb.errors import EngramError, InvalidArgument, NotFound, RecordTooBig
from engramdb.records.codec import (
    FORMAT,
    HEADER,
    HEADER_SIZE,
    check_bins,
    decode_bins,
    encode_body,
    with_header,
)
from engramdb.records.keys import Key, decode_key, encode_key, key_prefix, set_prefix
from engramdb.records.model import Record, ScanPage
from engramdb.records.ops import Op, Read, apply_ops
from engramdb.records.writes import (
    KEEP,
    Conditions,
    Current,
    Outcome,
    Stored,
    TransformFn,
    _Keep,
    check_ttl,
    expiry_ms,
    make_conditions,
    record_from,
)
from engramdb.remote import DEFAULT_CAP, remote
from engramdb.storage.base import WriteFn, WriteTxn
from engramdb.writeplan import TransformStep

if TYPE_CHECKING:
    from engramdb.database import Database

__all__ = ["RecordSet"]

_HEADER_META = struct.Struct("<Qqq")  # the header after its format byte (records/codec.py)
_EXPIRES = struct.Struct("<q")  # expires_at_ms, at offset 9 of the header

P = ParamSpec("P")
R = TypeVar("R")


def _instrumented(
    name: str,
) -> Callable[[Callable[Concatenate[RecordSet, P], R]], Callable[Concatenate[RecordSet, P], R]]:
    """Count, time and classify errors of a public method (the golden signals)."""

    def decorate(
        fn: Callable[Concatenate[RecordSet, P], R],
    ) -> Callable[Concatenate[RecordSet, P], R]:
        @functools.wraps(fn)
        def wrapper(self: RecordSet, /, *args: P.args, **kwargs: P.kwargs) -> R:
            db = self._db
            if db._unusable is not None:
                db._raise_unusable()
            metrics = db._metrics.op(name)
            started = perf_counter_ns()
            try:
                return fn(self, *args, **kwargs)
            except EngramError as e:
                metrics.error(type(e).__name__)
                raise
            finally:
                metrics.observe(perf_counter_ns() - started)

        return wrapper

    return decorate


_PAGE = 1000  # records per atomic write of delete_prefix / truncate


def _pairs(items: Any) -> list[tuple[Key, Any]]:
    """``put_many``'s items as (key, bins) pairs: a mapping, or a list of pairs."""
    if isinstance(items, Mapping):
        return list(items.items())
    if isinstance(items, str | bytes) or not isinstance(items, list | tuple):
        raise InvalidArgument("put_many takes a mapping of key to bins, or a list of pairs")
    pairs: list[tuple[Key, Any]] = []
    for i, pair in enumerate(items):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise InvalidArgument(f"put_many item {i} is not a (key, bins) pair")
        pairs.append((pair[0], pair[1]))
    return pairs


def after_prefix(prefix: bytes) -> bytes:
    """The smallest byte string greater than every string starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\xff" * (len(prefix) + 1)
    return stripped[:-1] + bytes([stripped[-1] + 1])


class RecordSet:
    """The records of one set. Obtain with ``db.records(name)``."""

    def __init__(self, db: Database, name: str) -> None:
        self._db = db
        self._engine = db._engine
        self._limits = db.limits
        self._prefix = set_prefix(name, db.limits)
        self._str_prefix = self._prefix + b"\x03"
        # str keys this short cannot exceed max_key_bytes (UTF-8 is at most 4 bytes a char).
        self._short_str = db.limits.max_key_bytes // 4
        self._engine_get = db._engine.get
        self._clock = db._clock
        self._get_metrics = db._metrics.op("get")
        self.name = name

    def __repr__(self) -> str:
        return f"<RecordSet {self.name!r}>"

    def _rk(self, key: Key) -> bytes:
        return self._prefix + encode_key(key, self._limits)

    def _rk_of_text(self, text: bytes) -> bytes:
        """The record key of the str key whose UTF-8 encoding is ``text`` (the caller
        vouches that it is valid UTF-8: the server's Redis keys, checked as ASCII)."""
        if len(text) > self._limits.max_key_bytes:
            encode_key(text.decode("utf-8", "surrogatepass"), self._limits)  # raises
        return self._str_prefix + text

    def _live(self, rk: bytes) -> bytes | None:
        """The stored value under ``rk`` (header and encoded bins) if it is live now, else
        None. For the server's hot paths, which count their commands themselves."""
        raw = self._engine_get(rk)
        if raw is not None:
            expires_ms = _EXPIRES.unpack_from(raw, 9)[0]
            if expires_ms and expires_ms <= int(self._clock() * 1000):
                return None
        return raw

    # reads -------------------------------------------------------------------------------

    @remote("read")
    def get(self, key: Key) -> Record | None:
        """The record under ``key``, or None when it is missing or expired."""
        # The hottest path in the project: instrumentation and the common str-key encoding
        # are inlined here (the generic wrapper costs ~20% of an embedded get).
        db = self._db
        if db._unusable is not None:
            db._raise_unusable()
        metrics = self._get_metrics
        started = perf_counter_ns()
        try:
            if type(key) is str and len(key) <= self._short_str:
                rk = self._str_prefix + key.encode("utf-8", "surrogatepass")
            else:
                rk = self._prefix + encode_key(key, self._limits)
            raw = self._engine_get(rk)
            if raw is None:
                return None
            generation, expires_ms, updated_ms = _HEADER_META.unpack_from(raw, 1)
            if expires_ms and expires_ms <= int(self._clock() * 1000):
                return None
            return Record(
                key,
                decode_bins(raw),
                generation,
                expires_ms / 1000 if expires_ms else None,
                updated_ms / 1000,
            )
        except EngramError as e:
            metrics.error(type(e).__name__)
            raise
        finally:
            metrics.observe(perf_counter_ns() - started)

    @remote("read")
    @_instrumented("get_many")
    def get_many(self, keys: Sequence[Key]) -> list[Record | None]:
        """Records for ``keys`` in request order; None for each missing or expired one."""
        if isinstance(keys, str | bytes) or not isinstance(keys, Iterable):
            raise InvalidArgument("get_many takes a sequence of keys")
        keys = list(keys)
        prefix, str_prefix, short, limits = (
            self._prefix, self._str_prefix, self._short_str, self._limits,
        )  # fmt: skip
        rks = [
            str_prefix + k.encode("utf-8", "surrogatepass")
            if type(k) is str and len(k) <= short
            else prefix + encode_key(k, limits)
            for k in keys
        ]
        raws = self._engine.get_many(rks)
        now = self._db._now_ms()
        return [None if raw is None else record_from(key, raw, now) for key, raw in zip(keys, raws)]

    @remote("read")
    @_instrumented("exists")
    def exists(self, key: Key) -> bool:
        """Whether a live (unexpired) record is stored under ``key``."""
        raw = self._engine.get(self._rk(key))
        return Stored(raw, self._db._now_ms()).exists

    @remote("read")
    @_instrumented("count")
    def count(self) -> int:
        """Live (unexpired) records in the set."""
        return self._engine.count(self._prefix, self._db._now_ms())

    @remote("slow", caps={"limit": DEFAULT_CAP})
    @_instrumented("scan")
    def scan(
        self,
        prefix: str | bytes | None = None,
        *,
        start: Key | None = None,
        end: Key | None = None,
        reverse: bool = False,
        cursor: str | None = None,
        limit: int = 100,
    ) -> ScanPage:
        """Up to ``limit`` live records in key order, optionally only keys with ``prefix``
        and within ``start <= key < end``; ``reverse`` walks from the highest key down.

        Keys order as: ints numerically, then bytes, then str (each by their bytes). Pass the
        page's ``cursor`` back (with the same arguments) to continue; it is None once the
        scan is complete.
        """
        if type(limit) is not int or limit < 1:
            raise InvalidArgument(f"scan limit must be a positive int, not {limit!r}")
        if type(reverse) is not bool:
            raise InvalidArgument(f"reverse must be a bool, not {reverse!r}")
        base = self._prefix + (key_prefix(prefix) if prefix is not None else b"")
        lo, hi = base, after_prefix(base)
        if start is not None:
            lo = max(lo, self._prefix + encode_key(start, self._limits))
        if end is not None:
            hi = min(hi, self._prefix + encode_key(end, self._limits))
        if cursor is not None:
            try:
                last = self._prefix + bytes.fromhex(cursor)
            except (ValueError, TypeError) as e:
                raise InvalidArgument(f"invalid scan cursor {cursor!r}") from e
            if reverse:
                hi = min(hi, last)
            else:
                lo = max(lo, last + b"\x00")
        now = self._db._now_ms()
        cut = len(self._prefix)
        records: list[Record] = []
        seen: bytes | None = None
        while lo < hi:
            want = limit - len(records) + 1  # one more than needed tells whether more remain
            batch = self._engine.scan(lo, hi, want, reverse)
            for rk, raw in batch:
                if len(records) == limit:
                    assert seen is not None
                    return ScanPage(records, seen[cut:].hex())
                record = record_from(decode_key(rk[cut:]), raw, now)
                if record is not None:
                    records.append(record)
                seen = rk
            if len(batch) < want:
                break
            assert seen is not None
            if reverse:
                hi = seen
            else:
                lo = seen + b"\x00"
        return ScanPage(records, None)

    def iterate(
        self,
        prefix: str | bytes | None = None,
        *,
        start: Key | None = None,
        end: Key | None = None,
        reverse: bool = False,
        batch: int = 1000,
    ) -> Iterator[Record]:
        """Every live record (optionally with ``prefix``, within ``start <= key < end``), in
        key order or ``reverse``, fetched by pages of ``batch``."""
        cursor: str | None = None
        while True:
            page = self.scan(
                prefix, start=start, end=end, reverse=reverse, cursor=cursor, limit=batch
            )
            yield from page.records
            if page.cursor is None:
                return
            cursor = page.cursor

    # writes ------------------------------------------------------------------------------
    #
    # Each write is planned first: ``_plan_*`` validates and encodes what it can, then returns
    # the function that runs inside the engine transaction. The public method runs the plan
    # through group commit; the server submits the same plans without blocking its loop.

    @remote("write", plan="_plan_put")
    @_instrumented("put")
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
        """Store ``bins`` as the whole record (replacing any bins it had).

        ``ttl`` is seconds until it expires (None: never). Returns the new generation.
        Raises ``Conflict`` when a condition fails.
        """
        plan = self._plan_put(
            key,
            bins,
            ttl=ttl,
            expect_generation=expect_generation,
            create_only=create_only,
            update_only=update_only,
        )
        return cast(int, self._db._write(plan))

    def _plan_put(
        self,
        key: Key,
        bins: Mapping[str, Any],
        *,
        ttl: float | None = None,
        expect_generation: int | None = None,
        create_only: bool = False,
        update_only: bool = False,
    ) -> WriteFn:
        rk = self._rk(key)
        body = encode_body(check_bins(bins, self._limits), self._limits)
        conditions = make_conditions(expect_generation, create_only, update_only)
        check_ttl(ttl)
        return self._plan_put_body(rk, body, conditions, ttl)

    def _plan_put_body(
        self,
        rk: bytes,
        body: bytes,
        conditions: Conditions | None = None,
        ttl: float | None = None,
    ) -> WriteFn:
        """``put`` of already encoded bins ``body`` under record key ``rk`` (the server's SET
        comes here directly)."""
        now_ms = self._db._now_ms
        pack, unpack = HEADER.pack, _HEADER_META.unpack_from

        def write(txn: WriteTxn) -> int:
            # The rules of ``Stored``, inlined: this runs once per put.
            now = now_ms()
            raw = txn.get(rk)
            prev: int | None = None
            generation = 0
            if raw is not None:
                generation, prev, _ = unpack(raw, 1)
                if prev and prev <= now:
                    generation = 0  # expired, awaiting the sweeper: a new record
            if conditions is not None:
                conditions.check(generation)
            # Never reuse a generation: a new record starts at its change's sequence.
            generation = generation + 1 if generation else txn.next_sequence()
            expires = 0 if ttl is None else expiry_ms(ttl, now)
            txn.put(rk, pack(FORMAT, generation, expires, now) + body, expires, prev)
            txn.log("put", rk, generation, now)
            return generation

        return write

    @remote("write", plan="_plan_update")
    @_instrumented("update")
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
        """Merge ``bins`` into the record (creating it if needed); other bins are kept.

        ``ttl`` None keeps the record's current expiry. Returns the new generation.
        """
        plan = self._plan_update(
            key,
            bins,
            ttl=ttl,
            expect_generation=expect_generation,
            create_only=create_only,
            update_only=update_only,
        )
        return cast(int, self._db._write(plan))

    def _plan_update(
        self,
        key: Key,
        bins: Mapping[str, Any],
        *,
        ttl: float | None = None,
        expect_generation: int | None = None,
        create_only: bool = False,
        update_only: bool = False,
    ) -> WriteFn:
        check_bins(bins, self._limits)
        changes = dict(bins)

        def merge(current: Current, now: int) -> Outcome:
            merged = dict(current.bins) if current.bins is not None else {}
            merged.update(changes)
            return Outcome(None, merged, expiry_ms(ttl, now) if ttl is not None else KEEP)

        check_ttl(ttl)
        return self._plan_transform(
            [(key, merge)],
            conditions=make_conditions(expect_generation, create_only, update_only),
            single=True,
            result="generation",
        )

    @remote("write", plan="_plan_delete")
    @_instrumented("delete")
    def delete(self, key: Key, *, expect_generation: int | None = None) -> bool:
        """Remove the record. Returns whether a live record was removed."""
        return cast(bool, self._db._write(self._plan_delete(key, expect_generation)))

    def _plan_delete(self, key: Key, expect_generation: int | None = None) -> WriteFn:
        def remove(current: Current, now: int) -> Outcome:
            return Outcome(current.bins is not None, None)

        return self._plan_transform(
            [(key, remove)],
            conditions=make_conditions(expect_generation, False, False),
            single=True,
        )

    @remote("write", plan="_plan_touch")
    @_instrumented("touch")
    def touch(self, key: Key, ttl: float, *, expect_generation: int | None = None) -> int:
        """Set the record to expire ``ttl`` seconds from now. Returns the new generation.

        Raises ``NotFound`` when the record is missing or expired.
        """
        return cast(int, self._db._write(self._plan_touch(key, ttl, expect_generation)))

    def _plan_touch(self, key: Key, ttl: float, expect_generation: int | None = None) -> WriteFn:
        if ttl is None:
            raise InvalidArgument("touch needs a ttl (seconds); to keep a record, put it")
        check_ttl(ttl)

        def refresh(current: Current, now: int) -> Outcome:
            if current.bins is None:
                raise NotFound(f"touch: no record {key!r} in set {self.name!r}")
            return Outcome(None, KEEP, expiry_ms(ttl, now))

        return self._plan_transform(
            [(key, refresh)],
            conditions=make_conditions(expect_generation, False, False),
            single=True,
            result="generation",
        )

    @remote("write", plan="_plan_operate", wire={"ops": "ops"})
    @_instrumented("operate")
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
        """Apply ``ops`` (from ``engramdb.ops``) atomically, in order; returns each result.

        A record is created when an operation writes to a missing one; the generation grows
        by one per call that writes anything. ``ttl`` (or a ``touch`` op) sets the expiry,
        otherwise it is kept. Reading a missing record raises ``NotFound``; an operation on a
        bin of the wrong type raises ``InvalidArgument`` and nothing is changed.
        """
        conditions = make_conditions(expect_generation, create_only, update_only)
        if isinstance(ops, list | tuple) and ops and all(type(op) is Read for op in ops):
            # Read-only: no write transaction, no generation bump.
            current = Stored(self._engine.get(self._rk(key)), self._db._now_ms())
            if conditions is not None:
                conditions.check(current.generation)
            applied = apply_ops(current.bins(), ops, self._limits)
            if applied.bins is None:
                raise NotFound(f"operate: no record {key!r} in set {self.name!r}")
            return applied.results
        plan = self._plan_operate(
            key,
            ops,
            ttl=ttl,
            expect_generation=expect_generation,
            create_only=create_only,
            update_only=update_only,
        )
        return cast(list[Any], self._db._write(plan))

    def _plan_operate(
        self,
        key: Key,
        ops: Sequence[Op],
        *,
        ttl: float | None = None,
        expect_generation: int | None = None,
        create_only: bool = False,
        update_only: bool = False,
    ) -> WriteFn:
        if not isinstance(ops, list | tuple) or not ops:
            raise InvalidArgument("operate needs a non-empty list of operations")
        limits = self._limits

        def run(current: Current, now: int) -> Outcome:
            applied = apply_ops(current.bins, ops, limits)
            if applied.bins is None:
                raise NotFound(f"operate: no record {key!r} in set {self.name!r}")
            if not applied.wrote:
                return Outcome(applied.results)
            if applied.touched_ttl is not None:
                expires: int | _Keep = expiry_ms(applied.touched_ttl, now)
            elif ttl is not None:
                expires = expiry_ms(ttl, now)
            else:
                expires = KEEP
            return Outcome(applied.results, applied.bins, expires)

        check_ttl(ttl)
        return self._plan_transform(
            [(key, run)],
            conditions=make_conditions(expect_generation, create_only, update_only),
            single=True,
        )

    @remote("write", plan="_plan_put_many")
    @_instrumented("put_many")
    def put_many(
        self,
        items: Mapping[Key, Mapping[str, Any]] | Sequence[tuple[Key, Mapping[str, Any]]],
        *,
        ttl: float | None = None,
    ) -> list[int]:
        """Store every ``(key, bins)`` of ``items`` (a mapping or a sequence of pairs) in one
        atomic write, each replacing its record; returns each new generation, in order.

        A key given twice is written twice, in order (the last bins win). All of it is
        validated before anything is written; remotely the batch must fit one request
        (``RequestTooLarge`` says so: split it, or raise the server's ``--max-frame``).
        """
        return cast(list[int], self._db._write(self._plan_put_many(items, ttl=ttl)))

    def _plan_put_many(
        self,
        items: Mapping[Key, Mapping[str, Any]] | Sequence[tuple[Key, Mapping[str, Any]]],
        *,
        ttl: float | None = None,
    ) -> WriteFn:
        pairs = _pairs(items)
        check_ttl(ttl)
        limits, str_prefix, short = self._limits, self._str_prefix, self._short_str
        encoded = [
            (
                str_prefix + key.encode("utf-8", "surrogatepass")
                if type(key) is str and len(key) <= short
                else self._rk(key),
                encode_body(check_bins(bins, limits), limits),
            )
            for key, bins in pairs
        ]
        now_ms = self._db._now_ms

        def write(txn: WriteTxn) -> list[int]:
            # The Stored rules, inlined: this loop is the whole cost of a bulk load.
            now = now_ms()
            expires = expiry_ms(ttl, now)
            get, put, log, unpack = txn.get, txn.put, txn.log, _HEADER_META.unpack_from
            generations: list[int] = []
            for rk, body in encoded:
                raw = get(rk)  # sees this batch's earlier puts
                prev: int | None = None
                generation = 0
                if raw is not None:
                    generation, prev, _ = unpack(raw, 1)
                    if prev and prev <= now:
                        generation = 0  # expired, awaiting the sweeper: a new record
                generation = generation + 1 if generation else txn.next_sequence()
                put(rk, with_header(body, generation, expires, now), expires, prev)
                log("put", rk, generation, now)
                generations.append(generation)
            return generations

        return write

    @remote("write", plan="_plan_delete_many")
    @_instrumented("delete_many")
    def delete_many(self, keys: Sequence[Key]) -> int:
        """Remove the records under ``keys`` in one atomic write; returns how many live
        records were removed (missing and expired ones count 0)."""
        return cast(int, self._db._write(self._plan_delete_many(keys)))

    def _plan_delete_many(self, keys: Sequence[Key]) -> WriteFn:
        if isinstance(keys, str | bytes) or not isinstance(keys, list | tuple):
            raise InvalidArgument("delete_many takes a list of keys")
        rks = [self._rk(key) for key in keys]
        now_ms = self._db._now_ms

        def remove(txn: WriteTxn) -> int:
            now = now_ms()
            removed = 0
            for rk in rks:
                current = Stored(txn.get(rk), now)
                if current.prev_expires_ms is None:
                    continue
                txn.delete(rk, current.prev_expires_ms)
                if current.exists:
                    txn.log("delete", rk, current.generation, now)
                    removed += 1
                else:  # expired, awaiting the sweeper: its removal is its expiry
                    txn.log("expire", rk, current.stored_generation, now)
            return removed

        return remove

    @remote("slow", writes=True)
    def delete_prefix(self, prefix: str | bytes) -> int:
        """Remove every record whose key starts with ``prefix``; returns how many.

        Removal goes in atomic pages of 1,000 records (a crash may leave a tail of the
        prefix behind; run it again). Records added under the prefix meanwhile may or may
        not be removed.
        """
        if not isinstance(prefix, str | bytes):
            raise InvalidArgument(f"a prefix is str or bytes, not {type(prefix).__name__}")
        return self._remove_pages(prefix)

    @remote("slow", writes=True)
    def truncate(self) -> int:
        """Remove every record of the set (in atomic pages of 1,000); returns how many."""
        return self._remove_pages(None)

    def _remove_pages(self, prefix: str | bytes | None) -> int:
        removed = 0
        while True:
            page = self.scan(prefix, limit=_PAGE)
            if not page.records:
                return removed
            removed += self.delete_many([r.key for r in page.records])

    def transform(self, key: Key, fn: TransformFn) -> Any:
        """Atomically read-modify-write one record with ``fn(current, now_ms) -> Outcome``.

        ``fn`` runs inside the write transaction (keep it short and free of I/O) and sees
        the record as ``Current`` (``bins`` is None when it is absent or expired). Its
        ``Outcome`` says what to return and what to store: new bins, None to delete, or
        ``KEEP``; and a new absolute expiry in ms (0 = never) or ``KEEP``. Embedded only:
        the network client cannot ship functions.
        """
        return self._db._write(self._plan_transform([(key, fn)], single=True, validate=True))

    def transform_many(self, items: Sequence[tuple[Key, TransformFn]]) -> list[Any]:
        """``transform`` over several records in one atomic transaction."""
        return cast(list[Any], self._db._write(self._plan_transform(items, validate=True)))

    def _plan_transform(
        self,
        items: Sequence[tuple[Key, TransformFn]],
        *,
        conditions: Conditions | None = None,
        single: bool = False,
        result: str = "outcome",
        validate: bool = False,
        raw: bool = False,
    ) -> WriteFn:
        """The one write path: every record write above is a transform (see ``TransformStep``).

        ``result="generation"`` returns the written generation instead of the outcome's
        result. ``raw=True`` hands each ``fn`` the stored body undecoded (``Current.body``)
        instead of its bins: the server edits long Redis lists in place this way.
        """
        if single and len(items) == 1:
            key, fn = items[0]
            return self._plan_one(self._rk(key), fn, conditions, result, validate, raw)
        step = self._step(items, conditions=conditions, result=result, validate=validate, raw=raw)
        now_ms = self._db._now_ms

        def write(txn: WriteTxn) -> Any:
            now = now_ms()
            results = step.stage(txn, step.prepare(txn, now, txn.next_sequence()), now)
            return results[0] if single else results

        return write

    def _plan_one(
        self,
        rk: bytes,
        fn: TransformFn,
        conditions: Conditions | None = None,
        result: str = "outcome",
        validate: bool = False,
        raw: bool = False,
    ) -> WriteFn:
        """``_plan_transform`` of one record (``single``): the rules of ``TransformStep``
        (prepare, then stage) for one item, without its lists and overlay. Most writes are
        of one record, and the server makes one per command."""
        limits = self._limits
        now_ms = self._db._now_ms
        unpack, pack = _HEADER_META.unpack_from, HEADER.pack
        want_generation = result == "generation"

        def write(txn: WriteTxn) -> Any:
            now = now_ms()
            stored = txn.get(rk)
            prev: int | None = None  # what the engine must replace (None: nothing stored)
            generation = expires_ms = stored_generation = 0
            if stored is not None:
                generation, prev, _ = unpack(stored, 1)
                if prev and prev <= now:  # expired, awaiting the sweeper: absent
                    stored_generation, generation = generation, 0
                    stored = None
                else:
                    expires_ms = prev
            if conditions is not None:
                conditions.check(generation)
            if raw:
                body = None if stored is None else memoryview(stored)[HEADER_SIZE:]
                outcome = fn(Current(None, generation, expires_ms, body), now)
            else:
                bins = None if stored is None else decode_bins(stored)
                outcome = fn(Current(bins, generation, expires_ms), now)
            new, expires = outcome.bins, outcome.expires_ms
            if new is None:
                if prev is not None:
                    txn.delete(rk, prev)
                    if generation:
                        txn.log("delete", rk, generation, now)
                    else:  # expired, awaiting the sweeper: its removal is its expiry
                        txn.log("expire", rk, stored_generation, now)
                return outcome.result
            if new is KEEP:
                if expires is KEEP or stored is None:
                    return outcome.result  # nothing to write
                encoded = stored[HEADER_SIZE:]
            elif type(new) is bytes and not validate:
                encoded = new
                if HEADER_SIZE + len(encoded) > limits.max_record_bytes:
                    raise RecordTooBig(
                        f"record encodes to {HEADER_SIZE + len(encoded)} bytes; the limit is "
                        f"{limits.max_record_bytes}"
                    )
            else:
                if validate:
                    check_bins(new, limits)
                encoded = encode_body(new, limits)  # type: ignore[arg-type]
            expires_at: int = expires_ms if expires is KEEP else expires  # type: ignore[assignment]
            # Never reuse a generation: a new record starts at its change's sequence.
            generation = generation + 1 if generation else txn.next_sequence()
            txn.put(rk, pack(FORMAT, generation, expires_at, now) + encoded, expires_at, prev)
            txn.log("put", rk, generation, now)
            return generation if want_generation else outcome.result

        return write

    def _step(
        self,
        items: Sequence[tuple[Key, TransformFn]],
        *,
        conditions: Conditions | None = None,
        result: str = "outcome",
        validate: bool = False,
        raw: bool = False,
    ) -> TransformStep:
        """A transform over records of this set, to combine with steps over other sets in one
        transaction (``Database._write_steps``)."""
        keyed = [(self._rk(key), fn) for key, fn in items]
        return TransformStep(keyed, self._limits, conditions, result, validate, raw)
