"""The offline log: every ingested row, append-only, as Parquet plus a manifest.

Where the Parquet lives depends on the database:

- **in files** (``FileLog``, this module) when the database has a directory (LMDB): DuckDB
  reads the files directly, streaming, which is the fast path on one host;
- **in the engine** (``EngineLog``, ``blobs``) when it has none (the in-memory engine, a
  PostgreSQL cluster): the bytes are records of the database itself, so every process or
  node sharing the engine sees the same log and nothing is kept beside it.

Either way a Parquet object is part of the log only once the **manifest** — records of the
reserved set ``_feature_files``, keyed ``<view>:<number>`` — names it. The manifest lives in
the engine, so an ingest commits its manifest record and its online rows in ONE
transaction: that commit is the moment the ingest happens, offline and online together.

For files, the file is written and fsynced before, under an exclusive ``flock`` held until
after the commit, so:

- killed before the commit: the file is named by no manifest record and no live process
  holds its lock. ``recover`` (run when a process first uses the feature store) and
  ``collect`` delete it: the ingest is rolled back on both sides.
- killed after the commit: the manifest names a complete, durable file: rolled forward.
- a live writer's file is locked, so another process's recovery never takes it for debris;
  recovery re-reads the manifest record after taking the lock, so a file committed in the
  meantime is kept.

Compaction merges a view's small files into one: the new file is written and fsynced
(locked, like an ingest's), then ONE transaction removes the inputs' manifest records and
adds the new file's (only if every input is still listed, so two compactors cannot both
win), then the inputs are deleted. A crash at any step leaves either the inputs or the
merged file listed, never both, never neither; leftover files are debris ``collect``
removes. A reader lists the manifest, then reads; if a compaction removed a file in
between it lists again (``sql.Reader``).

Every path is built from names that passed the identifier rule, and is resolved
(``realpath``) and checked to stay inside the database's directory (``InvalidArgument``
otherwise). A manifest record is validated when read back (``StorageError`` if not valid).

Each row carries ``__ingest``: the ingest's number times 2^30 plus the row's position, so
rows with the same event and created timestamps still have one order, the same offline and
online: the later ingest wins.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from engramdb.errors import Conflict, InvalidArgument, StorageError
from engramdb.features.names import check_name, is_name
from engramdb.records.writes import Current, Outcome
from engramdb.writeplan import TransformStep

if TYPE_CHECKING:
    from engramdb.store import Store

__all__ = [
    "INGEST", "Entry", "FileLog", "Log", "Manifest", "Staged", "conform", "create", "inside",
    "read_entry", "remove_if",
]  # fmt: skip

log = logging.getLogger("engramdb.features")

INGEST = "__ingest"
FILES = "_feature_files"  # the manifest
_FORMAT = "__format"  # manifest record: this database's log is managed by a manifest
_FILE = re.compile(r"([0-9]{12})-([0-9a-f]{16})\.parquet")
# Files of the log before the manifest: adopted once (see ``_adopt``), never deleted.
_LEGACY = re.compile(r"([0-9]{12})-([0-9a-f]{8})\.parquet")
_LEGACY_TEMP = re.compile(r"\.tmp-[0-9]{12}-[0-9a-f]{8}\.parquet")
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]{0,62}):([0-9]{12})")

COMPACT_FILES = 16  # a view with this many small files (or blobs) gets them merged into one
SMALL_BYTES = 16 << 20  # a file under this size is small
MAX_MERGE = 64  # files merged by one compaction at most (bounds its memory and time)
# A blob kept in the engine: one ingest's Parquet, at most this big (one transaction; see
# ``blobs``), in chunks of at least MIN_CHUNK bytes (so a manifest record's chunk count is
# bounded by its size, even when forged).
MAX_BLOB_BYTES = 256 << 20
MIN_CHUNK = 1024


def inside(base: str, *parts: str) -> str:
    """``base/parts...`` resolved, if it stays inside ``base``; else ``InvalidArgument``."""
    root = os.path.realpath(base)
    path = os.path.realpath(os.path.join(root, *parts))
    if path != root and not path.startswith(root + os.sep):
        raise InvalidArgument(f"path {os.path.join(*parts)!r} leaves the database directory")
    return path


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Entry:
    """A manifest record: one committed Parquet object of a view — a file (``file``) or a
    blob of ``chunks`` records in the engine (``crc``: zlib.crc32 of its bytes)."""

    number: int
    rows: int
    size: int
    replaces: tuple[int, ...]
    file: str | None = None
    chunks: int = 0
    crc: int = 0


def _int(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def read_entry(key: str, bins: dict[str, Any]) -> Entry:
    """A manifest record read back, validated; StorageError if it is not one we write."""
    matched = _KEY.fullmatch(key)
    file: Any = bins.get("file")
    chunks: Any = bins.get("chunks")
    crc: Any = bins.get("crc")
    rows: Any = bins.get("rows")
    size: Any = bins.get("bytes")
    replaces: Any = bins.get("replaces", [])
    valid = (
        matched is not None
        and _int(rows, 0, 1 << 62)
        and _int(size, 0, 1 << 62)
        and type(replaces) is list
        and all(type(n) is int for n in replaces)
    )
    if valid and file is not None:  # a file
        named = _FILE.fullmatch(file) or _LEGACY.fullmatch(file) if type(file) is str else None
        valid = (
            chunks is None
            and named is not None
            and matched is not None
            and named.group(1) == matched.group(2)
        )
    elif valid:  # a blob in the engine
        valid = (
            _int(size, 1, MAX_BLOB_BYTES)
            and _int(chunks, 1, size // MIN_CHUNK + 1)
            and _int(crc, 0, (1 << 32) - 1)
        )
    if not valid or matched is None:
        raise StorageError(f"the offline manifest record {key[:100]!r} is corrupt or forged")
    number = int(matched.group(2))
    return Entry(number, rows, size, tuple(replaces), file, chunks or 0, crc or 0)


class Manifest:
    """The records of ``_feature_files``: which Parquet objects make up each view's log."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.records = store.records(FILES)

    @staticmethod
    def key(view: str, number: int) -> str:
        return f"{view}:{number:012d}"

    def entries(self, view: str) -> list[Entry]:
        """The view's committed objects, in commit-number order."""
        check_name(view, "feature view")
        found: list[Entry] = []
        for record in self.records.iterate(f"{view}:", batch=10_000):
            if type(record.key) is not str:
                raise StorageError("the offline log's manifest holds a non-str key")
            found.append(read_entry(record.key, record.bins))
        # Listing by pages is not one snapshot: if a compaction committed between two pages,
        # both its inputs and its output may show. Its output says what it replaces.
        replaced = {n for entry in found for n in entry.replaces}
        return [entry for entry in found if entry.number not in replaced]

    def get(self, view: str, number: int) -> Entry | None:
        key = self.key(view, number)
        record = self.records.get(key)
        return None if record is None else read_entry(key, record.bins)

    def step(self, items: Sequence[tuple[str, Any]]) -> TransformStep:
        return self.store.step(self.records, items)


