"""``engramdb audit`` on engramdb (embedded and server) and on Redis, side by side.

    python bench/audit_compare.py [--quick] [--wait-quiet SECONDS]

Each figure is one ``run_audit`` call (the code behind ``engramdb audit``) with the same YCSB A
workload, ``--workers`` load processes and rates on each side: embedded (async), ``engramdb
serve --durability async``, ``redis-server --appendfsync everysec``, servers fresh per call.
Max rate with p99 (from intended send times) ≤ 1 ms (5 s probes doubling from
``--start-rate``, then bisection); p999 at 70% of it; burst recovery at ``--rate``;
linearizability and lost increments; acknowledged writes lost after kill -9 (servers, sync vs
everysec); the load generator's lateness (when large, the figures are the machine's).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console

import _common as c
from engramdb.audit.load import WORKLOADS
from engramdb.audit.runner import AuditConfig, Thresholds, run_audit

QUIET_LOAD, SLO_MS, HEADROOM, WORKLOAD = 1.0, 1.0, 0.7, "A"


@dataclass(frozen=True)
class Sizes:
    duration: float = 10.0  # seconds of each latency run; burst phases max(2, duration / 2)
    start_rate: float = 100.0  # req/s where the max-rate search starts doubling
    rate: float = 300.0  # req/s of the burst run, the same on every side
    workers: int = 2  # load-generating processes


QUICK = Sizes(duration=3.0, rate=150.0)
# key, label, audit target ("": a fresh embedded directory per run), managed by the audit.
# Latency, burst and consistency fsync once a second on every side (engramdb async, Redis
# everysec): a 1 ms SLO cannot hold with an fsync per write on this disk, for either system.
SIDES = [("embedded", "engramdb embedded", "", False),
         ("server", "engramdb server", "engramdb://audit", True),
         ("redis", "Redis", "redis://audit", True)]  # fmt: skip


def run_side(side: tuple[str, str, str, bool], sizes: Sizes, root: str, say: Any) -> dict:
    """The five measurements of one side, each a ``run_audit`` call of its own."""
    key, label, target, managed = side
    out: dict[str, Any] = {"side": {"key": key, "label": label, "managed": managed},
                           "runs": {}, "errors": {}}  # fmt: skip

    def audit(step: str, rate: float, sections: tuple[str, ...], **extra: Any) -> dict | None:
        config = AuditConfig(
            target=target or os.path.join(root, f"{key}-{len(out['runs']) + len(out['errors'])}"),
            rate=rate, duration=sizes.duration, workload=WORKLOAD, workers=sizes.workers,
            managed=managed, sections=sections, thresholds=Thresholds(p99_ms=SLO_MS),
            redis_appendfsync="everysec", **{"durability": "async", **extra},
        )  # fmt: skip
        began = time.monotonic()
        try:
            report = run_audit(config, progress=lambda m: say(f"{label}: {m}"))
        except Exception as e:  # recorded; the other steps still run
            out["errors"][step] = f"{type(e).__name__}: {e}"
            say(f"[red]{label}: {step} did not complete: {out['errors'][step]}[/red]")
            traceback.print_exc(limit=3)
            return None
        # The per-second timelines stay out of the JSON (size).
        sections_kept = {n: {k: v for k, v in s.items() if k != "timeline"}
                         for n, s in report.get("sections", {}).items()}  # fmt: skip
        out["runs"][step] = {**report, "sections": sections_kept,
                             "wall_seconds": time.monotonic() - began}  # fmt: skip
        return report

    search = audit("search", sizes.start_rate, ("latency",), search=True)
    max_rate = search and float(search["sections"]["latency"]["max_rate_under_slo"]["rate"])
    out["max_rate_under_slo"] = max_rate
    if max_rate:
        audit("headroom", HEADROOM * max_rate, ("latency", "observability"))
    audit("burst", sizes.rate, ("burst",))
    audit("consistency", sizes.rate, ("consistency",))
    if managed:
        audit("availability", sizes.rate, ("availability",), durability="sync")
    return out


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 100 else f"{value:,.0f} ms"


def max_rate(s: dict[str, Any]) -> str:
    if (found := s["max_rate_under_slo"])["rate"] > 0:
        return f"{_rate(found['rate'])} req/s"
    best = min(found["probes"], key=lambda p: p["p99_ms"])
    return (f"none down to {_rate(min(p['rate'] for p in found['probes']))} req/s (best p99 "
            f"{_ms(best['p99_ms'])} at {_rate(best['rate'])} req/s)")  # fmt: skip


def burst(s: dict[str, Any]) -> str:
    parts = ["never" if r["seconds"] is None else f"{r['seconds']:.0f} s" for r in s["recovery"]]
    peak, errors = max(s["phases"], key=lambda p: p["rate"]), sum(s["errors"].values())
    return (f"{' / '.join(parts)} (p99 at 5x {_ms(peak['p99'])}"
            + (f"; {errors:,} errors)" if errors else ")"))  # fmt: skip


def consistency(s: dict[str, Any]) -> str:
    verdict = {True: "linearizable", False: "NOT linearizable", None: "undecided"}
    lost = len(s["counters"]["lost_updates"])
    return (f"{verdict[s['linearizable']]} ({s['operations']:,} ops, "
            f"{'with CAS' if s['compare_and_set'] else 'no CAS'}); "
            + (f"{lost} counters lost increments" if lost else "no lost increments"))  # fmt: skip


def latency(s: dict[str, Any], at: str = "overall", keys: str = "p50 p99 p999") -> str:
    return ", ".join(f"{k} {_ms(s[at][k])}" for k in keys.split())


# title -> (audit run, its section, the cell's text from that section)
COLUMNS = {
    f"max rate, p99 ≤ {SLO_MS:g} ms": ("search", "latency", max_rate),
    f"p999 at {HEADROOM:.0%} of it": ("headroom", "latency", lambda s: _ms(s["overall"]["p999"])
        + f" (p99 {_ms(s['overall']['p99'])}) at {_rate(s['rate'])} req/s"),
    "burst recovery after 3x / 5x": ("burst", "burst", burst),
    "consistency": ("consistency", "consistency", consistency),
    "acknowledged writes lost after kill -9": ("availability", "availability", lambda a: (
        f"{a['acknowledged_writes_lost']:,} of {a['acknowledged_writes']:,} "
        f"(outage {a['unavailable_window_s']:.1f} s)")),
}  # fmt: skip
NOTES = {  # per side
    "max rate probes (rate → p99 ms)": ("search", "latency", lambda s: ", ".join(
        f"{_rate(p['rate'])}→{p['p99_ms']:.2f}" for p in s["max_rate_under_slo"]["probes"])),
    "at {:g} req/s": ("search", "latency", latency),
    "load generator lateness": ("headroom", "latency", lambda s: latency(
        s, "generator_lateness_ms", "p50 p99 max") + f" at {_rate(s['rate'])} req/s"),
}  # fmt: skip


def section(x: dict[str, Any], step: str, name: str) -> dict[str, Any] | None:
    return (x["runs"].get(step) or {}).get("sections", {}).get(name)


def cell(x: dict[str, Any], step: str, name: str, text: Callable[[dict[str, Any]], str]) -> str:
    """One side's figure from its ``step`` run, or why there is none."""
    if s := section(x, step, name):
        return text(s)
    if step == "availability" and not x["side"]["managed"]:
        return "n/a (no server to kill)"
    if step == "headroom" and name == "latency" and x["max_rate_under_slo"] == 0:
        return "n/a: no rate met the SLO"
    return "did not complete" if step in x["errors"] else "—"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (~5 minutes)")
    c.add_sizes(parser, Sizes(), QUICK)
    parser.add_argument("--data-dir", help="parent of the embedded databases' directories")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help=f"first wait at most this long for a load < {QUIET_LOAD}")  # fmt: skip
    args = parser.parse_args()
    sizes = c.sizes_from(args, Sizes(), QUICK)
    c.exit_on_sigterm()
    console = Console(width=None if sys.stdout.isatty() else 200)
    quiet = args.wait_quiet <= 0 or c.wait_for_quiet(QUIET_LOAD, args.wait_quiet, poll_s=30,
                                                     report=console.print)[0]  # fmt: skip
    load = os.getloadavg()[0]
    note = (f"1-minute load average {load:.2f} when the run started, on a machine whose cores "
            "the load generator shares with the server." if quiet else
            f"**The machine never got quiet (load below {QUIET_LOAD} within {args.wait_quiet:g} "
            f"s): 1-minute load average {load:.2f} when the run started; other processes shared "
            "the cores with the server and the load generator.**")  # fmt: skip
    extra = {"load generator": f"{sizes.workers} processes (spawned), on the same machine"}
    redis = c.find_redis_server()
    sides = [s for s in SIDES if redis or s[0] != "redis"]
    extra["redis-server"] = c.redis_server_version(redis) if redis else (
        "not installed: the Redis side was skipped")  # fmt: skip
    started = time.monotonic()
    with c.temp_dir("engramdb-bench-audit-", args.data_dir) as root:
        machine = c.machine_info(("engramdb", "lmdb", "redis", "hiredis", "hdrhistogram"),
                                 data_dir=root, extra=extra)  # fmt: skip
        results = []
        for side in sides:
            console.print(f"[bold]{side[1]}[/bold]")
            results.append(run_side(side, sizes, root, console.print))
    raw = {"sizes": asdict(sizes), "slo_p99_ms": SLO_MS, "headroom": HEADROOM,
           "workload": WORKLOAD, "quiet": quiet, "load_average_at_start": load,
           "wall_seconds": time.monotonic() - started, "sides": results}  # fmt: skip
    report(raw, args.quick, machine, note).save()
    return 0


