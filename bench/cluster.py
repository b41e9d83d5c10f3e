"""The replicated cluster engine: failover under load, and its latency against LMDB and Redis.

    python bench/cluster.py [--quick]   # ~20 minutes; --quick: one fault of each kind (~5)

A local 3-node cluster (``engramdb cluster up``'s code: etcd, Patroni, PostgreSQL + pgvector,
synchronous replication) in a temporary directory. Failover: each fault (kill -9 of the leader
node, which then rejoins; a switchover; a replica removed and added back) is injected by
``engramdb.audit.faults.run_fault`` (``engramdb audit --allow-faults``) under open-loop writes
(50/s) and replica reads (100/s), writers of unique keys (every acknowledged one is read back:
lost must be 0) and compare-and-set clients whose histories go through the linearizability
checker. Latency: one client thread, closed loop, the same ``_common.measure`` loop on every
side: records get / put and a session update (read, apply, compare-and-set) with durable writes
on the cluster (the synchronous standby has it), LMDB (fsync) and Redis (``appendfsync
always``); then k=10 HNSW search on the cluster (which first asks PostgreSQL for the latest
change sequence: read-your-writes across fronts) against embedded LMDB.
"""

from __future__ import annotations

import argparse
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

import _common as c
import engramdb
from _common import RESULTS_DIR, Stats, fmt_ratio, fmt_us
from engramdb.audit import linearizability
from engramdb.audit.faults import FAULTS, run_fault
from engramdb.cluster import Cluster
from engramdb.cluster.patroni import DCS
from engramdb.sessions import cas_update

GOALS = {"leader_kill": 25.0, "switchover": 5.0, "scale_in": 5.0}  # write outage, seconds
KINDS = {"leader_kill": "leader kill", "switchover": "switchover", "scale_in": "scale-in"}
OPS = ("get", "put", "session update")


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