class _Moved(Conflict):
    """A compaction's input is no longer listed: someone else compacted it first."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key} is no longer listed", 0)


def create(bins: dict[str, Any]) -> Callable[[Current, int], Outcome]:
    """A step item that creates the record ``bins`` (Conflict if it exists)."""

    def write(current: Current, now: int) -> Outcome:
        if current.bins is not None:
            raise Conflict("the offline log already has this record", 1)
        return Outcome(None, bins, 0)

    return write


def remove_if(entry: Entry, key: str) -> Callable[[Current, int], Outcome]:
    """A step item that removes the manifest record of ``entry`` if it still says the same
    (``_Moved``, a Conflict, otherwise: another compaction got there first)."""

    def remove(current: Current, now: int) -> Outcome:
        if current.bins is None:
            raise _Moved(key)
        try:
            same = read_entry(key, current.bins) == entry
        except StorageError:
            same = False
        if not same:
            raise _Moved(key)
        return Outcome(None, None)

    return remove


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns: missing ones (features added to the view
    after it was written) are nulls, as a query over all files would read them."""
    columns = [
        table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


@dataclass
class Staged:
    """An ingest's (or a compaction's) rows, written but not yet committed: a locked file
    (``path``, ``fd``) or the Parquet bytes to store in the engine (``blob``)."""

    view: str
    number: int
    rows: int = 0
    size: int = 0
    path: str | None = None
    fd: int | None = None
    blob: bytes | None = None

    @property
    def file(self) -> str | None:
        return None if self.path is None else os.path.basename(self.path)


class Log(Protocol):
    """What the feature store uses of an offline log, wherever it keeps the Parquet."""

    def recover(self) -> None:
        """Complete or roll back what crashed processes left (run once, before use)."""

    def entries(self, view: str) -> list[Entry]: ...

    def rows(self, view: str) -> int: ...

    def stage(self, view: str, table: pa.Table, number: int) -> Staged:
        """``table`` as the view's object ``number``, ready to commit (not yet listed)."""

    def commit_steps(self, staged: Staged) -> list[TransformStep]:
        """What lists ``staged``: steps to commit in the ingest's transaction."""

    def commit(self, staged: Staged, steps: list[TransformStep]) -> list[list[Any]]:
        """Commit ``steps`` (which include ``commit_steps(staged)``) as one transaction."""

    def compact(
        self, view: str, number: Callable[[], int], *, at_least: int = COMPACT_FILES
    ) -> int:
        """Merge the view's small objects once there are ``at_least``; how many merged."""

    def readable(self, views: Sequence[str]) -> list[str]:
        """The directories a DuckDB reader of ``views`` may open (none for the engine)."""

    def attach(self, connection: Any, alias: str, view: str) -> bool:
        """Make the view's committed rows the relation ``alias`` of ``connection``;
        False when it has none."""

    def stats(self) -> dict[str, Any]: ...


class FileLog:
    """The log of a database with a directory: files under ``<data_dir>/features/offline``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.manifest = Manifest(store)
        self._manifest = self.manifest.records
        home = store.data_dir
        if home is None:
            raise InvalidArgument("a file log needs a database directory")
        self.directory = inside(home, "features", "offline")
        self._compacting = threading.Lock()

    # paths -------------------------------------------------------------------------------

    def view_dir(self, view: str) -> str:
        return inside(self.directory, check_name(view, "feature view"))

    def path_of(self, view: str, file: str | None) -> str:
        if file is None or (_FILE.fullmatch(file) is None and _LEGACY.fullmatch(file) is None):
            raise StorageError(f"{str(file)[:80]!r} is not an offline log file name")
        return inside(self.directory, check_name(view, "feature view"), file)

    # the manifest ------------------------------------------------------------------------

    def entries(self, view: str) -> list[Entry]:
        """The view's committed files, in commit-number order."""
        return self.manifest.entries(view)

    def _listed(self, view: str, number: int, file: str) -> bool:
        record = self._manifest.get(Manifest.key(view, number))
        return record is not None and record.bins.get("file") == file

    def files(self, view: str) -> list[str]:
        """Paths of the view's committed files."""
        return [self.path_of(view, entry.file) for entry in self.entries(view)]

    def rows(self, view: str) -> int:
        return sum(entry.rows for entry in self.entries(view))

    # reading -----------------------------------------------------------------------------

    def readable(self, views: Sequence[str]) -> list[str]:
        return [self.view_dir(v) for v in views]

    def attach(self, connection: Any, alias: str, view: str) -> bool:
        files = self.files(view)
        if not files:
            return False
        connection.read_parquet(files, union_by_name=True).create_view(alias, replace=True)
        return True

    def stats(self) -> dict[str, Any]:
        return {"place": "files"}

    # writing -----------------------------------------------------------------------------

    def stage(self, view: str, table: pa.Table, number: int) -> Staged:
        """Write ``table`` as the view's file ``number`` (fsynced, locked, not yet listed).

        Then ``commit`` it (with ``commit_steps`` among the steps), or ``abort`` it.
        """
        staged = self._create(view, number)
        staged.rows = table.num_rows
        assert staged.fd is not None
        assert staged.path is not None
        try:
            with os.fdopen(os.dup(staged.fd), "wb") as handle:
                pq.write_table(table, handle)
                handle.flush()
                os.fsync(handle.fileno())
            staged.size = os.fstat(staged.fd).st_size
            _fsync_dir(os.path.dirname(staged.path))
        except (OSError, pa.ArrowException) as e:
            self.abort(staged)
            raise StorageError(f"cannot write the offline log of {view!r}: {e}") from e
        return staged

    def _create(self, view: str, number: int) -> Staged:
        """A new, empty file for ``number``, created and locked by this process."""
        directory = self.view_dir(view)
        try:
            os.makedirs(directory, exist_ok=True)
            directory = self.view_dir(view)  # resolved again: it exists now
            for _ in range(8):
                path = os.path.join(directory, f"{number:012d}-{secrets.token_hex(8)}.parquet")
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
                fd = os.open(path, flags, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    if os.fstat(fd).st_nlink:
                        return Staged(view, number, path=path, fd=fd)
                except BaseException:
                    os.close(fd)
                    raise
                # Another process's recovery took the new, still unlocked file for debris and
                # removed it before we locked it: start again under a new name.
                os.close(fd)
        except OSError as e:
            raise StorageError(f"cannot write the offline log of {view!r}: {e}") from e
        raise StorageError(f"cannot create a file in the offline log of {view!r}")

    def commit_steps(self, staged: Staged) -> list[TransformStep]:
        """The manifest record of ``staged``, to commit with the ingest's online rows."""
        bins = {"file": staged.file, "rows": staged.rows, "bytes": staged.size}
        return [self.manifest.step([(Manifest.key(staged.view, staged.number), create(bins))])]

    def release(self, staged: Staged) -> None:
        """Let go of the file."""
        if staged.fd is not None:
            os.close(staged.fd)
            staged.fd = None

    def commit(self, staged: Staged, steps: list[TransformStep]) -> list[list[Any]]:
        """Commit ``steps`` (which list ``staged``) as one transaction, then let go of it.

        A write refused before anything was written (a bad value, a failed condition) removes
        the file. Any other failure may or may not have committed (an interrupted wait for
        the fsync, say): the file is kept, and the manifest decides — ``collect`` removes it
        if it is not listed. A listed file is never removed, so none goes missing.
        """
        try:
            results: list[list[Any]] = self.store.write(steps)
        except (InvalidArgument, Conflict):
            self.abort(staged)
            raise
        except BaseException:
            self.release(staged)
            raise
        self.release(staged)
        return results

    def abort(self, staged: Staged) -> None:
        """The commit failed or never happened: remove the file."""
        if staged.path is not None:
            with contextlib.suppress(OSError):
                os.remove(staged.path)
        self.release(staged)

    def _sync(self) -> None:
        # A durable manifest before files it no longer lists are deleted, whatever durability
        # the writer used: otherwise a power loss could bring back a record of a deleted file.
        self.store.sync()

    # recovery ----------------------------------------------------------------------------

    def recover(self) -> None:
        """Complete or roll back what crashed processes left: files listed in the manifest
        stay; every other file of ours that no live process holds is deleted."""
        if not os.path.isdir(self.directory):
            if self._manifest.get(_FORMAT) is None:
                self._adopt([])
            return
        views = []
        for view in sorted(os.listdir(self.directory)):
            if not is_name(view):
                continue  # not a directory of ours
            try:
                self.view_dir(view)
            except InvalidArgument:
                # e.g. swapped for a symlink out of the data directory: never followed; every
                # use of the view says so, the rest of the store works
                log.warning("offline log directory %r leaves the database directory", view)
                continue
            views.append(view)
        if self._manifest.get(_FORMAT) is None:
            self._adopt(views)
        for view in views:
            self.collect(view)

    def _adopt(self, views: list[str]) -> None:
        """List the files of a log written before the manifest existed (each was renamed into
        place complete, and counted as ingested), once, atomically."""
        items: list[tuple[str, Any]] = []
        for view in views:
            directory = self.view_dir(view)
            for name in sorted(os.listdir(directory)):
                matched = _LEGACY.fullmatch(name)
                if matched is None:
                    continue  # new files are listed when committed, or are debris
                path = os.path.join(directory, name)
                try:
                    rows = pq.ParquetFile(path).metadata.num_rows
                except (OSError, pa.ArrowException):
                    continue  # unreadable: not a file the old log ever showed
                bins = {"file": name, "rows": rows, "bytes": os.path.getsize(path)}
                items.append((f"{view}:{matched.group(1)}", create(bins)))
        items.append((_FORMAT, create({"version": 1})))
        with contextlib.suppress(Conflict):  # another process adopted them first
            self.store.write([self.manifest.step(items)])

    def collect(self, view: str) -> int:
        """Delete the view's files no manifest record names and no live process holds;
        returns how many were deleted."""
        directory = self.view_dir(view)
        if not os.path.isdir(directory):
            return 0
        listed = {entry.file for entry in self.entries(view)}
        removed = 0
        synced = False
        for name in os.listdir(directory):
            matched = _FILE.fullmatch(name)
            if name in listed or (matched is None and not _LEGACY_TEMP.fullmatch(name)):
                continue  # committed, or not a file of ours to judge: left alone
            path = os.path.join(directory, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live ingest or compaction is writing it
                # Read the manifest again now that we hold the lock: the file's writer may
                # have committed it (and let go) since we listed.
                if matched is not None and self._listed(view, int(matched.group(1)), name):
                    continue
                if not synced:
                    # The unlisting (a compaction's switch) may not be durable yet under
                    # durability "async"/"none": make it so before its inputs go.
                    self._sync()
                    synced = True
                os.remove(path)
                removed += 1
            except OSError:
                continue
            finally:
                os.close(fd)
        if removed:
            _fsync_dir(directory)
        return removed

    # compaction --------------------------------------------------------------------------

    def compact(
        self, view: str, number: Callable[[], int], *, at_least: int = COMPACT_FILES
    ) -> int:
        """Merge the view's small files into one once there are ``at_least`` of them;
        returns how many files were merged (0 when there was nothing to do or another
        compaction got there first). Query results are the same before and after."""
        if not self._compacting.acquire(blocking=False):
            return 0  # one compaction at a time per process; the next ingest tries again
        try:
            return self._compact_files(view, number, max(2, at_least))
        finally:
            self._compacting.release()

    def _compact_files(self, view: str, number: Callable[[], int], at_least: int) -> int:
        inputs = [e for e in self.entries(view) if e.size < SMALL_BYTES][:MAX_MERGE]
        if len(inputs) < at_least:
            return 0
        paths = [self.path_of(view, e.file) for e in inputs]
        try:
            schema = pa.unify_schemas([pq.read_schema(p) for p in paths], promote_options="default")
        except FileNotFoundError:
            return 0  # another process compacted these files first
        except (OSError, pa.ArrowException) as e:
            raise StorageError(f"cannot compact the offline log of {view!r}: {e}") from e
        staged = self._create(view, number())
        assert staged.fd is not None
        assert staged.path is not None
        try:
            with os.fdopen(os.dup(staged.fd), "wb") as handle:
                with pq.ParquetWriter(handle, schema) as writer:
                    for path in paths:  # one input in memory at a time
                        writer.write_table(conform(pq.read_table(path), schema))
                handle.flush()
                os.fsync(handle.fileno())
            staged.size = os.fstat(staged.fd).st_size
            _fsync_dir(os.path.dirname(staged.path))
        except FileNotFoundError:
            self.abort(staged)
            return 0
        except (OSError, pa.ArrowException) as e:
            self.abort(staged)
            raise StorageError(f"cannot compact the offline log of {view!r}: {e}") from e
        merged = {
            "file": staged.file,
            "rows": sum(e.rows for e in inputs),
            "bytes": staged.size,
            "replaces": [e.number for e in inputs],
        }
        items: list[tuple[str, Any]] = [
            (Manifest.key(view, e.number), remove_if(e, Manifest.key(view, e.number)))
            for e in inputs
        ]
        items.append((Manifest.key(view, staged.number), create(merged)))
        try:
            self.commit(staged, [self.manifest.step(items)])
        except Conflict:
            return 0
        self._sync()  # the switch is durable before the inputs go
        for path in paths:
            with contextlib.suppress(OSError):
                os.remove(path)
        _fsync_dir(self.view_dir(view))
        return len(inputs)
