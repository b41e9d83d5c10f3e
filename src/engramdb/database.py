"""``Database``: one embedded store, its record sets, change log, sweeper and metrics."""

from __future__ import annotations

import dataclasses
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from engramdb.clock import Clock, system_clock
from engramdb.context import (
    Context,
    FeatureRead,
    MemoryQuery,
    SearchQuery,
    SessionRead,
    check_records,
    check_timeout,
)
from engramdb.errors import (
    ChangeLogTruncated,
    Conflict,
    EngramError,
    InvalidArgument,
    StorageError,
)
from engramdb.observability.calls import tracer_for
from engramdb.observability.metrics import Metrics
from engramdb.records.keys import Key, decode_key, is_reserved, split_rk
from engramdb.records.limits import DEFAULT_LIMITS, Limits
from engramdb.records.model import Change, ChangeKind, Record
from engramdb.records.writes import Conditions, Stored, TransformFn, record_from
from engramdb.recordset import RecordSet
from engramdb.remote import DEFAULT_CAP, FORMS, remote
from engramdb.storage.base import Durability, Engine, WriteFn, WriteTxn
from engramdb.storage.group_commit import Done, GroupCommit, Rollback
from engramdb.writeplan import TransformStep, run_steps

__all__ = ["Database", "open"]

if TYPE_CHECKING:
    from engramdb.cache import Cache
    from engramdb.embedders import Embedder
    from engramdb.features.store import FeatureStore
    from engramdb.memory.store import MemoryStore
    from engramdb.sessions.store import SessionStore
    from engramdb.transaction import Transaction
    from engramdb.vectors.store import VectorStore


# Roles are built on first use, each over the database's ``RoleStore``: importing a role's
# implementation (faiss, tantivy, duckdb, numpy) happens only for databases that use it.


def _feature_store(db: Database) -> FeatureStore:
    from engramdb.features.store import FeatureStore

    return FeatureStore(db._role_store)


def _memory_store(db: Database) -> MemoryStore:
    from engramdb.memory.store import MemoryStore

    return MemoryStore(db._role_store, db._embedder)


def _cache(db: Database) -> Cache:
    from engramdb.cache import Cache, ThreadedCore
    from engramdb.cache.core import CacheCore

    core = CacheCore(db._role_store)
    return Cache(core, async_core=ThreadedCore(core, local_reads=True))


def _session_store(db: Database) -> SessionStore:
    from engramdb.sessions.store import SessionStore

    return SessionStore(db._role_store)


def _vector_store(db: Database) -> VectorStore:
    from engramdb.vectors.store import VectorStore

    return VectorStore(db._role_store)


class RoleStore:
    """The ``engramdb.store.Store`` a database hands its roles: the narrow interface they
    are written against (clock, any record set, snapshot reads, atomic multi-step writes,
    the change log, the vector role for roles built on it)."""

    __slots__ = ("_db",)

    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def limits(self) -> Limits:
        return self._db.limits

    def now(self) -> float:
        return self._db._clock()

    def now_ms(self) -> int:
        return self._db._now_ms()

    @property
    def cache_dir(self) -> str | None:
        return self._db.path

    @property
    def data_dir(self) -> str | None:
        return self._db.path

    def sync(self) -> None:
        self._db._engine.sync()

    @property
    def metrics(self) -> Metrics:
        return self._db._metrics

    def sets(self) -> list[str]:
        return self._db.sets()

    def records(self, set_name: str) -> RecordSet:
        return self._db._internal_records(set_name)

    def read(
        self, requests: Sequence[tuple[RecordSet, Sequence[Key]]]
    ) -> list[list[Record | None]]:
        return self._db._read_across(requests)

    def step(
        self,
        records: RecordSet,
        items: Sequence[tuple[Key, TransformFn]],
        *,
        conditions: Conditions | None = None,
        result: str = "outcome",
        raw: bool = False,
    ) -> TransformStep:
        return records._step(items, conditions=conditions, result=result, raw=raw)

    def write(self, steps: Sequence[TransformStep]) -> list[list[Any]]:
        return self._db._write_steps(steps)

    def changes(self, since: int, *, limit: int) -> list[Change]:
        return self._db.changes(since, limit=limit)

    def first_sequence(self) -> int:
        return self._db.first_sequence()

    def last_sequence(self) -> int:
        return self._db.last_sequence()

    @property
    def vectors(self) -> VectorStore:
        return self._db.vectors