def report(raw: dict[str, Any], quick: bool, machine: dict[str, str], note: str) -> c.Report:
    sizes, results, w = Sizes(**raw["sizes"]), raw["sides"], WORKLOADS[WORKLOAD]
    r = c.Report(
        "audit", "audit_compare",
        "The audit, side by side: engramdb embedded, engramdb server, Redis",
        f"The figures of `engramdb audit` on each side with the same workload ({w.name}, "
        f"zipfian keys, {w.value_bytes} B values) and the same {sizes.workers} open-loop load "
        "processes; latency from each request's intended send time.",
        quick, machine, about=note, raw=raw,
    )  # fmt: skip
    by = {x["side"]["key"]: x for x in results}
    checks = {"acknowledged writes lost after kill -9 (server)": "availability",
              f"max rate with p99 ≤ {SLO_MS:g} ms": "search"}  # fmt: skip
    for comparison, step in checks.items() if "server" in by and "redis" in by else ():
        column = next(col for col in COLUMNS.values() if col[0] == step)
        r.check(comparison, "Redis", " vs ".join(cell(by[k], *column) for k in ("server", "redis")))
    r.table("", ["side", *COLUMNS], [[x["side"]["label"], *(cell(x, *f) for f in COLUMNS.values())]
                                     for x in results])  # fmt: skip
    for x in results:
        for title, (step, name, text) in NOTES.items():
            # the generator's lateness: at the headroom run's rate, else the search's
            s = section(x, step, name) or section(x, "search", name)
            r.note(f"{title.format(sizes.start_rate)}, {x['side']['label']}", text(s) if s else "—")
        for step, error in x["errors"].items():
            r.note(f"did not complete, {x['side']['label']}", f"{step}: {error}")
    return r


if __name__ == "__main__":
    sys.exit(main())