@contextmanager
def local_cluster() -> Iterator[Cluster]:
    # Under root the cluster runs as another user: a directory it can reach.
    base = Path(tempfile.mkdtemp(prefix="engramdb-bench-cluster-", dir="/tmp"))
    base.chmod(0o755)
    cluster = Cluster(base / "cluster", nodes=3)
    try:
        cluster.up()
        yield cluster
    except BaseException:  # keep a failed run's logs: the directory is wiped below
        kept = RESULTS_DIR / "cluster-logs"
        shutil.rmtree(kept, ignore_errors=True)
        for log in (base / "cluster").glob("*/*.log"):
            (kept / log.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(log, kept / log.parent.name / log.name)
        raise
    finally:
        cluster.down(wipe=True)
        shutil.rmtree(base, ignore_errors=True)


def record_bins(i: int) -> dict[str, Any]:
    return {"name": f"user-{i}", "n": i, "score": i / 7, "tags": ["a", "b", str(i % 10)]}


def bumped(state: dict[str, Any], i: int) -> dict[str, Any]:
    """A session step: counter + 1 and one more event, the last 20 kept."""
    event = {"seq": i, "kind": "tool_call", "tokens": 128}
    return {"n": state["n"] + 1, "events": [*state["events"][-19:], event]}


def engram_ops(db: engramdb.Database, sizes: Sizes) -> tuple[Callable[..., Any], ...]:
    """Load the records; get, put and session update on ``db``."""
    for start in range(0, sizes.records, 500):
        with db.transaction() as txn:
            for i in range(start, min(sizes.records, start + 500)):
                txn.records("bench").put(f"k{i}", record_bins(i))
    records, sessions = db.records("bench"), db.sessions
    sessions.create("s1", {"n": 0, "events": []})
    return (records.get, lambda i: records.put(f"p{i}", record_bins(i)),
            lambda i: sessions.update("s1", lambda s: bumped(s, i)))  # fmt: skip


def redis_ops(r: Any, sizes: Sizes) -> tuple[Callable[..., Any], ...]:
    """The same on Redis: msgpack values, the session through WATCH / MULTI / EXEC."""
    from redis.exceptions import WatchError

    encode, decode, pipe = msgspec.msgpack.encode, msgspec.msgpack.decode, r.pipeline()
    for i in range(sizes.records):
        r.set(f"k{i}", encode(record_bins(i)))
    r.set("s1", encode({"n": 0, "events": []}))

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

    def session(i: int) -> Any:
        try:
            return cas_update(read, write, lambda s: bumped(s, i), max_retries=100)
        finally:
            pipe.reset()

    return (lambda key: None if (raw := r.get(key)) is None else decode(raw),
            lambda i: r.set(f"p{i}", encode(record_bins(i))), session)  # fmt: skip


def timed(side: str, ops: tuple[Callable[..., Any], ...], sizes: Sizes, meter: c.Meter) -> dict:
    rng = random.Random(1)
    keys = [f"k{rng.randrange(sizes.records)}" for _ in range(sizes.calls)]
    loops = [(keys, keys[:50]), (range(sizes.writes), range(-50, 0)),
             (range(sizes.writes), range(50))]  # fmt: skip
    return {op: c.measure(fn, args, warmup=warm, meter=meter, description=f"{side}: {op}")
            for op, fn, (args, warm) in zip(OPS, ops, loops)}  # fmt: skip


def search(db: engramdb.Database, sizes: Sizes, meter: c.Meter, side: str) -> Stats:
    rng = np.random.default_rng(3)
    data = rng.standard_normal((sizes.vectors, sizes.dim)).astype(np.float32)
    collection = db.vectors.create_collection("bench", sizes.dim, "cosine", text=False)
    for start in range(0, sizes.vectors, 1000):
        ids = list(range(start, min(sizes.vectors, start + 1000)))
        collection.upsert(ids, data[start : start + len(ids)])
    queries = list(rng.standard_normal((sizes.queries, sizes.dim)).astype(np.float32))
    return c.measure(lambda q: collection.search(q, 10), queries, warmup=queries[:20],
                     meter=meter, description=f"{side}: search k=10")  # fmt: skip


def latency(cluster: Cluster, sizes: Sizes, root: str) -> tuple[dict, dict[str, Stats]]:
    records: dict[str, dict[str, Stats]] = {}
    with c.new_progress() as progress:
        meter, durable, schema = c.Meter(progress), {"durability": "sync"}, cluster.url + "&schema="
        with engramdb.open(schema + "bench_latency", sweep_interval=None, **durable) as db:
            records["cluster"] = timed("cluster", engram_ops(db, sizes), sizes, meter)
        with engramdb.open(f"{root}/lmdb", sweep_interval=None, **durable) as db:
            records["lmdb"] = timed("lmdb", engram_ops(db, sizes), sizes, meter)
        if (exe := c.find_redis_server()) is not None:
            import redis

            fsync = ("--appendonly", "yes", "--appendfsync", "always")
            with (c.RedisServer(exe, extra_args=fsync, parent=root) as server,
                  redis.Redis.from_url(server.url) as r):  # fmt: skip
                records["redis"] = timed("redis", redis_ops(r, sizes), sizes, meter)
        with engramdb.open(schema + "bench_search", **durable) as db:
            found = {"cluster": search(db, sizes, meter, "cluster")}
        with engramdb.open(f"{root}/lmdb-search", **durable) as db:
            found["lmdb"] = search(db, sizes, meter, "lmdb")
    return records, found


def failover(cluster: Cluster, sizes: Sizes, say: Callable[[str], None]) -> list[dict[str, Any]]:
    if wrong := linearizability.self_test():
        raise RuntimeError(f"the linearizability checker misjudged {wrong}; refusing to run")
    plan = [*["leader_kill"] * sizes.kills, *["switchover"] * sizes.switchovers,
            *["scale_in"] * sizes.scale_ins]  # fmt: skip
    shutil.rmtree(RESULTS_DIR / "cluster-faults", ignore_errors=True)  # this run's only
    runs, url = [], cluster.url
    for i, name in enumerate(plan):
        say(f"fault {i + 1}/{len(plan)}: {FAULTS[name].title}")
        started = time.time()
        row = run_fault(
            cluster, url, FAULTS[name], options={"namespace": "bench_failover"},
            prefix=f"b{int(started)}f{i}", read_url=url + "&read_from=replica",
            progress=say, keep_logs=RESULTS_DIR / "cluster-faults" / f"{i + 1:02d}-{name}",
        )  # fmt: skip
        row["run_s"] = time.time() - started
        say(f"  writes back after {row['write_window_s']:.2f} s, reads {row['read_window_s']:.2f}"
            f" s, lost {row['acknowledged_writes_lost']}/{row['acknowledged_writes']}, "
            f"linearizable {row['history']['linearizable']}")  # fmt: skip
        runs.append(row)
    return runs


def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f} s"


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f} ms" if x >= 10 else f"{x:.1f} ms"


