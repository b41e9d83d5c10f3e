"""The offline log kept in the engine, for a database without a directory.

On the in-memory engine, and on engines shared by several processes or nodes (PostgreSQL),
nothing may live beside the records: the Parquet bytes of each ingest are records of the
reserved set ``_feature_blobs``, keyed ``<view>:<number>:<chunk>``, each chunk under the
record size limit. An ingest commits its blob records, its manifest record (``offline``)
and its online rows in ONE engine transaction, so it is atomic by construction: no files,
no locks, nothing to recover. Every node reads the same log back: a reader lists the
manifest, reads each blob's chunks in one snapshot, checks them against the manifest
record (size and crc32) and decodes them with pyarrow; DuckDB gets the Arrow tables, so
its sandbox needs no file access at all.

A decoded table is cached in process (``TableCache``, bounded in bytes and entries), keyed
by the manifest record it was read for, so repeated joins do not read the engine again;
the manifest says what is current, and a table it no longer lists is dropped.

Compaction merges a view's small blobs in one transaction: the inputs' manifest records go
(only if each still says the same, so two compactors cannot both win), their chunks go, the
merged blob's chunks and manifest record come.

One ingest is one transaction, so its size is bounded (``EngineLog.max_bytes``): at most
``MAX_CHUNKS`` records of the blob set and at most ``MAX_BLOB_BYTES`` (256 MiB) of
Parquet. Why that much and no more: LMDB refuses a write transaction that dirties more than
~128 Ki pages (MDB_TXN_FULL: 512 MiB with 4 KiB pages, and the online rows share the
transaction); on PostgreSQL a synchronous commit returns only once every synchronous
standby has received and flushed the transaction's whole WAL, so a bigger one stalls every
other writer behind it. Beyond the bound an ingest is refused with ``InvalidArgument``
before anything is written: ingest the rows in parts (each part is atomic on its own).
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from engramdb.errors import Conflict, InvalidArgument, StorageError
from engramdb.features.offline import (
    COMPACT_FILES,
    MAX_BLOB_BYTES,
    MAX_MERGE,
    MIN_CHUNK,
    SMALL_BYTES,
    Entry,
    Manifest,
    Staged,
    conform,
    create,
    read_entry,
    remove_if,
)
from engramdb.records.codec import HEADER_SIZE
from engramdb.records.writes import Current, Outcome
from engramdb.writeplan import TransformStep

if TYPE_CHECKING:
    from engramdb.store import Store

__all__ = ["BLOBS", "CACHE_BYTES", "CACHE_TABLES", "MAX_CHUNKS", "EngineLog", "TableCache"]

BLOBS = "_feature_blobs"
MAX_CHUNKS = 256  # blob records one ingest may write (with MAX_BLOB_BYTES: its size bound)
CACHE_BYTES = 256 << 20  # decoded tables kept per process, at most this many bytes...
CACHE_TABLES = 4096  # ...and this many tables
_OVERHEAD = HEADER_SIZE + 64  # a chunk record's header and msgpack framing, with room
_RETRIES = 8  # re-listings when a compaction removed a blob between listing and reading


class _Gone(Exception):
    """A blob's manifest record changed between listing and reading: list again."""


class TableCache:
    """Decoded tables, least recently used first, bounded in bytes and in tables.

    A table bigger than a quarter of the byte bound is never kept: it would evict most of
    the others and costs one decode to read again anyway."""

    def __init__(self, max_bytes: int = CACHE_BYTES, max_tables: int = CACHE_TABLES) -> None:
        self.max_bytes = max_bytes
        self.max_tables = max_tables
        self._tables: OrderedDict[Hashable, pa.Table] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> pa.Table | None:
        with self._lock:
            table = self._tables.get(key)
            if table is None:
                self.misses += 1
                return None
            self._tables.move_to_end(key)
            self.hits += 1
            return table

    def put(self, key: Hashable, table: pa.Table) -> None:
        size = table.nbytes
        if size > self.max_bytes // 4:
            return
        with self._lock:
            old = self._tables.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._tables[key] = table
            self._bytes += size
            while self._bytes > self.max_bytes or len(self._tables) > self.max_tables:
                _, dropped = self._tables.popitem(last=False)
                self._bytes -= dropped.nbytes

    def drop(self, keep: Callable[[Hashable], bool]) -> None:
        """Forget every table for which ``keep(key)`` is false."""
        with self._lock:
            for key in [k for k in self._tables if not keep(k)]:
                self._bytes -= self._tables.pop(key).nbytes

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "tables": len(self._tables),
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
            }


