"""A stateful model of the record API, run against every engine.

hypothesis drives random sequences of writes, reads, clock moves and sweeps against a real
database and against ``Model``, a few plain dicts that state the record semantics of
DESIGN.md ("The record model") directly: generations, conditions, TTL in integer
milliseconds, ``operate`` and the change log. Every result, error and read is compared.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import engramdb
from engramdb import (
    Conflict,
    Database,
    FakeClock,
    InvalidArgument,
    Key,
    NotFound,
    Record,
    RecordSet,
    ops,
)
from engramdb.records.ops import (
    DeleteBin,
    Incr,
    ListAppend,
    ListTrim,
    MapPut,
    MapRemove,
    Op,
    Read,
    Touch,
    Write,
)

INT_MIN = -(1 << 63)
INT_MAX = (1 << 63) - 1
UINT_MAX = (1 << 64) - 1

SETS = ["s", "sa"]  # "sa" sorts right after "s": scans and counts must not mix them
KEYS: list[Key] = [-1, b"k", "k", "é"]  # few, so writes collide; "k" and b"k" are distinct
BIN_NAMES = ["n", "l", "m", "x"]
MAP_KEYS: list[str | int | bytes] = ["a", 1, b"b"]
TTLS: list[float | None] = [None, None, None, 0.0005, 0.001, 0.0015, 0.25, 1, 2.5]
POSITIVE_TTLS: list[float] = [0.0005, 0.001, 0.0015, 0.25, 1, 2.5]
ADVANCES = [0.0004, 0.001, 0.002, 0.1, 0.25, 1, 2.5, 5]

# --- strategies -------------------------------------------------------------------------------

values: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from([INT_MAX, INT_MIN, UINT_MAX]),
    st.floats(-4, 4, allow_nan=False),
    st.text(max_size=3),
    st.binary(max_size=2),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.sampled_from(MAP_KEYS), st.integers(0, 3), max_size=2),
)
bin_maps = st.dictionaries(st.sampled_from(BIN_NAMES), values, max_size=3)
addresses = st.tuples(st.sampled_from(["s", "s", "s", "sa"]), st.sampled_from(KEYS))
ttls = st.sampled_from(TTLS)
# Mostly unconditional, so records live long enough to be read, operated on and expire.
# Generations are never reused, so a meaningful expectation is relative to the model: the
# current generation, the one before it, one from an earlier life of the key (ABA), or 0.
generations = st.sampled_from(
    [None, None, None, None, None, 0, "current", "current", "previous", "earlier life", 1]
)
GenerationChoice = int | str | None
flags = st.sampled_from([(False, False)] * 4 + [(True, False), (False, True)])
bins = st.sampled_from(BIN_NAMES)
incr_by = st.one_of(
    st.integers(-3, 3), st.floats(-2, 2, allow_nan=False), st.sampled_from([INT_MAX, INT_MIN])
)
single_ops: st.SearchStrategy[Op] = st.one_of(
    st.lists(bins, max_size=2).map(lambda names: ops.read(*names)),
    st.builds(ops.write, bins, values),
    st.builds(ops.delete_bin, bins),
    st.builds(ops.incr, bins, incr_by),
    st.builds(ops.list_append, bins, values, st.one_of(st.none(), st.integers(1, 3))),
    st.builds(ops.list_trim, bins, st.integers(-3, 3), st.one_of(st.none(), st.integers(-3, 3))),
    st.builds(ops.map_put, bins, st.sampled_from(MAP_KEYS), values),
    st.builds(ops.map_remove, bins, st.sampled_from(MAP_KEYS)),
    st.sampled_from(POSITIVE_TTLS).map(ops.touch),
)
op_lists = st.lists(single_ops, min_size=1, max_size=4)


def nested(levels: int) -> list[Any]:
    outer: list[Any] = []
    inner = outer
    for _ in range(levels - 1):
        child: list[Any] = []
        inner.append(child)
        inner = child
    return outer


# Invalid requests, each invalid in exactly one way (see RecordMachine.rejected).
BAD_KEYS: list[Any] = [1.5, True, None, 1 << 63, "x" * 1025]
BAD_OPTIONS: dict[str, dict[str, Any]] = {
    "ttl=0": {"ttl": 0},
    "ttl=-1": {"ttl": -1},
    "ttl=inf": {"ttl": math.inf},
    "ttl=nan": {"ttl": math.nan},
    "ttl=True": {"ttl": True},
    "ttl=str": {"ttl": "1"},
    "expect_generation=-1": {"expect_generation": -1},
    "expect_generation=True": {"expect_generation": True},
    "expect_generation=1.0": {"expect_generation": 1.0},
    "create_only+update_only": {"create_only": True, "update_only": True},
}
BAD_BINS: list[dict[Any, Any]] = [
    {"x": {1, 2}},
    {"": 1},
    {"x" * 65: 1},
    {1: 1},
    {"x": 1 << 64},
    {"x": nested(33)},
    {"x": {(1,): 1}},
]
BAD_OP_LISTS: list[list[Any]] = [
    [],
    [ops.write("x", {1})],
    [ops.incr("n", True)],
    [ops.touch(0)],
    [ops.list_append("l", 1, max_len=0)],
    [ops.list_trim("l", 0.5)],  # type: ignore[arg-type]
    [ops.map_put("m", 1.5, 1)],  # type: ignore[arg-type]
    [ops.read(), "incr"],
    [ops.incr("n"), ops.write("", 1)],
]

# --- the model --------------------------------------------------------------------------------

Address = tuple[str, Key]
Outcome = tuple[str, Any]  # ("ok", result) or (error name, Conflict generation or None)


class Refused(Exception):
    """The model's verdict that a request fails; ``kind`` names the engramdb error."""

    def __init__(self, kind: str, generation: int | None = None) -> None:
        super().__init__(kind)
        self.kind = kind
        self.generation = generation


