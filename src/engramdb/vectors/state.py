"""A collection's derived indexes in this process, fed by the change log.

Items are records of the collection's item set; the vector index, the BM25 index and the
metadata columns are derived from them and never written directly. ``catch_up`` reads the
change log from the sequence the indexes reflect, re-reads each changed item (its current
state, so several changes to one item cost one update) and applies it. Searches catch up
first, so a search that starts after an upsert returned sees it, in any process.

"Already indexed" is decided by the item's generation, which is never reused for a key: a
record re-created after a delete or an expiry starts above every generation its earlier
incarnations had. So an item deleted and re-created between two catch-ups (by another
process, say) is re-indexed, never mistaken for the old one.

On first use the state loads the newest snapshot (vector index + labels + metadata, written
with the sequence it reflects) and catches up from there; without a usable snapshot, or if
retention already dropped the changes it needs, it rebuilds from a scan of the items.
Snapshots are a cache: one of another format version, or that fails any check, is ignored
(and rebuilt), and failing to write one (a full disk) is logged and counted in ``stats``,
never reported as a failed write. An item that cannot be indexed (a forged or corrupt
record) is skipped and counted, so it cannot break searches of the others.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from engramdb.errors import ChangeLogTruncated, InvalidArgument
from engramdb.index.filters import Columns
from engramdb.index.text import TextIndex
from engramdb.index.vector import VectorIndex, VectorParams, prepare
from engramdb.records.codec import decode_own, decode_value, encode_value
from engramdb.records.keys import Key
from engramdb.records.model import Record
from engramdb.vectors.calibrate import GROWTH, Calibration, Stopped, measure
from engramdb.vectors.model import CollectionInfo

if TYPE_CHECKING:
    from engramdb.store import Store

__all__ = ["SNAPSHOT_FORMAT", "CollectionState", "RWLock"]

log = logging.getLogger("engramdb.vectors")

VECTOR, METADATA, TEXT = "vector", "metadata", "text"
_BATCH = 2000
_SNAPSHOT_EVERY = 20_000  # applied changes between snapshots (or attempts at one)
# Version 2: generations are never reused for a key. A version-1 snapshot may hold an item
# indexed at a generation its re-created record has again, with the old vector and text, so
# it is never trusted: the index is rebuilt from the items instead. Version 3: metadata is
# kept packed (see CollectionState.packed_metadata); a version-2 snapshot, metadata as maps,
# is as trustworthy and is packed when loaded.
SNAPSHOT_FORMAT = 3
_REBUILD_AT = 0.5  # tombstone share that triggers a rebuild of the graph
_SCAN_CACHE = 4  # filters whose ordered matches a collection keeps for paging scans
_NO_METADATA = encode_value({})


def pack_metadata(metadata: dict[str, Any] | None) -> bytes:
    """An item's metadata as the index keeps it: msgpack, decoded afresh for each hit."""
    return encode_value(metadata) if metadata else _NO_METADATA


class _ReadGuard:
    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    # Every search takes and leaves the lock: the common case holds only the plain mutex
    # (native enter and exit) and calls no Python function, the Condition being used only
    # when someone has to wait.
    def __enter__(self) -> None:
        lock = self._lock
        with lock._mutex:
            if lock._writer:
                lock._wait(lambda: not lock._writer)
            lock._readers += 1

    def __exit__(self, *exc: object) -> None:
        lock = self._lock
        with lock._mutex:
            lock._readers -= 1
            if not lock._readers and lock._waiting:
                lock._cond.notify_all()