def _encode(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue())


def _remove(current: Current, now: int) -> Outcome:
    return Outcome(None, None)


class EngineLog:
    """The log of a database without a directory: Parquet blobs in ``_feature_blobs``."""

    def __init__(self, store: Store, *, cache: TableCache | None = None) -> None:
        self.store = store
        self.manifest = Manifest(store)
        self._blobs = store.records(BLOBS)
        self.chunk = store.limits.max_record_bytes - _OVERHEAD
        self.max_bytes = min(MAX_BLOB_BYTES, MAX_CHUNKS * self.chunk)
        self.cache = cache if cache is not None else TableCache()
        self._compacting = threading.Lock()

    # the manifest ------------------------------------------------------------------------

    def entries(self, view: str) -> list[Entry]:
        """The view's committed blobs, in commit-number order."""
        found = self.manifest.entries(view)
        for entry in found:
            if entry.file is not None:
                raise StorageError(
                    f"the offline manifest record {Manifest.key(view, entry.number)!r} names "
                    "a file, but this database keeps its log in the engine: corrupt or forged"
                )
        return found

    def rows(self, view: str) -> int:
        return sum(entry.rows for entry in self.entries(view))

    def recover(self) -> None:
        """Nothing to do: an ingest is one engine transaction, whole or absent."""

    # reading -----------------------------------------------------------------------------

    def _chunk_keys(self, view: str, number: int, chunks: int) -> list[str]:
        return [f"{view}:{number:012d}:{i:06d}" for i in range(chunks)]

    def table(self, view: str, entry: Entry) -> pa.Table:
        """The rows of one listed blob (from the cache, or read and checked); ``_Gone`` if
        its manifest record changed since it was listed."""
        key = (view, entry.number, entry.size, entry.crc)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        name = Manifest.key(view, entry.number)
        # The manifest record and the chunks from one snapshot: a missing chunk under an
        # unchanged record is damage, not a compaction in between.
        [listed], chunks = self.store.read(
            [
                (self.manifest.records, [name]),
                (self._blobs, self._chunk_keys(view, entry.number, entry.chunks)),
            ]
        )
        if listed is None:
            raise _Gone
        try:
            if read_entry(name, listed.bins) != entry:
                raise _Gone
        except StorageError:
            raise _Gone from None
        parts: list[bytes] = []
        for record in chunks:
            data = None if record is None else record.bins.get("b")
            if type(data) is not bytes:
                raise StorageError(
                    f"the offline log of {view!r} lacks a chunk of blob {entry.number}: its "
                    "records are corrupt or forged"
                )
            parts.append(data)
        blob = b"".join(parts)
        if len(blob) != entry.size or zlib.crc32(blob) != entry.crc:
            raise StorageError(
                f"blob {entry.number} of the offline log of {view!r} does not match its "
                "manifest record: corrupt or forged"
            )
        try:
            table = pq.read_table(pa.BufferReader(blob))
        except (pa.ArrowException, OSError) as e:
            raise StorageError(f"cannot read blob {entry.number} of {view!r}: {e}") from None
        self.cache.put(key, table)
        return table

    def tables(self, view: str) -> list[pa.Table]:
        """The view's committed rows, one table per blob, as of one listing of the manifest
        (listed again when a compaction removed a blob in between)."""
        for _ in range(_RETRIES):
            entries = self.entries(view)
            try:
                tables = [self.table(view, entry) for entry in entries]
            except _Gone:
                continue
            break
        else:
            raise StorageError(f"the offline log of {view!r} kept changing while being read")
        # What the manifest no longer lists (compacted away) is never read again.
        listed = {(view, e.number, e.size, e.crc) for e in entries}
        self.cache.drop(lambda k: not (isinstance(k, tuple) and k[0] == view) or k in listed)
        return tables

    def readable(self, views: Sequence[str]) -> list[str]:
        return []

    def attach(self, connection: Any, alias: str, view: str) -> bool:
        tables = self.tables(view)
        if not tables:
            return False
        connection.register(alias, pa.concat_tables(tables, promote_options="default"))
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "place": "engine",
            "blob_records": self._blobs.count(),
            "max_ingest_bytes": self.max_bytes,
            "cache": self.cache.stats(),
        }

    # writing -----------------------------------------------------------------------------

    def stage(self, view: str, table: pa.Table, number: int) -> Staged:
        """``table`` as Parquet bytes, checked against the size bound (nothing written)."""
        if self.chunk < MIN_CHUNK:
            raise InvalidArgument(
                f"the record size limit ({self.store.limits.max_record_bytes} bytes) is too "
                f"small to keep the offline log in the database (at least "
                f"{MIN_CHUNK + _OVERHEAD} bytes)"
            )
        try:
            blob = _encode(table)
        except pa.ArrowException as e:
            raise StorageError(f"cannot encode the offline rows of {view!r}: {e}") from None
        if len(blob) > self.max_bytes:
            raise InvalidArgument(
                f"this ingest is {len(blob)} bytes as Parquet; one ingest is one transaction "
                f"and may be at most {self.max_bytes} bytes: ingest the rows in parts"
            )
        return Staged(view, number, rows=table.num_rows, size=len(blob), blob=blob)

    def _steps(self, staged: Staged, replaced: Sequence[Entry] = ()) -> list[TransformStep]:
        """Steps that list ``staged`` (removing ``replaced``, each only if unchanged)."""
        assert staged.blob is not None
        view, blob = staged.view, staged.blob
        chunks = [blob[i : i + self.chunk] for i in range(0, len(blob), self.chunk)]
        bins: dict[str, Any] = {
            "chunks": len(chunks), "rows": staged.rows, "bytes": len(blob),
            "crc": zlib.crc32(blob),
        }  # fmt: skip
        if replaced:
            bins["replaces"] = [e.number for e in replaced]
        listing: list[tuple[str, Any]] = []
        stored: list[tuple[str, Any]] = []
        for entry in replaced:
            name = Manifest.key(view, entry.number)
            listing.append((name, remove_if(entry, name)))
            stored.extend((k, _remove) for k in self._chunk_keys(view, entry.number, entry.chunks))
        listing.append((Manifest.key(view, staged.number), create(bins)))
        keys = self._chunk_keys(view, staged.number, len(chunks))
        stored.extend((k, create({"b": c})) for k, c in zip(keys, chunks))
        return [self.manifest.step(listing), self.store.step(self._blobs, stored)]

    def commit_steps(self, staged: Staged) -> list[TransformStep]:
        """The blob's records and its manifest record, to commit with the online rows."""
        return self._steps(staged)

    def commit(self, staged: Staged, steps: list[TransformStep]) -> list[list[Any]]:
        """Commit ``steps`` in one engine transaction: all of them or nothing."""
        return self.store.write(steps)

    # compaction --------------------------------------------------------------------------

    def compact(
        self, view: str, number: Callable[[], int], *, at_least: int = COMPACT_FILES
    ) -> int:
        """Merge the view's small blobs into one once there are ``at_least`` of them; returns
        how many were merged (0 when there was nothing to do or another compaction got there
        first). Query results are the same before and after."""
        if not self._compacting.acquire(blocking=False):
            return 0  # one compaction at a time per process; the next ingest tries again
        try:
            return self._compact(view, number, max(2, at_least))
        finally:
            self._compacting.release()

    def _compact(self, view: str, number: Callable[[], int], at_least: int) -> int:
        # Inputs add up to half the bound at most: the merged blob (about their sum) must
        # fit one transaction with room to spare.
        inputs: list[Entry] = []
        total = 0
        for entry in self.entries(view):
            if entry.size >= SMALL_BYTES:
                continue
            if len(inputs) == MAX_MERGE or total + entry.size > self.max_bytes // 2:
                break
            inputs.append(entry)
            total += entry.size
        if len(inputs) < at_least:
            return 0
        try:
            tables = [self.table(view, entry) for entry in inputs]
        except _Gone:
            return 0  # another process compacted these blobs first
        try:
            schema = pa.unify_schemas([t.schema for t in tables], promote_options="default")
            merged = pa.concat_tables([conform(t, schema) for t in tables])
            blob = _encode(merged)
        except pa.ArrowException as e:
            raise StorageError(f"cannot compact the offline log of {view!r}: {e}") from e
        if len(blob) > self.max_bytes:
            return 0  # merging made it bigger than its inputs: leave them
        staged = Staged(view, number(), rows=merged.num_rows, size=len(blob), blob=blob)
        try:
            self.store.write(self._steps(staged, inputs))
        except Conflict:
            return 0
        gone = {(view, e.number, e.size, e.crc) for e in inputs}
        self.cache.drop(lambda k: k not in gone)
        return len(inputs)