@dataclass
class Entry:
    bins: dict[str, Any]
    generation: int
    expires_ms: int  # 0 = never
    updated_ms: int


def expiry(ttl: float | None, now_ms: int) -> int:
    return 0 if ttl is None else now_ms + max(1, math.ceil(ttl * 1000))


def conditions_fail(
    generation: int, expect_generation: int | None, create_only: bool, update_only: bool
) -> bool:
    return (
        (expect_generation is not None and generation != expect_generation)
        or (create_only and generation > 0)
        or (update_only and generation == 0)
    )


def apply_model_ops(
    stored: dict[str, Any] | None, op_list: list[Op]
) -> tuple[dict[str, Any], list[Any], bool, float | None]:
    """The documented ``operate`` semantics: (bins, results, wrote, touched ttl)."""
    exists = stored is not None
    bins = dict(stored or {})
    results: list[Any] = []
    wrote = False
    touched: float | None = None
    for op in op_list:
        if isinstance(op, Read):
            results.append({n: bins.get(n) for n in op.bins} if op.bins else dict(bins))
            continue
        if isinstance(op, Touch):
            if not exists and not wrote:
                raise Refused("NotFound")
            touched = float(op.ttl)
            results.append(None)
        elif isinstance(op, Write):
            bins[op.bin] = op.value
            results.append(None)
        elif isinstance(op, DeleteBin):
            bins.pop(op.bin, None)
            results.append(None)
        elif isinstance(op, Incr):
            old = bins.get(op.bin)
            old = 0 if old is None else old
            if type(old) not in (int, float):
                raise Refused("InvalidArgument")
            new = old + op.by
            if type(new) is int and not INT_MIN <= new <= INT_MAX:
                raise Refused("InvalidArgument")
            bins[op.bin] = new
            results.append(new)
        elif isinstance(op, ListAppend):
            old = bins.get(op.bin)
            old = [] if old is None else old
            if type(old) is not list:
                raise Refused("InvalidArgument")
            items = [*old, op.value]
            if op.max_len is not None:
                items = items[-op.max_len :]
            bins[op.bin] = items
            results.append(len(items))
        elif isinstance(op, ListTrim):
            old = bins.get(op.bin)
            if old is None:
                results.append(0)
                continue  # nothing to trim: not a write
            if type(old) is not list:
                raise Refused("InvalidArgument")
            bins[op.bin] = old[op.start : op.stop]
            results.append(len(bins[op.bin]))
        elif isinstance(op, MapPut):
            old = bins.get(op.bin)
            old = {} if old is None else old
            if type(old) is not dict:
                raise Refused("InvalidArgument")
            bins[op.bin] = {**old, op.key: op.value}
            results.append(len(bins[op.bin]))
        elif isinstance(op, MapRemove):
            old = bins.get(op.bin)
            if old is None:
                results.append(None)
                continue  # nothing to remove from: not a write
            if type(old) is not dict:
                raise Refused("InvalidArgument")
            mapping = dict(old)
            results.append(mapping.pop(op.key, None))
            bins[op.bin] = mapping
        else:  # pragma: no cover - the strategies build only the kinds above
            raise AssertionError(op)
        wrote = True
    if not exists and not wrote:
        raise Refused("NotFound")
    return bins, results, wrote, touched


