"""Availability of a replicated cluster, measured: the faults the guide names, injected under
open-loop load, one at a time.

Faults (``FAULTS``), each on a cluster ``engramdb cluster up`` started (``Cluster``):

- ``leader_kill``: kill -9 the leader node (its Patroni and its postgres at once, as a
  crashed machine), wait for the new leader, start the old node again (it rejoins as a
  replica) and wait for a healthy cluster. Patroni's leader lease (``ttl``) is the floor of
  the write outage.
- ``switchover``: hand leadership to the synchronous standby through Patroni (a rolling
  update's step); planned, so the outage is short.
- ``scale_in``: stop a replica cleanly (an asynchronous one when there is one), run without
  it for a while, start it again (scale back out).

While each fault runs, four kinds of client run against the engine URL, each in its own
process: an open-loop read load and an open-loop write load (Poisson arrivals, latency
from the intended send time, every request traced), writers of unique keys recording every
acknowledged write, and compare-and-set clients recording histories for the
linearizability checker. Per fault the report gives: the longest time without a successful
write and without a successful read from the injection on, p99 during the fault (requests
meant to start between the injection and a healthy cluster) and after it, acknowledged
writes lost (read back at the end: must be 0) and the checker's verdict.

Reads go where the URL sends them: with ``read_from=replica`` they go to standbys, which keep
answering through a leader crash.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engramdb.audit import linearizability
from engramdb.audit.history import record_histories, record_writes
from engramdb.audit.load import LoadResult, Phase, Workload, run_load
from engramdb.errors import Unavailable

if TYPE_CHECKING:
    from engramdb.cluster import Cluster

__all__ = ["FAULTS", "Fault", "run_fault"]

_READS = Workload("reads", read=1.0, update=0.0)
_WRITES = Workload("writes", read=0.0, update=1.0)
_SCALE_IN_HOLD = 5.0  # seconds the cluster runs a replica short before it is started again
_SPAWN = 5.0  # seconds the client processes are given to start (2 cores, 4 interpreters)
# Requests a load process keeps waiting at once: a 25 s outage at 100/s, not dropped.
_MAX_INFLIGHT = 4096


def _leader_kill(cluster: Cluster, marks: dict[str, float]) -> dict[str, Any]:
    old = cluster.kill_leader_node()
    marks["injected"] = time.time()
    new = cluster.wait_leader(other_than=old)
    marks["new_leader"] = time.time()
    restarts = _rejoin(cluster, old)  # as a replica (pg_rewind if it had diverged)
    return {"killed": old, "new_leader": new, "rejoin_restarts": restarts}


def _switchover(cluster: Cluster, marks: dict[str, float]) -> dict[str, Any]:
    old = cluster.leader().name
    marks["injected"] = time.time()
    new = cluster.switchover()
    marks["new_leader"] = time.time()
    cluster.wait_healthy()
    return {"old_leader": old, "new_leader": new}


def _scale_in(cluster: Cluster, marks: dict[str, float]) -> dict[str, Any]:
    marks["injected"] = time.time()
    removed = cluster.remove_replica()
    time.sleep(_SCALE_IN_HOLD)
    restarts = _rejoin(cluster, removed)
    return {"removed": removed, "held_out_s": _SCALE_IN_HOLD, "rejoin_restarts": restarts}


def _rejoin(cluster: Cluster, name: str, attempts: int = 3) -> int:
    """Start node ``name`` again and wait for a healthy cluster; returns how many times its
    Patroni had to be started again because it was not running (seen once in a long
    benchmark on a loaded 2-core machine: reported, never hidden)."""
    for attempt in range(attempts):
        cluster.start_node(name)
        try:
            cluster.wait_healthy()
            return attempt
        except Unavailable:
            gone = any(m.name == name and m.patroni_pid is None for m in cluster.members())
            if not gone or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Fault:
    """One fault: how it is injected and healed, and what outage passes."""

    name: str
    title: str
    inject: Callable[[Cluster, dict[str, float]], dict[str, Any]]  # returns once healed
    budget: float  # seconds of load given to the fault and its healing
    planned: bool  # a planned operation (short outage expected), not a crash


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault("leader_kill", "kill -9 the leader node", _leader_kill, 50.0, planned=False),
        Fault("switchover", "switchover (rolling update)", _switchover, 15.0, planned=True),
        Fault("scale_in", "remove a replica (scale-in)", _scale_in, 20.0, planned=True),
    )
}


def run_fault(
    cluster: Cluster,
    url: str,
    fault: Fault,
    *,
    options: dict[str, Any],
    prefix: str,
    rate: float = 100.0,
    lead: float = 3.0,
    after: float = 5.0,
    histories: bool = True,
    read_url: str | None = None,
    progress: Callable[[str], None] = lambda message: None,
    keep_logs: Path | None = None,
) -> dict[str, Any]:
    """Inject ``fault`` into ``cluster`` under load on ``url`` (reads at ``rate``/s, writes
    at half that) and measure it; ``options`` go to every client (the run's namespace).
    The load runs ``lead`` seconds before the fault and ``fault.budget + after`` after.
    ``read_url``: where the read load goes instead (e.g. ``url`` + ``&read_from=replica``).
    ``keep_logs``: a directory that receives what each node's Patroni and PostgreSQL logged
    during the fault and every change the cluster's watcher saw (``events.tsv``)."""
    cluster.wait_healthy()
    seconds = lead + fault.budget + after
    start_at = time.time() + _SPAWN
    results: dict[str, Any] = {}
    failures: list[BaseException] = []

    def background(name: str, job: Callable[[], Any]) -> threading.Thread:
        def run() -> None:
            try:
                results[name] = job()
            except BaseException as e:  # re-raised below, after the fault has healed
                failures.append(e)

        thread = threading.Thread(target=run, name=f"audit-{name}", daemon=True)
        thread.start()
        return thread

    def load(where: str, workload: Workload, per_second: float, seed: int) -> LoadResult:
        phases = [Phase(fault.name, seconds, per_second)]
        return run_load(
            where, workload, phases, workers=1, options=options, trace=True,
            start_at=start_at, seed=seed, max_inflight=_MAX_INFLIGHT,
        )  # fmt: skip

    writers: dict[str, Any] = {
        "workers": 1, "clients": 4, "seconds": seconds, "prefix": f"{prefix}w",
        "start_at": start_at,
    }  # fmt: skip
    cas_clients: dict[str, Any] = {
        "workers": 1, "clients": 4, "keys": 4, "counters": 1, "seconds": seconds,
        "prefix": f"{prefix}h", "start_at": start_at,
    }  # fmt: skip
    threads = [
        background("reads", lambda: load(read_url or url, _READS, rate, 11)),
        background("writes", lambda: load(url, _WRITES, rate / 2, 12)),
        background("acked", lambda: record_writes(url, options, **writers)),
    ]
    if histories:
        threads.append(
            background("histories", lambda: record_histories(url, options, **cas_clients))
        )
    from engramdb.cluster.timeline import Timeline  # engramdb.cluster: only with a cluster

    marks: dict[str, float] = {}
    timeline = Timeline(cluster)
    try:
        time.sleep(max(0.0, start_at + lead - time.time()))
        timeline.start()
        progress(f"availability: {fault.title}")
        marks["injected"] = time.time()
        try:
            details = fault.inject(cluster, marks)
        finally:
            healed = time.time()
            timeline.stop()
            if keep_logs is not None:
                timeline.keep_logs(keep_logs)
        progress(f"availability: {fault.title}: healed, load running to its end")
        for thread in threads:
            thread.join()
    except BaseException:
        # Ctrl-C or a fault that failed: no client may still write while the audit cleans
        # up (the client processes are this process's only multiprocessing children). A
        # node left stopped comes back with `engramdb cluster up --dir DIR`.
        for child in multiprocessing.active_children():
            child.kill()
            child.join()
        raise
    if failures:
        raise failures[0]
    end = start_at + seconds
    injected = marks["injected"]
    reads: LoadResult = results["reads"]
    writes: LoadResult = results["writes"]
    acked, _ = results["acked"]
    progress(f"availability: {fault.title}: reading back {len(acked)} acknowledged writes")
    lost = missing_writes(url, options["namespace"], acked)
    moments = timeline.marks(
        injected,
        details.get("killed", details.get("old_leader")),
        details.get("new_leader"),
    )
    moments["new_leader_confirmed"] = marks.get("new_leader")
    moments["first_write_acked"] = _first_success(writes.trace, injected)
    section: dict[str, Any] = {
        "fault": fault.name,
        # Seconds from the injection to each moment of the failover (None: not seen).
        "timeline": {k: None if v is None else v - injected for k, v in moments.items()},
        "title": fault.title,
        "details": details,
        "healed_s": healed - injected,
        "new_leader_s": marks["new_leader"] - injected if "new_leader" in marks else None,
        "healed_before_load_ended": healed <= end,
        "write_window_s": _window(writes.trace, injected, end),
        "read_window_s": _window(reads.trace, injected, end),
        "writes": _phases(writes, injected, healed),
        "reads": _phases(reads, injected, healed),
        "acknowledged_writes": len(acked),
        "acknowledged_writes_lost": len(lost),
        "lost_examples": lost[:10],
    }
    if histories:
        ops, _, _, cas = results["histories"]
        verdict = linearizability.check(ops)
        section["history"] = {
            "linearizable": verdict.linearizable,
            "operations": verdict.operations,
            "unknown_outcome": sum(1 for o in ops if o.end is None),
            "compare_and_set": cas,
            "failed_keys": verdict.failed_keys,
            "undecided_keys": verdict.undecided_keys,
        }
    return section


def _first_success(trace: list[tuple[float, float, str, bool]], since: float) -> float | None:
    """When the first request meant to start after ``since`` succeeded (None: none did).
    Requests sent before the injection may finish after it on the old leader."""
    return min((finish for start, finish, _, ok in trace if ok and start >= since), default=None)


def _window(trace: list[tuple[float, float, str, bool]], since: float, end: float) -> float:
    """The longest time from ``since`` to ``end`` in which no request succeeded: gaps between
    successive successful completions, from the injection on, and a gap still open at the
    end of the load."""
    done = sorted(finish for _, finish, _, ok in trace if ok and finish > since)
    points = [since, *done]
    gaps = [b - a for a, b in itertools.pairwise(points)]
    if not done or done[-1] < end:
        gaps.append(max(0.0, end - points[-1]))
    return max(gaps, default=0.0)


def _phases(load: LoadResult, injected: float, healed: float) -> dict[str, Any]:
    """Latency (ms from the intended send time) and errors of the requests done before the
    fault, those caught in it (done after the injection, meant to start before the cluster
    was healthy again) and those meant to start after it."""
    out: dict[str, Any] = {}
    windows: list[tuple[str, Callable[[float, float], bool]]] = [
        ("before", lambda a, b: b < injected),
        ("during", lambda a, b: b >= injected and a < healed),
        ("after", lambda a, b: a >= healed),
    ]
    for name, caught in windows:
        rows = [(b - a, ok) for a, b, _, ok in load.trace if caught(a, b)]
        latencies = sorted(1000 * t for t, ok in rows if ok)
        out[name] = {
            "requests": len(rows),
            "errors": sum(1 for _, ok in rows if not ok),
            "p50_ms": _rank(latencies, 0.50),
            "p99_ms": _rank(latencies, 0.99),
            "max_ms": latencies[-1] if latencies else None,
        }
    out["dropped_by_generator"] = load.dropped
    return out


def _rank(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of a sorted list (None when empty)."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def missing_writes(url: str, namespace: str, keys: list[str]) -> list[str]:
    """The acknowledged ``keys`` not found under ``namespace`` now (read on the leader)."""
    import engramdb

    base, _, query = url.partition("?")
    # Read back on the leader: an asynchronous replica may not have replayed them yet.
    kept = [(k, v) for k, v in urllib.parse.parse_qsl(query) if k != "read_from"]
    leader_url = base + ("?" + urllib.parse.urlencode(kept, safe=":/,") if kept else "")
    missing: list[str] = []
    with engramdb.open(leader_url) as db:
        records = db.records(namespace)
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            found = records.get_many(chunk)
            missing.extend(k for k, r in zip(chunk, found, strict=True) if r is None)
    return missing
