"""A linearizability checker for register histories, after Porcupine (Wing & Gong's search
with Lowe's memoisation), partitioned per key.

A history is a list of operations, each with a client, the time it was invoked and the time
it returned, its input and its output. An operation whose outcome is unknown (the client
timed out or lost the connection) has no return time: it may have taken effect at any point
after its invocation, or never. The history is linearizable when the operations can be put
in one order that respects real time (an operation that returned before another was invoked
comes first) and in which each operation's output is what the model gives.

The model is a register per key: ``read() -> value``, ``write(v) -> ok``,
``cas(expected, new) -> bool``; the value starts as None (absent).

Search: walk the events in time order; at each invocation, try to linearize that operation
now (if the model allows its output) and move on; at a return whose operation is not yet
linearized, undo the last choice. Every (set of linearized operations, state) reached is
remembered, so no configuration is explored twice. A per-key budget of explored states keeps
pathological histories from running for ever: such a key is reported ``unknown``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Operation", "Verdict", "check", "check_key", "self_test"]

Kind = Literal["read", "write", "cas"]
_INF = math.inf


@dataclass(frozen=True)
class Operation:
    """One operation as a client saw it. ``end`` is None when the outcome is unknown."""

    client: int
    key: str
    kind: Kind
    start: float
    end: float | None
    input: Any = None  # write: the value; cas: (expected, new)
    output: Any = None  # read: the value seen; cas: True/False; write: None


@dataclass
class Verdict:
    linearizable: bool | None  # None: undecided within the budget
    keys: int = 0
    failed_keys: list[str] = field(default_factory=list)
    undecided_keys: list[str] = field(default_factory=list)
    operations: int = 0
    example: list[Operation] = field(default_factory=list)


def _steps(state: Any, op: Operation) -> list[Any]:
    """The states the register can be in after ``op`` from ``state``, given its output."""
    known = op.end is not None
    if op.kind == "read":
        if not known:
            return [state]  # an unanswered read constrains nothing
        return [state] if op.output == state else []
    if op.kind == "write":
        return [op.input] if known else [op.input, state]
    expected, new = op.input
    if not known:
        return [new, state] if state == expected else [state]
    if op.output:
        return [new] if state == expected else []
    return [state] if state != expected else []


class _Entry:
    __slots__ = ("call", "index", "match", "next", "op", "prev", "time")

    def __init__(self, op: Operation, index: int, call: bool, time: float) -> None:
        self.op = op
        self.index = index
        self.call = call
        self.time = time
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def check_key(ops: Sequence[Operation], budget: int = 200_000) -> bool | None:
    """Whether one key's history is linearizable (None: undecided within ``budget``)."""
    ops = [op for op in ops if not (op.kind == "read" and op.end is None)]
    if not ops:
        return True
    events: list[_Entry] = []
    for i, op in enumerate(ops):
        call = _Entry(op, i, True, op.start)
        ret = _Entry(op, i, False, _INF if op.end is None else op.end)
        call.match = ret
        events.extend((call, ret))
    # Returns before calls at equal times would order them; calls first keeps them concurrent.
    events.sort(key=lambda e: (e.time, 0 if e.call else 1))
    head = _Entry(ops[0], -1, False, -_INF)
    previous = head
    for event in events:
        previous.next, event.prev = event, previous
        previous = event

    def lift(entry: _Entry) -> None:
        for e in (entry, entry.match):
            assert e is not None
            assert e.prev is not None
            e.prev.next = e.next
            if e.next is not None:
                e.next.prev = e.prev

    def unlift(entry: _Entry) -> None:
        for e in (entry.match, entry):
            assert e is not None
            assert e.prev is not None
            e.prev.next = e
            if e.next is not None:
                e.next.prev = e

    linearized = 0
    state: Any = None
    seen: set[tuple[int, Any]] = set()
    stack: list[tuple[_Entry, Any, list[Any]]] = []  # (entry, state before, other choices)
    entry: _Entry | None = head.next
    explored = 0
    while head.next is not None:
        explored += 1
        if explored > budget:
            return None
        assert entry is not None
        if entry.call:
            choices = _steps(state, entry.op)
            advanced = False
            while choices:
                candidate = choices.pop()
                marked = linearized | (1 << entry.index)
                if (marked, _freeze(candidate)) in seen:
                    continue
                seen.add((marked, _freeze(candidate)))
                stack.append((entry, state, choices))
                state, linearized = candidate, marked
                lift(entry)
                entry = head.next
                advanced = True
                break
            if not advanced:
                entry = entry.next
            continue
        # A return of an operation not linearized yet: undo the last choice.
        while True:
            if not stack:
                return False
            undone, before, rest = stack.pop()
            unlift(undone)
            linearized &= ~(1 << undone.index)
            state = before
            # The same operation may have other possible outcomes (an unknown one): try
            # those not explored yet; when none is left, try the operations after it.
            retried = False
            while rest:
                candidate = rest.pop()
                marked = linearized | (1 << undone.index)
                if (marked, _freeze(candidate)) not in seen:
                    seen.add((marked, _freeze(candidate)))
                    stack.append((undone, state, rest))
                    state, linearized = candidate, marked
                    lift(undone)
                    entry = head.next
                    retried = True
                    break
            if not retried:
                entry = undone.next
            break
    return True


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def check(history: Iterable[Operation], budget_per_key: int = 200_000) -> Verdict:
    """Check every key's history on its own (registers are independent)."""
    by_key: dict[str, list[Operation]] = defaultdict(list)
    count = 0
    for op in history:
        by_key[op.key].append(op)
        count += 1
    verdict = Verdict(linearizable=True, keys=len(by_key), operations=count)
    for key, ops in sorted(by_key.items()):
        result = check_key(ops, budget_per_key)
        if result is False:
            verdict.failed_keys.append(key)
            if not verdict.example:
                verdict.example = sorted(ops, key=lambda o: o.start)[:20]
        elif result is None:
            verdict.undecided_keys.append(key)
    if verdict.failed_keys:
        verdict.linearizable = False
    elif verdict.undecided_keys:
        verdict.linearizable = None
    return verdict


