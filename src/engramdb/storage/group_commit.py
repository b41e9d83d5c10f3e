"""Group commit: writes that arrive together share one transaction and one fsync.

Leader/follower, after the write queues of RocksDB and MySQL's binlog group commit. A
thread that finds no commit in progress becomes the leader: it takes the queued writes (its
own first), runs them in one engine transaction, commits once, hands each its outcome and
then passes leadership to the oldest waiter, so no thread leads for ever. Followers sleep on
a private lock until their outcome is ready. With one writer this is a plain commit plus two
uncontended lock operations; with many, a sync write costs one fsync per batch instead of
one per write, and every write is still acknowledged only after its batch is durable.

Each write is a function of the transaction that raises before it stages anything when its
request is invalid (``Conflict``, ``NotFound``, ``InvalidArgument``). Such an error is that
write's outcome alone. Any other exception inside a write fails that write and the rest of
the batch is run again without it; an error from the commit itself fails the whole batch.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from engramdb.errors import Conflict, InvalidArgument, NotFound
from engramdb.storage.base import Engine, WriteTxn

__all__ = ["GroupCommit"]

_REQUEST_ERRORS = (Conflict, NotFound, InvalidArgument)
_PENDING = object()


class _Write:
    __slots__ = ("error", "fn", "promoted", "value", "wakeup")

    def __init__(self, fn: Callable[[WriteTxn], Any]) -> None:
        self.fn = fn
        self.value: Any = _PENDING
        self.error: BaseException | None = None
        self.promoted = False
        self.wakeup: threading.Lock | None = None


class _FailedWrite(Exception):
    def __init__(self, write: _Write, error: BaseException) -> None:
        self.write = write
        self.error = error


class GroupCommit:
    """Runs write functions against ``engine``, batching concurrent ones.

    Args:
        engine: the engine whose ``write`` commits a batch.
        max_batch: most writes in one transaction (bounds transaction size and latency).
    """

    def __init__(self, engine: Engine, *, max_batch: int = 512) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Write] = []
        self._busy = False
        self.batches = 0
        self.writes = 0

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def run(self, fn: Callable[[WriteTxn], Any]) -> Any:
        """Run ``fn`` in a committed transaction and return its result (or raise its error)."""
        write = _Write(fn)
        with self._lock:
            self._queue.append(write)
            if self._busy:
                write.wakeup = threading.Lock()
                write.wakeup.acquire()
            else:
                self._busy = True
        if write.wakeup is not None:
            write.wakeup.acquire()
            if not write.promoted:
                return self._outcome(write)
        self._lead(write)
        return self._outcome(write)

    def _lead(self, leader: _Write) -> None:
        with self._lock:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
        try:
            self._execute(batch)
        finally:
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.promoted = True
                    assert successor.wakeup is not None
                    successor.wakeup.release()
                else:
                    self._busy = False
            for write in batch:
                if write is not leader and write.wakeup is not None:
                    write.wakeup.release()

    def _execute(self, batch: list[_Write]) -> None:
        while batch:
            try:
                self._engine.write(functools.partial(self._apply, batch=batch))
            except _FailedWrite as failed:
                failed.write.error = failed.error
                batch = [w for w in batch if w is not failed.write]
                for w in batch:
                    w.value, w.error = _PENDING, None
                continue
            except BaseException as e:
                for w in batch:
                    w.value, w.error = _PENDING, e
                return
            self.batches += 1
            self.writes += len(batch)
            return

    @staticmethod
    def _apply(txn: WriteTxn, *, batch: list[_Write]) -> None:
        for write in batch:
            try:
                write.value = write.fn(txn)
            except _REQUEST_ERRORS as e:
                write.error = e
            except BaseException as e:
                raise _FailedWrite(write, e) from e

    @staticmethod
    def _outcome(write: _Write) -> Any:
        if write.error is not None:
            raise write.error
        return write.value