_LIVE: weakref.WeakSet[Database] = weakref.WeakSet()
_CONTEXT_PARTS = ("records", "session", "features", "memory", "search")
_MAX_CACHED_SETS = 4096
_COLLECTION_METHODS = frozenset({"vectors.upsert", "vectors.delete"})
_COMMIT_METHODS = frozenset(
    {"put", "update", "delete", "touch", "operate", "put_many", "delete_many"}
)


def _after_fork_in_child() -> None:
    for db in list(_LIVE):
        db._unusable = (
            f"this Database was opened in process {db._pid} and cannot be used after fork(); "
            "open it again in the child process"
        )


os.register_at_fork(after_in_child=_after_fork_in_child)


def open(
    path: str | os.PathLike[str] | None = None,
    *,
    durability: Durability = "sync",
    clock: Clock | None = None,
    limits: Limits | None = None,
    map_size: int = 8 << 30,
    sweep_interval: float | None = 1.0,
    changelog_retention: int | None = 1_000_000,
    flush_interval: float = 1.0,
    embedder: Embedder | None = None,
    telemetry: bool | None = None,
) -> Database:
    """Open (creating if needed) the database at ``path``, or an in-memory one.

    Args:
        path: directory of an LMDB database, shared safely by every process on this host.
            None gives a private in-memory database (same contract, nothing on disk).
            A ``postgresql://h1:p1,h2:p2/db`` URL opens the database in PostgreSQL (extra
            ``postgres``; see ``engramdb.storage.postgres_engine`` for its options): any
            number of processes and servers on any hosts may open the same URL.
        durability: ``sync`` (a write returns after fsync; the default), ``async`` (flushed
            every ``flush_interval`` s: survives a process crash, may lose the last moments
            on power loss) or ``none`` (never flushed explicitly). On PostgreSQL: ``sync``
            waits for the synchronous standby, ``async`` for the primary's disk only,
            ``none`` for neither.
        clock: returns seconds since the epoch; TTLs are judged by it (tests pass a
            ``FakeClock``).
        limits: key, record, bin-name and vector limits (``engramdb.Limits``).
        map_size: the most bytes an LMDB database may grow to (virtual; reserved lazily).
        sweep_interval: seconds between background sweeps of expired records; None turns the
            sweeper off (expired records stay invisible either way; ``db.sweep()`` removes
            them on demand).
        changelog_retention: most change-log entries kept; None keeps all.
        flush_interval: seconds between flushes with ``durability="async"``.
        embedder: what ``db.memory`` embeds texts with (``engramdb.embedders``); None uses
            the deterministic, dependency-free ``HashEmbedder``.
        telemetry: run each call of a record set or role in an OpenTelemetry span (the
            ``otel`` extra; ``engramdb.observability.tracing``). None (the default) follows
            the environment variable ``ENGRAMDB_TELEMETRY``.
    """
    if durability not in ("sync", "async", "none"):
        raise InvalidArgument(f"durability must be sync, async or none, not {durability!r}")
    engine: Engine
    if path is None:
        from engramdb.storage.memory import MemoryEngine

        engine = MemoryEngine()
    elif isinstance(path, str) and path.startswith(("postgresql://", "postgres://")):
        try:
            from engramdb.storage.postgres_engine import PostgresEngine
        except ImportError as e:
            raise InvalidArgument(
                f"a postgresql:// database needs the 'postgres' extra "
                f"(pip install 'engramdb[postgres]'): {e}"
            ) from None
        engine = PostgresEngine(path, durability=durability)
        # Nothing of this database is on this host: no path, no data directory. Derived
        # indexes are rebuilt from the records and the change log instead of snapshots.
        try:
            return Database(
                engine,
                clock=clock,
                limits=limits,
                sweep_interval=sweep_interval,
                changelog_retention=changelog_retention,
                embedder=embedder,
                telemetry=telemetry,
                path=None,
                durability=durability,
            )
        except BaseException:
            engine.close()
            raise
    else:
        from engramdb.storage.lmdb_engine import LmdbEngine

        engine = LmdbEngine(
            path, durability=durability, map_size=map_size, flush_interval=flush_interval
        )
    try:
        return Database(
            engine,
            clock=clock,
            limits=limits,
            sweep_interval=sweep_interval,
            changelog_retention=changelog_retention,
            embedder=embedder,
            telemetry=telemetry,
            path=None if path is None else os.fspath(path),
            durability=durability if path is not None else "none",
        )
    except BaseException:
        engine.close()  # a bad option must not leak an open environment
        raise