def self_test() -> list[str]:
    """Judge known histories; returns the names of the ones misjudged (empty: trustworthy)."""

    def op(
        c: int, kind: Kind, s: float, e: float | None, i: Any = None, o: Any = None
    ) -> Operation:
        return Operation(c, "k", kind, s, e, i, o)

    cases: list[tuple[str, list[Operation], bool]] = [
        ("sequential", [op(0, "write", 0, 1, 1), op(1, "read", 2, 3, o=1)], True),
        (
            "stale read",
            [op(0, "write", 0, 1, 1), op(0, "write", 2, 3, 2), op(1, "read", 4, 5, o=1)],
            False,
        ),
        (
            "concurrent read may see either",
            [op(0, "write", 0, 10, 1), op(1, "read", 1, 2, o=None), op(2, "read", 3, 4, o=1)],
            True,
        ),
        (
            "reads go back in time",
            [op(0, "write", 0, 10, 1), op(1, "read", 1, 2, o=1), op(2, "read", 3, 4, o=None)],
            False,
        ),
        (
            "lost update",
            [op(0, "cas", 0, 1, (None, 1), True), op(1, "cas", 2, 3, (None, 2), True)],
            False,
        ),
        (
            "racing cas, one wins",
            [
                op(0, "cas", 0, 5, (None, 1), True),
                op(1, "cas", 0, 5, (None, 2), False),
                op(2, "read", 6, 7, o=1),
            ],
            True,
        ),
        (
            "both cas win",
            [op(0, "cas", 0, 5, (None, 1), True), op(1, "cas", 0, 5, (None, 2), True)],
            False,
        ),
        ("unknown write may apply", [op(0, "write", 0, None, 7), op(1, "read", 5, 6, o=7)], True),
        (
            "unknown write may not apply",
            [op(0, "write", 0, None, 7), op(1, "read", 5, 6, o=None)],
            True,
        ),
        (
            "read of a value never written",
            [op(0, "write", 0, 1, 1), op(1, "read", 2, 3, o=9)],
            False,
        ),
    ]
    wrong = []
    for name, history, expected in cases:
        if check_key(history) is not expected:
            wrong.append(name)
    return wrong
