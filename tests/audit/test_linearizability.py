"""The linearizability checker, judged three ways.

1. Hand-made register histories whose verdict is known: stale reads, lost updates, racing
   compare-and-sets, overlapping writes that admit both orders, reads going back in time,
   and writes whose outcome is unknown (they may have applied, late, or never).
2. A property: histories generated from a sequential register model, every operation given
   an interval around its true linearization point, are always accepted; the same histories
   with one read (or one compare-and-set) made impossible are always rejected.
3. A property: on small histories of any shape, the checker agrees with a brute-force
   search over every order (``_linearizable_by_brute_force``, written independently).

Times are plain numbers; an operation with ``end=None`` has an unknown outcome.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engramdb.audit.linearizability import Kind, Operation, check, check_key, self_test

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NEVER_WRITTEN = -1


def op(
    client: int,
    kind: Kind,
    start: float,
    end: float | None,
    value: Any = None,
    output: Any = None,
    key: str = "k",
) -> Operation:
    return Operation(client, key, kind, start, end, value, output)


def write(client: int, start: float, end: float | None, value: Any) -> Operation:
    return op(client, "write", start, end, value)


def read(client: int, start: float, end: float | None, output: Any) -> Operation:
    return op(client, "read", start, end, output=output)


def cas(
    client: int, start: float, end: float | None, expected: Any, new: Any, ok: bool | None
) -> Operation:
    return op(client, "cas", start, end, (expected, new), ok)


# 1. hand-made histories -----------------------------------------------------------------

LINEARIZABLE: dict[str, list[Operation]] = {
    "empty read": [read(0, 0, 1, None)],
    "write then read": [write(0, 0, 1, 1), read(1, 2, 3, 1)],
    "a read overlapping a write may see the old value": [
        write(0, 0, 10, 1),
        read(1, 1, 2, None),
        read(2, 3, 4, 1),
    ],
    "a read overlapping a write may see the new value": [write(0, 0, 10, 1), read(1, 1, 2, 1)],
    "touching intervals are concurrent": [write(0, 0, 1, 1), read(1, 1, 2, None)],
    "overlapping writes, first order": [
        write(0, 0, 10, 1),
        write(1, 0, 10, 2),
        read(2, 11, 12, 2),
    ],
    "overlapping writes, other order": [
        write(0, 0, 10, 1),
        write(1, 0, 10, 2),
        read(2, 11, 12, 1),
    ],
    "overlapping writes, reads during them see both orders' prefixes": [
        write(0, 0, 10, 1),
        write(1, 0, 10, 2),
        read(2, 1, 2, 1),
        read(3, 3, 4, 2),
    ],
    "concurrent reads may disagree while a write is in flight": [
        write(0, 0, 1, 1),
        write(0, 2, 10, 2),
        read(1, 3, 6, 2),
        read(2, 4, 5, 1),
    ],
    "racing compare-and-sets, one wins": [
        cas(0, 0, 5, None, 1, True),
        cas(1, 0, 5, None, 2, False),
        read(2, 6, 7, 1),
    ],
    "racing compare-and-sets, both win in a chain": [
        cas(0, 0, 5, None, 1, True),
        cas(1, 0, 5, 1, 2, True),
        read(2, 6, 7, 2),
    ],
    "compare-and-set fails against a concurrent write": [
        write(0, 0, 5, 1),
        cas(1, 1, 4, None, 2, False),
        read(2, 6, 7, 1),
    ],
    "unknown write applied": [write(0, 0, None, 7), read(1, 5, 6, 7)],
    "unknown write never applied": [write(0, 0, None, 7), read(1, 5, 6, None)],
    "unknown write applied late": [
        write(0, 0, None, 7),
        read(1, 5, 6, None),
        read(1, 7, 8, 7),
    ],
    "unknown write applied, then overwritten": [
        write(0, 0, None, 7),
        read(1, 1, 2, 7),
        write(1, 3, 4, 8),
        read(1, 5, 6, 8),
    ],
    "unknown compare-and-set applied": [
        write(0, 0, 1, 1),
        cas(1, 2, None, 1, 2, None),
        read(2, 5, 6, 2),
    ],
    "unknown compare-and-set not applied": [
        write(0, 0, 1, 1),
        cas(1, 2, None, 1, 2, None),
        read(2, 5, 6, 1),
    ],
    "an unanswered read constrains nothing": [write(0, 0, 1, 1), read(1, 2, None, 42)],
}

NOT_LINEARIZABLE: dict[str, list[Operation]] = {
    "stale read": [write(0, 0, 1, 1), write(0, 2, 3, 2), read(1, 4, 5, 1)],
    "read before any write sees a value": [read(1, 0, 1, 1), write(0, 2, 3, 1)],
    "read of a value never written": [write(0, 0, 1, 1), read(1, 2, 3, NEVER_WRITTEN)],
    "read after a finished write sees nothing": [write(0, 0, 1, 1), read(1, 2, 3, None)],
    "reads go back in time": [write(0, 0, 10, 1), read(1, 1, 2, 1), read(2, 3, 4, None)],
    "reads go back in time across writes": [
        write(0, 0, 1, 1),
        write(0, 2, 10, 2),
        read(1, 3, 4, 2),
        read(2, 5, 6, 1),
    ],
    "overlapping writes, reads see both orders": [
        write(0, 0, 10, 1),
        write(1, 0, 10, 2),
        read(2, 11, 12, 1),
        read(3, 13, 14, 2),
    ],
    "overlapping writes, reads flip back": [
        write(0, 0, 10, 1),
        write(1, 0, 10, 2),
        read(2, 1, 2, 1),
        read(3, 3, 4, 2),
        read(4, 5, 6, 1),
    ],
    "lost update: two compare-and-sets from the same value both win": [
        cas(0, 0, 1, None, 1, True),
        cas(1, 2, 3, None, 2, True),
    ],
    "racing compare-and-sets both win": [
        cas(0, 0, 5, None, 1, True),
        cas(1, 0, 5, None, 2, True),
    ],
    "racing compare-and-sets both lose": [
        cas(0, 0, 5, None, 1, False),
        cas(1, 0, 5, None, 2, False),
    ],
    "racing compare-and-sets, read sees the loser": [
        cas(0, 0, 5, None, 1, True),
        cas(1, 0, 5, None, 2, False),
        read(2, 6, 7, 2),
    ],
    "compare-and-set fails on a matching value": [
        write(0, 0, 1, 1),
        cas(1, 2, 3, 1, 2, False),
    ],
    "compare-and-set wins on a value never held": [cas(0, 0, 1, 5, 6, True)],
    "unknown write seen before it was invoked": [read(1, 0, 1, 7), write(0, 2, None, 7)],
    "unknown write un-applied": [
        write(0, 0, None, 7),
        read(1, 1, 2, 7),
        read(1, 3, 4, None),
    ],
    "unknown write cannot hide a lost update": [
        write(0, 0, None, 7),
        cas(1, 1, 2, None, 1, True),
        cas(2, 3, 4, None, 2, True),
    ],
}


@pytest.mark.parametrize("name", sorted(LINEARIZABLE))
def test_linearizable_histories_are_accepted(name: str) -> None:
    assert check_key(LINEARIZABLE[name]) is True
    assert _linearizable_by_brute_force(LINEARIZABLE[name]), "the case itself is wrong"


@pytest.mark.parametrize("name", sorted(NOT_LINEARIZABLE))
def test_violations_are_rejected(name: str) -> None:
    assert check_key(NOT_LINEARIZABLE[name]) is False
    assert not _linearizable_by_brute_force(NOT_LINEARIZABLE[name]), "the case itself is wrong"


@pytest.mark.parametrize("reverse", [False, True])
def test_the_verdict_does_not_depend_on_the_order_operations_are_listed(reverse: bool) -> None:
    for cases, expected in ((LINEARIZABLE, True), (NOT_LINEARIZABLE, False)):
        for history in cases.values():
            shuffled = sorted(history, key=lambda o: (o.start, o.client), reverse=reverse)
            assert check_key(shuffled) is expected


# Found by comparing with the brute-force search. Two writes time out (their outcome is
# unknown); a read sees the second one invoked, and a later compare-and-set expects the
# first: both applied, in the opposite order to their invocations. When the checker undoes an
# unknown-outcome operation whose remaining outcome it has already explored from the same
# configuration, it skips trying the operations after it instead of moving on to them.
UNKNOWN_WRITES_APPLIED_OUT_OF_ORDER = [
    write(0, 4, None, 1),
    write(1, 3, None, 2),
    cas(2, 6, 6, 1, 3, True),
    read(3, 4, 5, 2),
]


def test_unknown_writes_applied_in_the_other_order_are_accepted() -> None:
    if not _linearizable_by_brute_force(UNKNOWN_WRITES_APPLIED_OUT_OF_ORDER):
        pytest.fail("the case itself is wrong")
    assert check_key(UNKNOWN_WRITES_APPLIED_OUT_OF_ORDER) is True


def test_check_partitions_by_key_and_reports_the_failing_ones() -> None:
    history = [
        *(replace(o, key="good") for o in LINEARIZABLE["write then read"]),
        *(replace(o, key="bad") for o in NOT_LINEARIZABLE["stale read"]),
        # nothing was written to this key: keys are independent registers
        replace(read(9, 4, 5, None), key="other"),
    ]
    verdict = check(history)
    assert verdict.linearizable is False
    assert verdict.keys == 3
    assert verdict.operations == len(history)
    assert verdict.failed_keys == ["bad"]
    assert verdict.undecided_keys == []
    assert {o.key for o in verdict.example} == {"bad"}


def test_check_accepts_an_empty_history() -> None:
    verdict = check([])
    assert verdict.linearizable is True
    assert verdict.keys == 0


def test_a_history_beyond_the_budget_is_undecided_not_judged() -> None:
    # Many overlapping writes and reads: more configurations than a budget of 10 allows.
    history = [write(i, 0, 100, i) for i in range(8)] + [read(9, 101, 102, 3)]
    assert check_key(history, budget=10) is None
    verdict = check(history, budget_per_key=10)
    assert verdict.linearizable is None
    assert verdict.undecided_keys == ["k"]
    assert check_key(history) is True


def test_the_built_in_self_test_passes() -> None:
    assert self_test() == []


# 2. histories from a sequential model ---------------------------------------------------


@st.composite
def sequential_histories(draw: st.DrawFn, *, unknown: bool) -> list[Operation]:
    """Run a register sequentially, then give every operation an interval around its
    linearization point. Intervals only ever contain their own point, so the real-time
    order they impose is the true order or looser: the history is linearizable.

    With ``unknown``, some writes and compare-and-sets lose their reply (``end=None``) after
    taking effect, and some writes that never took effect are added, also unanswered.
    """
    state: Any = None
    held: list[Any] = [None]  # values the register has held, for compare-and-set guesses
    ops: list[Operation] = []
    point = 0
    for i in range(draw(st.integers(1, 12))):
        point += draw(st.integers(1, 3))
        start = point - draw(st.integers(0, 8))
        end: int | None = point + draw(st.integers(0, 8))
        kind = draw(st.sampled_from(["read", "write", "write", "cas"]))
        value = 100 + i  # unique, as the audit's are
        if kind == "read":
            ops.append(read(i, start, end, state))
            continue
        if unknown and draw(st.integers(0, 3)) == 0:
            end = None
        if kind == "write":
            state = value
            held.append(value)
            ops.append(write(i, start, end, value))
        else:
            expected = draw(st.sampled_from(held))
            won = state == expected
            if won:
                state = value
                held.append(value)
            ops.append(cas(i, start, end, expected, value, None if end is None else won))
    if unknown:
        for j in range(draw(st.integers(0, 2))):
            start = draw(st.integers(0, point))
            ops.append(write(50 + j, start, None, 1000 + j))  # never took effect
    return ops


@SETTINGS
@given(sequential_histories(unknown=False))
def test_histories_of_a_sequential_register_are_accepted(history: list[Operation]) -> None:
    assert check_key(history) is True


@SETTINGS
@given(sequential_histories(unknown=True))
@example(UNKNOWN_WRITES_APPLIED_OUT_OF_ORDER)
def test_histories_with_unknown_outcomes_are_accepted(history: list[Operation]) -> None:
    assert check_key(history) is True


@st.composite
def mutated_histories(draw: st.DrawFn) -> list[Operation]:
    """A sequential history with one answered read, or one successful compare-and-set, made
    to depend on a value no operation ever wrote."""
    history = draw(sequential_histories(unknown=draw(st.booleans())))
    candidates = [
        i
        for i, o in enumerate(history)
        if o.end is not None and (o.kind == "read" or (o.kind == "cas" and o.output))
    ]
    if not candidates:
        last = max(o.start if o.end is None else o.end for o in history)
        return [*history, read(99, last + 1, last + 2, NEVER_WRITTEN)]
    i = draw(st.sampled_from(candidates))
    o = history[i]
    if o.kind == "read":
        history[i] = read(o.client, o.start, o.end, NEVER_WRITTEN)
    else:
        history[i] = cas(o.client, o.start, o.end, NEVER_WRITTEN, o.input[1], True)
    return history


@SETTINGS
@given(mutated_histories())
def test_a_value_never_written_is_always_rejected(history: list[Operation]) -> None:
    assert check_key(history) is False


# 3. agreement with brute force ------------------------------------------------------------


def _linearizable_by_brute_force(history: list[Operation]) -> bool:
    """Try every order that respects real time; unknown outcomes may apply or not."""
    ops = [o for o in history if not (o.kind == "read" and o.end is None)]
    returned = {i: o.end for i, o in enumerate(ops) if o.end is not None}
    must = frozenset(returned)

    def outcomes(state: Any, o: Operation) -> list[Any]:
        if o.kind == "read":
            return [state] if o.output == state else []
        if o.kind == "write":
            return [o.input]
        expected, new = o.input
        matched = state == expected
        if o.end is not None and matched != o.output:
            return []
        return [new] if matched else [state]

    @functools.cache
    def search(done: frozenset[int], state: Any) -> bool:
        if must <= done:
            return True  # the unknown ones left over never took effect
        for i, o in enumerate(ops):
            if i in done:
                continue
            # every operation that returned before this one was invoked goes first
            if any(j not in done and end < o.start for j, end in returned.items()):
                continue
            if any(search(done | {i}, after) for after in outcomes(state, o)):
                return True
        return False

    return search(frozenset(), None)


@st.composite
def small_histories(draw: st.DrawFn, *, unknown: bool) -> list[Operation]:
    """Up to six operations on one key, of any shape: most are not linearizable."""
    ops: list[Operation] = []
    values: list[Any] = [None]
    for i in range(draw(st.integers(1, 6))):
        start = draw(st.integers(0, 8))
        end: int | None = start + draw(st.integers(0, 4))
        kind = draw(st.sampled_from(["read", "write", "cas"]))
        if unknown and kind != "read" and draw(st.integers(0, 3)) == 0:
            end = None
        if kind == "read":
            ops.append(read(i, start, end, draw(st.sampled_from([*values, NEVER_WRITTEN]))))
        elif kind == "write":
            values.append(10 + i)
            ops.append(write(i, start, end, 10 + i))
        else:
            expected = draw(st.sampled_from(values))
            values.append(10 + i)
            ok = None if end is None else draw(st.booleans())
            ops.append(cas(i, start, end, expected, 10 + i, ok))
    return ops


@SETTINGS
@given(small_histories(unknown=False))
def test_agrees_with_brute_force_on_answered_operations(history: list[Operation]) -> None:
    assert check_key(history) is _linearizable_by_brute_force(history)


@SETTINGS
@given(small_histories(unknown=True))
@example(UNKNOWN_WRITES_APPLIED_OUT_OF_ORDER)
def test_agrees_with_brute_force_on_unknown_outcomes(history: list[Operation]) -> None:
    assert check_key(history) is _linearizable_by_brute_force(history)