class Database:
    """An open engramdb database. Use ``engramdb.open()`` rather than this constructor.

    Thread-safe: share one ``Database`` between threads. Not fork-safe: a child process
    must open its own.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock | None = None,
        limits: Limits | None = None,
        sweep_interval: float | None = 1.0,
        changelog_retention: int | None = 1_000_000,
        embedder: Embedder | None = None,
        telemetry: bool | None = None,
        path: str | None = None,
        durability: Durability = "sync",
    ) -> None:
        if changelog_retention is not None and changelog_retention < 1:
            raise InvalidArgument("changelog_retention must be a positive int or None")
        self._engine = engine
        self._embedder = embedder
        self._role_store = RoleStore(self)
        self._clock = clock or system_clock
        self._limits = limits or DEFAULT_LIMITS
        self.path = path
        self.durability = durability
        self._retention = changelog_retention
        self._metrics = Metrics()
        self._tracer = tracer_for(None, telemetry)
        self._commit = GroupCommit(engine)
        self._sets: dict[str, RecordSet] = {}
        self._sets_lock = threading.Lock()
        self._roles: dict[str, Any] = {}  # role APIs (vectors, ...), created on first use
        self._roles_lock = threading.Lock()
        self._pid = os.getpid()
        self._unusable: str | None = None
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        _LIVE.add(self)
        if sweep_interval is not None:
            self._sweeper = threading.Thread(
                target=self._sweep_loop,
                args=(sweep_interval,),
                name="engramdb-sweep",
                daemon=True,
            )
            self._sweeper.start()

    def __repr__(self) -> str:
        # A postgres engine's URL is shown as it keeps it: without the password.
        url, schema = getattr(self._engine, "url", None), getattr(self._engine, "schema", None)
        where = self.path or (f"{url} schema={schema}" if url else "memory")
        return f"<engramdb.Database {where} durability={self.durability}>"

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # plumbing shared with RecordSet ------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _raise_unusable(self) -> None:
        raise StorageError(self._unusable or "the database is unusable")

    def _check(self) -> None:
        if self._unusable is not None:
            self._raise_unusable()

    def _read_across(
        self, requests: Sequence[tuple[RecordSet, Sequence[Key]]]
    ) -> list[list[Record | None]]:
        """The records of each ``(set, keys)`` request, all read in one snapshot (one
        read transaction), for callers whose answer spans sets: a cache value and its
        lease, the views of a feature service. None for missing or expired records."""
        self._check()
        rks = [records._rk(key) for records, keys in requests for key in keys]
        raws = iter(self._engine.get_many(rks))
        now_ms = self._now_ms()
        return [
            [None if raw is None else record_from(key, raw, now_ms) for key, raw in zip(keys, raws)]
            for _, keys in requests
        ]

    def _write(self, fn: WriteFn) -> Any:
        return self._commit.run(fn)

    def _write_steps(self, steps: Sequence[TransformStep]) -> list[list[Any]]:
        """Commit transform steps over several sets as one atomic write."""

        def write(txn: WriteTxn) -> list[list[Any]]:
            return run_steps(txn, steps, self._now_ms())

        result: list[list[Any]] = self._write(write)
        return result

    def _submit(self, fn: WriteFn, done: Done) -> None:
        """Queue a planned write without blocking; ``done(value, error)`` runs on the
        committer thread once it is durable. Used by the server's event loop."""
        self._commit.submit(fn, done)

    # public API --------------------------------------------------------------------------

    def records(self, set_name: str) -> RecordSet:
        """The record set ``set_name`` (sets need no creating).

        Names starting with ``_``, ``vec.`` or ``fv.`` are reserved for engramdb's own roles
        and raise ``InvalidArgument``: use the role's API (``db.vectors``, ``db.features``...).
        """
        # Checked before the cache: it also holds the reserved sets roles opened.
        if type(set_name) is str and is_reserved(set_name):
            raise InvalidArgument(
                f"set {set_name!r} is reserved for engramdb's own roles (names starting with "
                "'_', 'vec.' or 'fv.'); use another name, or the role's API"
            )
        found = self._sets.get(set_name)
        if found is not None:
            self._check()
            return found
        return self._internal_records(set_name)

    def _internal_records(self, set_name: str) -> RecordSet:
        """Any set, reserved ones included: for roles and server internals only."""
        self._check()
        found = self._sets.get(set_name)
        if found is None:
            with self._sets_lock:
                found = self._sets.get(set_name)
                if found is None:
                    found = RecordSet(self, set_name)
                    if self._tracer is not None and not is_reserved(set_name):
                        self._tracer.instrument(found, "records", set_name)
                    if len(self._sets) >= _MAX_CACHED_SETS:
                        # Set names come from clients: never let them grow memory for ever.
                        # Roles keep their own RecordSets, so dropping the cache is cheap.
                        self._sets.clear()
                    self._sets[set_name] = found
        return found

    @remote("read")
    def sets(self) -> list[str]:
        """Names of sets that hold at least one stored record."""
        self._check()
        return self._engine.sets()

    @remote("read", caps={"limit": DEFAULT_CAP})
    def changes(self, since: int = 0, *, limit: int = 1000) -> list[Change]:
        """Committed changes with ``sequence > since``, oldest first, at most ``limit``.

        Raises ``ChangeLogTruncated`` when retention already dropped change ``since + 1``.
        """
        self._check()
        if type(since) is not int or since < 0:
            raise InvalidArgument(f"since must be a non-negative int, not {since!r}")
        if type(limit) is not int or limit < 1:
            raise InvalidArgument(f"limit must be a positive int, not {limit!r}")
        entries = self._engine.changes(since, limit)
        # Judged by the oldest sequence kept, read after the changes: comparing with the
        # last sequence would call a change that committed in between "gone".
        if (entries and entries[0].sequence != since + 1) or (
            not entries and since + 1 < self._engine.first_sequence()
        ):
            first = self._engine.first_sequence()
            raise ChangeLogTruncated(
                f"changes after {since} are gone; the log starts at {first}", first
            )
        out: list[Change] = []
        for entry in entries:
            set_name, key = split_rk(entry.rk)
            kind: ChangeKind = entry.kind  # type: ignore[assignment]
            out.append(
                Change(
                    entry.sequence,
                    set_name,
                    decode_key(key),
                    kind,
                    entry.generation,
                    entry.at_ms / 1000,
                )
            )
        return out

    @remote("slow", writes=True)
    def drop_set(self, set_name: str) -> int:
        """Remove every record of ``set_name`` (a set with no records does not exist), in
        atomic pages of 1,000; returns how many were removed."""
        return self.records(set_name).truncate()

    def transaction(self) -> Transaction:
        """Reads and writes across any sets, committed all or nothing (``with
        db.transaction() as tx:``); see ``engramdb.transaction``."""
        from engramdb.transaction import Transaction

        self._check()
        return Transaction(self)

    @remote("write", plan="_plan_commit")
    def commit(self, reads: Sequence[Sequence[Any]], writes: Sequence[Sequence[Any]]) -> list[Any]:
        """The primitive under ``transaction()``: apply ``writes`` in one atomic write if every
        record of ``reads`` is still at the generation read; returns each write's result.

        ``reads``: ``[set_name, key, generation]`` (0: the record was missing). ``writes``:
        ``[method, set_name, key_or_items, args, kwargs]`` with method ``put``, ``update``,
        ``delete``, ``touch``, ``operate``, ``put_many`` or ``delete_many``, or
        ``[vectors.upsert | vectors.delete, collection, ids, args, kwargs]``, validated exactly
        as the single call. A record that changed raises ``Conflict`` naming it; a failing
        write fails the whole commit. Nothing is written either way.
        """
        self._check()
        return cast(list[Any], self._write(self._plan_commit(reads, writes)))

    def _plan_commit(
        self, reads: Sequence[Sequence[Any]], writes: Sequence[Sequence[Any]]
    ) -> WriteFn:
        if not isinstance(reads, list | tuple) or not isinstance(writes, list | tuple):
            raise InvalidArgument("commit takes a list of reads and a list of writes")
        checks: list[tuple[bytes, str, Any, int]] = []
        for read in reads:
            if not isinstance(read, list | tuple) or len(read) != 3 or type(read[2]) is not int:
                raise InvalidArgument("each read is [set_name, key, generation]")
            name, key, generation = read
            checks.append((self.records(name)._rk(key), name, key, generation))
        plans: list[WriteFn] = []
        for staged in writes:
            if not isinstance(staged, list | tuple) or len(staged) != 5:
                raise InvalidArgument("each write is [method, set_name, key, args, kwargs]")
            method, name, target, args, kwargs = staged
            if not isinstance(args, list | tuple):
                raise InvalidArgument("a staged write's arguments are a list")
            if not isinstance(kwargs, dict) or not all(type(k) is str for k in kwargs):
                raise InvalidArgument("a staged write's options are a map of names")
            if method in _COLLECTION_METHODS:
                plans.append(self._plan_collection_write(method, name, target, args, kwargs))
                continue
            if method not in _COMMIT_METHODS:
                raise InvalidArgument(f"a transaction cannot stage {method!r}")
            if method == "operate" and args:
                args = [FORMS["ops"].decode(args[0]), *args[1:]]
            records = self.records(name)  # refuses the sets roles reserve
            try:
                plans.append(getattr(records, f"_plan_{method}")(target, *args, **kwargs))
            except TypeError as e:
                raise InvalidArgument(f"bad arguments for staged {method}: {e}") from None
        now_ms = self._now_ms

        def apply(txn: WriteTxn) -> list[Any]:
            now = now_ms()
            for rk, name, key, generation in checks:
                current = Stored(txn.get(rk), now).generation
                if current != generation:
                    raise Conflict(
                        f"{name} {key!r} changed since the transaction read it (generation "
                        f"{generation} then, {current} now)",
                        current,
                    )
            results: list[Any] = []
            for plan in plans:
                try:
                    results.append(plan(txn))
                except EngramError as e:
                    if not results:
                        raise  # nothing staged yet: an ordinary request error
                    raise Rollback(e) from e  # earlier writes staged: undo them all
            return results

        return apply

    def _plan_collection_write(
        self, method: str, name: Any, ids: Any, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> WriteFn:
        """A staged ``vectors.upsert``/``vectors.delete`` as a write of the commit: the
        collection's steps (its liveness check first), run inside the same transaction."""
        from engramdb.vectors.collection import staged_steps

        if type(name) is not str:
            raise InvalidArgument("a staged collection write names its collection")
        collection = self.vectors.get_collection(name)
        steps, result = staged_steps(collection, method.partition(".")[2], ids, args, kwargs)
        now_ms = self._now_ms

        def write(txn: WriteTxn) -> Any:
            return result(run_steps(txn, steps, now_ms()))

        return write

    @remote("read")
    def last_sequence(self) -> int:
        """Sequence number of the newest committed change (0 before the first)."""
        self._check()
        return self._engine.last_sequence()

    @remote("read")
    def first_sequence(self) -> int:
        """Oldest sequence still in the change log."""
        self._check()
        return self._engine.first_sequence()

    @remote("slow", writes=True, caps={"limit": 100_000})
    def sweep(self, *, limit: int = 10_000) -> dict[str, int]:
        """Remove up to ``limit`` expired records now (each logged as an ``expire`` change),
        tidy what roles derived from removed records, and apply change-log retention.

        Returns how many expired records were removed from each set (sets with none are
        left out; ``sum(db.sweep().values())`` is the total)."""
        self._check()
        now = self._now_ms()
        due = self._engine.expired(now, limit)
        removed: dict[str, int] = {}
        if due:

            def remove(txn: WriteTxn) -> dict[str, int]:
                counts: dict[str, int] = {}
                for rk, _ in due:
                    current = Stored(txn.get(rk), now)
                    # Rewritten since we looked (or already swept): leave it alone.
                    if current.prev_expires_ms is None or current.exists:
                        continue
                    txn.delete(rk, current.prev_expires_ms)
                    txn.log("expire", rk, current.stored_generation, now)
                    name = split_rk(rk)[0]
                    counts[name] = counts.get(name, 0) + 1
                return counts

            removed = self._write(remove)
        for role in list(self._roles.values()):
            tidy = getattr(role, "_sweep", None)
            if tidy is not None:
                tidy()  # derived records of roles (e.g. checkpoints of ended sessions)
        if self._retention is not None:
            self._engine.trim_changes(self._retention)
        return dict(sorted(removed.items()))

    def _sweep_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if self._unusable is not None:
                return
            try:
                self.sweep()
            except StorageError:
                # Writes are refused (fsync failed or closing); nothing more to sweep.
                return

    @remote("slow", wire=dict.fromkeys(_CONTEXT_PARTS, "context"))
    def context(
        self,
        *,
        records: Mapping[str, Sequence[Key]] | None = None,
        session: SessionRead | None = None,
        features: FeatureRead | None = None,
        memory: MemoryQuery | None = None,
        search: SearchQuery | None = None,
        timeout: float | None = None,
    ) -> Context:
        """Everything one agent step reads, in one call: the result has a ``Part`` per part
        asked, holding its value or the error that part alone met.

        - ``records``: set name -> keys; per set, the records in order (None: missing).
        - ``session``: ``SessionRead(id, last_events=N)``: the session with its last N events.
        - ``features``: ``FeatureRead(features, entity_rows)``: online features.
        - ``memory``: ``MemoryQuery(query, user_id=..., k=...)``: a search of ``db.memory``.
        - ``search``: ``SearchQuery(collection, text=..., vector=..., k=...)``: vector, text
          or (both given) hybrid search of a collection.

        Snapshot: the records of ``records``, ``session`` and ``features`` are read together
        in one read of the engine (one LMDB read transaction; one locked read on the memory
        engine; one statement on PostgreSQL), so a write that lands meanwhile is in all of
        them or in none. Outside that read: feature definitions (read as
        ``get_online_features`` reads them, cached) and the clock that judges a feature's
        max age; the write by which the session part extends a sliding TTL, as
        ``sessions.get`` does (its generation and expiry are reported). ``memory`` and
        ``search`` cannot share the snapshot: they read derived indexes (HNSW, BM25) that
        follow the change log and are not versioned with the records; they see every write
        that returned before the call. The snapshot read, the memory search and the search
        run concurrently on worker threads.

        ``timeout``: seconds; a part not done by then comes back with a ``Timeout`` error
        (``part.timed_out``) and the call returns at the deadline. A malformed part is
        ``InvalidArgument`` before anything runs; a server caps the sizes a remote caller
        may ask for (keys, ``last_events``, ``k``, entity rows: 10,000 each).
        """
        from engramdb.context_run import run

        self._check()
        return run(
            self,
            self._read_across,
            records=None if records is None else check_records(records),
            session=session,
            features=features,
            memory=memory,
            search=search,
            timeout=check_timeout(timeout),
        )

    @remote("read")
    def stats(self) -> dict[str, Any]:
        """Golden signals: per-operation latency/traffic/errors plus saturation figures."""
        self._check()
        engine = self._engine.stats()
        first = self._engine.first_sequence()
        last = self._engine.last_sequence()
        return {
            "path": self.path,
            "durability": self.durability,
            "limits": dataclasses.asdict(self.limits),
            "operations": self._metrics.snapshot(),
            "saturation": {
                "map_use_ratio": engine.get("map_use_ratio"),
                "map_used_bytes": engine.get("map_used_bytes"),
                "readers_used": engine.get("readers_used"),
                "changelog_length": last - first + 1,
                "group_commit_queue": self._commit.queue_depth,
            },
            "changelog": {"first_sequence": first, "last_sequence": last},
            # live records per set, the roles' reserved sets included
            "sets": {name: self._internal_records(name).count() for name in self.sets()},
            "group_commit": {
                "batches": self._commit.batches,
                "writes": self._commit.writes,
            },
            "engine": engine,
            "indexes": self._roles["vectors"]._stats() if "vectors" in self._roles else {},
            "cache": self._roles["cache"].stats() if "cache" in self._roles else {},
            "memory": self._roles["memory"]._stats() if "memory" in self._roles else {},
            "features": self._roles["features"]._stats() if "features" in self._roles else {},
        }

    @property
    def limits(self) -> Limits:
        """The size limits (``engramdb.Limits``) every write is checked against."""
        return self._limits

    @property
    def metrics(self) -> Metrics:
        """Per-operation latency, traffic and errors seen by this handle (golden signals)."""
        return self._metrics

    @property
    def vectors(self) -> VectorStore:
        """The embedding store: collections with vector, BM25 and hybrid search."""
        store: VectorStore = self._role("vectors", _vector_store)
        return store

    @property
    def sessions(self) -> SessionStore:
        """Agent session state: CAS updates, atomic appends, checkpoints, sliding TTL."""
        store: SessionStore = self._role("sessions", _session_store)
        return store

    @property
    def features(self) -> FeatureStore:
        """The feature store: definitions, ingestion, online and historical features."""
        store: FeatureStore = self._role("features", _feature_store)
        return store

    @property
    def memory(self) -> MemoryStore:
        """Long-term memory with the default (deterministic, dependency-free) embedder."""
        store: MemoryStore = self._role("memory", _memory_store)
        return store

    def memory_with(self, embedder: Embedder, **options: Any) -> MemoryStore:
        """Long-term memory over ``embedder`` (e.g. ``engramdb.embedders.SentenceEmbedder``).
        Each embedder keeps its own memories (vectors of different models do not mix)."""
        from engramdb.memory.store import MemoryStore

        self._check()
        return MemoryStore(self._role_store, embedder, **options)

    @property
    def cache(self) -> Cache:
        """A cache that cannot stampede: single-flight loads, XFetch, stale-while-revalidate."""
        cache: Cache = self._role("cache", _cache)
        return cache

    def _role(self, name: str, make: Any) -> Any:
        self._check()
        found = self._roles.get(name)
        if found is None:
            with self._roles_lock:
                found = self._roles.get(name)
                if found is None:
                    found = self._roles[name] = make(self)
                    if self._tracer is not None:
                        self._tracer.instrument(found, name)
        return found

    def close(self) -> None:
        """Release everything this handle holds: background work and the engine (embedded),
        or connections and threads (clients). Safe to call twice.

        Everything is released even when a part fails to close (a role, the group commit,
        the engine); the first such error is raised afterwards, as an ``EngramError``.
        """
        if self._unusable is not None and self._pid != os.getpid():
            return  # forked child: the parent owns the environment
        if self._unusable == "the database is closed":
            return
        errors: list[Exception] = []

        def attempt(step: Any) -> None:
            try:
                step()
            except Exception as e:
                errors.append(e)

        self._stop.set()
        if self._sweeper is not None and self._sweeper is not threading.current_thread():
            self._sweeper.join()
        for role in list(self._roles.values()):
            # e.g. snapshot derived indexes while the engine is still open
            attempt(getattr(role, "_close", None) or role.close)
        attempt(self._commit.close)
        self._unusable = "the database is closed"
        attempt(self._engine.close)
        _LIVE.discard(self)
        if errors:
            first = errors[0]
            if isinstance(first, EngramError):
                raise first
            raise StorageError(
                f"closing the database failed: {type(first).__name__}: {first}"
            ) from first
