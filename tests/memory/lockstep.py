"""A fake clock that makes two threads' memory adds race deterministically.

Every read of a ``LockstepClock`` from a thread inside ``in_lockstep()`` is a rendezvous:
it returns only once the other party has made its read of the same step. Two adds of the
same kind read the clock at the same points (before the near-duplicate look-up, before the
write is prepared, ...), so each finishes every look-up before the other goes on to write:
the worst interleaving, every time, without patching anything private. The write of the
first one to commit reads the clock while the other waits behind it for the commit and
reads nothing; that rendezvous gives up after ``patience`` seconds and ends lockstep for
good, and both writes go ahead in whatever order the database takes them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from engramdb import FakeClock


class LockstepClock(FakeClock):
    """A ``FakeClock`` (it only moves when told to) whose reads pair up two threads."""

    def __init__(self, start: float, *, patience: float = 0.5) -> None:
        super().__init__(start)
        self._barrier = threading.Barrier(2, timeout=patience)
        self._local = threading.local()
        self.rendezvous = 0  # how many steps the two threads took together

    @contextmanager
    def in_lockstep(self) -> Iterator[None]:
        self._local.active = True
        try:
            yield
        finally:
            self._local.active = False
            self._barrier.abort()  # a finished thread makes no more reads: never wait for it

    def __call__(self) -> float:
        if getattr(self._local, "active", False) and not self._barrier.broken:
            try:
                if self._barrier.wait() == 0:
                    self.rendezvous += 1
            except threading.BrokenBarrierError:
                pass
        return super().__call__()
