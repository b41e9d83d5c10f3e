"""Connections of the PostgreSQL engine: where they go (the leader, found through libpq
multi-host and Patroni, or a standby), a small pool, and the fast point read.

Private to ``engramdb.storage.postgres_engine``; see its docstring for the rules.
"""

from __future__ import annotations

import collections
import contextlib
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import pq

from engramdb.errors import InvalidArgument

__all__ = ["Conn", "Lost", "Pool", "Target", "is_retryable", "lsn"]

_OUR_PARAMS = ("schema", "patroni", "read_from", "replica_wait", "failover_timeout")
_GET_NAME = b"engramdb_get"
# libpq defaults that bound how long a dead server can hold a call: connecting, and an
# idle-looking connection (a commit waiting on a server that vanished) probed by keepalives.
_LIBPQ_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
}
# SQLSTATE classes meaning "this connection or server is gone or not the leader": the
# statement did not run, so nothing was written and the call can be retried elsewhere.
_RETRY_STATES = ("08", "57P", "25006", "40001", "40P01", "26000")


class Lost(Exception):
    """The connection failed in a way that lost nothing (retry on a new one)."""


def lsn(text: str | None) -> int:
    if not text:
        return 0
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


class Target:
    """Where connections go: the libpq conninfo of the URL, the leader found through
    Patroni (when configured), and the standbys for replica reads."""

    def __init__(self, url: str) -> None:
        base, _, query = url.partition("?")
        ours: dict[str, str] = {}
        theirs: list[tuple[str, str]] = []
        for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            if name in _OUR_PARAMS:
                ours[name] = value
            else:
                theirs.append((name, value))
        given = {name for name, _ in theirs}
        theirs += [(k, v) for k, v in _LIBPQ_DEFAULTS.items() if k not in given]
        self.conninfo = base + "?" + urllib.parse.urlencode(theirs)
        try:
            psycopg.conninfo.conninfo_to_dict(self.conninfo)
        except psycopg.ProgrammingError as e:
            raise InvalidArgument(f"bad PostgreSQL URL: {e}") from None
        self.options = ours
        self.patroni = [u.strip().rstrip("/") for u in ours.get("patroni", "").split(",") if u]
        self.redacted = re.sub(r"://[^@/]*@", "://", base)

    def leader(self, timeout: float) -> tuple[str, int] | None:
        """(host, port) of the leader Patroni confirms, or None without Patroni URLs."""
        if not self.patroni:
            return None
        errors: list[str] = []
        for api in self.patroni:
            try:
                with urllib.request.urlopen(f"{api}/cluster", timeout=timeout) as reply:
                    members = json.loads(reply.read()).get("members", [])
            except (OSError, ValueError) as e:
                errors.append(f"{api}: {e}")
                continue
            for member in members:
                if member.get("role") not in ("leader", "primary"):
                    continue
                # Confirm with the member itself: it answers 200 on /primary only while it
                # runs as primary holding the leader key (not an orphan past its TTL).
                member_api = str(member.get("api_url", "")).rsplit("/", 1)[0] or api
                try:
                    with urllib.request.urlopen(f"{member_api}/primary", timeout=timeout):
                        return str(member["host"]), int(member["port"])
                except (OSError, KeyError, ValueError) as e:
                    errors.append(f"{member_api}/primary: {e}")
        raise Lost(f"no leader confirmed by Patroni ({'; '.join(errors) or 'none elected'})")

    def connect(self, role: str, timeout: float) -> psycopg.Connection[Any]:
        """A new autocommit connection to the leader (``role="leader"``) or a standby."""
        extra: dict[str, Any] = {"autocommit": True}
        if role == "leader":
            found = self.leader(timeout)
            extra["target_session_attrs"] = "read-write"
            if found is not None:
                extra["host"], extra["port"] = found
        else:
            extra["target_session_attrs"] = "standby"
        try:
            return psycopg.connect(self.conninfo, **extra)
        except psycopg.OperationalError as e:
            raise Lost(f"cannot connect to a PostgreSQL {role} at {self.redacted}: {e}") from e


class Conn:
    """A connection and the cursor its prepared statements run on."""

    __slots__ = ("conn", "cursor", "epoch", "prepared_get", "replayed", "text")

    def __init__(self, conn: psycopg.Connection[Any], epoch: int) -> None:
        self.conn = conn
        self.cursor = conn.cursor(binary=True)
        self.text = conn.cursor()  # for multi-statement queries (no binary, no parameters)
        self.epoch = epoch
        self.replayed = 0  # standby: the replay LSN last seen
        self.prepared_get = False

    def get(self, statement: bytes, rk: bytes) -> bytes | None:
        """A point read straight through libpq: the hottest call, and psycopg's cursor
        machinery would double its cost (measured ~40 vs ~25 µs on loopback). The
        connection is idle between calls, so using its libpq handle directly is safe."""
        pgconn = self.conn.pgconn
        if not self.prepared_get:
            self._check(pgconn.prepare(_GET_NAME, statement))
            self.prepared_get = True
        result = pgconn.exec_prepared(_GET_NAME, [rk], [1], 1)
        if (
            result.status == pq.ExecStatus.FATAL_ERROR
            and result.error_field(pq.DiagnosticField.SQLSTATE) == b"26000"
        ):
            # psycopg sends DEALLOCATE ALL after a ROLLBACK, DROP or ALTER it runs. Outside
            # a transaction prepare again; inside one the error aborted it (retryable).
            self.prepared_get = False
            if pgconn.transaction_status == pq.TransactionStatus.IDLE:
                return self.get(statement, rk)
        self._check(result)
        return bytes(result.get_value(0, 0) or b"") if result.ntuples else None

    def rollback(self) -> None:
        """ROLLBACK through libpq (psycopg would deallocate every prepared statement)."""
        self._check(self.conn.pgconn.exec_(b"ROLLBACK"))

    def _check(self, result: pq.abc.PGresult) -> pq.abc.PGresult:
        if result.status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            return result
        if self.conn.pgconn.status == pq.ConnStatus.BAD:
            raise psycopg.OperationalError(str(self.conn.pgconn.get_error_message()))
        raise psycopg.errors.error_from_result(result)


class Pool:
    """Idle connections of one role. Taking and returning one costs a deque operation; a
    connection that failed is closed, not returned, and a failover (``invalidate``) makes
    every older connection be closed instead of reused."""

    def __init__(self, target: Target, role: str, timeout: float, size: int) -> None:
        self._target = target
        self._role = role
        self._timeout = timeout
        self._idle: collections.deque[Conn] = collections.deque()
        self._size = size
        self.epoch = 0

    @contextlib.contextmanager
    def connection(self) -> Iterator[Conn]:
        try:
            held = self._idle.pop()
        except IndexError:
            held = Conn(self._target.connect(self._role, self._timeout), self.epoch)
        ok = False
        try:
            yield held
            ok = True
        finally:
            if ok and held.epoch == self.epoch and len(self._idle) < self._size:
                self._idle.append(held)
            else:
                held.conn.close()

    def invalidate(self) -> None:
        self.epoch += 1
        while self._idle:
            with contextlib.suppress(IndexError, psycopg.Error):
                self._idle.pop().conn.close()


def is_retryable(error: psycopg.Error, conn: psycopg.Connection[Any]) -> bool:
    state = error.sqlstate or ""
    return conn.broken or conn.closed or state.startswith(_RETRY_STATES) or not state