def spread(xs: list[float]) -> str:
    return f"{_s(statistics.median(xs))} / {_s(max(xs))}"


def p99(runs: list[dict[str, Any]], load: str, when: str) -> str:
    return _ms(statistics.median(x[load][when]["p99_ms"] or 0 for x in runs))


def report(sizes: Sizes, quick: bool, info: dict[str, str], runs: list[dict[str, Any]],
           records: dict[str, dict[str, Stats]], found: dict[str, Stats]) -> c.Report:  # fmt: skip
    r = c.Report(
        "cluster", "cluster",
        "Replicated cluster (postgres engine on Patroni): failover and latency",
        "A local 3-node cluster (etcd, Patroni, PostgreSQL 18 + pgvector, quorum synchronous "
        "replication): failover under load, and latency against the LMDB engine and Redis.",
        quick, info,
        about="a local 3-node cluster (`engramdb cluster up`'s code: etcd, Patroni, PostgreSQL "
        "18 + pgvector, strict synchronous replication (synchronous_mode "
        f"{DCS['synchronous_mode']}: a commit waits for any {DCS['synchronous_node_count']} "
        f"standby), Patroni ttl {DCS['ttl']} s, loop_wait {DCS['loop_wait']} s) on the machine "
        "below; every figure in this section comes from one run.",
        raw={"sizes": asdict(sizes), "failover": runs,
             "latency": {side: {op: s.to_json() for op, s in ops.items()}
                         for side, ops in records.items()},
             "search": {side: s.to_json() for side, s in found.items()}},
    )  # fmt: skip
    by: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by.setdefault(run["fault"], []).append(run)
    rows, missed, totals = [], [], {}
    for name, g in by.items():
        goal, title, windows = GOALS[name], FAULTS[name].title, [x["write_window_s"] for x in g]
        lost = sum(x["acknowledged_writes_lost"] for x in g)
        acked = sum(x["acknowledged_writes"] for x in g)
        linear, met = sum(x["history"]["linearizable"] is True for x in g), max(windows) <= goal
        totals[KINDS[name]] = (lost, acked, linear == len(g))
        short = title.split(" (")[0].replace(" node", "")
        r.check(f"{short}: write outage median / worst", "—", spread(windows), f"≤ {goal:g} s", met)
        problems = [text for bad, text in [
            (not met, f"write outage over the {goal:g} s goal in {sum(w > goal for w in windows)} "
                      f"of {len(g)} runs (worst {max(windows):.2f} s)"),
            (lost, f"{lost} acknowledged writes lost"),
            (linear < len(g), f"{len(g) - linear} histories not linearizable")] if bad]  # fmt: skip
        if problems:
            missed.append(f"**Goal missed — {title}:** " + "; ".join(problems) + ".")
        ops = sum(x["history"]["operations"] for x in g)
        rows.append([title, str(len(g)), spread(windows),
                     f"≤ {goal:g} s: {'met' if met else '**missed**'}",
                     spread([x["read_window_s"] for x in g]), p99(g, "writes", "during"),
                     p99(g, "writes", "after"), p99(g, "reads", "during"),
                     f"**{lost}** of {acked:,}", f"{linear}/{len(g)} ({ops:,} ops)"])  # fmt: skip
    if totals:
        r.check("acknowledged writes lost: " + " / ".join(totals), "—",
                " / ".join(f"{lost} of {acked:,}" for lost, acked, _ in totals.values()), "0",
                all(lost == 0 and linear for lost, _, linear in totals.values()))  # fmt: skip
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
        t = [x.get("timeline", {}) for x in kills]
        r.table(failover, ["#", "write outage", "read outage (replicas)", "key expired",
                           "new leader after", "standby", "first write", "healed after",
                           "restarts", "acked writes", "lost", "linearizable"],
                [[str(i + 1), _s(x["write_window_s"]), _s(x["read_window_s"]),
                  _s(t[i].get("leader_key_expired")), _s(x["new_leader_s"]),
                  _s(t[i].get("standby_streaming_sync")), _s(t[i].get("first_write_acked")),
                  _s(x["healed_s"]), str(x["details"].get("rejoin_restarts", 0)),
                  f"{x['acknowledged_writes']:,}", str(x["acknowledged_writes_lost"]),
                  str(x["history"]["linearizable"])] for i, x in enumerate(kills)], "rrrrrrrrrrrl",
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
    lrows = []
    for op in OPS:
        ours = records["cluster"][op]
        lrows.append([op, fmt_us(ours.p50_us), fmt_us(ours.p99_us)])
        for p in (records.get(peer, {}).get(op) for peer in ("lmdb", "redis")):
            if p is None:
                lrows[-1] += ["—"] * 3
                continue
            ratio = f"{fmt_ratio(ours.p50_us / p.p50_us)} / {fmt_ratio(ours.p99_us / p.p99_us)}"
            lrows[-1] += [fmt_us(p.p50_us), fmt_us(p.p99_us), ratio]
    title = "Latency: cluster engine vs LMDB engine vs Redis"
    r.table(title, ["operation", "cluster p50", "cluster p99", "LMDB p50", "LMDB p99",
                    "cluster ÷ LMDB", "Redis p50", "Redis p99", "cluster ÷ Redis"],
            lrows, "lrrrrrrrr",
            text="µs per call, one client thread, closed loop (`_common.measure`). Durable writes "
            "on every side: cluster = acknowledged once the synchronous standby has the commit; "
            "LMDB = fsync; Redis = `appendfsync always`. Ratios are cluster ÷ peer (p50 / "
            "p99).")  # fmt: skip
    cl, lm = found["cluster"], found["lmdb"]
    r.note(title, f"Vector search, k=10 over {sizes.vectors:,} {sizes.dim}-d vectors (HNSW "
           "in-process on both; on the cluster each search first reads the latest change "
           f"sequence from PostgreSQL): cluster p50 {fmt_us(cl.p50_us)} µs, p99 "
           f"{fmt_us(cl.p99_us)} µs; embedded LMDB p50 {fmt_us(lm.p50_us)} µs, p99 "
           f"{fmt_us(lm.p99_us)} µs (p99 ratio {fmt_ratio(cl.p99_us / lm.p99_us)}).")  # fmt: skip
    return r


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one fault each, short loops")
    c.add_sizes(parser, Sizes(), QUICK)
    args = parser.parse_args()
    sizes = c.sizes_from(args, Sizes(), QUICK)
    for program in ("etcd", "patroni", "pg_ctl"):
        if shutil.which(program) is None:
            return c.skip(f"{program} is not installed (the cluster needs etcd, Patroni and "
                          "PostgreSQL)")  # fmt: skip
    if why := c.missing("psycopg", hint="pip install -e '.[cluster]'"):
        return c.skip(why)
    info = c.machine_info(["psycopg", "patroni", "redis"], data_dir="/tmp")
    started = time.time()

    def say(message: str) -> None:
        print(f"[{time.time() - started:6.0f} s] {message}", flush=True)

    with tempfile.TemporaryDirectory(prefix="engramdb-bench-") as root, local_cluster() as cluster:
        say(f"cluster up: {', '.join(f'{m.name} {m.role}' for m in cluster.members())}")
        records, found = latency(cluster, sizes, root)
        runs = failover(cluster, sizes, say)
    report(sizes, args.quick, info, runs, records, found).save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
