"""Run the benchmarks: ``python -m bench --quick`` runs every one in a smoke size.

    python -m bench --quick           # every script, smoke sizes, into bench/results/quick/
    python -m bench --quick records memory
    python -m bench records           # full size (hours for some areas): bench/results/

Each script runs in its own interpreter. A script with nothing to run here (no peer installed
and nothing of engramdb's own to measure) exits with ``SKIPPED`` after printing why; one that
lacks one peer of several skips that peer, says so, and measures the rest. A quick run sets
``$ENGRAMDB_BENCH_RESULTS`` so no script touches BENCHMARKS.md or a measured result.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SKIPPED = 77  # the same as _common.SKIPPED (this module must not import _common's deps)

# Page order; the cluster (three PostgreSQL nodes, kills, failovers) is the slowest by far.
SCRIPTS = [
    "records",
    "batches",
    "sessions_cache",
    "server",
    "features",
    "memory",
    "vectors",
    "vector_libs",
    "search_quality",
    "context",
    "integrations",
    "audit_compare",
    "redis_py_suite",
    "hedge",
    "cluster",
]


def run(script: str, quick: bool, env: dict[str, str]) -> tuple[str, float]:
    argv = [sys.executable, str(BENCH / f"{script}.py"), *(["--quick"] if quick else [])]
    print(f"== {script}: {' '.join(argv[1:])}", flush=True)
    began = time.monotonic()
    code = subprocess.run(argv, env=env, check=False).returncode
    status = "ok" if code == 0 else "skipped" if code == SKIPPED else f"FAILED ({code})"
    return status, time.monotonic() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes; results kept apart")
    parser.add_argument("scripts", nargs="*", choices=[[], *SCRIPTS], metavar="SCRIPT",
                        help=f"some of: {', '.join(SCRIPTS)} (default: all)")  # fmt: skip
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.quick:
        env.setdefault("ENGRAMDB_BENCH_RESULTS", str(BENCH / "results" / "quick"))
    outcome = {s: run(s, args.quick, env) for s in args.scripts or SCRIPTS}
    print()
    for script, (status, seconds) in outcome.items():
        print(f"{script:<16} {status:<12} {seconds:7.1f} s")
    return 1 if any(s.startswith("FAILED") for s, _ in outcome.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
