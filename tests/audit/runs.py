"""Running ``engramdb audit`` as a user does (a subprocess of the CLI), at the smallest sizes.

Shared by the audit tests and the audit attacks. ``TINY`` is one load process at 100 req/s
for one-second phases: enough for the audit to write records and count requests, short
enough to run often.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TINY = ("--rate", "100", "--duration", "1", "--workers", "1")
RUN_WAIT = 180.0  # seconds; a bound on a hung audit, never an expectation of speed


@dataclass(frozen=True)
class Ran:
    returncode: int
    output: str
    report_dir: Path

    @property
    def report(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads((self.report_dir / "report.json").read_text())
        return result


def command(target: str, report_dir: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "engramdb.cli", "audit", target, "--report", str(report_dir),
        *args,
    ]  # fmt: skip


def environment() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "240", "PYTHONUNBUFFERED": "1"}


def audit(target: str, report_dir: Path, *args: str) -> Ran:
    """Run the audit to its end; its exit status, everything it printed, its report dir."""
    done = subprocess.run(
        command(target, report_dir, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=environment(),
        timeout=RUN_WAIT,
    )
    return Ran(done.returncode, done.stdout.decode(errors="replace"), report_dir)


def _interruptible() -> None:
    """In the child before exec: Ctrl-C as in a terminal. A shell without job control starts
    background commands with SIGINT ignored, which Python then never turns into
    KeyboardInterrupt (CI run as ``.ci/run &`` failed the Ctrl-C test that way)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(target: str, report_dir: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start the audit in the background, its output going to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            command(target, report_dir, *args),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment(),
            preexec_fn=_interruptible,
        )
