"""The replicated cluster engine: failover under load, and its latency against LMDB and Redis.

    python bench/cluster.py            # full run (about 20 minutes on 2 cores)
    python bench/cluster.py --quick    # one fault of each kind, short loops (~5 minutes)
    python bench/cluster.py --help     # every size is configurable

Starts a local 3-node cluster with ``engramdb.cluster.Cluster`` (the code behind
``engramdb cluster up``: etcd, Patroni, PostgreSQL + pgvector, strict synchronous
replication) in a temporary directory, and removes it at the end.

1. **Failover.** Each fault is injected by ``engramdb.audit.faults.run_fault``, the code of
   ``engramdb audit --cluster-dir DIR --allow-faults``, under four kinds of client at once,
   each its own process: an open-loop write load (50/s) and an open-loop read load (100/s;
   latency from the intended send time), writers of unique keys (every acknowledged one is
   read back on the leader afterwards: lost must be 0) and compare-and-set clients on four
   hot keys whose histories go through the project's linearizability checker
   (``engramdb.audit.linearizability``). Writes and compare-and-sets go to the leader; the
   read load reads from replicas (``read_from=replica``). Faults: kill -9 of the leader node
   (Patroni and postgres at once; the node is started again and rejoins), a switchover, a
   replica removed and added back. The write outage is the longest time from the injection
   on without a successful write.
2. **Latency.** One client thread, closed loop, the same ``_common.measure`` loop for every
   side: records ``get`` and ``put`` and a session update (``db.sessions.update``: read,
   apply, compare-and-set) on the cluster engine (durability sync: a write is acknowledged
   once the synchronous standby has it), the LMDB engine (durability sync: fsync) and Redis
   (GET / SET / WATCH+MULTI, ``appendfsync always``: an fsync per write). Then vector search
   (k=10, HNSW) on the cluster engine against the embedded LMDB engine: the index is built
   in-process on both; on the cluster a search first asks PostgreSQL for the latest change
   sequence (read-your-writes across fronts).

Writes bench/results/cluster.json (``_common.Report``).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

import engramdb
from _common import (
    RESULTS_DIR,
    Meter,
    RedisServer,
    Report,
    Stats,
    find_redis_server,
    fmt_ratio,
    fmt_us,
    machine_info,
    measure,
    missing,
    new_progress,
    skip,
)
from engramdb.audit import linearizability
from engramdb.audit.faults import FAULTS, run_fault
from engramdb.cluster import Cluster
from engramdb.cluster.patroni import DCS
from engramdb.sessions import cas_update

SECTION = "cluster"
GOALS = {"leader_kill": 25.0, "switchover": 5.0, "scale_in": 5.0}  # write outage, seconds


@dataclass(frozen=True)
class Sizes:
    kills: int = 10  # kill -9s of the leader node
    switchovers: int = 5
    scale_ins: int = 2
    records: int = 2000  # records loaded before the latency loops
    calls: int = 2000  # measured calls per read loop
    writes: int = 1000  # measured calls per write loop
    vectors: int = 5000
    dim: int = 64
    queries: int = 500


QUICK = Sizes(kills=1, switchovers=1, scale_ins=1, records=300, calls=300, writes=200,
              vectors=1000, queries=100)  # fmt: skip


def parse() -> tuple[Sizes, bool]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one fault each, short loops")
    for f in Sizes.__dataclass_fields__:
        parser.add_argument(f"--{f.replace('_', '-')}", type=int, default=None)
    args = parser.parse_args()
    sizes = QUICK if args.quick else Sizes()
    given = {f: getattr(args, f) for f in Sizes.__dataclass_fields__ if getattr(args, f)}
    return Sizes(**{**asdict(sizes), **given}), args.quick


@contextmanager
def local_cluster() -> Iterator[Cluster]:
    # Under root the cluster runs as another user: a directory it can reach.
    base = Path(tempfile.mkdtemp(prefix="engramdb-bench-cluster-", dir="/tmp"))
    base.chmod(0o755)
    cluster = Cluster(base / "cluster", nodes=3)
    try:
        cluster.up()
        yield cluster
    except BaseException:
        # Keep the logs of a failed run (the directory is wiped below).
        kept = RESULTS_DIR / "cluster-logs"
        shutil.rmtree(kept, ignore_errors=True)
        for log in (base / "cluster").glob("*/*.log"):
            (kept / log.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(log, kept / log.parent.name / log.name)
        raise
    finally:
        cluster.down(wipe=True)
        shutil.rmtree(base, ignore_errors=True)


# latency ------------------------------------------------------------------------------------


def record_bins(i: int) -> dict[str, Any]:
    return {"name": f"user-{i}", "n": i, "score": i / 7, "tags": ["a", "b", str(i % 10)]}


def engram_side(db: engramdb.Database, sizes: Sizes, meter: Meter, side: str) -> dict[str, Stats]:
    records = db.records("bench")
    for start in range(0, sizes.records, 500):
        with db.transaction() as txn:
            for i in range(start, min(sizes.records, start + 500)):
                txn.records("bench").put(f"k{i}", record_bins(i))
    rng = random.Random(1)
    keys = [f"k{rng.randrange(sizes.records)}" for _ in range(sizes.calls)]
    out = {
        "get": measure(records.get, keys, warmup=keys[:50], meter=meter,
                       description=f"{side}: get"),
        "put": measure(lambda i: records.put(f"p{i}", record_bins(i)), range(sizes.writes),
                       warmup=range(-50, 0), meter=meter, description=f"{side}: put"),
    }  # fmt: skip
    sessions = db.sessions
    sessions.create("s1", {"n": 0, "events": []})
    out["session update"] = measure(
        lambda i: sessions.update("s1", lambda s: bumped(s, i)),
        range(sizes.writes), warmup=range(50), meter=meter, description=f"{side}: session",
    )  # fmt: skip
    return out


def bumped(state: dict[str, Any], i: int) -> dict[str, Any]:
    """A session step: counter + 1 and one more event, the last 20 kept."""
    event = {"seq": i, "kind": "tool_call", "tokens": 128}
    return {"n": state["n"] + 1, "events": [*state["events"][-19:], event]}


def redis_side(url: str, sizes: Sizes, meter: Meter) -> dict[str, Stats]:
    import redis
    from redis.exceptions import WatchError

    r = redis.Redis.from_url(url)
    encode, decode = msgspec.msgpack.encode, msgspec.msgpack.decode
    for i in range(sizes.records):
        r.set(f"k{i}", encode(record_bins(i)))
    rng = random.Random(1)
    keys = [f"k{rng.randrange(sizes.records)}" for _ in range(sizes.calls)]

    def get(key: str) -> Any:
        raw = r.get(key)
        return None if raw is None else decode(raw)

    pipe = r.pipeline()
    r.set("s1", encode({"n": 0, "events": []}))

    def session(i: int) -> Any:
        def read() -> tuple[Any, int]:
            pipe.watch("s1")
            return decode(pipe.get("s1")), 0

        def write(state: Any, generation: int) -> None:
            pipe.multi()
            pipe.set("s1", encode(state))
            try:
                pipe.execute()
            except WatchError as e:
                raise engramdb.Conflict("changed", generation) from e

        try:
            return cas_update(read, write, lambda s: bumped(s, i), max_retries=100)
        finally:
            pipe.reset()

    out = {
        "get": measure(get, keys, warmup=keys[:50], meter=meter, description="redis: get"),
        "put": measure(lambda i: r.set(f"p{i}", encode(record_bins(i))), range(sizes.writes),
                       warmup=range(-50, 0), meter=meter, description="redis: put"),
        "session update": measure(session, range(sizes.writes), warmup=range(50), meter=meter,
                                  description="redis: session"),
    }  # fmt: skip
    r.close()
    return out


def search_side(db: engramdb.Database, sizes: Sizes, meter: Meter, side: str) -> Stats:
    rng = np.random.default_rng(3)
    data = rng.standard_normal((sizes.vectors, sizes.dim)).astype(np.float32)
    collection = db.vectors.create_collection("bench", sizes.dim, "cosine", text=False)
    for start in range(0, sizes.vectors, 1000):
        ids = list(range(start, min(sizes.vectors, start + 1000)))
        collection.upsert(ids, data[start : start + len(ids)])
    queries = list(rng.standard_normal((sizes.queries, sizes.dim)).astype(np.float32))
    return measure(lambda q: collection.search(q, 10), queries, warmup=queries[:20], meter=meter,
                   description=f"{side}: search k=10")  # fmt: skip


def latency(cluster: Cluster, sizes: Sizes, root: str) -> dict[str, Any]:
    redis_exe = find_redis_server()
    results: dict[str, dict[str, Stats]] = {}
    search: dict[str, Stats] = {}
    with new_progress() as progress:
        meter = Meter(progress)
        url = cluster.url + "&schema=bench_latency"
        with engramdb.open(url, durability="sync", sweep_interval=None) as db:
            results["cluster"] = engram_side(db, sizes, meter, "cluster")
        with engramdb.open(os.path.join(root, "lmdb"), durability="sync",
                           sweep_interval=None) as db:  # fmt: skip
            results["lmdb"] = engram_side(db, sizes, meter, "lmdb")
        if redis_exe is not None:
            with RedisServer(
                redis_exe, extra_args=("--appendonly", "yes", "--appendfsync", "always"),
                parent=root,
            ) as server:  # fmt: skip
                results["redis"] = redis_side(server.url, sizes, meter)
        with engramdb.open(cluster.url + "&schema=bench_search", durability="sync") as db:
            search["cluster"] = search_side(db, sizes, meter, "cluster")
        with engramdb.open(os.path.join(root, "lmdb-search"), durability="sync") as db:
            search["lmdb"] = search_side(db, sizes, meter, "lmdb")
    return {"records": results, "search": search}


# failover -----------------------------------------------------------------------------------


def failover(cluster: Cluster, sizes: Sizes, say: Callable[[str], None]) -> list[dict[str, Any]]:
    wrong = linearizability.self_test()
    if wrong:
        raise RuntimeError(f"the linearizability checker misjudged {wrong}; refusing to run")
    plan = (
        ["leader_kill"] * sizes.kills + ["switchover"] * sizes.switchovers
        + ["scale_in"] * sizes.scale_ins
    )  # fmt: skip
    url = cluster.url
    read_url = url + "&read_from=replica"
    shutil.rmtree(RESULTS_DIR / "cluster-faults", ignore_errors=True)  # this run's only
    runs = []
    for i, name in enumerate(plan):
        say(f"fault {i + 1}/{len(plan)}: {FAULTS[name].title}")
        started = time.time()
        row = run_fault(
            cluster, url, FAULTS[name], options={"namespace": "bench_failover"},
            prefix=f"b{int(started)}f{i}", read_url=read_url, progress=say,
            keep_logs=RESULTS_DIR / "cluster-faults" / f"{i + 1:02d}-{name}",
        )  # fmt: skip
        row["run_s"] = time.time() - started
        say(
            f"  writes back after {row['write_window_s']:.2f} s, reads {row['read_window_s']:.2f}"
            f" s, lost {row['acknowledged_writes_lost']}/{row['acknowledged_writes']}, "
            f"linearizable {row['history']['linearizable']}"
        )
        runs.append(row)
    return runs


# report -------------------------------------------------------------------------------------


def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f} s"


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f} ms" if x >= 10 else f"{x:.1f} ms"


def report(sizes: Sizes, quick: bool, info: dict[str, str], runs: list[dict[str, Any]],
           lat: dict[str, Any]) -> Report:  # fmt: skip
    r = Report(
        SECTION,
        "cluster",
        "Replicated cluster (postgres engine on Patroni): failover and latency",
        "A local 3-node cluster (etcd, Patroni, PostgreSQL 18 + pgvector, quorum synchronous "
        "replication): failover under load, and latency against the LMDB engine and Redis.",
        quick,
        info,
        about="a local 3-node cluster (`engramdb cluster up`'s code: etcd, Patroni, PostgreSQL "
        "18 + pgvector, strict synchronous replication (synchronous_mode "
        f"{DCS['synchronous_mode']}: a commit waits for any {DCS['synchronous_node_count']} "
        f"standby), Patroni ttl {DCS['ttl']} s, loop_wait {DCS['loop_wait']} s) on the machine "
        "below; every figure in this section comes from one run.",
        raw={
            "sizes": asdict(sizes),
            "failover": runs,
            "latency": {side: {op: s.to_json() for op, s in ops.items()}
                        for side, ops in lat["records"].items()},
            "search": {side: s.to_json() for side, s in lat["search"].items()},
        },
    )  # fmt: skip
    by: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by.setdefault(run["fault"], []).append(run)
    rows = []
    lost_all, missed = [], []
    for name, group in by.items():
        windows = [x["write_window_s"] for x in group]
        reads = [x["read_window_s"] for x in group]
        lost = sum(x["acknowledged_writes_lost"] for x in group)
        acked = sum(x["acknowledged_writes"] for x in group)
        linear = sum(1 for x in group if x["history"]["linearizable"] is True)
        ops = sum(x["history"]["operations"] for x in group)
        goal = GOALS[name]
        outage = f"{_s(statistics.median(windows))} / {_s(max(windows))}"
        r.check(
            f"{FAULTS[name].title.split(' (')[0].replace(' node', '')}: write outage "
            "median / worst",
            "—",
            outage,
            f"≤ {goal:g} s",
            max(windows) <= goal,
        )
        lost_all.append((name, lost, acked, linear == len(group)))
        problems = []
        if over := [x for x in group if x["write_window_s"] > goal]:
            problems.append(
                f"write outage over the {goal:g} s goal in {len(over)} of "
                f"{len(group)} runs (worst {max(windows):.2f} s)"
            )
        if lost:
            problems.append(f"{lost} acknowledged writes lost")
        if linear < len(group):
            problems.append(f"{len(group) - linear} histories not linearizable")
        if problems:
            missed.append(f"**Goal missed — {FAULTS[name].title}:** " + "; ".join(problems) + ".")
        rows.append([
            FAULTS[name].title, str(len(group)), outage,
            f"≤ {goal:g} s: {'met' if max(windows) <= goal else '**missed**'}",
            f"{_s(statistics.median(reads))} / {_s(max(reads))}",
            _ms(statistics.median(x["writes"]["during"]["p99_ms"] or 0 for x in group)),
            _ms(statistics.median(x["writes"]["after"]["p99_ms"] or 0 for x in group)),
            _ms(statistics.median(x["reads"]["during"]["p99_ms"] or 0 for x in group)),
            f"**{lost}** of {acked:,}",
            f"{linear}/{len(group)} ({ops:,} ops)",
        ])  # fmt: skip
    if lost_all:
        kinds = {"leader_kill": "leader kill", "switchover": "switchover", "scale_in": "scale-in"}
        r.check("acknowledged writes lost: " + " / ".join(kinds.get(n, n) for n, *_ in lost_all),
                "—", " / ".join(f"{lost} of {acked:,}" for _, lost, acked, _ in lost_all), "0",
                all(lost == 0 and linear for _, lost, _, linear in lost_all))  # fmt: skip
    failover = "Failover under load"
    r.table(failover, ["fault", "runs", "write outage", "goal", "read outage (replicas)",
                       "write p99 during", "write p99 after", "read p99 during",
                       "acked writes lost", "linearizable"], rows, "lrrlrrrrrr",
            text="Per fault kind: write outage (longest time without a successful write from the "
            "injection on) median / worst; read outage (reads from replicas, "
            "`read_from=replica`) median / worst; p99 (from the intended send time, open loop) "
            "of the requests caught in the fault; acknowledged writes lost (read back on the new "
            "leader); compare-and-set histories linearizable under "
            "`engramdb.audit.linearizability`.")  # fmt: skip
    if kills := by.get("leader_kill", []):
        r.table(failover, ["#", "write outage", "read outage (replicas)", "key expired",
                           "new leader after", "standby", "first write", "healed after",
                           "restarts", "acked writes", "lost", "linearizable"],
                [[str(i + 1), _s(x["write_window_s"]), _s(x["read_window_s"]),
                  _s(x.get("timeline", {}).get("leader_key_expired")), _s(x["new_leader_s"]),
                  _s(x.get("timeline", {}).get("standby_streaming_sync")),
                  _s(x.get("timeline", {}).get("first_write_acked")), _s(x["healed_s"]),
                  str(x["details"].get("rejoin_restarts", 0)), f"{x['acknowledged_writes']:,}",
                  str(x["acknowledged_writes_lost"]), str(x["history"]["linearizable"])]
                 for i, x in enumerate(kills)], "rrrrrrrrrrrl",
                text="Each kill -9 of the leader node, seconds from the kill: key expired = the "
                "old leader's key left etcd (its ttl ran out); new leader = Patroni's REST API "
                "named a new leader taking writes; standby = a standby streamed to it as "
                "synchronous (a commit can be acknowledged from then on); first write = the "
                "first write sent after the kill was acknowledged; healed = the old node "
                "rejoined and streams again (restarts: times its Patroni had to be started "
                "again because it was not running). Each kill's Patroni and PostgreSQL logs and "
                "every change the watcher saw are kept in `bench/results/cluster-faults/`.",
                publish=False)  # fmt: skip
    if planned := [x for x in runs if x["fault"] != "leader_kill"]:
        r.table(failover, ["fault", "write outage", "healed after", "write p99 during",
                           "write p99 after", "lost", "linearizable"],
                [[FAULTS[x["fault"]].title, _s(x["write_window_s"]), _s(x["healed_s"]),
                  _ms(x["writes"]["during"]["p99_ms"]), _ms(x["writes"]["after"]["p99_ms"]),
                  str(x["acknowledged_writes_lost"]), str(x["history"]["linearizable"])]
                 for x in planned], "lrrrrrl",
                text="Each planned change: healed = the cluster was healthy again (a scale-in "
                "runs 5 s a replica short, then starts it again); the write p99 columns say "
                "whether an outage fell during the change or after it.",
                publish=False)  # fmt: skip
    r.note(failover, "\n\n".join(missed) or "Every goal met: 0 acknowledged writes lost, every "
           "history linearizable, write outage within 25 s for a node crash (the leader lease, "
           "ttl 20 s, is its floor) and within 5 s for a switchover or scale-in.")  # fmt: skip
    records: dict[str, dict[str, Stats]] = lat["records"]
    cluster = records["cluster"]
    lrows = []
    for op in ("get", "put", "session update"):
        c = cluster[op]
        row = [op, fmt_us(c.p50_us), fmt_us(c.p99_us)]
        for peer in ("lmdb", "redis"):
            if peer in records:
                p = records[peer][op]
                ratio = f"{fmt_ratio(c.p50_us / p.p50_us)} / {fmt_ratio(c.p99_us / p.p99_us)}"
                row += [fmt_us(p.p50_us), fmt_us(p.p99_us), ratio]
            else:
                row += ["—", "—", "—"]
        lrows.append(row)
    latency_title = "Latency: cluster engine vs LMDB engine vs Redis"
    r.table(latency_title, ["operation", "cluster p50", "cluster p99", "LMDB p50", "LMDB p99",
                            "cluster ÷ LMDB", "Redis p50", "Redis p99", "cluster ÷ Redis"],
            lrows, "lrrrrrrrr",
            text="µs per call, one client thread, closed loop (`_common.measure`). Durable writes "
            "on every side: cluster = acknowledged once the synchronous standby has the commit; "
            "LMDB = fsync; Redis = `appendfsync always`. Ratios are cluster ÷ peer (p50 / "
            "p99).")  # fmt: skip
    search = lat["search"]
    r.note(
        latency_title,
        f"Vector search, k=10 over {sizes.vectors:,} {sizes.dim}-d vectors (HNSW in-process "
        "on both; on the cluster each search first reads the latest change sequence from "
        f"PostgreSQL): cluster p50 {fmt_us(search['cluster'].p50_us)} µs, p99 "
        f"{fmt_us(search['cluster'].p99_us)} µs; embedded LMDB p50 "
        f"{fmt_us(search['lmdb'].p50_us)} µs, p99 {fmt_us(search['lmdb'].p99_us)} µs "
        f"(p99 ratio {fmt_ratio(search['cluster'].p99_us / search['lmdb'].p99_us)}).",
    )
    return r


def main() -> int:
    sizes, quick = parse()
    if why := missing_cluster():
        return skip(why)
    info = machine_info(["psycopg", "patroni", "redis"], data_dir="/tmp")
    started = time.time()

    def say(message: str) -> None:
        print(f"[{time.time() - started:6.0f} s] {message}", flush=True)

    with tempfile.TemporaryDirectory(prefix="engramdb-bench-") as root, local_cluster() as cluster:
        say(f"cluster up: {', '.join(f'{m.name} {m.role}' for m in cluster.members())}")
        lat = latency(cluster, sizes, root)
        runs = failover(cluster, sizes, say)
    report(sizes, quick, info, runs, lat).save()
    return 0


def missing_cluster() -> str | None:
    """Why a local cluster cannot start here (a program it needs is not installed), or None."""
    for program in ("etcd", "patroni", "pg_ctl"):
        if shutil.which(program) is None:
            return f"{program} is not installed (the cluster needs etcd, Patroni and PostgreSQL)"
    return missing("psycopg", hint="pip install -e '.[cluster]'")


if __name__ == "__main__":
    sys.exit(main())
