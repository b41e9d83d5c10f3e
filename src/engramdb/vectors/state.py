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
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from engramdb.errors import ChangeLogTruncated, InvalidArgument
from engramdb.index.filters import Columns
from engramdb.index.text import TextIndex
from engramdb.index.vector import VectorIndex, VectorParams, prepare
from engramdb.records.keys import Key
from engramdb.records.model import Record
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
# it is never trusted: the index is rebuilt from the items instead.
SNAPSHOT_FORMAT = 2
_REBUILD_AT = 0.5  # tombstone share that triggers a rebuild of the graph


class _ReadGuard:
    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock._acquire_read()

    def __exit__(self, *exc: object) -> None:
        self._lock._release_read()


class RWLock:
    """Many readers or one writer (searches share; index updates are exclusive)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._read_guard = _ReadGuard(self)

    def read(self) -> _ReadGuard:
        """``with lock.read():`` (a plain guard object, not a generator: searches take it
        on every call)."""
        return self._read_guard

    def _acquire_read(self) -> None:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1

    def _release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
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
    metadata: list[dict[str, Any] | None]
    texts: list[str | None]
    format: int = 1  # absent from version-1 snapshots


class CollectionState:
    """Everything derived about one collection in this process."""

    def __init__(self, store: Store, info: CollectionInfo, set_name: str) -> None:
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
        self._reset()
        self._snapshot_dir = (
            None
            if store.cache_dir is None
            else os.path.join(store.cache_dir, "indexes", f"{set_name}-{info.uid}")
        )

    def _reset(self) -> None:
        self.vectors = VectorIndex(self.params)
        self.text = TextIndex() if self.info.text else None
        self.columns = Columns()
        self.label_of: dict[Key, int] = {}
        self.id_of: list[Key | None] = []
        self.generation_of: list[int] = []
        self.metadata_of: list[dict[str, Any] | None] = []
        self.text_of: list[str | None] = []

    # loading -----------------------------------------------------------------------------

    def open(self, progress: bool = True) -> None:
        """Load the snapshot if there is a usable one, else build from the items."""
        if not self._load_snapshot():
            self._build(progress)

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
            self.metadata_of.append(metadata)
            self.text_of.append(text)
            self.columns.set(label, metadata)
            if self.text is not None and text:
                self.text.add(label, text)

    def _update_in_place(
        self, label: int, record: Record, metadata: dict[str, Any] | None, text: str | None
    ) -> None:
        """Same vector, new metadata/text/TTL (e.g. a touch or a metadata edit)."""
        self.generation_of[label] = record.generation
        self.metadata_of[label] = metadata
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
        self.vectors.remove(label)
        self.columns.clear(label)
        self.id_of[label] = None
        self.metadata_of[label] = None
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
        metadata = [self.metadata_of[i] for i in keep]
        texts = [self.text_of[i] for i in keep]
        self.vectors = fresh
        self._adopt(ids, generations, metadata, texts)
        self.rebuilds += 1

    def _adopt(
        self,
        ids: list[Key | None],
        generations: list[int],
        metadata: list[dict[str, Any] | None],
        texts: list[str | None],
    ) -> None:
        """Rebuild every per-label structure for labels ``0..len(ids)-1``."""
        self.id_of, self.generation_of = list(ids), list(generations)
        self.metadata_of, self.text_of = list(metadata), list(texts)
        self.label_of = {key: label for label, key in enumerate(ids) if key is not None}
        self.columns = Columns()
        self.text = TextIndex() if self.info.text else None
        for label, key in enumerate(ids):
            if key is None:
                continue
            self.columns.set(label, metadata[label])
            if self.text is not None and texts[label]:
                self.text.add(label, texts[label])  # type: ignore[arg-type]
        self._refresh_text()

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
                metadata=self.metadata_of,
                texts=self.text_of,
            )
            with open(state_path, "wb") as out:
                out.write(msgspec.msgpack.encode(state))
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
                state = msgspec.msgpack.decode(state_file.read(), type=_Snapshot)
            if state.format != SNAPSHOT_FORMAT:
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
            self._adopt(ids, state.generations, state.metadata, state.texts)
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

    def close(self) -> None:
        """Persist a snapshot if anything changed since the last one (never raises for a
        snapshot that cannot be written: see ``_save_snapshot``)."""
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
            "updated": time.time(),
        }