def documented_order(key: Key) -> tuple[int, Any]:
    return (0, key) if isinstance(key, int) else (1, key) if isinstance(key, bytes) else (2, key)


def typed(value: Any) -> Any:
    """A comparable form of a value that also compares types (so ``True`` is not ``1``)."""
    if isinstance(value, list):
        return ("list", tuple(typed(v) for v in value))
    if isinstance(value, dict):
        return ("dict", frozenset((typed(k), typed(v)) for k, v in value.items()))
    return (type(value).__name__, value)


def observe(fn: Callable[[], Any]) -> Outcome:
    try:
        return ("ok", fn())
    except Conflict as e:
        return ("Conflict", e.generation)
    except NotFound:
        return ("NotFound", None)
    except InvalidArgument:
        return ("InvalidArgument", None)


# --- the machine ------------------------------------------------------------------------------

Logged = tuple[str, Key, str, int, int]  # set, key, kind, generation, at_ms


class RecordMachine(RuleBasedStateMachine):
    engine: ClassVar[str] = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(1_700_000_000.0)
        self.tmp: tempfile.TemporaryDirectory[str] | None = None
        if self.engine == "memory":
            self.db: Database = engramdb.open(None, clock=self.clock, sweep_interval=None)
        else:
            self.tmp = tempfile.TemporaryDirectory(prefix="engramdb-stateful-")
            self.db = engramdb.open(
                Path(self.tmp.name) / "db",
                clock=self.clock,
                sweep_interval=None,
                durability="none",
                map_size=64 << 20,
            )
        self.sets: dict[str, RecordSet] = {name: self.db.records(name) for name in SETS}
        self.stored: dict[Address, Entry] = {}  # includes expired entries not yet swept
        self.lives: dict[Address, int] = {}  # the last generation of a key's earlier life
        self.sequence = 0

    def teardown(self) -> None:
        self.db.close()
        if self.tmp is not None:
            self.tmp.cleanup()

    # model helpers ---------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def live(self, address: Address) -> Entry | None:
        entry = self.stored.get(address)
        if entry is None or (entry.expires_ms and entry.expires_ms <= self.now_ms()):
            return None
        return entry

    def generation(self, address: Address) -> int:
        entry = self.live(address)
        return entry.generation if entry is not None else 0

    def expected_record(self, address: Address) -> Any:
        entry = self.live(address)
        if entry is None:
            return None
        return (
            typed(address[1]),
            typed(entry.bins),
            entry.generation,
            entry.expires_ms / 1000 if entry.expires_ms else None,
            entry.updated_ms / 1000,
        )

    @staticmethod
    def actual_record(record: Record | None) -> Any:
        if record is None:
            return None
        return (
            typed(record.key),
            typed(record.bins),
            record.generation,
            record.expires_at,
            record.updated_at,
        )

    def expectation(self, address: Address, choice: GenerationChoice) -> int | None:
        """The ``expect_generation`` a rule sends for ``choice`` (see ``generations``)."""
        if choice == "current":
            return self.generation(address)
        if choice == "previous":
            return max(0, self.generation(address) - 1)
        if choice == "earlier life":
            return self.lives.get(address, 1)
        assert choice is None or type(choice) is int
        return choice

    def write_entry(
        self, address: Address, bins: dict[str, Any], expires_ms: int
    ) -> tuple[int, list[Logged]]:
        now = self.now_ms()
        current = self.generation(address)
        if not current and address in self.stored:
            self.lives[address] = self.stored[address].generation
        # Never reused: a new life starts at the sequence of its creating change.
        generation = current + 1 if current else self.sequence + 1
        self.stored[address] = Entry(bins, generation, expires_ms, now)
        return generation, [(address[0], address[1], "put", generation, now)]

    def check_log(self, expected: list[Logged], *, ordered: bool = True) -> None:
        """The change log grew by exactly ``expected`` (in order unless ``ordered`` is off)."""
        changes = self.db.changes(self.sequence, limit=1000)
        assert [c.sequence for c in changes] == list(
            range(self.sequence + 1, self.sequence + 1 + len(changes))
        )
        got = [
            (c.set_name, typed(c.key), c.kind, c.generation, round(c.at * 1000)) for c in changes
        ]
        want = [(n, typed(k), kind, g, at) for n, k, kind, g, at in expected]
        if ordered:
            assert got == want
        else:  # one sweep: its expirations may come in any order
            assert sorted(got, key=repr) == sorted(want, key=repr)
        self.sequence += len(expected)
        assert self.db.last_sequence() == self.sequence

    def settle(self, got: Outcome, expected: Outcome, log: list[Logged]) -> None:
        assert got == expected
        self.check_log(log if got[0] == "ok" else [])

    # writes ----------------------------------------------------------------------------------

    @rule(
        address=addresses,
        bins=bin_maps,
        ttl=ttls,
        expect_generation=generations,
        only=flags,
    )
    def put(
        self,
        address: Address,
        bins: dict[str, Any],
        ttl: float | None,
        expect_generation: GenerationChoice,
        only: tuple[bool, bool],
    ) -> None:
        expect_generation = self.expectation(address, expect_generation)
        current = self.generation(address)
        log: list[Logged] = []
        if conditions_fail(current, expect_generation, *only):
            expected: Outcome = ("Conflict", current)
        else:
            generation, log = self.write_entry(address, dict(bins), expiry(ttl, self.now_ms()))
            expected = ("ok", generation)
        got = observe(
            lambda: self.sets[address[0]].put(
                address[1],
                bins,
                ttl=ttl,
                expect_generation=expect_generation,
                create_only=only[0],
                update_only=only[1],
            )
        )
        self.settle(got, expected, log)

    @rule(
        address=addresses,
        bins=bin_maps,
        ttl=ttls,
        expect_generation=generations,
        only=flags,
    )
    def update(
        self,
        address: Address,
        bins: dict[str, Any],
        ttl: float | None,
        expect_generation: GenerationChoice,
        only: tuple[bool, bool],
    ) -> None:
        expect_generation = self.expectation(address, expect_generation)
        entry = self.live(address)
        current = self.generation(address)
        log: list[Logged] = []
        if conditions_fail(current, expect_generation, *only):
            expected: Outcome = ("Conflict", current)
        else:
            merged = {**(entry.bins if entry else {}), **bins}
            if ttl is not None:
                expires = expiry(ttl, self.now_ms())
            else:
                expires = entry.expires_ms if entry else 0  # ttl None keeps the expiry
            generation, log = self.write_entry(address, merged, expires)
            expected = ("ok", generation)
        got = observe(
            lambda: self.sets[address[0]].update(
                address[1],
                bins,
                ttl=ttl,
                expect_generation=expect_generation,
                create_only=only[0],
                update_only=only[1],
            )
        )
        self.settle(got, expected, log)

    @rule(address=addresses, expect_generation=generations)
    def delete(self, address: Address, expect_generation: GenerationChoice) -> None:
        expect_generation = self.expectation(address, expect_generation)
        current = self.generation(address)
        log: list[Logged] = []
        if conditions_fail(current, expect_generation, False, False):
            expected: Outcome = ("Conflict", current)
        else:
            entry = self.stored.pop(address, None)
            if entry is not None:
                self.lives[address] = entry.generation
            if entry is None:
                expected = ("ok", False)
            elif current:
                expected = ("ok", True)
                log = [(*address, "delete", current, self.now_ms())]
            else:
                # Deleting an expired record that awaited the sweeper logs its expiry.
                expected = ("ok", False)
                log = [(*address, "expire", entry.generation, self.now_ms())]
        got = observe(
            lambda: self.sets[address[0]].delete(address[1], expect_generation=expect_generation)
        )
        self.settle(got, expected, log)

    @rule(address=addresses, ttl=st.sampled_from(POSITIVE_TTLS), expect_generation=generations)
    def touch(self, address: Address, ttl: float, expect_generation: GenerationChoice) -> None:
        expect_generation = self.expectation(address, expect_generation)
        entry = self.live(address)
        current = self.generation(address)
        log: list[Logged] = []
        if conditions_fail(current, expect_generation, False, False):
            expected: Outcome = ("Conflict", current)
        elif entry is None:
            expected = ("NotFound", None)
        else:
            generation, log = self.write_entry(address, entry.bins, expiry(ttl, self.now_ms()))
            expected = ("ok", generation)
        got = observe(
            lambda: self.sets[address[0]].touch(
                address[1], ttl, expect_generation=expect_generation
            )
        )
        self.settle(got, expected, log)

    @rule(
        address=addresses,
        op_list=op_lists,
        ttl=ttls,
        expect_generation=generations,
        only=flags,
    )
    def operate(
        self,
        address: Address,
        op_list: list[Op],
        ttl: float | None,
        expect_generation: GenerationChoice,
        only: tuple[bool, bool],
    ) -> None:
        expect_generation = self.expectation(address, expect_generation)
        entry = self.live(address)
        current = self.generation(address)
        before = self.actual_record(self.sets[address[0]].get(address[1]))
        log: list[Logged] = []
        expected: Outcome
        try:
            if conditions_fail(current, expect_generation, *only):
                raise Refused("Conflict", current)
            bins, results, wrote, touched = apply_model_ops(entry.bins if entry else None, op_list)
        except Refused as refused:
            expected = (refused.kind, refused.generation)
        else:
            expected = ("ok", typed(results))
            if wrote:
                now = self.now_ms()
                if touched is not None:
                    expires = expiry(touched, now)
                elif ttl is not None:
                    expires = expiry(ttl, now)
                else:
                    expires = entry.expires_ms if entry else 0
                _, log = self.write_entry(address, bins, expires)
        got = observe(
            lambda: typed(
                self.sets[address[0]].operate(
                    address[1],
                    op_list,
                    ttl=ttl,
                    expect_generation=expect_generation,
                    create_only=only[0],
                    update_only=only[1],
                )
            )
        )
        self.settle(got, expected, log)
        if got[0] != "ok" or not log:
            # A failed or read-only operate leaves the record exactly as it was.
            assert self.actual_record(self.sets[address[0]].get(address[1])) == before

    @rule(
        address=st.one_of(addresses, st.tuples(st.sampled_from(SETS), st.sampled_from(BAD_KEYS))),
        api=st.sampled_from(["put", "update", "operate", "touch", "delete"]),
        bad=st.sampled_from([*BAD_OPTIONS, "bins", "ops"]),
        payload=st.sampled_from(BAD_BINS),
        op_list=st.sampled_from(BAD_OP_LISTS),
    )
    def rejected(
        self,
        address: tuple[str, Any],
        api: str,
        bad: str,
        payload: dict[Any, Any],
        op_list: list[Any],
    ) -> None:
        """An invalid request raises InvalidArgument, whatever is stored, and changes nothing."""
        name, key = address
        options: dict[str, Any] = {}
        bins: dict[Any, Any] = {"n": 1}
        operations: list[Any] = [ops.incr("n")]
        applies = {
            "bins": api in ("put", "update"),
            "ops": api == "operate",
            "create_only+update_only": api in ("put", "update", "operate"),
        }
        if not applies.get(bad, True) or (bad.startswith("ttl=") and api == "delete"):
            bad = "expect_generation=-1"  # an argument every call takes
        if bad == "bins":
            bins = payload
        elif bad == "ops":
            operations = op_list
        else:
            options.update(BAD_OPTIONS[bad])
        ttl = options.pop("ttl", 1) if api == "touch" else 1
        records = self.sets[name]
        calls: dict[str, Callable[[], Any]] = {
            "put": lambda: records.put(key, bins, **options),
            "update": lambda: records.update(key, bins, **options),
            "operate": lambda: records.operate(key, operations, **options),
            "touch": lambda: records.touch(key, ttl, **options),
            "delete": lambda: records.delete(key, **options),
        }
        all_keys = [(n, k) for n in SETS for k in KEYS]
        before = [self.actual_record(self.sets[n].get(k)) for n, k in all_keys]
        assert observe(calls[api]) == ("InvalidArgument", None), (api, bad, key)
        assert [self.actual_record(self.sets[n].get(k)) for n, k in all_keys] == before
        self.check_log([])

    # time ------------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from(ADVANCES))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(
        address=addresses,
        at=st.sampled_from(["just before", "at", "just after"]),
    )
    def advance_to_expiry(self, address: Address, at: str) -> None:
        """Move the clock to one millisecond around a record's expiry."""
        entry = self.live(address)
        if entry is None or not entry.expires_ms:
            return
        target = entry.expires_ms + {"just before": -1, "at": 0, "just after": 1}[at]
        if target > self.now_ms():
            # Aim at the middle of the target millisecond so float rounding cannot miss it.
            self.clock.set((target + 0.5) / 1000)
            assert self.now_ms() == target

    @rule()
    def sweep(self) -> None:
        now = self.now_ms()
        due = sorted(
            (a for a, e in self.stored.items() if e.expires_ms and e.expires_ms <= now),
            key=lambda a: (a[0], documented_order(a[1])),
        )
        log: list[Logged] = [(*a, "expire", self.stored[a].generation, now) for a in due]
        for a in due:
            self.lives[a] = self.stored.pop(a).generation
        assert self.db.sweep() == len(due)
        self.check_log(log, ordered=False)
        assert self.db.sweep() == 0
        self.check_log([])

    # reads -----------------------------------------------------------------------------------

    @rule(address=addresses)
    def get(self, address: Address) -> None:
        record = self.sets[address[0]].get(address[1])
        assert self.actual_record(record) == self.expected_record(address)
        assert self.sets[address[0]].exists(address[1]) == (self.live(address) is not None)

    @rule(name=st.sampled_from(SETS), keys=st.lists(st.sampled_from(KEYS), max_size=6))
    def get_many(self, name: str, keys: list[Key]) -> None:
        got = [self.actual_record(r) for r in self.sets[name].get_many(keys)]
        assert got == [self.expected_record((name, k)) for k in keys]

    def expected_scan(self, name: str, prefix: str | bytes | None) -> list[Any]:
        keys = sorted(
            (
                k
                for n, k in self.stored
                if n == name
                and self.live((n, k)) is not None
                and (prefix is None or (type(k) is type(prefix) and k.startswith(prefix)))  # type: ignore[arg-type]
            ),
            key=documented_order,
        )
        return [self.expected_record((name, k)) for k in keys]

    @rule(
        name=st.sampled_from(SETS),
        prefix=st.sampled_from([None, None, "", "k", "é", b"", b"k", "x"]),
        limit=st.integers(1, 3),
    )
    def scan_pages(self, name: str, prefix: str | bytes | None, limit: int) -> None:
        records: list[Any] = []
        cursor: str | None = None
        for _ in range(len(KEYS) + 2):
            page = self.sets[name].scan(prefix, cursor=cursor, limit=limit)
            assert len(page.records) <= limit
            if page.cursor is not None:
                assert len(page.records) == limit
            records.extend(self.actual_record(r) for r in page.records)
            cursor = page.cursor
            if cursor is None:
                break
        assert cursor is None, "the scan did not finish"
        assert records == self.expected_scan(name, prefix)

    @rule(name=st.sampled_from(SETS), batch=st.integers(1, 3))
    def iterate(self, name: str, batch: int) -> None:
        got = [self.actual_record(r) for r in self.sets[name].iterate(batch=batch)]
        assert got == self.expected_scan(name, None)

    @invariant()
    def counts_match(self) -> None:
        for name in SETS:
            live = sum(1 for n, k in self.stored if n == name and self.live((n, k)))
            assert self.sets[name].count() == live

    @invariant()
    def log_is_settled(self) -> None:
        assert self.db.last_sequence() == self.sequence
        assert self.db.changes(self.sequence) == []

    @invariant()
    def sets_listed(self) -> None:
        # Sets holding a stored record, expired ones awaiting the sweeper included.
        assert self.db.sets() == sorted({n for n, _ in self.stored})


class LmdbRecordMachine(RecordMachine):
    engine = "lmdb"


SETTINGS = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TestMemoryRecordModel = RecordMachine.TestCase
TestMemoryRecordModel.settings = SETTINGS
TestLmdbRecordModel = LmdbRecordMachine.TestCase
TestLmdbRecordModel.settings = SETTINGS
