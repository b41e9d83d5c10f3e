"""The PostgreSQL engine: the engine contract on PostgreSQL (psycopg 3), for many stateless
engramdb fronts over one replicated cluster (Patroni, synchronous replication).

Schema (in the PostgreSQL schema named by the URL's ``schema=``, default ``engramdb``):

- ``records(rk bytea primary key, value bytea, expires_ms bigint)``: ``rk`` is the record
  key ``set NUL encoded-key``; bytea compares bytewise, so scans keep the byte order LMDB
  has. ``expires_ms`` is 0 for no expiry. Two partial indexes cover only records with a
  TTL: ``(expires_ms)`` for ``expired()`` and ``(set prefix, expires_ms)`` for ``count()``
  (the set prefix is ``rk`` up to its first NUL, an index expression: nothing stored twice).
- ``counts(sp bytea primary key, n bigint)``: stored entries per set (live or expired but
  unswept), updated in the same transaction as the records, as LMDB's meta counts.
- ``changes(seq bigint primary key, rk, kind, generation, at_ms)``: the change log.
- ``meta(id = 1, last_seq bigint, format int)``: one row, the last sequence handed out.

Sequences, and why the change log is gap-free in commit order: every write transaction
starts with ``SELECT last_seq FROM meta WHERE id = 1 FOR UPDATE`` and ends by storing the new
``last_seq``. The row lock serialises write transactions, whichever process or front runs
them: the next writer reads ``last_seq`` only after the previous one committed (READ
COMMITTED re-reads the locked row's newest version), so sequences are handed out in commit
order and ``next_sequence()`` is exact inside a transaction. PostgreSQL makes a commit
visible before it releases the transaction's locks, so any snapshot that sees a change also
sees every change with a lower sequence: a tailer reading ``changes(since=N)`` never misses
one that commits later with a lower number. Standbys replay commits in WAL order, which is
the same order. The lock also makes each write's read-modify-write atomic across fronts
(no lost update). Group commit runs a batch as one transaction: one lock, one commit, one
wait for the synchronous standby per batch.

Durability (``synchronous_commit`` of the writer's session):
- ``sync``: ``on``: acknowledged once the commit is flushed on the primary and, when a
  synchronous standby is configured (Patroni ``synchronous_mode``), on that standby too.
- ``async``: ``local``: flushed on the primary only; may be lost at a failover.
- ``none``: ``off``: acknowledged before any flush; a PostgreSQL crash may lose the last
  few hundred milliseconds (never corrupts).

Rules this file keeps:
- Never cancel a commit. psycopg cancels the running query on KeyboardInterrupt, so a
  write started on the main thread (the only one Python delivers signals to) runs on the
  engine's commit thread. No ``statement_timeout`` is set.
- A COMMIT that came back with a WARNING (PostgreSQL reports "canceling wait for synchronous
  replication" when someone cancelled the wait, then says COMMIT; the rows may be lost at
  failover) is not a success: ``Unavailable``, outcome unknown. So is a connection lost
  once COMMIT was sent. A connection lost before COMMIT was sent lost nothing: the write is
  run again on a new connection (to the new leader), until ``failover_timeout``.
- Reads are idempotent and are retried the same way.
- Writes go to the leader: libpq multi-host with ``target_session_attrs=read-write``, and
  when Patroni REST URLs are given (``patroni=http://h1:8008,http://h2:8008``) the leader
  Patroni names and confirms (``/cluster``, then ``/primary`` on that member).
- ``read_from=replica``: reads go to a standby once it has replayed this engine's last
  commit (``pg_last_wal_replay_lsn()``), waiting at most ``replica_wait`` seconds, else
  they go to the leader: read-your-writes through this handle is kept.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.errors import Diagnostic

from engramdb.errors import InvalidArgument, StorageError, Unavailable
from engramdb.storage._pg_connections import Conn, Lost, Pool, Target, is_retryable, lsn
from engramdb.storage.base import Durability, EngineChange, overlay_scan

__all__ = ["PostgresEngine", "is_postgres_url"]

T = TypeVar("T")

_FORMAT = 1
_NO_REPLICA = 1 << 64  # an LSN no standby reaches
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SYNCHRONOUS_COMMIT = {"sync": "on", "async": "local", "none": "off"}
_FLUSH_BYTES = 32 << 20  # most value bytes sent in one flush statement


def is_postgres_url(target: object) -> bool:
    """Whether ``target`` names a PostgreSQL database (``postgresql://`` / ``postgres://``)."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


# SQL ------------------------------------------------------------------------------------

_SETUP = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.records (
    rk bytea PRIMARY KEY,
    value bytea NOT NULL,
    expires_ms bigint NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS records_expiry ON {s}.records (expires_ms)
    WHERE expires_ms > 0;
CREATE INDEX IF NOT EXISTS records_set_expiry
    ON {s}.records ((substring(rk FOR position('\\x00'::bytea IN rk))), expires_ms)
    WHERE expires_ms > 0;
CREATE TABLE IF NOT EXISTS {s}.counts (sp bytea PRIMARY KEY, n bigint NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.changes (
    seq bigint PRIMARY KEY,
    rk bytea NOT NULL,
    kind text NOT NULL,
    generation bigint NOT NULL,
    at_ms bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.meta (
    id int PRIMARY KEY CHECK (id = 1),
    last_seq bigint NOT NULL,
    format int NOT NULL
);
INSERT INTO {s}.meta VALUES (1, 0, {format}) ON CONFLICT (id) DO NOTHING;
"""


class _Sql:
    """The statements of one schema, built from the quoted identifier once."""

    def __init__(self, schema: str) -> None:
        s = sql.Identifier(schema)

        def q(text: str) -> bytes:
            return sql.SQL(text).format(s=s).as_bytes(None)

        self.setup = sql.SQL(_SETUP).format(s=s, format=sql.Literal(_FORMAT)).as_bytes(None)
        self.begin = q("BEGIN; SELECT last_seq FROM {s}.meta WHERE id = 1 FOR UPDATE")
        self.get_raw = q("SELECT value FROM {s}.records WHERE rk = $1")
        self.get_many = q("SELECT rk, value FROM {s}.records WHERE rk = ANY(%b)")
        self.scan = q(
            "SELECT rk, value FROM {s}.records WHERE rk >= %b AND rk < %b ORDER BY rk LIMIT %b"
        )
        self.scan_reverse = q(
            "SELECT rk, value FROM {s}.records WHERE rk >= %b AND rk < %b ORDER BY rk DESC LIMIT %b"
        )
        self.count = q(
            "SELECT coalesce((SELECT n FROM {s}.counts WHERE sp = %(sp)b), 0) - "
            "(SELECT count(*) FROM {s}.records WHERE expires_ms > 0 AND expires_ms <= %(now)b"
            " AND substring(rk FOR position('\\x00'::bytea IN rk)) = %(sp)b)"
        )
        self.expired = q(
            "SELECT rk, expires_ms FROM {s}.records WHERE expires_ms > 0 AND "
            "expires_ms <= %b ORDER BY expires_ms LIMIT %b"
        )
        self.sets = q("SELECT sp FROM {s}.counts WHERE n > 0 ORDER BY sp")
        self.changes = q(
            "SELECT seq, rk, kind, generation, at_ms FROM {s}.changes WHERE seq > %b "
            "ORDER BY seq LIMIT %b"
        )
        self.first = q(
            "SELECT coalesce((SELECT min(seq) FROM {s}.changes), "
            "(SELECT last_seq + 1 FROM {s}.meta WHERE id = 1))"
        )
        self.last = q("SELECT last_seq FROM {s}.meta WHERE id = 1")
        self.trim = q(
            "DELETE FROM {s}.changes WHERE seq <= (SELECT last_seq FROM {s}.meta WHERE id = 1) - %b"
        )
        self.stored = q(
            "SELECT coalesce(sum(n), 0), (SELECT count(*) FROM {s}.records WHERE expires_ms > 0)"
            " FROM {s}.counts"
        )
        self.format = q("SELECT format FROM {s}.meta WHERE id = 1")
        # One statement stages a whole transaction: the CTEs touch disjoint rows (a key is
        # either upserted or deleted: only its final state is sent).
        self.flush = q(
            "WITH up AS (INSERT INTO {s}.records (rk, value, expires_ms) "
            "  SELECT * FROM unnest(%(rks)b::bytea[], %(values)b::bytea[], %(exp)b::int8[]) "
            "  ON CONFLICT (rk) DO UPDATE SET value = excluded.value, "
            "  expires_ms = excluded.expires_ms), "
            "del AS (DELETE FROM {s}.records WHERE rk = ANY(%(gone)b::bytea[])), "
            "ch AS (INSERT INTO {s}.changes "
            "  SELECT * FROM unnest(%(seqs)b::int8[], %(crks)b::bytea[], %(kinds)b::text[], "
            "  %(gens)b::int8[], %(ats)b::int8[])), "
            "cn AS (INSERT INTO {s}.counts SELECT * FROM unnest(%(sps)b::bytea[], "
            "  %(deltas)b::int8[]) ON CONFLICT (sp) DO UPDATE SET n = {s}.counts.n + excluded.n)"
            " UPDATE {s}.meta SET last_seq = greatest(last_seq, %(last)b) WHERE id = 1"
        )


# the write transaction -----------------------------------------------------------------


class _PgTxn:
    """A write transaction: reads go to the server (or this transaction's own writes),
    writes are kept here and sent in one statement before COMMIT."""

    __slots__ = ("_deltas", "_expires", "_held", "_logs", "_overlay", "_seq", "_sql")

    def __init__(self, held: Conn, statements: _Sql, last_seq: int) -> None:
        self._held = held
        self._sql = statements
        self._overlay: dict[bytes, bytes | None] = {}
        self._expires: dict[bytes, int] = {}
        self._deltas: dict[bytes, int] = {}
        self._logs: list[tuple[int, bytes, str, int, int]] = []
        self._seq = last_seq

    def get(self, rk: bytes) -> bytes | None:
        if rk in self._overlay:
            return self._overlay[rk]
        return self._held.get(self._sql.get_raw, rk)

    def put(self, rk: bytes, value: bytes, expires_ms: int, prev_expires_ms: int | None) -> None:
        self._overlay[rk] = value
        self._expires[rk] = expires_ms
        if prev_expires_ms is None:
            sp = rk[: rk.index(b"\x00") + 1]
            self._deltas[sp] = self._deltas.get(sp, 0) + 1

    def delete(self, rk: bytes, prev_expires_ms: int) -> None:
        self._overlay[rk] = None
        sp = rk[: rk.index(b"\x00") + 1]
        self._deltas[sp] = self._deltas.get(sp, 0) - 1

    def scan(
        self, start: bytes, end: bytes, limit: int, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        return overlay_scan(self._scan_server, self._overlay, start, end, limit, reverse)

    def _scan_server(
        self, start: bytes, end: bytes, limit: int, reverse: bool
    ) -> list[tuple[bytes, bytes]]:
        statement = self._sql.scan_reverse if reverse else self._sql.scan
        rows = self._held.cursor.execute(statement, (start, end, limit), prepare=True)
        return [(bytes(rk), bytes(value)) for rk, value in rows]

    def next_sequence(self) -> int:
        return self._seq + 1

    def log(self, kind: str, rk: bytes, generation: int, at_ms: int) -> int:
        self._seq += 1
        self._logs.append((self._seq, rk, kind, generation, at_ms))
        return self._seq

    @property
    def staged(self) -> bool:
        return bool(self._overlay or self._logs)

    def flush(self) -> None:
        """Send every staged change (in statements of at most ``_FLUSH_BYTES``)."""
        puts = [(rk, v) for rk, v in self._overlay.items() if v is not None]
        gone = [rk for rk, v in self._overlay.items() if v is None]
        chunks: list[list[tuple[bytes, bytes]]] = [[]]
        size = 0
        for item in puts:
            if size + len(item[1]) > _FLUSH_BYTES and chunks[-1]:
                chunks.append([])
                size = 0
            chunks[-1].append(item)
            size += len(item[1])
        logs = self._logs
        cursor = self._held.cursor
        for i, chunk in enumerate(chunks):
            first = i == 0
            params = {
                "rks": [rk for rk, _ in chunk],
                "values": [v for _, v in chunk],
                "exp": [self._expires[rk] for rk, _ in chunk],
                "gone": gone if first else [],
                "seqs": [entry[0] for entry in logs] if first else [],
                "crks": [entry[1] for entry in logs] if first else [],
                "kinds": [entry[2] for entry in logs] if first else [],
                "gens": [entry[3] for entry in logs] if first else [],
                "ats": [entry[4] for entry in logs] if first else [],
                "sps": list(self._deltas) if first else [],
                "deltas": list(self._deltas.values()) if first else [],
                "last": self._seq,
            }
            cursor.execute(self._sql.flush, params, prepare=True)


# the engine -----------------------------------------------------------------------------


class PostgresEngine:
    """Records, counts, expiry index and change log in PostgreSQL.

    Args:
        url: ``postgresql://[user[:password]@]h1[:p1][,h2[:p2]...]/dbname[?params]``.
            libpq parameters pass through; engramdb's own: ``schema`` (default
            ``engramdb``: the PostgreSQL schema holding the tables), ``patroni`` (Patroni
            REST URLs, comma separated: the leader is the one Patroni confirms),
            ``read_from`` (``leader``, or ``replica`` for reads from standbys),
            ``replica_wait`` and ``failover_timeout`` (seconds).
        durability: ``sync`` / ``async`` / ``none`` (see the module docstring).
        failover_timeout: how long a call keeps retrying through a failover before it
            raises ``Unavailable``.
        replica_wait: how long a replica read waits for the standby to replay this
            engine's last commit before it reads from the leader instead.
        pool_size: most idle read connections kept.
    """

    def __init__(
        self,
        url: str,
        *,
        durability: Durability = "sync",
        failover_timeout: float | None = None,
        replica_wait: float | None = None,
        pool_size: int = 8,
    ) -> None:
        if durability not in _SYNCHRONOUS_COMMIT:
            raise InvalidArgument(f"durability must be sync, async or none, not {durability!r}")
        self._target = target = Target(url)
        options = target.options
        schema = options.get("schema", "engramdb")
        if not _SCHEMA_NAME.fullmatch(schema):
            raise InvalidArgument(
                f"schema must be a lowercase identifier (a-z, 0-9, _), not {schema!r}"
            )
        read_from = options.get("read_from", "leader")
        if read_from not in ("leader", "replica"):
            raise InvalidArgument(f"read_from must be leader or replica, not {read_from!r}")
        try:
            self._failover_timeout = float(
                failover_timeout
                if failover_timeout is not None
                else options.get("failover_timeout", 30)
            )
            self._replica_wait = float(
                replica_wait if replica_wait is not None else options.get("replica_wait", 1)
            )
        except ValueError as e:
            raise InvalidArgument(f"bad PostgreSQL URL option: {e}") from None
        self.url = target.redacted
        self.schema = schema
        self.durability = durability
        self._sql = _Sql(schema)
        connect_timeout = float(
            psycopg.conninfo.conninfo_to_dict(target.conninfo).get("connect_timeout") or 5
        )
        self._readers = Pool(target, "leader", connect_timeout, pool_size)
        self._replicas = (
            Pool(target, "standby", connect_timeout, pool_size) if read_from == "replica" else None
        )
        self._connect_timeout = connect_timeout
        self._writer: Conn | None = None
        self._writer_lock = threading.Lock()
        self._notices: list[tuple[str, str]] = []  # (severity, message) during a commit
        self._commit_lsn = 0
        self._closed = False
        self._committer: concurrent.futures.ThreadPoolExecutor | None = None
        self.commits = 0
        self.failovers = 0
        self.replica_reads = 0
        self.replica_fallbacks = 0  # replica reads served by the leader instead
        with self._writer_lock:
            self._retrying(self._setup, writes=True)

    # plumbing ----------------------------------------------------------------------------

    def _setup(self, held: Conn) -> None:
        conn = held.conn
        with conn.transaction():
            # Two engines creating one schema at once would race on the catalogs.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"engramdb:{self.schema}",))
            conn.execute(self._sql.setup)
            row = conn.execute(self._sql.format).fetchone()
        if row is None or row[0] != _FORMAT:
            raise StorageError(
                f"schema {self.schema!r} holds engramdb format {row and row[0]}, "
                f"this version reads format {_FORMAT}"
            )

    def _writer_conn(self) -> Conn:
        if self._writer is None:
            conn = self._target.connect("leader", self._connect_timeout)
            conn.add_notice_handler(self._on_notice)
            conn.execute(
                sql.SQL("SET synchronous_commit TO {}").format(
                    sql.Literal(_SYNCHRONOUS_COMMIT[self.durability])
                )
            )
            self._writer = Conn(conn, 0)
        return self._writer

    def _on_notice(self, notice: Diagnostic) -> None:
        # A Diagnostic is valid only during this call: keep its text.
        detail = notice.message_detail
        message = (notice.message_primary or "") + (f": {detail}" if detail else "")
        self._notices.append((notice.severity_nonlocalized or notice.severity or "", message))

    def _drop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(psycopg.Error):
                writer.conn.close()
        # The leader may have changed: no read may go to the old one from now on.
        self._readers.invalidate()
        if self._replicas is not None:
            self._replicas.invalidate()
        self.failovers += 1

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the database is closed")

    def _retrying(self, fn: Callable[[Conn], T], *, writes: bool = False) -> T:
        """Run ``fn`` on a leader connection (the writer, for ``writes``), again on a new
        connection after a failure that lost nothing, until ``failover_timeout``."""
        deadline = time.monotonic() + self._failover_timeout
        pause = 0.05
        while True:
            try:
                if writes:
                    held = self._writer_conn()
                    try:
                        return fn(held)
                    except psycopg.Error as e:
                        if not is_retryable(e, held.conn):
                            raise
                        self._drop_writer()
                        raise Lost(str(e)) from e
                with self._readers.connection() as held:
                    try:
                        return fn(held)
                    except psycopg.Error as e:
                        if not is_retryable(e, held.conn):
                            raise
                        held.conn.close()
                        self._readers.invalidate()
                        raise Lost(str(e)) from e
            except Lost as e:
                if time.monotonic() + pause > deadline:
                    raise Unavailable(
                        f"PostgreSQL at {self.url} unavailable for {self._failover_timeout:g}s "
                        f"(nothing was written): {e}"
                    ) from e
                time.sleep(pause)
                # Capped low: after a failover the new leader takes writes within a few
                # hundred ms of being named, and a 1 s cap added up to 1 s to the outage
                # (measured). Each retry is one REST call per Patroni node and a connect.
                pause = min(pause * 2, 0.25)
            except psycopg.Error as e:
                raise StorageError(f"PostgreSQL error: {e}") from e

    def _read(self, fn: Callable[[Conn], T]) -> T:
        self._check_open()
        if self._replicas is not None:
            found = self._replica_read(fn)
            if found is not None:
                self.replica_reads += 1
                return found[0]
            self.replica_fallbacks += 1
        return self._retrying(fn)

    def _replica_read(self, fn: Callable[[Conn], T]) -> tuple[T] | None:
        """``(result,)`` from a standby that replayed our last commit, or None to read
        from the leader (no standby, or it stayed behind for ``replica_wait``)."""
        assert self._replicas is not None
        if self._commit_lsn >= _NO_REPLICA:
            return None
        try:
            with self._replicas.connection() as held:
                needed = self._commit_lsn
                deadline = time.monotonic() + self._replica_wait
                while held.replayed < needed:
                    row = held.conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()
                    held.replayed = lsn(row[0] if row else None)
                    if held.replayed >= needed:
                        break
                    if time.monotonic() > deadline:
                        return None
                    time.sleep(0.001)
                return (fn(held),)
        except (Lost, psycopg.OperationalError):
            self._replicas.invalidate()
            return None
        except psycopg.errors.UndefinedTable:
            return None  # a standby far behind (no schema yet): the leader answers
        except psycopg.Error as e:
            raise StorageError(f"PostgreSQL error on a standby: {e}") from e

    # reads -------------------------------------------------------------------------------

    def get(self, rk: bytes) -> bytes | None:
        statement = self._sql.get_raw
        return self._read(lambda held: held.get(statement, rk))

    def get_many(self, rks: Sequence[bytes]) -> list[bytes | None]:
        if not rks:
            return []

        def run(held: Conn) -> list[bytes | None]:
            rows = held.cursor.execute(self._sql.get_many, (list(rks),), prepare=True)
            found = {bytes(rk): bytes(value) for rk, value in rows}
            return [found.get(rk) for rk in rks]

        return self._read(run)

    def scan(
        self, start: bytes, end: bytes, limit: int, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        statement = self._sql.scan_reverse if reverse else self._sql.scan

        def run(held: Conn) -> list[tuple[bytes, bytes]]:
            rows = held.cursor.execute(statement, (start, end, limit), prepare=True)
            return [(bytes(rk), bytes(value)) for rk, value in rows]

        return self._read(run)

    def count(self, set_prefix: bytes, now_ms: int) -> int:
        def run(held: Conn) -> int:
            params = {"sp": set_prefix, "now": now_ms}
            row = held.cursor.execute(self._sql.count, params, prepare=True).fetchone()
            return int(row[0]) if row else 0

        return self._read(run)

    def expired(self, now_ms: int, limit: int) -> list[tuple[bytes, int]]:
        def run(held: Conn) -> list[tuple[bytes, int]]:
            rows = held.cursor.execute(self._sql.expired, (now_ms, limit), prepare=True)
            return [(bytes(rk), int(expires)) for rk, expires in rows]

        return self._read(run)

    def sets(self) -> list[str]:
        def run(held: Conn) -> list[str]:
            rows = held.cursor.execute(self._sql.sets, prepare=True)
            return [bytes(sp)[:-1].decode() for (sp,) in rows]

        return self._read(run)

    def changes(self, since: int, limit: int) -> list[EngineChange]:
        def run(held: Conn) -> list[EngineChange]:
            rows = held.cursor.execute(self._sql.changes, (since, limit), prepare=True)
            return [
                EngineChange(int(seq), bytes(rk), kind, int(generation), int(at_ms))
                for seq, rk, kind, generation, at_ms in rows
            ]

        return self._read(run)

    def first_sequence(self) -> int:
        return self._read(lambda held: self._one_int(held, self._sql.first))

    def last_sequence(self) -> int:
        return self._read(lambda held: self._one_int(held, self._sql.last))

    @staticmethod
    def _one_int(held: Conn, statement: bytes) -> int:
        row = held.cursor.execute(statement, prepare=True).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # writes ------------------------------------------------------------------------------

    def write(self, fn: Callable[[_PgTxn], T]) -> T:
        self._check_open()
        if threading.current_thread() is threading.main_thread():
            # KeyboardInterrupt lands on the main thread only, and psycopg answers it by
            # cancelling the running query: a COMMIT waiting for the synchronous standby
            # would then report success for rows a failover loses. Commit elsewhere; an
            # interrupted caller stops waiting, the commit still finishes on its own.
            if self._committer is None:
                with self._writer_lock:
                    if self._committer is None:
                        self._committer = concurrent.futures.ThreadPoolExecutor(
                            1, thread_name_prefix="engramdb-pg-commit"
                        )
            return self._committer.submit(self._write, fn).result()
        return self._write(fn)

    def _write(self, fn: Callable[[_PgTxn], T]) -> T:
        with self._writer_lock:
            self._check_open()
            prepared: list[tuple[T, _PgTxn]] = []

            def stage(held: Conn) -> None:
                # Everything up to COMMIT: a failure here leaves nothing written.
                prepared.clear()
                cursor = held.text
                cursor.execute(self._sql.begin)  # BEGIN and the lock: one round trip
                cursor.nextset()
                row = cursor.fetchone()
                if row is None:
                    raise StorageError(f"schema {self.schema!r} has no meta row")
                txn = _PgTxn(held, self._sql, int(row[0]))
                try:
                    result = fn(txn)
                    if txn.staged:
                        txn.flush()
                except BaseException as e:
                    if not held.conn.broken:
                        with contextlib.suppress(psycopg.Error):
                            held.rollback()
                    # A read inside ``fn`` that failed reaches us wrapped by the caller (group
                    # commit reports it as one write's failure): unwrap it, so a lost
                    # connection is retried on the new leader (nothing was committed) and any
                    # other PostgreSQL error is translated, instead of a raw psycopg error
                    # reaching the caller.
                    if isinstance(e.__cause__, psycopg.Error) and not isinstance(e, psycopg.Error):
                        raise e.__cause__ from None
                    raise
                prepared.append((result, txn))

            self._retrying(stage, writes=True)
            result, txn = prepared[0]
            held = self._writer
            assert held is not None
            if not txn.staged:
                try:
                    held.rollback()  # nothing to keep: no commit to wait for
                except psycopg.Error:
                    self._drop_writer()  # the server ends the transaction with the session
                return result
            self._commit(held, "COMMIT")
            return result

    def _commit(self, held: Conn, statement: str) -> None:
        """Send ``statement`` (a COMMIT); anything but a clean success is an unknown
        outcome. Never cancelled, never timed out."""
        self._notices.clear()
        try:
            held.conn.execute(statement)
        except psycopg.Error as e:
            self._drop_writer()
            raise Unavailable(
                f"the connection to PostgreSQL at {self.url} failed during COMMIT: the outcome "
                f"of this write is unknown (read the record's generation to resolve it): {e}"
            ) from e
        warnings = [message for severity, message in self._notices if severity == "WARNING"]
        if warnings:
            # Typically "canceling wait for synchronous replication": committed locally,
            # maybe not on the standby, so a failover may lose it. Not an acknowledgement.
            # Any warning counts (COMMIT has no other), whatever the server's language.
            self._drop_writer()
            raise Unavailable(
                f"PostgreSQL at {self.url} committed with a warning ({warnings[0]}): the "
                "outcome of this write is unknown (it may be lost at failover; read the "
                "record's generation to resolve it)"
            )
        self.commits += 1
        if self._replicas is not None:
            # What a replica must have replayed before it may answer this handle's reads.
            try:
                row = held.conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
                self._commit_lsn = max(self._commit_lsn, lsn(row[0] if row else None))
            except psycopg.Error:
                self._drop_writer()
                self._commit_lsn = _NO_REPLICA  # unknown: read from the leader for now

    def trim_changes(self, keep: int) -> int:
        def run(held: Conn) -> int:
            return held.cursor.execute(self._sql.trim, (keep,), prepare=True).rowcount

        self._check_open()
        return max(0, self._retrying(run))

    def sync(self) -> None:
        """Flush every commit so far (and wait for the synchronous standby): commit a
        transaction that has an id but writes nothing, with ``synchronous_commit=on``."""
        if self._closed:
            return
        with self._writer_lock:

            def begin(held: Conn) -> None:
                held.conn.execute("BEGIN")
                held.conn.execute("SET LOCAL synchronous_commit TO on")
                held.conn.execute("SELECT pg_current_xact_id()")

            self._retrying(begin, writes=True)
            assert self._writer is not None
            self._commit(self._writer, "COMMIT")

    # ops ---------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        def run(held: Conn) -> dict[str, Any]:
            row = held.cursor.execute(self._sql.stored, prepare=True).fetchone()
            info = held.conn.info
            return {
                "records_stored": int(row[0]) if row else 0,
                "records_with_ttl": int(row[1]) if row else 0,
                "server": f"{info.host}:{info.port}",
                "server_version": info.server_version,
            }

        figures = self._read(run)
        first, last = self.first_sequence(), self.last_sequence()
        return {
            "engine": "postgres",
            "url": self.url,
            "schema": self.schema,
            "durability": self.durability,
            "read_from": "replica" if self._replicas is not None else "leader",
            **figures,
            "changelog_length": last - first + 1,
            "commits": self.commits,
            "reconnects": self.failovers,
            "replica_reads": self.replica_reads,
            "replica_fallbacks": self.replica_fallbacks,
        }

    def close(self) -> None:
        if self._closed:
            return
        if self._committer is not None:
            self._committer.shutdown(wait=True)
        # Wait for an in-flight commit: closing its connection would not cancel it, but it
        # would turn a clean outcome into an unknown one.
        with self._writer_lock:
            self._closed = True
            writer, self._writer = self._writer, None
            if writer is not None:
                with contextlib.suppress(psycopg.Error):
                    writer.conn.close()
        self._readers.invalidate()
        if self._replicas is not None:
            self._replicas.invalidate()
