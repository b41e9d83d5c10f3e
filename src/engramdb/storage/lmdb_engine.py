"""The LMDB engine: durable, memory-mapped, shared by every process on one host.

Layout (named LMDB databases in one environment directory):

- ``records``: physical key -> record value.
- ``expiry``:  ``set NUL | expires_ms (u64 BE) | encoded key`` -> empty. Sorted by set, then
  time, so a set's expired-but-unswept entries are one short range.
- ``changes``: ``sequence (u64 BE)`` -> msgpack ``[rk, kind, generation, at_ms]``.
- ``meta``:    ``count NUL set`` -> u64 live-or-unswept entries; ``seq`` -> the last sequence,
  written only when trimming (otherwise the newest change holds it).

LMDB caps keys at 511 bytes but a record key may be 1 KiB plus its set name. Record keys up
to ``_INLINE_MAX`` bytes are stored as they are; longer ones are stored under their first
``_HEAD`` bytes plus a 16-byte BLAKE2b of the whole key, and the value carries the full key.
Scans stay ordered except among long keys sharing their first ``_HEAD`` bytes, which come in
hash order.

Rules this file keeps:
- Every read opens a fresh read transaction, so a read that starts after a commit returned
  (in any process) sees it. No long-lived read snapshots.
- LMDB must not be opened twice in one process, so environments are shared per path.
- A failed commit (fsync error) is fatal: the engine refuses every later write. Retrying an
  fsync after failure can report success for data the kernel already dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import lmdb
import msgspec

from engramdb.errors import InvalidArgument, StorageError
from engramdb.storage.base import Durability, EngineChange

__all__ = ["LmdbEngine"]

T = TypeVar("T")

_INLINE_MAX = 480
_HEAD = 470
_U64 = struct.Struct(">Q")
_pack_u64 = _U64.pack
_U64LE = struct.Struct("<Q")
_U16 = struct.Struct("<H")
_COUNT = b"count\x00"
_SEQ = b"seq"
_encode = msgspec.msgpack.encode
_decode_change = msgspec.msgpack.Decoder(tuple[bytes, str, int, int]).decode


def _phys(rk: bytes) -> bytes:
    if len(rk) <= _INLINE_MAX:
        return rk
    return rk[:_HEAD] + hashlib.blake2b(rk, digest_size=16).digest()


def _split(rk: bytes) -> tuple[bytes, bytes]:
    cut = rk.index(b"\x00") + 1
    return rk[:cut], rk[cut:]


def _expiry_key(phys: bytes, expires_ms: int) -> bytes:
    prefix, rest = _split(phys)
    return prefix + _U64.pack(expires_ms) + rest


def _unwrap(phys: bytes, value: bytes) -> tuple[bytes, bytes]:
    """(rk, record value) from a stored pair, undoing the long-key wrapping."""
    if len(phys) <= _INLINE_MAX:
        return phys, value
    n = _U16.unpack_from(value)[0]
    return value[2 : 2 + n], value[2 + n :]


def _scan(
    txn: Any, records: Any, start: bytes, end: bytes, limit: int, reverse: bool
) -> list[tuple[bytes, bytes]]:
    """Up to ``limit`` ``(rk, value)`` with ``start <= rk < end`` in ``txn``, in key order."""
    out: list[tuple[bytes, bytes]] = []
    # Physical keys of long record keys are their first _HEAD bytes plus a hash, so the
    # range is widened to heads and the exact bounds are checked on the full key.
    lo = start[:_HEAD] if len(start) > _INLINE_MAX else start
    hi = end[:_HEAD] + b"\xff" if len(end) > _INLINE_MAX else end
    cursor = txn.cursor(db=records)
    if reverse:
        # The last key below hi: step back from the first key at or above it.
        found = cursor.prev() if cursor.set_range(hi) else cursor.last()
        while found:
            phys = cursor.key()
            if phys < lo or len(out) >= limit:
                break
            if phys < hi:
                rk, value = _unwrap(phys, cursor.value())
                if start <= rk < end:
                    out.append((rk, value))
            found = cursor.prev()
        return out
    if not cursor.set_range(lo):
        return out
    for phys, value in cursor:
        if phys >= hi or len(out) >= limit:
            break
        rk, value = _unwrap(phys, value)
        if start <= rk < end:
            out.append((rk, value))
    return out


class _Shared:
    """One LMDB environment per path per process, reference counted."""

    lock: ClassVar[threading.Lock] = threading.Lock()
    envs: ClassVar[dict[str, tuple[Any, int, str]]] = {}

    @classmethod
    def forget_all(cls) -> None:
        # After fork the child must not use the parent's environments. Closing the child's
        # copies drops its mappings and descriptors (fcntl locks are not inherited) and lets
        # it open the path afresh. It also aborts the transactions the copies hold, which
        # frees their reader slots in the shared lock file: there are none idle (no spare
        # transactions, see open), only reads other threads had in flight at the fork.
        for env, _, _ in cls.envs.values():
            with contextlib.suppress(Exception):
                env.close()
        cls.envs = {}
        cls.lock = threading.Lock()


os.register_at_fork(after_in_child=_Shared.forget_all)


def _last_sequence(txn: Any, changes: Any, meta: Any) -> int:
    # The newest change carries the last sequence. Only when retention has emptied the log
    # does the sequence come from meta, where trimming leaves it.
    cursor = txn.cursor(db=changes)
    if cursor.last():
        return int(_U64.unpack(cursor.key())[0])
    raw = txn.get(_SEQ, db=meta)
    return int(_U64LE.unpack(raw)[0]) if raw else 0


class _LmdbTxn:
    __slots__ = ("_at", "_changes", "_counts", "_dbs", "_log_at", "_records", "_seq", "_txn")

    def __init__(self, txn: Any, dbs: tuple[Any, Any, Any, Any]) -> None:
        self._txn = txn
        self._dbs = dbs
        self._records = dbs[0]
        self._changes = dbs[2]
        self._counts: dict[bytes, int] = {}
        self._seq = -1
        # One cursor on the records and one on the change log, opened on first use and
        # kept for the transaction: an LMDB call through a cursor skips setting one up per
        # call, and a cursor still on the page of its last key (a structure's header read
        # then rewritten, the log's tail) finds the next key there without a tree descent.
        # LMDB keeps every cursor of a transaction right across writes through the others.
        self._at: Any = None
        self._log_at: Any = None

    def _cursor(self) -> Any:
        cursor = self._at = self._txn.cursor(db=self._records)
        return cursor

    # get, put and log run once or more per write: the common case (a key short enough to
    # be its own physical key) comes first, without calls.

    def get(self, rk: bytes) -> bytes | None:
        if len(rk) <= _INLINE_MAX:
            return (self._at or self._cursor()).get(rk)  # type: ignore[no-any-return]
        phys = _phys(rk)
        value = (self._at or self._cursor()).get(phys)
        if value is None:
            return None
        stored_rk, value = _unwrap(phys, value)
        return value if stored_rk == rk else None

    def put(self, rk: bytes, value: bytes, expires_ms: int, prev_expires_ms: int | None) -> None:
        if len(rk) <= _INLINE_MAX:
            phys = rk
        else:
            phys = _phys(rk)
            value = _U16.pack(len(rk)) + rk + value
        try:
            (self._at or self._cursor()).put(phys, value)
            if prev_expires_ms is None:
                prefix = phys[: phys.index(b"\x00") + 1]
                self._counts[prefix] = self._counts.get(prefix, 0) + 1
            elif prev_expires_ms and prev_expires_ms != expires_ms:
                self._txn.delete(_expiry_key(phys, prev_expires_ms), db=self._dbs[1])
            if expires_ms and prev_expires_ms != expires_ms:
                self._txn.put(_expiry_key(phys, expires_ms), b"", db=self._dbs[1])
        except lmdb.MapFullError as e:
            raise StorageError(
                "the database is full (LMDB map_size reached); reopen it with a larger map_size"
            ) from e

    def scan(
        self, start: bytes, end: bytes, limit: int, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        return _scan(self._txn, self._dbs[0], start, end, limit, reverse)

    def delete(self, rk: bytes, prev_expires_ms: int) -> None:
        phys = rk if len(rk) <= _INLINE_MAX else _phys(rk)
        cursor = self._at or self._cursor()
        if cursor.set_key(phys) and cursor.delete():
            prefix = phys[: phys.index(b"\x00") + 1]  # _split(phys)[0], inlined
            self._counts[prefix] = self._counts.get(prefix, 0) - 1
        if prev_expires_ms:
            self._txn.delete(_expiry_key(phys, prev_expires_ms), db=self._dbs[1])

    def next_sequence(self) -> int:
        if self._seq < 0:
            _, _, changes, meta = self._dbs
            self._seq = _last_sequence(self._txn, changes, meta)
        return self._seq + 1

    def log(self, kind: str, rk: bytes, generation: int, at_ms: int) -> int:
        seq = self._seq
        if seq < 0:
            seq = _last_sequence(self._txn, self._changes, self._dbs[3])
        self._seq = seq = seq + 1
        cursor = self._log_at
        if cursor is None:
            cursor = self._log_at = self._txn.cursor(db=self._changes)
        try:
            cursor.put(_pack_u64(seq), _encode((rk, kind, generation, at_ms)), append=True)
        except lmdb.MapFullError as e:
            raise StorageError("the database is full (LMDB map_size reached)") from e
        return seq

    def finish(self) -> None:
        """Write the accumulated counters; called once before commit."""
        meta = self._dbs[3]
        txn = self._txn
        for prefix, delta in self._counts.items():
            if delta:
                key = _COUNT + prefix
                raw = txn.get(key, db=meta)
                current = _U64LE.unpack(raw)[0] if raw else 0
                txn.put(key, _U64LE.pack(max(0, current + delta)), db=meta)


# The named databases of an environment, which are the only keys of its main database: any
# other key means another program's LMDB, which engramdb must not write into.
_DATABASES = (b"records", b"expiry", b"changes", b"meta")


def _foreign_key(env: Any) -> bytes | None:
    """A key of ``env``'s main database that is not one of ours (None: ours, or new)."""
    with env.begin() as txn:
        for key in txn.cursor().iternext(values=False):
            if bytes(key) not in _DATABASES:
                return bytes(key)
    return None


