"""Reclaiming the elements of removed Redis structures, in the background.

Removing a list, hash, set or sorted set is one change to its header (``structures.py``):
DEL, UNLINK, SET over it, EXPIRE into the past, expiry, FLUSHDB, RENAME over it, a write
through the engramdb API, another process. From that commit on no read reaches its
elements, which are then deleted here, in pages, off the event loop:

1. Follow the change log: for each key changed since the last look, whose ``owner`` entry
   (``k | header rk -> id``) names a structure its header no longer holds, move that id to
   the ``dead`` list (``d | id``), in one transaction that checks it again.
   Commands that remove a structure themselves bury it at once (``Access.remove``).
   When there are far fewer owner entries than changes to read, every owner entry is
   checked instead (what the log would point at is among them).
2. Delete the elements of dead ids, ``PAGE`` per transaction; an id leaves the dead list
   with its last element. A crash part-way leaves the rest for the next round, in any
   process.

The change-log position is kept in ``p`` once structures exist (rewritten at most every
``SAVE_EVERY`` seconds: re-reading changes is harmless). When the log no longer reaches
back to it (retention, or the first start), every owner entry is checked instead.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from typing import TYPE_CHECKING, Any

from engramdb.errors import StorageError
from engramdb.recordset import after_prefix
from engramdb.server.structures import DEAD, ELEMENTS, OWNER, SET_PREFIX, Found

if TYPE_CHECKING:
    from engramdb.database import Database
    from engramdb.storage.base import WriteFn, WriteTxn

__all__ = ["Reclaimer"]

log = logging.getLogger("engramdb.server")

PAGE = 1000
SAVE_EVERY = 10.0
_POSITION = SET_PREFIX + b"p"
_U64 = struct.Struct(">Q")
_CHANGES = 5000
# Past this many changes since the last look, owner entries are counted first: when there
# are under a quarter as many, all of them are checked instead of reading the changes
# (``_check_few``; an owner check costs a few change reads).
_CHECK_ALL_BELOW = 64


class Reclaimer:
    """Deletes the elements of removed structures of ``db``, checking the record sets whose
    names ``sets`` lists (the Redis databases), every ``interval`` seconds."""

    def __init__(self, db: Database, sets: list[str], *, interval: float = 1.0) -> None:
        self._db = db
        self._prefixes = tuple(name.encode() + b"\x00" for name in sets)
        self._interval = interval
        self._position: int | None = None
        self._saved_at = 0.0
        self._stop = threading.Event()
        self._nudged = threading.Event()
        self._thread: threading.Thread | None = None
        # Rounds begun and finished, for ``drain`` (rounds run one at a time, in _loop).
        self._rounds = threading.Condition()
        self._began = self._finished = 0
        self._exited = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="engramdb-reclaim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._nudged.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def nudge(self) -> None:
        """Run a round soon (something big was just removed)."""
        self._nudged.set()

    def drain(self) -> None:
        """Return once a round that began after this call has finished: the elements of
        every structure removed before it are deleted (FLUSHALL without ASYNC, as Redis frees
        a flushed database before replying). Returns at once when the reclaimer has
        stopped."""
        if self._thread is None or self._stop.is_set():
            return
        with self._rounds:
            target = self._began + 1
            self._nudged.set()
            self._rounds.wait_for(lambda: self._finished >= target or self._exited)

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._nudged.wait(self._interval)
                self._nudged.clear()
                if self._stop.is_set():
                    return
                with self._rounds:
                    self._began += 1
                try:
                    self.run()
                except StorageError:
                    return  # the database refuses writes (closing, or a failed fsync)
                except Exception:
                    log.exception("reclaiming the elements of removed structures failed")
                finally:
                    with self._rounds:
                        self._finished = self._began
                        self._rounds.notify_all()
        finally:
            with self._rounds:
                self._exited = True
                self._rounds.notify_all()

    def run(self) -> int:
        """One round: find newly removed structures, then delete elements of dead ones
        (until none are left or ``stop()``). Returns how many elements were deleted."""
        self._follow()
        return self._reclaim()

    # finding what was removed -----------------------------------------------------------

    def _follow(self) -> None:
        engine = self._db._engine
        if self._position is None:
            raw = engine.get(_POSITION)
            self._position = _U64.unpack(raw)[0] if raw is not None and len(raw) == 8 else -1
        if self._position < 0 or self._position + 1 < engine.first_sequence():
            start = engine.last_sequence()
            self._check_all()
            self._position = start
            self._save(force=True)
        start = engine.last_sequence()
        pending = start - self._position
        if pending > _CHECK_ALL_BELOW and self._check_few(pending // 4):
            # Far fewer structures than changes since the last look: checking each of them
            # finds what following the log would, for less (a busy server logs ~100k
            # changes a second, mostly of strings or of the same few structures; following
            # them cost ~1 µs of CPU per write).
            self._position = start
            self._save()
            return
        while not self._stop.is_set():
            changes = engine.changes(self._position, _CHANGES)
            if not changes:
                break
            keys = {c.rk for c in changes if c.rk.startswith(self._prefixes)}
            self._bury([rk for rk in keys if self._orphan(rk) is not None])
            self._position = changes[-1].sequence
        self._save()

    def _check_all(self) -> None:
        """Check every owner entry (the change log does not reach back far enough)."""
        engine = self._db._engine
        start, end = OWNER, after_prefix(OWNER)
        while not self._stop.is_set():
            rows = engine.scan(start, end, PAGE)
            cut = len(OWNER)
            self._bury([rk[cut:] for rk, _ in rows if self._orphan(rk[cut:]) is not None])
            if len(rows) < PAGE:
                return
            start = rows[-1][0] + b"\x00"

    def _check_few(self, most: int) -> bool:
        """Check every owner entry if there are fewer than ``most`` of them (False: more,
        nothing was checked). Any structure removed by a change committed before this is
        called has its owner entry in the scan, as in ``_check_all``."""
        cut = len(OWNER)
        rows = self._db._engine.scan(OWNER, after_prefix(OWNER), most)
        if len(rows) >= most:
            return False
        self._bury([rk[cut:] for rk, _ in rows if self._orphan(rk[cut:]) is not None])
        return True

    def _orphan(self, rk: bytes, view: Any = None) -> int | None:
        """The id ``rk``'s owner entry names when its header no longer holds it."""
        source = view if view is not None else self._db._engine
        owner = source.get(OWNER + rk)
        if owner is None or len(owner) != 8:
            return None
        sid: int = _U64.unpack(owner)[0]
        found = Found(rk, source.get(rk), self._db._now_ms())
        return None if found.structure and found.sid == sid else sid

    def _bury(self, rks: list[bytes]) -> None:
        if not rks:
            return

        def bury(txn: WriteTxn) -> None:
            for rk in rks:
                sid = self._orphan(rk, txn)  # again, inside the transaction
                if sid is None:
                    continue
                txn.delete(OWNER + rk, 0)
                dead = DEAD + _U64.pack(sid)
                if txn.get(dead) is None:
                    txn.put(dead, b"", 0, None)

        self._db._write(bury)

    def _save(self, force: bool = False) -> None:
        position = self._position
        if position is None or position < 0:
            return
        if not force and time.monotonic() - self._saved_at < SAVE_EVERY:
            return
        self._saved_at = time.monotonic()
        if not self._db._engine.scan(SET_PREFIX, _POSITION, 1):
            return  # no structure was ever made here: nothing to keep (no "_redis" set)

        def save(txn: WriteTxn) -> None:
            old = txn.get(_POSITION)
            if old is not None and len(old) == 8 and _U64.unpack(old)[0] >= position:
                return  # another process got further
            txn.put(_POSITION, _U64.pack(position), 0, None if old is None else 0)

        self._db._write(save)

    # deleting elements ------------------------------------------------------------------

    def _reclaim(self) -> int:
        engine = self._db._engine
        removed = 0
        while not self._stop.is_set():
            dead = engine.scan(DEAD, after_prefix(DEAD), 64)
            if not dead:
                return removed
            for rk, _ in dead:
                sid = rk[len(DEAD) :]
                prefix = ELEMENTS + sid
                rows = engine.scan(prefix, after_prefix(prefix), PAGE)
                removed += len(rows)
                self._db._write(_deleter([r for r, _ in rows], rk if len(rows) < PAGE else None))
                if self._stop.is_set():
                    return removed
        return removed


def _deleter(rks: list[bytes], done: bytes | None) -> WriteFn:
    """A write deleting elements ``rks`` (and the dead entry ``done`` once they were the
    last)."""

    def delete(txn: WriteTxn) -> None:
        for rk in rks:
            txn.delete(rk, 0)
        if done is not None:
            txn.delete(done, 0)

    return delete
