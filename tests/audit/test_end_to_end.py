"""``engramdb audit`` from the command line, end to end, on three real targets.

A managed engramdb server and a managed redis-server get every section (the audit starts
them, and kill -9s them for the availability section); an embedded database directory gets
the sections that apply without a server, and reports the other two as skipped. Each run is
small (200 req/s, 3 s phases, one load process). The three run side by side, as separate
processes, to keep the suite short; that makes them slower and noisier, which is fine: a
run that PASSes (exit 0) and one that FAILs (exit 3) have both completed, and only
completion and the shape of the outputs are checked here, never a figure. For the same
reason they start with the first test of this directory (``conftest.py``), and this file's
tests run after the directory's others, which run meanwhile.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from engramdb.audit.report import SECTION_TITLES

ALL_SECTIONS = ("latency", "burst", "consistency", "availability", "observability")
EMBEDDED_SECTIONS = ("latency", "consistency", "availability", "observability")
SMALL = ["--rate", "200", "--duration", "3", "--workers", "1"]
PNG = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


@dataclass(frozen=True)
class Audit:
    name: str
    target: str  # empty: a fresh database directory
    sections: tuple[str, ...]
    managed: bool
    extra: tuple[str, ...] = ()


AUDITS = {
    audit.name: audit
    for audit in (
        Audit("engramdb-server", "engramdb://x", ALL_SECTIONS, managed=True),
        # appendfsync always: Redis then acknowledges a few thousand writes during the kill -9
        # run, not tens of thousands, all read back afterwards on a machine this suite shares.
        Audit("redis", "redis://x", ALL_SECTIONS, True, ("--appendfsync", "always")),
        Audit("embedded", "", EMBEDDED_SECTIONS, managed=False),
    )
}


@dataclass(frozen=True)
class Finished:
    returncode: int
    output: str
    report: Path


@dataclass(frozen=True)
class Running:
    process: subprocess.Popen[bytes]
    log: Path
    report: Path


def start_audits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Running]:
    """Every available audit, started (side by side)."""
    running: dict[str, Running] = {}
    for audit in AUDITS.values():
        if audit.name == "redis" and shutil.which("redis-server") is None:
            continue
        directory = tmp_path_factory.mktemp(audit.name)
        target = audit.target or str(directory / "db")
        command = [
            sys.executable, "-m", "engramdb.cli", "audit", target, *SMALL,
            "--sections", ",".join(audit.sections), "--report", str(directory / "report"),
            *(["--managed"] if audit.managed else []), *audit.extra,
        ]  # fmt: skip
        log = directory / "output.txt"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "COLUMNS": "240", "PYTHONUNBUFFERED": "1"},
            )
        running[audit.name] = Running(process, log, directory / "report")
    return running


def stop_audits(running: dict[str, Running]) -> None:
    """Stop audits still running (the session ended without waiting for them) as Ctrl-C
    does: each removes what it wrote and stops the server it started."""
    for run in running.values():
        if run.process.poll() is None:
            run.process.terminate()
    for run in running.values():
        try:
            run.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait()


@pytest.fixture(scope="module")
def finished(end_to_end_audits: dict[str, Running]) -> dict[str, Finished]:
    """Every available audit, run to completion (started by ``end_to_end_audits``)."""
    results: dict[str, Finished] = {}
    for name, run in end_to_end_audits.items():
        try:
            run.process.wait(timeout=300)
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait()
        results[name] = Finished(
            run.process.returncode, run.log.read_text(errors="replace"), run.report
        )
    return results


@pytest.fixture(params=sorted(AUDITS))
def audit(request: pytest.FixtureRequest, finished: dict[str, Finished]) -> tuple[Audit, Finished]:
    name = str(request.param)
    if name not in finished:
        pytest.skip("redis-server is not installed")
    return AUDITS[name], finished[name]


def test_the_audit_completes_with_a_verdict(audit: tuple[Audit, Finished]) -> None:
    _, run = audit
    assert run.returncode in (0, 3), run.output  # PASS or FAIL; anything else is a crash


def test_report_json_has_every_requested_section(audit: tuple[Audit, Finished]) -> None:
    spec, run = audit
    report = json.loads((run.report / "report.json").read_text())
    assert report["managed"] is spec.managed
    assert report["pass"] is (run.returncode == 0)
    sections = report["sections"]
    assert set(sections) == set(spec.sections)
    for name, section in sections.items():
        assert section["pass"] in (True, False, None), name
    assert sections["latency"]["overall"]["count"] > 0
    assert sections["consistency"]["operations"] > 0
    assert sections["consistency"]["linearizable"] in (True, False, None)
    if spec.managed:
        assert sections["availability"]["acknowledged_writes"] > 0
        assert sections["observability"]["counts"][0]["client_sent"] > 0
        assert sections["burst"]["phases"][0]["phase"] == "baseline"
    else:  # no server to kill or to count requests: reported as skipped, not failed
        assert sections["availability"]["pass"] is None
        assert "skipped" in sections["availability"]
        assert sections["observability"]["pass"] is None


def test_report_html_embeds_its_plots(audit: tuple[Audit, Finished]) -> None:
    _, run = audit
    page = (run.report / "report.html").read_text()
    assert page.startswith("<!doctype html>")
    images = PNG.findall(page)
    assert images, "no embedded PNG"
    for image in images:
        assert base64.b64decode(image).startswith(b"\x89PNG\r\n\x1a\n")


def test_the_terminal_summary_is_printed(audit: tuple[Audit, Finished]) -> None:
    spec, run = audit
    assert "engramdb audit of" in run.output
    for name in spec.sections:
        assert SECTION_TITLES[name] in run.output
    assert re.search(r"wrote \S*report\.json and \S*report\.html", run.output)
