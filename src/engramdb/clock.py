"""Time is a dependency.

Everything that expires, decays or sweeps asks a clock instead of calling ``time.time()``,
so tests move a ``FakeClock`` rather than sleeping. A clock is any zero-argument callable
returning seconds since the epoch as a float.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Clock", "FakeClock", "system_clock"]

Clock = Callable[[], float]

system_clock: Clock = time.time


class FakeClock:
    """A clock that only moves when told to. Thread-safe.

    >>> clock = FakeClock(1_000.0)
    >>> clock.advance(30)
    >>> clock()
    1030.0
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def set(self, now: float) -> None:
        with self._lock:
            self._now = float(now)