class RWLock:
    """Many readers or one writer (searches share; index updates are exclusive)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._waiting = 0  # threads waiting on _cond (nobody to notify when 0)
        self._read_guard = _ReadGuard(self)

    def read(self) -> _ReadGuard:
        """``with lock.read():`` (a plain guard object, not a generator: searches take it
        on every call)."""
        return self._read_guard

    def _wait(self, ready: Callable[[], bool]) -> None:
        """Wait (holding ``_mutex``) until ``ready()``."""
        self._waiting += 1
        try:
            self._cond.wait_for(ready)
        finally:
            self._waiting -= 1

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._mutex:
            if self._writer or self._readers:
                self._wait(lambda: not (self._writer or self._readers))
            self._writer = True
        try:
            yield
        finally:
            with self._mutex:
                self._writer = False
                if self._waiting:
                    self._cond.notify_all()


def params_of(info: CollectionInfo) -> VectorParams:
    return VectorParams(
        dim=info.dim,
        metric=info.metric,
        m=info.m,
        ef_construction=info.ef_construction,
        ef_search=info.ef_search,
        exact_threshold=info.exact_threshold,
    )


class _Snapshot(msgspec.Struct):
    uid: str
    sequence: int
    ids: list[Any]
    generations: list[int]
    live: bytes
    expires: bytes
    metadata: list[Any]  # packed (bytes or None); maps or None in version 2
    texts: list[str | None]
    format: int = 1  # absent from version-1 snapshots


class CollectionState:
    """Everything derived about one collection in this process."""

    default_beam: tuple[int | None, bool]  # see the calibration setter

    def __init__(
        self,
        store: Store,
        info: CollectionInfo,
        set_name: str,
        calibration: Calibration | None = None,
        persist: Callable[[Calibration], None] | None = None,
    ) -> None:
        self.store = store
        self.info = info
        self.set_name = set_name
        self.params = params_of(info)
        self.lock = RWLock()
        self._catching_up = threading.Lock()
        self.applied = 0
        self.checked = -1  # last_sequence() at the last alive + caught-up check (Collection)
        self.saved = 0  # sequence of the snapshot on disk (0: none)
        self.attempted = 0  # sequence at the last attempt to write one, failed or not
        self.snapshot_failures = 0
        self.snapshot_error: str | None = None
        self.skipped = 0  # items that could not be indexed (corrupt records)
        self.rebuilds = 0
        self.dropped = False
        # Bumped whenever an item enters, leaves or changes in the indexes; scans cache
        # their ordered matches against it (see scan_cache_get).
        self.version = 0
        self._scan_cache: dict[bytes, tuple[int, Any]] = {}
        self._scan_lock = threading.Lock()
        # Calibration (see calibrate.py): the ef searches use unless given one.
        self.calibration = calibration if calibration is not None and info.target_recall else None
        self._persist = persist
        self._calibrating = threading.Lock()  # one calibration at a time
        self._calibrator: threading.Thread | None = None
        self._stop = threading.Event()
        self._calibrated_rebuilds = 0
        self._next_calibration = (
            0 if self.calibration is None else math.ceil(self.calibration.size * GROWTH)
        )
        self.calibrations = 0
        self.calibration_error: str | None = None
        self._reset()
        self._snapshot_dir = (
            None
            if store.cache_dir is None
            else os.path.join(store.cache_dir, "indexes", f"{set_name}-{info.uid}")
        )

    def _reset(self) -> None:
        self.version += 1
        self.vectors = VectorIndex(self.params)
        self.text = TextIndex() if self.info.text else None
        self.columns = Columns()
        self.label_of: dict[Key, int] = {}
        self.id_of: list[Key | None] = []
        self.generation_of: list[int] = []
        # Each item's metadata packed (msgpack bytes; None for a removed label). A hit
        # decodes its item's afresh, which is the caller's own copy for the price of a
        # shallow one: searches are memory-bound after the graph walk, and one small bytes
        # object per hit is far fewer cache misses than a map, its keys and its values.
        self.packed_metadata: list[bytes | None] = []
        self.text_of: list[str | None] = []

    # loading -----------------------------------------------------------------------------

    def open(self, progress: bool = True) -> None:
        """Load the snapshot if there is a usable one, else build from the items."""
        if not self._load_snapshot():
            self._build(progress)
        self.maybe_calibrate()

    def _build(self, progress: bool) -> None:
        self._reset()
        self.applied = self.store.last_sequence()
        records = self.store.records(self.set_name)
        total = records.count()
        from engramdb._progress import progress_bar

        with progress_bar(f"indexing {self.info.name}", total, enabled=progress) as advance:
            batch: list[Record] = []
            for record in records.iterate(batch=_BATCH):
                batch.append(record)
                if len(batch) >= _BATCH:
                    self._apply_records(batch)
                    advance(len(batch))
                    batch = []
            self._apply_records(batch)
            advance(len(batch))
        self._refresh_text()
        self.saved = self.attempted = 0

    # change feed -------------------------------------------------------------------------

    def catch_up(self) -> None:
        """Apply every committed change this state has not seen yet."""
        last = self.store.last_sequence()
        if last <= self.applied:
            return
        from engramdb._progress import progress_bar

        with (
            self._catching_up,
            self.lock.write(),
            progress_bar(f"indexing {self.info.name}", last - self.applied) as advance,
        ):
            position = self.applied
            changed = 0
            while position < last:
                try:
                    changes = self.store.changes(position, limit=_BATCH * 5)
                except ChangeLogTruncated:
                    self._build(progress=True)
                    return
                if not changes:
                    break
                keys = {c.key for c in changes if c.set_name == self.set_name}
                if keys:
                    self._apply_keys(list(keys))
                    changed += len(keys)
                advance(changes[-1].sequence - position)
                position = changes[-1].sequence
            self.applied = position
            # The text index is not committed here: a tantivy commit costs milliseconds
            # (most of a memory add's time when it was), so the next text search commits
            # whatever writes arrived since (TextIndex.search -> refresh), once for many.
            if (
                self.vectors.size > 1000
                and self.vectors.tombstones > _REBUILD_AT * self.vectors.size
            ):
                self._compact()
            if changed and self.applied - max(self.saved, self.attempted) >= _SNAPSHOT_EVERY:
                self._save_snapshot()
        if changed:
            self.maybe_calibrate()

    def _apply_keys(self, keys: list[Key]) -> None:
        records = self.store.records(self.set_name).get_many(keys)
        present = [r for r in records if r is not None]
        for key, record in zip(keys, records):
            if record is None:
                self._remove(key)
        self._apply_records(present)

    def _parse(self, record: Record) -> tuple[np.ndarray, dict[str, Any] | None, str | None]:
        """An item's vector (prepared, 1 x dim), metadata and text; ``InvalidArgument`` when
        the record is not a well-formed item of this collection."""
        vector = prepare(record.get(VECTOR), self.params)
        if len(vector) != 1:
            raise InvalidArgument(f"it holds {len(vector)} vectors")
        metadata = record.get(METADATA) or None
        if metadata is not None and (
            type(metadata) is not dict or not all(type(k) is str for k in metadata)
        ):
            raise InvalidArgument("its metadata is not a map with str keys")
        text = record.get(TEXT)
        if text is not None and type(text) is not str:
            raise InvalidArgument("its text is not a str")
        return vector, metadata, text

    def _apply_records(self, records: list[Record]) -> None:
        if not records:
            return
        self.version += 1
        fresh: list[tuple[Record, np.ndarray, dict[str, Any] | None, str | None]] = []
        for record in records:
            label = self.label_of.get(record.key)
            if label is not None and self.generation_of[label] == record.generation:
                continue  # already indexed at this generation (never reused for a key)
            try:
                vector, metadata, text = self._parse(record)
            except InvalidArgument as e:
                self.skipped += 1
                log.warning(
                    "collection %r: item %r is not indexed: %s", self.info.name, record.key, e
                )
                self._remove(record.key)  # and whatever it replaced leaves the index
                continue
            if label is not None and np.array_equal(self.vectors.vectors()[label], vector[0]):
                self._update_in_place(label, record, metadata, text)
                continue
            if label is not None:
                self._remove(record.key)
            fresh.append((record, vector, metadata, text))
        if not fresh:
            return
        vectors = np.concatenate([vector for _, vector, _, _ in fresh])
        expires = np.array(
            [int(r.expires_at * 1000) if r.expires_at else 0 for r, _, _, _ in fresh],
            dtype=np.int64,
        )
        labels = self.vectors.add(vectors, expires)
        for (record, _, metadata, text), label in zip(fresh, labels.tolist()):
            self.label_of[record.key] = label
            self.id_of.append(record.key)
            self.generation_of.append(record.generation)
            self.packed_metadata.append(pack_metadata(metadata))
            self.text_of.append(text)
            self.columns.set(label, metadata)
            if self.text is not None and text:
                self.text.add(label, text)

    def _update_in_place(
        self, label: int, record: Record, metadata: dict[str, Any] | None, text: str | None
    ) -> None:
        """Same vector, new metadata/text/TTL (e.g. a touch or a metadata edit)."""
        self.generation_of[label] = record.generation
        self.packed_metadata[label] = pack_metadata(metadata)
        self.columns.set(label, metadata)
        was_ttl = bool(self.vectors.expires[label])
        self.vectors.expires[label] = int(record.expires_at * 1000) if record.expires_at else 0
        self.vectors.with_ttl += int(bool(self.vectors.expires[label])) - int(was_ttl)
        if self.text is not None and text != self.text_of[label]:
            if self.text_of[label]:
                self.text.remove(label)
            if text:
                self.text.add(label, text)
        self.text_of[label] = text

    def _remove(self, key: Key) -> None:
        label = self.label_of.pop(key, None)
        if label is None:
            return
        self.version += 1
        self.vectors.remove(label)
        self.columns.clear(label)
        self.id_of[label] = None
        self.packed_metadata[label] = None
        if self.text is not None and self.text_of[label]:
            self.text.remove(label)
        self.text_of[label] = None

    def _refresh_text(self) -> None:
        if self.text is not None:
            self.text.refresh()

    def _compact(self) -> None:
        """Rebuild the graph without tombstones (labels are renumbered)."""
        fresh, mapping = self.vectors.rebuilt()
        keep = np.flatnonzero(mapping >= 0)
        ids = [self.id_of[i] for i in keep]
        generations = [self.generation_of[i] for i in keep]
        metadata = [self.packed_metadata[i] for i in keep]
        texts = [self.text_of[i] for i in keep]
        self.vectors = fresh
        self._adopt(ids, generations, metadata, texts)
        self.rebuilds += 1

    def _adopt(
        self,
        ids: list[Key | None],
        generations: list[int],
        metadata: list[bytes | None],
        texts: list[str | None],
    ) -> None:
        """Rebuild every per-label structure for labels ``0..len(ids)-1`` (``metadata``
        packed; ``ValueError`` for an entry that is not a packed map)."""
        self.version += 1
        self.id_of, self.generation_of = list(ids), list(generations)
        self.packed_metadata, self.text_of = list(metadata), list(texts)
        self.label_of = {key: label for label, key in enumerate(ids) if key is not None}
        self.columns = Columns()
        self.text = TextIndex() if self.info.text else None
        for label, key in enumerate(ids):
            if key is None:
                continue
            packed = metadata[label]
            unpacked = decode_own(packed) if type(packed) is bytes else None
            if type(unpacked) is not dict:
                raise ValueError(f"the metadata of label {label} is not a packed map")
            self.columns.set(label, unpacked)
            if self.text is not None and texts[label]:
                self.text.add(label, texts[label])  # type: ignore[arg-type]
        self._refresh_text()

    # scans -------------------------------------------------------------------------------

    def scan_cache_get(self, spec: bytes) -> Any:
        """What ``scan_cache_put`` stored for ``spec`` at the current version, or None.
        Call under the read lock (the version cannot move then)."""
        with self._scan_lock:
            found = self._scan_cache.get(spec)
        return found[1] if found is not None and found[0] == self.version else None

    def scan_cache_put(self, spec: bytes, value: Any) -> None:
        with self._scan_lock:
            self._scan_cache.pop(spec, None)
            while len(self._scan_cache) >= _SCAN_CACHE:
                del self._scan_cache[next(iter(self._scan_cache))]  # the oldest
            self._scan_cache[spec] = (self.version, value)

    # snapshots ---------------------------------------------------------------------------

    def _save_snapshot(self) -> None:
        """Write a snapshot of the indexes at ``applied``. Never raises: a snapshot only
        saves a rebuild, so failing to write one (a full disk, an unwritable directory) is
        logged and counted, and what it left half-written is removed."""
        directory = self._snapshot_dir
        if directory is None:
            return
        self.attempted = self.applied
        tag = f"{self.applied}-{os.getpid()}-{threading.get_ident()}"
        index_path = os.path.join(directory, f"hnsw-{tag}.faiss")
        state_path = os.path.join(directory, f"state-{tag}.msgpack")
        pointer = os.path.join(directory, "CURRENT")
        temporary = f"{pointer}.{tag}"
        try:
            os.makedirs(directory, exist_ok=True)
            self.vectors.save(index_path)  # faiss raises RuntimeError when it cannot write
            state = _Snapshot(
                format=SNAPSHOT_FORMAT,
                uid=self.info.uid,
                sequence=self.applied,
                ids=self.id_of,
                generations=self.generation_of,
                live=self.vectors.live.tobytes(),
                expires=self.vectors.expires.tobytes(),
                metadata=self.packed_metadata,
                texts=self.text_of,
            )
            with open(state_path, "wb") as out:
                out.write(encode_value(state))  # metadata may hold numpy arrays
            with open(temporary, "w") as out:
                out.write(tag)
            os.replace(temporary, pointer)  # atomic: readers see the old or the new snapshot
        except Exception as e:
            self.snapshot_failures += 1
            self.snapshot_error = f"{type(e).__name__}: {e}"
            log.warning(
                "could not save the index snapshot of collection %r (%s); the items are "
                "safe, the index will be rebuilt or caught up from an older snapshot",
                self.info.name,
                self.snapshot_error,
            )
            for path in (index_path, state_path, temporary):
                with contextlib.suppress(OSError):
                    os.remove(path)
            return
        self.saved = self.applied
        with contextlib.suppress(OSError):
            for name in os.listdir(directory):
                if name != "CURRENT" and tag not in name and not name.startswith("CURRENT."):
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(directory, name))

    def _load_snapshot(self) -> bool:
        """Adopt the snapshot on disk if it is of this format and incarnation, whole, and
        still reachable from the change log; otherwise leave it (and rebuild)."""
        directory = self._snapshot_dir
        if directory is None:
            return False
        try:
            with open(os.path.join(directory, "CURRENT")) as pointer:
                tag = pointer.read().strip()
        except OSError:
            return False  # none yet
        try:
            with open(os.path.join(directory, f"state-{tag}.msgpack"), "rb") as state_file:
                state = msgspec.convert(decode_value(state_file.read()), _Snapshot)
            if state.format not in (2, SNAPSHOT_FORMAT):
                log.info(
                    "collection %r: its index snapshot is of format %d, not %d; rebuilding",
                    self.info.name,
                    state.format,
                    SNAPSHOT_FORMAT,
                )
                return False
            if state.uid != self.info.uid:
                return False
            first = self.store.first_sequence()
            if state.sequence + 1 < first or state.sequence > self.store.last_sequence():
                return False  # the changes since are gone (or it is from another life)
            live = np.frombuffer(state.live, dtype=bool).copy()
            expires = np.frombuffer(state.expires, dtype=np.int64).copy()
            size = len(live)
            if not (
                len(expires)
                == len(state.ids)
                == len(state.generations)
                == len(state.metadata)
                == len(state.texts)
                == size
            ):
                raise ValueError("its parts disagree in length")
            self.vectors = VectorIndex.load(
                os.path.join(directory, f"hnsw-{tag}.faiss"), self.params, live, expires
            )
            ids = [key if ok else None for key, ok in zip(state.ids, live.tolist())]
            metadata = state.metadata
            if state.format == 2:  # maps, not yet packed
                metadata = [
                    pack_metadata(m) if type(m) is dict or m is None else m for m in metadata
                ]
            self._adopt(ids, state.generations, metadata, state.texts)
        except Exception as e:  # a cache: whatever is wrong with it, rebuild
            log.warning(
                "collection %r: ignoring its index snapshot (%s: %s); rebuilding",
                self.info.name,
                type(e).__name__,
                e,
            )
            self._reset()
            return False
        self.applied = self.saved = self.attempted = state.sequence
        return True

    # calibration -----------------------------------------------------------------------

    @property
    def calibration(self) -> Calibration | None:
        return self._calibration

    @calibration.setter
    def calibration(self, value: Calibration | None) -> None:
        self._calibration = value
        # What a search without ``ef`` uses: (beam width or None for ef_search, exact?).
        self.default_beam = (
            (None, False) if value is None else (None, True) if value.ef == 0 else (value.ef, False)
        )

    def beam(self, ef: int | None) -> tuple[int | None, bool]:
        """The beam width of a search given ``ef`` (None: the collection's own), and
        whether to search exactly instead (calibration found the graph cannot reach the
        target recall for less than a scan)."""
        return (ef, False) if ef is not None else self.default_beam

    def adopt(self, calibration: Calibration | None) -> None:
        """Take a calibration persisted by another process when it measured more items."""
        if calibration is None or not self.info.target_recall:
            return
        mine = self.calibration
        if mine is None or calibration.size > mine.size:
            self.calibration = calibration
            self._next_calibration = max(
                self._next_calibration, math.ceil(calibration.size * GROWTH)
            )

    def _due(self) -> bool:
        n = self.vectors.live_count
        return (
            bool(self.info.target_recall)
            and not self.dropped
            and not self._stop.is_set()
            and n > self.params.exact_threshold
            and (n >= self._next_calibration or self.rebuilds != self._calibrated_rebuilds)
        )

    def maybe_calibrate(self) -> None:
        """Start a background calibration if the collection grew enough since the last
        one (or its graph was rebuilt). Cheap when not due; never blocks a write."""
        if not self._due() or self._calibrating.locked():
            return
        thread = threading.Thread(
            target=self._calibrate_in_background,
            name=f"engramdb-calibrate-{self.info.name}",
            daemon=True,
        )
        self._calibrator = thread
        thread.start()

    def _calibrate_in_background(self) -> None:
        if not self._calibrating.acquire(blocking=False):
            return
        try:
            if self._due():
                self._run_calibration()
        except Exception as e:  # a background nicety: log it and keep the old ef
            self.calibration_error = f"{type(e).__name__}: {e}"
            log.warning("calibrating collection %r failed: %s", self.info.name, e)
        finally:
            self._calibrating.release()

    def calibrate(self, seed: int | None = None) -> Calibration | None:
        """Calibrate now, in this thread (waiting for a running calibration first); None
        when there is nothing to calibrate (no target, or few enough items that searches
        are exact)."""
        if not self.info.target_recall or self.vectors.live_count <= self.params.exact_threshold:
            return None
        with self._calibrating:
            return self._run_calibration(seed)

    def _run_calibration(self, seed: int | None = None) -> Calibration | None:
        target = self.info.target_recall
        assert target is not None
        rebuilds, size = self.rebuilds, self.vectors.live_count
        if seed is None:  # the same items give the same sample, so the same ef
            seed = int(self.info.uid, 16) ^ size
        try:
            found = measure(self, target, self._stop, seed)
        except Stopped:
            return None
        self._calibrated_rebuilds = rebuilds
        self._next_calibration = math.ceil(max(size, found.size) * GROWTH)
        if self.dropped or self._stop.is_set():
            return None
        self.calibration = found
        self.calibrations += 1
        self.calibration_error = None
        if self._persist is not None:
            try:
                self._persist(found)
            except Exception as e:  # kept in memory; the next process measures again
                self.calibration_error = f"not persisted: {type(e).__name__}: {e}"
                log.warning(
                    "collection %r: could not persist its calibration: %s", self.info.name, e
                )
        return found

    def stop_calibrating(self) -> None:
        """Abandon a running calibration and wait for its thread (close, drop)."""
        self._stop.set()
        thread = self._calibrator
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    def calibration_stats(self) -> dict[str, Any]:
        tuned = self.calibration
        beam, exact = self.beam(None)
        return {
            "target_recall": self.info.target_recall,
            "ef": None if exact else (beam or self.params.ef_search),
            "search_mode": "exact"
            if exact or self.vectors.live_count <= self.params.exact_threshold
            else "graph",
            "measured_recall": tuned.recall if tuned is not None else None,
            "calibrated_size": tuned.size if tuned is not None else None,
            "calibration_samples": tuned.samples if tuned is not None else None,
            "calibration_seconds": tuned.seconds if tuned is not None else None,
            "calibrated_at": tuned.at if tuned is not None else None,
            "calibrating": self._calibrating.locked(),
            "calibrations": self.calibrations,
            "last_calibration_error": self.calibration_error,
        }

    def close(self) -> None:
        """Persist a snapshot if anything changed since the last one (never raises for a
        snapshot that cannot be written: see ``_save_snapshot``)."""
        self.stop_calibrating()
        with self.lock.write():
            if self.applied != self.saved and not self.dropped:
                self._save_snapshot()

    def remove_files(self) -> None:
        directory = self._snapshot_dir
        if directory is None or not os.path.isdir(directory):
            return
        for name in os.listdir(directory):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(directory, name))
        with contextlib.suppress(OSError):
            os.rmdir(directory)

    def stats(self) -> dict[str, Any]:
        vectors = self.vectors
        return {
            "items_indexed": vectors.live_count,
            "labels": vectors.size,
            "tombstones": vectors.tombstones,
            "memory_bytes": vectors.memory_bytes(),
            "text_documents": self.text.documents if self.text is not None else 0,
            "applied_sequence": self.applied,
            "lag": max(0, self.store.last_sequence() - self.applied),
            "snapshot_sequence": self.saved,
            "snapshot_failures": self.snapshot_failures,
            "last_snapshot_error": self.snapshot_error,
            "skipped_items": self.skipped,
            "rebuilds": self.rebuilds,
            **self.calibration_stats(),
            "updated": time.time(),
        }
