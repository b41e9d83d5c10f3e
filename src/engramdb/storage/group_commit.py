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
A write made of parts (a transaction's writes) that finds a request error after some part
staged raises ``Rollback(error)``: the batch is run again without it, and ``error`` is its
outcome, so none of its parts is kept.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from engramdb.errors import Conflict, InvalidArgument, NotFound
from engramdb.storage.base import Engine, WriteTxn

__all__ = ["GroupCommit", "Rollback"]

log = logging.getLogger("engramdb.commit")

_REQUEST_ERRORS = (Conflict, NotFound, InvalidArgument)
_PENDING = object()


Done = Callable[[Any, BaseException | None], None]


class _Write:
    __slots__ = ("done", "error", "fn", "promoted", "value", "wakeup")

    def __init__(self, fn: Callable[[WriteTxn], Any], done: Done | None = None) -> None:
        self.fn = fn
        self.done = done
        self.value: Any = _PENDING
        self.error: BaseException | None = None
        self.promoted = False
        self.wakeup: threading.Lock | None = None


class Rollback(Exception):
    """Raised by a write that already staged something: undo it and fail with ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _FailedAt(Exception):
    def __init__(self, index: int, error: BaseException) -> None:
        self.index = index
        self.error = error


def _apply_listed(
    fns: list[Callable[[WriteTxn], Any]],
    live: list[int],
    values: list[Any],
    errors: list[BaseException | None],
    txn: WriteTxn,
) -> None:
    """``GroupCommit._apply`` for ``run_batch``."""
    for i in live:
        try:
            values[i] = fns[i](txn)
        except _REQUEST_ERRORS as e:
            errors[i] = e
        except Rollback as e:
            raise _FailedAt(i, e.error) from e.error
        except BaseException as e:
            raise _FailedAt(i, e) from e


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
        self._committer: threading.Thread | None = None
        self._committer_turns = threading.Semaphore(0)
        self._stopping = False
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

    def submit(self, fn: Callable[[WriteTxn], Any], done: Done) -> None:
        """Queue ``fn`` without waiting; ``done(value, error)`` is called from the committer
        thread once its batch is durable (or failed). For event loops that must not block."""
        write = _Write(fn, done)
        with self._lock:
            self._queue.append(write)
            if self._busy:
                return
            self._busy = True
        self._hand_to_committer()

    def run_batch(
        self, fns: list[Callable[[WriteTxn], Any]]
    ) -> tuple[list[Any], list[BaseException | None]]:
        """Commit ``fns`` as one batch in the calling thread: ``(values, errors)``, one of
        each per function, in order (an error's value is None).

        For a caller that is itself the only writer and batches on its own (the server's
        event loop when durability is not ``sync``: no fsync to wait for, so no thread hop).
        The engine serialises this with any other writer. Same rules as ``_execute``, kept
        in lists rather than ``_Write`` objects: this runs once per write of the server.
        """
        count = len(fns)
        values: list[Any] = [None] * count
        errors: list[BaseException | None] = [None] * count
        live = list(range(count))
        while live:
            try:
                self._engine.write(functools.partial(_apply_listed, fns, live, values, errors))
            except _FailedAt as failed:
                errors[failed.index] = failed.error
                live = [i for i in live if i != failed.index]
                for i in live:
                    values[i] = errors[i] = None
                continue
            except BaseException as e:
                for i in live:
                    values[i], errors[i] = None, e
                break
            self.batches += 1
            self.writes += len(live)
            break
        return values, errors

    def _hand_to_committer(self) -> None:
        if self._committer is None:
            with self._lock:
                if self._committer is None:
                    self._committer = threading.Thread(
                        target=self._committer_loop, name="engramdb-commit", daemon=True
                    )
                    self._committer.start()
        self._committer_turns.release()

    def _committer_loop(self) -> None:
        while True:
            self._committer_turns.acquire()
            if self._stopping:
                return
            self._lead(None)

    def close(self) -> None:
        """Stop the committer thread (after the writes already queued)."""
        committer = self._committer
        if committer is None:
            return
        while True:
            with self._lock:
                if not self._busy and not self._queue:
                    self._stopping = True
                    break
            threading.Event().wait(0.001)
        self._committer_turns.release()
        committer.join()

    def _lead(self, leader: _Write | None) -> None:
        with self._lock:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
        try:
            self._execute(batch)
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._busy = False
                elif successor.wakeup is not None:
                    successor.promoted = True
                    successor.wakeup.release()
            if successor is not None and successor.wakeup is None:
                self._hand_to_committer()  # the next write has no thread waiting: submitted
            for write in batch:
                if write is leader:
                    continue
                if write.done is not None:
                    try:
                        write.done(write.value, write.error)
                    except Exception:
                        log.exception("a group-commit completion callback failed")
                elif write.wakeup is not None:
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
            except Rollback as e:
                raise _FailedWrite(write, e.error) from e.error
            except BaseException as e:
                raise _FailedWrite(write, e) from e

    @staticmethod
    def _outcome(write: _Write) -> Any:
        if write.error is not None:
            raise write.error
        return write.value
