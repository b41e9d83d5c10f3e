"""What a local cluster did during a fault, second by second: a watcher that polls etcd's
leader key, each node's Patroni REST API and each node's PostgreSQL, and keeps every change
it sees with its time, plus the part of each node's logs written meanwhile.

It answers "where did the outage go": when the old leader's key expired, when a new one
took it, when its PostgreSQL left recovery, when it named its synchronous standby, when a
standby streamed to it again. ``Timeline.marks`` gives those moments (epoch seconds);
``Timeline.events`` every observed change; ``Timeline.keep_logs`` copies what each node's
Patroni and PostgreSQL logged since ``start``.

Observation only: it never changes the cluster. Each poll has short timeouts so a dead node
costs little, and one slow node does not hide another's changes (one thread per source).
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engramdb.cluster.patroni import Cluster

__all__ = ["Event", "Timeline"]

_POLL = 0.05  # seconds between two looks at one source
_TIMEOUT = 0.5  # seconds one look may take
_PG_STATE = """
SELECT pg_is_in_recovery(),
       current_setting('synchronous_standby_names'),
       coalesce((SELECT string_agg(application_name || ' ' || state || ' ' || sync_state, ', '
                                   ORDER BY application_name)
                 FROM pg_stat_replication), ''),
       coalesce((SELECT status || ' from port ' || coalesce(sender_port::text, '?')
                 FROM pg_stat_wal_receiver), '')
"""


@dataclass(frozen=True)
class Event:
    """One change seen: at ``at`` (epoch seconds) ``source`` (``etcd``, ``node1 patroni``,
    ``node1 postgres``) went from whatever it was to ``value``."""

    at: float
    source: str
    value: str


@dataclass
class Timeline:
    """Watch ``cluster`` from ``start()`` to ``stop()``."""

    cluster: Cluster
    events: list[Event] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _offsets: dict[Path, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Timeline:
        self._offsets = {path: _size(path) for path in self.cluster.log_paths()}
        sources: list[tuple[str, Any]] = [("etcd", self._etcd_leader)]
        for node in self.cluster.node_names():
            sources.append((f"{node} patroni", _Rest(self.cluster, node)))
            sources.append((f"{node} postgres", _Postgres(self.cluster, node)))
        for name, look in sources:
            thread = threading.Thread(
                target=self._watch, args=(name, look), name=f"timeline-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _watch(self, name: str, look: Any) -> None:
        last: str | None = None
        try:
            while not self._stop.is_set():
                try:
                    value = str(look())
                except Exception as e:  # a dead or busy node: that is what we record
                    value = f"unreachable ({type(e).__name__})"
                if value != last:
                    with self._lock:
                        self.events.append(Event(time.time(), name, value))
                    last = value
                self._stop.wait(_POLL)
        finally:
            if hasattr(look, "close"):
                look.close()

    def _etcd_leader(self) -> str:
        """The leader key's value (the leader's name), or ``none`` once it expired."""
        port = self.cluster.etcd_port()
        key = base64.b64encode(self.cluster.leader_key().encode()).decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v3/kv/range",
            data=json.dumps({"key": key}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as reply:
            kvs = json.loads(reply.read()).get("kvs") or []
        return "leader " + base64.b64decode(kvs[0]["value"]).decode() if kvs else "no leader"

    # what it means ------------------------------------------------------------------------

    def sorted_events(self) -> list[Event]:
        with self._lock:
            return sorted(self.events, key=lambda e: e.at)

    def marks(self, since: float, old: str | None, new: str | None) -> dict[str, float | None]:
        """The moments of a failover from ``old`` to ``new`` after ``since``: the leader key
        gone, taken by ``new``, ``new``'s PostgreSQL out of recovery, its
        ``synchronous_standby_names`` set (first, then naming a standby), a standby
        streaming to it as synchronous. None where not seen."""
        events = [e for e in self.sorted_events() if e.at >= since]

        def first(source: str, test: Any) -> float | None:
            return next((e.at for e in events if e.source == source and test(e.value)), None)

        out: dict[str, float | None] = {
            "leader_key_expired": first("etcd", lambda v: v == "no leader"),
            "leader_key_taken": first(
                "etcd", lambda v: v.startswith("leader ") and v != f"leader {old}"
            ),
        }
        if new is not None:
            pg = f"{new} postgres"
            out["promoted"] = first(pg, lambda v: v.startswith("primary"))
            out["sync_names_set"] = first(
                pg, lambda v: v.startswith("primary") and "sync=''" not in v
            )
            out["sync_standby_named"] = first(
                pg, lambda v: v.startswith("primary") and "sync=''" not in v and "sync='*'" not in v
            )
            out["standby_streaming_sync"] = first(
                pg,
                lambda v: (
                    v.startswith("primary") and (" streaming sync" in v or " streaming quorum" in v)
                ),
            )
        return out

    def keep_logs(self, directory: Path) -> list[Path]:
        """Copy what each node's Patroni and PostgreSQL logged since ``start`` (and the
        events seen, ``events.tsv``) into ``directory``; returns the files written."""
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for path, offset in self._offsets.items():
            # node1/pglog/postgresql.log -> node1-pglog-postgresql.log
            target = directory / "-".join(path.relative_to(self.cluster.directory).parts)
            with contextlib.suppress(OSError):
                with path.open("rb") as source:
                    source.seek(offset if _size(path) >= offset else 0)  # a new, shorter file
                    target.write_bytes(source.read())
                written.append(target)
        events = directory / "events.tsv"
        events.write_text(
            "".join(
                f"{time.strftime('%H:%M:%S', time.gmtime(e.at))}.{int(e.at * 1000) % 1000:03d}"
                f"\t{e.source}\t{e.value}\n"
                for e in self.sorted_events()
            )
        )
        written.append(events)
        return written


class _Rest:
    """One node's Patroni as its REST API describes itself."""

    def __init__(self, cluster: Cluster, node: str) -> None:
        self.url = f"http://127.0.0.1:{cluster.rest_port(node)}/patroni"

    def __call__(self) -> str:
        with urllib.request.urlopen(self.url, timeout=_TIMEOUT) as reply:
            me = json.loads(reply.read())
        return f"{me.get('role')} {me.get('state')} timeline {me.get('timeline')}"


class _Postgres:
    """One node's PostgreSQL: primary or standby, ``synchronous_standby_names``, who streams
    from it and where it streams from."""

    def __init__(self, cluster: Cluster, node: str) -> None:
        self.dsn = cluster.dsn(node, superuser=True)
        self.conn: Any = None

    def __call__(self) -> str:
        import psycopg

        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = None
            self.conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=1)
        try:
            row = self.conn.execute(_PG_STATE).fetchone()
        except psycopg.Error:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None
            raise
        recovery, names, senders, receiver = row
        if recovery:
            return f"standby receiver={receiver!r}"
        return f"primary sync={names!r} senders={senders!r}"

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