class LmdbEngine:
    """Records in an LMDB environment directory at ``path``.

    Args:
        path: directory of the environment (created if missing).
        durability: ``sync`` (fsync before a commit returns), ``async`` (flushed every
            ``flush_interval`` seconds; survives a process crash) or ``none``.
        map_size: the most bytes the database may grow to (virtual; costs no disk up front).
        flush_interval: seconds between background flushes in ``async`` mode.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "sync",
        map_size: int = 8 << 30,
        max_readers: int = 1024,
        flush_interval: float = 1.0,
    ) -> None:
        if durability not in ("sync", "async", "none"):
            raise InvalidArgument(f"durability must be sync, async or none, not {durability!r}")
        self.path = os.path.realpath(os.fspath(path))
        self.durability = durability
        self._failed: BaseException | None = None
        self._closed = False
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create database directory {self.path}: {e}") from e
        with _Shared.lock:
            entry = _Shared.envs.get(self.path)
            if entry is not None:
                env, refs, mode = entry
                if mode != durability:
                    raise InvalidArgument(
                        f"{self.path} is already open in this process with durability={mode}"
                    )
                _Shared.envs[self.path] = (env, refs + 1, mode)
            else:
                try:
                    env = lmdb.open(
                        self.path,
                        map_size=map_size,
                        max_dbs=8,
                        max_readers=max_readers,
                        # No cached read transactions: a cached one keeps its reader slot in
                        # the lock file while idle, and a forked child (multiprocessing, or
                        # subprocess with a preexec_fn) that closes its copy of the environment
                        # aborts it, clearing the parent's slot; the parent's next read then
                        # failed with MDB_BAD_RSLOT. Costs ~0.2 us per read (measured).
                        max_spare_txns=0,
                        sync=durability == "sync",
                        metasync=durability == "sync",
                        readahead=False,
                        lock=True,
                    )
                except lmdb.Error as e:
                    raise StorageError(f"cannot open LMDB at {self.path}: {e}") from e
                # Free reader slots left by processes that died (kill -9) holding them.
                env.reader_check()
                _Shared.envs[self.path] = (env, 1, durability)
        self._env = env
        try:
            foreign = _foreign_key(env)
            if foreign is not None:
                raise StorageError(
                    f"{self.path} holds an LMDB database that is not engramdb's (its main "
                    f"database has the key {foreign!r}): refusing to write into it"
                )
            self._records = env.open_db(_DATABASES[0])
            self._expiry = env.open_db(_DATABASES[1])
            self._changes = env.open_db(_DATABASES[2])
            self._meta = env.open_db(_DATABASES[3])
        except StorageError:
            self._release()
            raise
        except lmdb.Error as e:
            self._release()
            raise StorageError(f"cannot open LMDB databases at {self.path}: {e}") from e
        self._dbs = (self._records, self._expiry, self._changes, self._meta)
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if durability == "async":
            self._flusher = threading.Thread(
                target=self._flush_loop,
                args=(flush_interval,),
                name="engramdb-flush",
                daemon=True,
            )
            self._flusher.start()

    # reads -------------------------------------------------------------------------------

    def _read(self) -> Any:
        try:
            return self._env.begin(buffers=False)
        except lmdb.MapResizedError:
            # Another process grew the map: adopt its size and retry once.
            self._env.set_mapsize(0)
        except lmdb.ReadersFullError:
            # Slots held by processes that died are reclaimable; a full table of live
            # readers is not, and the retry reports it.
            self._env.reader_check()
        except lmdb.Error as e:
            raise StorageError(f"LMDB read failed: {e}") from e
        try:
            return self._env.begin(buffers=False)
        except lmdb.Error as e:
            raise StorageError(f"LMDB read failed: {e}") from e

    def get(self, rk: bytes) -> bytes | None:
        try:
            txn = self._env.begin()
        except lmdb.Error:
            txn = self._read()
        try:
            if len(rk) <= _INLINE_MAX:
                return txn.get(rk, db=self._records)  # type: ignore[no-any-return]
            return _LmdbTxn(txn, self._dbs).get(rk)
        finally:
            txn.abort()

    def get_many(self, rks: Sequence[bytes]) -> list[bytes | None]:
        txn = self._read()
        try:
            get, records = txn.get, self._records
            view = _LmdbTxn(txn, self._dbs)
            return [get(rk, db=records) if len(rk) <= _INLINE_MAX else view.get(rk) for rk in rks]
        finally:
            txn.abort()

    def scan(
        self, start: bytes, end: bytes, limit: int, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        txn = self._read()
        try:
            return _scan(txn, self._records, start, end, limit, reverse)
        finally:
            txn.abort()

    def count(self, set_prefix: bytes, now_ms: int) -> int:
        txn = self._read()
        try:
            raw = txn.get(_COUNT + set_prefix, db=self._meta)
            total = _U64LE.unpack(raw)[0] if raw else 0
            gone = 0
            cursor = txn.cursor(db=self._expiry)
            if cursor.set_range(set_prefix):
                cut = len(set_prefix)
                horizon = _U64.pack(now_ms)
                for key in cursor.iternext(keys=True, values=False):
                    if not key.startswith(set_prefix) or key[cut : cut + 8] > horizon:
                        break
                    gone += 1
            return int(total - gone)
        finally:
            txn.abort()

    def expired(self, now_ms: int, limit: int) -> list[tuple[bytes, int]]:
        out: list[tuple[bytes, int]] = []
        txn = self._read()
        try:
            cursor = txn.cursor(db=self._expiry)
            found = cursor.first()
            while found and len(out) < limit:
                key = cursor.key()
                prefix, rest = _split(key)
                expires_ms = _U64.unpack_from(rest)[0]
                if expires_ms > now_ms:
                    # The rest of this set expires later: jump to the next set.
                    found = cursor.set_range(prefix[:-1] + b"\x01")
                    continue
                phys = prefix + rest[8:]
                if len(phys) > _INLINE_MAX:
                    value = txn.get(phys, db=self._records)
                    if value is None:
                        found = cursor.next()
                        continue
                    phys = _unwrap(phys, value)[0]
                out.append((phys, expires_ms))
                found = cursor.next()
            return out
        finally:
            txn.abort()

    def sets(self) -> list[str]:
        names: list[str] = []
        txn = self._read()
        try:
            cursor = txn.cursor(db=self._meta)
            if cursor.set_range(_COUNT):
                for key, value in cursor:
                    if not key.startswith(_COUNT):
                        break
                    if _U64LE.unpack(value)[0] > 0:
                        names.append(key[len(_COUNT) : -1].decode())
            return names
        finally:
            txn.abort()

    def changes(self, since: int, limit: int) -> list[EngineChange]:
        out: list[EngineChange] = []
        txn = self._read()
        try:
            cursor = txn.cursor(db=self._changes)
            if not cursor.set_range(_U64.pack(since + 1)):
                return out
            for key, value in cursor:
                rk, kind, generation, at_ms = _decode_change(value)
                out.append(EngineChange(_U64.unpack(key)[0], rk, kind, generation, at_ms))
                if len(out) >= limit:
                    break
            return out
        finally:
            txn.abort()

    def first_sequence(self) -> int:
        txn = self._read()
        try:
            cursor = txn.cursor(db=self._changes)
            if cursor.first():
                return int(_U64.unpack(cursor.key())[0])
        finally:
            txn.abort()
        return self.last_sequence() + 1

    def last_sequence(self) -> int:
        txn = self._read()
        try:
            return _last_sequence(txn, self._changes, self._meta)
        finally:
            txn.abort()

    # writes ------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._failed is not None:
            raise StorageError(
                f"the database refuses writes after a failed commit/fsync: {self._failed}"
            )
        if self._closed:
            raise StorageError("the database is closed")

    def write(self, fn: Callable[[_LmdbTxn], T]) -> T:
        self._check_writable()
        try:
            txn = self._env.begin(write=True, buffers=False)
        except lmdb.MapResizedError:
            self._env.set_mapsize(0)
            txn = self._env.begin(write=True, buffers=False)
        except lmdb.Error as e:
            raise StorageError(f"cannot begin a write transaction: {e}") from e
        try:
            wrapped = _LmdbTxn(txn, self._dbs)
            result = fn(wrapped)
            wrapped.finish()
        except lmdb.MapFullError as e:
            txn.abort()
            raise StorageError("the database is full (LMDB map_size reached)") from e
        except lmdb.Error as e:
            txn.abort()
            raise StorageError(f"LMDB write failed: {e}") from e
        except BaseException:
            txn.abort()
            raise
        try:
            txn.commit()
        except lmdb.MapFullError as e:
            raise StorageError("the database is full (LMDB map_size reached)") from e
        except lmdb.Error as e:
            self._failed = e
            raise StorageError(
                f"commit failed ({e}); the database now refuses writes. The outcome of this "
                "write is unknown; reopen the database after fixing the disk"
            ) from e
        return result

    def trim_changes(self, keep: int) -> int:
        def trim(txn: _LmdbTxn) -> int:
            raw = txn._txn
            entries = raw.stat(self._changes)["entries"]
            drop = max(0, entries - keep)
            if drop:
                last = _last_sequence(raw, self._changes, self._meta)
                raw.put(_SEQ, _U64LE.pack(last), db=self._meta)
                cursor = raw.cursor(db=self._changes)
                cursor.first()
                for _ in range(drop):
                    cursor.delete()
            return int(drop)

        return self.write(trim)

    def sync(self) -> None:
        if self._closed:
            return
        try:
            self._env.sync(True)
        except lmdb.Error as e:
            self._failed = e
            raise StorageError(f"fsync failed ({e}); the database now refuses writes") from e

    def _flush_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.sync()
            except StorageError:
                return

    # ops ---------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        info = self._env.info()
        stat = self._env.stat()
        used = (info["last_pgno"] + 1) * stat["psize"]
        txn = self._read()
        try:
            records = txn.stat(self._records)["entries"]
            changes = txn.stat(self._changes)["entries"]
            expiring = txn.stat(self._expiry)["entries"]
        finally:
            txn.abort()
        return {
            "engine": "lmdb",
            "path": self.path,
            "durability": self.durability,
            "map_size_bytes": info["map_size"],
            "map_used_bytes": used,
            "map_use_ratio": used / info["map_size"],
            "readers_used": info["num_readers"],
            "readers_max": info["max_readers"],
            "records_stored": records,
            "records_with_ttl": expiring,
            "changelog_length": changes,
            "failed": self._failed is not None,
        }

    def _release(self) -> None:
        with _Shared.lock:
            entry = _Shared.envs.get(self.path)
            if entry is None or entry[0] is not self._env:
                return
            env, refs, mode = entry
            if refs > 1:
                _Shared.envs[self.path] = (env, refs - 1, mode)
                return
            del _Shared.envs[self.path]
        env.close()

    def close(self) -> None:
        if self._closed:
            return
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        failed: lmdb.Error | None = None
        if self._failed is None and self.durability == "async":
            try:
                self._env.sync(True)
            except lmdb.Error as e:  # released all the same, then said
                failed = e
        self._closed = True
        self._release()
        if failed is not None:
            raise StorageError(
                f"the last flush, on close, failed: {failed}; writes acknowledged since the "
                "previous flush (durability 'async') may not be on disk"
            ) from failed
