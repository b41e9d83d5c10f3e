"""Public value types of agent sessions, and the optimistic update every face runs."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import msgspec

from engramdb.errors import Conflict, InvalidArgument

__all__ = ["Checkpoint", "Session", "SessionPage", "cas_update"]


class Session(msgspec.Struct, frozen=True):
    """One agent session: its state, recent events, owner, metadata and sliding TTL."""

    id: str
    state: Any
    user_id: str | None
    metadata: dict[str, Any]
    events: list[Any]
    generation: int
    created_at: float
    updated_at: float
    expires_at: float | None
    ttl: float | None


class Checkpoint(msgspec.Struct, frozen=True):
    """A saved state of a session at ``step`` (``parent``: the step it branched from)."""

    session_id: str
    step: int
    state: Any
    parent: int | None
    created_at: float


class SessionPage(msgspec.Struct, frozen=True):
    """A page of ``sessions.list``; pass ``cursor`` back for the next one."""

    sessions: list[Session]
    cursor: str | None


_JITTER = random.Random()  # one generator: seeding a new one per update costs ~12 µs


def cas_update(
    read: Callable[[], tuple[Any, int]],
    write: Callable[[Any, int], Any],
    fn: Callable[[Any], Any],
    *,
    max_retries: int,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> Any:
    """Optimistic read-modify-write: ``read() -> (state, generation)``, ``write(new, gen)``
    raising ``Conflict`` when the generation moved. Shared by the embedded and remote APIs."""
    if type(max_retries) is not int or max_retries < 0:
        raise InvalidArgument("max_retries must be a non-negative int")
    rng = rng or _JITTER
    for attempt in range(max_retries + 1):
        state, generation = read()
        new_state = fn(state)
        try:
            write(new_state, generation)
            return new_state
        except Conflict as e:
            if attempt == max_retries:
                raise Conflict(
                    f"update gave up after {max_retries + 1} attempts under contention",
                    e.generation,
                ) from e
            # Full jitter (AWS architecture blog): spreads retries so contenders stop colliding.
            sleep(rng.uniform(0, min(0.05, 0.0002 * 2**attempt)))
    raise AssertionError("unreachable")
