"""``engramdb audit`` on engramdb (embedded and server) and on Redis, side by side.

    python bench/audit_compare.py                    # full run (~8 minutes on 2 cores)
    python bench/audit_compare.py --quick            # shorter runs (~5 minutes: the rate
                                                     # search's 5 s probes are fixed)
    python bench/audit_compare.py --wait-quiet 1800  # first wait (bounded) for a quiet machine
    python bench/audit_compare.py --help

Every figure comes from ``engramdb.audit.runner.run_audit`` — the code behind ``engramdb
audit`` — called with the same workload (YCSB A: 50/50 read/update, zipfian keys, 1 kB
values), the same load-generator processes and the same rates on three sides:

- **engramdb embedded**: a database directory, durability ``async``; each load process opens it;
- **engramdb server**: ``engramdb serve --durability async`` started by the audit (managed),
  and ``--durability sync`` for the kill -9 run;
- **Redis**: ``redis-server --appendonly yes --appendfsync everysec`` started by the audit.

Per side, each guarantee in its own ``run_audit`` call (so one that fails to complete costs
only its own column), managed servers started afresh for each:

1. **Max rate under the SLO**: the audit's search (open-loop 5 s probes, doubling from
   ``--start-rate`` until p99 > ``--slo-ms`` or an error, then four bisections) for the
   highest rate whose p99, measured from each request's intended send time, stays within 1 ms.
2. **p999 at 70% of it**: a latency run at 70% of the rate found (the headroom a capacity
   plan would leave), with the server's own request counts checked (observability).
3. **Burst recovery** at the common ``--rate``: steady, 3x, steady, 5x, steady; seconds after
   each burst until a second's p99 is back under 1.5x the baseline.
4. **Consistency**: concurrent reads, writes and compare-and-sets on a few hot keys judged by
   the linearizability checker, and counters checked for lost increments.
5. **Acknowledged writes lost after kill -9** (servers only): writers as fast as the server
   answers, the server kill -9'd and restarted mid-run, every acknowledged key read back.

The load generator runs in ``--workers`` processes on the same machine as the server (and,
embedded, *is* the database). Its lateness — how far behind its Poisson schedule it started
requests — is reported with every latency figure: large lateness means the figures are the
machine's, not only the server's.

Writes bench/results/audit_compare.json (``_common.Report``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from rich.console import Console

from _common import (
    RedisUnavailable,
    Report,
    exit_on_sigterm,
    find_redis_server,
    machine_info,
    redis_server_version,
    temp_dir,
    wait_for_quiet,
)
from engramdb.audit.load import WORKLOADS
from engramdb.audit.runner import AuditConfig, Thresholds, run_audit

SECTION = "audit"
QUIET_LOAD = 1.0  # --wait-quiet waits for the 1-minute load average to drop below this
SLO_MS = 1.0
HEADROOM = 0.7  # the p999 column is measured at this share of the max rate under the SLO
WORKLOAD = "A"


@dataclass(frozen=True)
class Sizes:
    duration: float  # seconds of each latency run; the burst phases last max(2, duration / 2)
    start_rate: float  # req/s where the max-rate search starts doubling
    rate: float  # req/s of the burst run, the same on every side
    workers: int  # load-generating processes


FULL = Sizes(duration=10.0, start_rate=100.0, rate=300.0, workers=2)
QUICK = Sizes(duration=3.0, start_rate=100.0, rate=150.0, workers=2)
SIZE_HELP = {
    "duration": "seconds of each latency run (burst phases: half of it, at least 2 s)",
    "start_rate": "req/s where the search for the max rate under the SLO starts",
    "rate": "req/s of the burst run (3x and 5x of it in the bursts), the same on every side",
    "workers": "load-generating processes (they share the cores with the server)",
}


@dataclass(frozen=True)
class Side:
    key: str
    label: str
    target: str  # empty: a fresh embedded database directory per run
    managed: bool
    durability: str  # how it is described in the table


# Latency, burst and consistency run every side with an fsync once a second (engramdb
# `async`, Redis `appendfsync everysec`): a 1 ms SLO cannot hold with an fsync per write on
# this disk (several ms each), for either system. The kill -9 run then compares what each
# side's durable setting loses: engramdb `sync` against Redis `everysec`, as asked.
SIDES = (
    Side("embedded", "engramdb embedded", "", False, "async (fsync each second); sync for kill -9"),
    Side(
        "server",
        "engramdb server",
        "engramdb://audit",
        True,
        "async (fsync each second); sync for kill -9",
    ),
    Side("redis", "Redis", "redis://audit", True, "AOF, appendfsync everysec"),
)


# one side ----------------------------------------------------------------------------------


def _strip(report: dict[str, Any]) -> dict[str, Any]:
    """A report without its per-second timelines (kept out of the JSON for size)."""
    sections = {
        name: {k: v for k, v in section.items() if k != "timeline"}
        for name, section in report.get("sections", {}).items()
    }
    return {**report, "sections": sections}


class SideRun:
    """Runs the five measurements of one side, each a ``run_audit`` call of its own."""

    def __init__(self, side: Side, sizes: Sizes, root: str, say: Callable[[str], None]) -> None:
        self.side = side
        self.sizes = sizes
        self.root = root
        self.say = say
        self.runs = 0
        self.results: dict[str, Any] = {}
        self.errors: dict[str, str] = {}

    def _audit(
        self,
        step: str,
        *,
        rate: float,
        sections: tuple[str, ...],
        search: bool = False,
        durability: str = "async",
    ) -> dict[str, Any] | None:
        self.runs += 1
        target = self.side.target or os.path.join(self.root, f"{self.side.key}-{self.runs}")
        config = AuditConfig(
            target=target,
            rate=rate,
            duration=self.sizes.duration,
            workload=WORKLOAD,
            workers=self.sizes.workers,
            managed=self.side.managed,
            durability=durability,
            search=search,
            sections=sections,
            thresholds=Thresholds(p99_ms=SLO_MS),
            redis_appendfsync="everysec",
        )
        began = time.monotonic()
        try:
            report = run_audit(config, progress=lambda m: self.say(f"{self.side.label}: {m}"))
        except Exception as e:  # recorded, and the other steps still run
            self.errors[step] = f"{type(e).__name__}: {e}"
            self.say(f"[red]{self.side.label}: {step} did not complete: {self.errors[step]}[/red]")
            traceback.print_exc(limit=3)
            return None
        report["wall_seconds"] = time.monotonic() - began
        self.results[step] = _strip(report)
        return report

    def run(self) -> dict[str, Any]:
        s = self.sizes
        search = self._audit("search", rate=s.start_rate, sections=("latency",), search=True)
        max_rate = 0.0
        if search is not None:
            max_rate = float(search["sections"]["latency"]["max_rate_under_slo"]["rate"])
        if max_rate > 0:
            self._audit("headroom", rate=HEADROOM * max_rate, sections=("latency", "observability"))
        self._audit("burst", rate=s.rate, sections=("burst",))
        self._audit("consistency", rate=s.rate, sections=("consistency",))
        if self.side.managed:
            self._audit("availability", rate=s.rate, sections=("availability",), durability="sync")
        return {
            "side": asdict(self.side),
            "max_rate_under_slo": max_rate if search is not None else None,
            "runs": self.results,
            "errors": self.errors,
        }


# the tables --------------------------------------------------------------------------------


def _section(result: dict[str, Any], step: str, name: str) -> dict[str, Any] | None:
    run = result["runs"].get(step)
    return None if run is None else run["sections"].get(name)


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 100 else f"{value:,.0f} ms"


def _not_run(result: dict[str, Any], step: str) -> str:
    return "did not complete" if step in result["errors"] else "—"


def max_rate_cell(result: dict[str, Any]) -> str:
    latency = _section(result, "search", "latency")
    if latency is None:
        return _not_run(result, "search")
    found = latency["max_rate_under_slo"]
    if found["rate"] <= 0:
        lowest = min(p["rate"] for p in found["probes"])
        best = min(found["probes"], key=lambda p: p["p99_ms"])
        return (
            f"none down to {_rate(lowest)} req/s (best p99 {_ms(best['p99_ms'])} "
            f"at {_rate(best['rate'])} req/s)"
        )
    return f"{_rate(found['rate'])} req/s"


def p999_cell(result: dict[str, Any]) -> str:
    latency = _section(result, "headroom", "latency")
    if latency is None:
        if result["max_rate_under_slo"] == 0:
            return "n/a: no rate met the SLO"
        return _not_run(result, "headroom")
    o = latency["overall"]
    return f"{_ms(o['p999'])} (p99 {_ms(o['p99'])}) at {_rate(latency['rate'])} req/s"


def burst_cell(result: dict[str, Any]) -> str:
    burst = _section(result, "burst", "burst")
    if burst is None:
        return _not_run(result, "burst")
    parts = []
    for r in burst["recovery"]:
        parts.append("never" if r["seconds"] is None else f"{r['seconds']:.0f} s")
    peak = max(burst["phases"], key=lambda p: p["rate"])
    errors = sum(burst["errors"].values())
    text = f"{' / '.join(parts)} (p99 at 5x {_ms(peak['p99'])}"
    text += f"; {errors:,} errors)" if errors else ")"
    return text


def consistency_cell(result: dict[str, Any]) -> str:
    c = _section(result, "consistency", "consistency")
    if c is None:
        return _not_run(result, "consistency")
    verdict = {True: "linearizable", False: "NOT linearizable", None: "undecided"}[
        c["linearizable"]
    ]
    lost = len(c["counters"]["lost_updates"])
    cas = "with CAS" if c["compare_and_set"] else "no CAS"
    counters = f"{lost} counters lost increments" if lost else "no lost increments"
    return f"{verdict} ({c['operations']:,} ops, {cas}); {counters}"


def lost_cell(result: dict[str, Any]) -> str:
    if not result["side"]["managed"]:
        return "n/a (no server to kill)"
    a = _section(result, "availability", "availability")
    if a is None:
        return _not_run(result, "availability")
    return (
        f"{a['acknowledged_writes_lost']:,} of {a['acknowledged_writes']:,} "
        f"(outage {a['unavailable_window_s']:.1f} s)"
    )


def lateness_cell(result: dict[str, Any]) -> str:
    for step in ("headroom", "search"):
        latency = _section(result, step, "latency")
        if latency is not None:
            late = latency["generator_lateness_ms"]
            return (
                f"p50 {_ms(late['p50'])}, p99 {_ms(late['p99'])}, max {_ms(late['max'])} "
                f"at {_rate(latency['rate'])} req/s"
            )
    return "—"


COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    (f"max rate, p99 ≤ {SLO_MS:g} ms", max_rate_cell),
    (f"p999 at {HEADROOM:.0%} of it", p999_cell),
    ("burst recovery after 3x / 5x", burst_cell),
    ("consistency", consistency_cell),
    ("acknowledged writes lost after kill -9", lost_cell),
)


def start_rate_text(result: dict[str, Any]) -> str:
    latency = _section(result, "search", "latency")
    if latency is None:
        return "—"
    o = latency["overall"]
    return f"p50 {_ms(o['p50'])}, p99 {_ms(o['p99'])}, p999 {_ms(o['p999'])}"


def probes_text(result: dict[str, Any]) -> str:
    latency = _section(result, "search", "latency")
    if latency is None:
        return "—"
    return ", ".join(
        f"{_rate(p['rate'])}→{p['p99_ms']:.2f}" for p in latency["max_rate_under_slo"]["probes"]
    )


def report(
    results: list[dict[str, Any]],
    sizes: Sizes,
    quick: bool,
    machine: dict[str, str],
    note: str,
    raw: dict[str, Any],
) -> Report:
    w = WORKLOADS[WORKLOAD]
    r = Report(
        SECTION,
        "audit_compare",
        "The audit, side by side: engramdb embedded, engramdb server, Redis",
        f"The figures of `engramdb audit` on each side with the same workload ({w.name}, "
        f"zipfian keys, {w.value_bytes} B values) and the same {sizes.workers} open-loop load "
        "processes; latency from each request's intended send time.",
        quick,
        machine,
        about=note,
        raw=raw,
    )
    cells = {x["side"]["key"]: x for x in results}
    if "server" in cells and "redis" in cells:
        r.check(
            "acknowledged writes lost after kill -9 (server)",
            "Redis",
            f"{lost_cell(cells['server'])} vs {lost_cell(cells['redis'])}",
        )
        r.check(
            f"max rate with p99 ≤ {SLO_MS:g} ms",
            "Redis",
            f"{max_rate_cell(cells['server'])} vs {max_rate_cell(cells['redis'])}",
        )
    rows = [[x["side"]["label"], *(cell(x) for _, cell in COLUMNS)] for x in results]
    r.table("", ["side", *(title for title, _ in COLUMNS)], rows)
    for x in results:
        label = x["side"]["label"]
        r.note(f"max rate probes (rate → p99 ms), {label}", probes_text(x))
        r.note(f"at {sizes.start_rate:g} req/s, {label}", start_rate_text(x))
        r.note(f"load generator lateness, {label}", lateness_cell(x))
        for step, text in x["errors"].items():
            r.note(f"did not complete, {label}", f"{step}: {text}")
    return r


# main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Sizes, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="engramdb audit on engramdb embedded, engramdb server and Redis."
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs (~5 minutes)")
    for f in fields(Sizes):
        full, quick = getattr(FULL, f.name), getattr(QUICK, f.name)
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(full),
            default=None,
            help=f"{SIZE_HELP[f.name]} (default {full:g}, --quick {quick:g})",
        )
    parser.add_argument(
        "--sides",
        default=",".join(s.key for s in SIDES),
        help="comma-separated sides to run (default: all of embedded,server,redis)",
    )
    parser.add_argument("--data-dir", help="parent of the embedded databases' directories")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help=f"first wait up to this long for the 1-minute load average to drop below {QUIET_LOAD}",
    )
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    chosen = {f.name: getattr(args, f.name) for f in fields(Sizes)}
    sizes = Sizes(**{k: (v if v is not None else getattr(base, k)) for k, v in chosen.items()})
    if sizes.duration <= 0 or sizes.start_rate <= 0 or sizes.rate <= 0 or sizes.workers < 1:
        parser.error("--duration, --start-rate, --rate and --workers must be positive")
    known = {s.key for s in SIDES}
    args.side_keys = [k.strip() for k in args.sides.split(",") if k.strip()]
    if not args.side_keys or set(args.side_keys) - known:
        parser.error(f"--sides takes a comma-separated subset of {sorted(known)}")
    return sizes, args


def main(argv: Sequence[str] | None = None) -> int:
    sizes, args = parse_args(argv)
    exit_on_sigterm()
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    quiet = True
    if args.wait_quiet > 0:
        quiet, _ = wait_for_quiet(
            QUIET_LOAD,
            args.wait_quiet,
            poll_s=30,
            report=lambda m: console.print(f"[dim]{m}[/dim]"),
        )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    note = (
        f"1-minute load average {load:.2f} when the run started, on a machine whose cores the "
        "load generator shares with the server."
    )
    if not quiet:
        note = (
            f"**The machine never got quiet (load below {QUIET_LOAD} within "
            f"{args.wait_quiet:g} s): 1-minute load average {load:.2f} when the run started; "
            "other processes shared the cores with the server and the load generator.**"
        )

    extra: dict[str, str] = {
        "load generator": f"{sizes.workers} processes (spawned), on the same machine",
    }
    sides = [s for s in SIDES if s.key in args.side_keys]
    redis_server = find_redis_server()
    if redis_server is None:
        sides = [s for s in sides if s.key != "redis"]
        extra["redis-server"] = "not installed: the Redis side was skipped"
    else:
        with contextlib.suppress(RedisUnavailable):
            extra["redis-server"] = redis_server_version(redis_server)

    started = time.monotonic()
    results: list[dict[str, Any]] = []
    with temp_dir("engramdb-bench-audit-", args.data_dir) as root:
        machine = machine_info(
            ("engramdb", "lmdb", "redis", "hiredis", "hdrhistogram"), data_dir=root
        )
        machine.update(extra)
        for side in sides:
            console.print(f"[bold]{side.label}[/bold]")
            results.append(SideRun(side, sizes, root, console.print).run())

    raw = {
        "sizes": asdict(sizes),
        "slo_p99_ms": SLO_MS,
        "headroom": HEADROOM,
        "workload": WORKLOAD,
        "quiet": quiet,
        "load_average_at_start": load,
        "wall_seconds": time.monotonic() - started,
        "sides": results,
    }
    report(results, sizes, args.quick, machine, note, raw).save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
