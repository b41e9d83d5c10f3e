"""Feast on ``EngramOnlineStore``: every case of ``feast_cases.py``, reported here by name.

Feast pins packages older than this project's (pandas < 3, prometheus_client < 0.25), so it
cannot share this interpreter's environment. The cases run, in one pytest session, in an
interpreter that has Feast:

1. ``$ENGRAMDB_FEAST_PYTHON`` if set;
2. this interpreter, if it can import Feast;
3. otherwise a virtualenv made from this interpreter (``--system-site-packages`` and, should
   this one be a virtualenv, its site-packages too: it shares everything but Feast and the
   pins Feast downgrades), with the ``feast`` extra of
   ``pyproject.toml`` installed by pip, kept under ``~/.cache/engramdb/venvs`` for the next
   run. The cases import engramdb from this checkout (``PYTHONPATH``).

Each test below passes or fails as its case did there (all its parametrizations), with the
case's own failure text. They skip only when Feast cannot be installed here at all.
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import importlib.util
import os
import shutil
import site
import subprocess
import sys
import threading
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import engramdb

HERE = Path(__file__).resolve().parent
CASES = HERE / "feast_cases.py"
ROOT = HERE.parent.parent
INSTALL_WAIT = 1200  # seconds for pip to install Feast into a fresh virtualenv
RUN_WAIT = 1800  # seconds for the whole Feast session


def case_names() -> list[str]:
    """The test functions of ``feast_cases.py``, read without importing it (nor Feast)."""
    tree = ast.parse(CASES.read_text())
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    ]


def feast_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["optional-dependencies"]["feast"])


def has_feast(python: str) -> bool:
    done = subprocess.run(
        [python, "-c", "import feast"], capture_output=True, timeout=120, check=False
    )
    return done.returncode == 0


def feast_python(log: Path) -> str:
    """An interpreter that imports Feast (see the module docs); skips if none can be had."""
    given = os.environ.get("ENGRAMDB_FEAST_PYTHON")
    if given:
        return given
    if importlib.util.find_spec("feast") is not None:
        return sys.executable
    requirements = feast_requirements()
    digest = hashlib.sha256(
        "\n".join([sys.executable, sys.version, *requirements]).encode()
    ).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "engramdb" / "venvs"
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / f"feast-{digest}"
    python = venv / "bin" / "python"
    complete = venv / "engramdb-complete"  # written once pip has finished
    with (cache / f"feast-{digest}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building the same one
        if complete.exists() and has_feast(str(python)):
            return str(python)
        shutil.rmtree(venv, ignore_errors=True)
        with log.open("w") as out:

            def step(*command: str) -> None:
                done = subprocess.run(
                    command, stdout=out, stderr=subprocess.STDOUT, timeout=INSTALL_WAIT, check=False
                )
                if done.returncode != 0:
                    tail = log.read_text()[-2000:]
                    pytest.skip(f"Feast cannot be installed here ({' '.join(command)}):\n{tail}")

            step(sys.executable, "-m", "venv", "--system-site-packages", str(venv))
            share_site_packages(python)
            step(str(python), "-m", "pip", "install", "-q", *requirements)
        if not has_feast(str(python)):
            pytest.skip(f"Feast was installed in {venv} but cannot be imported")
        complete.write_text(" ".join(requirements))
    return str(python)


def share_site_packages(python: Path) -> None:
    """Put this interpreter's site-packages on the new virtualenv's path, after its own.

    ``--system-site-packages`` shares the base interpreter's; when this one is itself a
    virtualenv (a CI job's, say), its packages (engramdb's dependencies, pytest) live in its
    own site-packages, which a ``.pth`` file adds. Feast and the pins it downgrades, installed
    in the new virtualenv, still come first."""
    mine = [*site.getsitepackages(), site.getusersitepackages()]
    done = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    own = Path(done.stdout.strip())
    (own / "zz-engramdb-parent.pth").write_text(
        "".join(f"{path}\n" for path in mine if Path(path).is_dir() and Path(path) != own)
    )


@dataclass
class Outcome:
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # each with its failure text
    skipped: list[str] = field(default_factory=list)


@dataclass
class Report:
    cases: dict[str, Outcome]
    output: str


class CasesRun:
    """``feast_cases.py`` run once in the Feast interpreter, on a thread of its own. It is
    started with the first test of this directory (``conftest.py``), and this file's tests
    run after the directory's others: they run meanwhile, on the machine's other core, and
    the run is usually over when ``report`` is first asked for."""

    def __init__(self, work: Path) -> None:
        self._work = work
        self._stopping = threading.Event()
        self._process: subprocess.Popen[str] | None = None
        self._outcome: Report | BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="feast-cases", daemon=True)
        self._thread.start()

    def report(self) -> Report:
        """Each case's outcomes, once the run is over; what stopped it (a skip when Feast
        cannot be installed here, a failure) is raised here, in the test that asks."""
        self._thread.join()
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        assert self._outcome is not None
        return self._outcome

    def stop(self) -> None:
        """End a run the session did not wait for (its Feast tests were not reached)."""
        self._stopping.set()
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self._thread.join(30)

    def _run(self) -> None:
        try:
            self._outcome = self._cases()
        except BaseException as e:  # pytest.skip too: report() raises it in the test
            self._outcome = e

    def _cases(self) -> Report:
        work = self._work
        python = feast_python(work / "install.log")
        junit = work / "cases.xml"
        source = Path(engramdb.__file__).resolve().parent.parent  # this checkout's engramdb
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(source), str(ROOT)]))}
        if self._stopping.is_set():
            raise AssertionError("the session ended before the Feast cases started")
        self._process = subprocess.Popen(
            [python, "-m", "pytest", str(CASES), "-p", "no:cacheprovider", "-q",
             f"--junitxml={junit}", f"--rootdir={ROOT}",
             f"--basetemp={work / 'tmp'}"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            stdout, stderr = self._process.communicate(timeout=RUN_WAIT)
        finally:
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait()
        output = stdout + stderr
        if not junit.exists():
            raise AssertionError(f"the Feast cases did not run ({python}):\n{output[-5000:]}")
        cases: dict[str, Outcome] = {}
        for testcase in ET.parse(junit).getroot().iter("testcase"):
            name = testcase.get("name", "")
            outcome = cases.setdefault(name.partition("[")[0], Outcome())
            problems = [e for e in testcase if e.tag in ("failure", "error")]
            skips = [e for e in testcase if e.tag == "skipped"]
            if problems:
                texts = [f"{e.get('message', '')}\n{e.text or ''}" for e in problems]
                outcome.failed.append(f"{name}:\n" + "\n".join(texts))
            elif skips:
                outcome.skipped.append(f"{name}: {skips[0].get('message', '')}")
            else:
                outcome.passed.append(name)
        return Report(cases, output)


@pytest.fixture(scope="session")
def feast_report(feast_cases: CasesRun) -> Report:
    """Each case's outcomes from the one run of ``feast_cases.py`` (see ``CasesRun``)."""
    return feast_cases.report()


@pytest.mark.timeout(INSTALL_WAIT + RUN_WAIT)
@pytest.mark.parametrize("case", case_names())
def test_feast(case: str, feast_report: Report) -> None:
    outcome = feast_report.cases.get(case)
    if outcome is None:
        pytest.fail(
            f"{case} did not run in the Feast interpreter:\n{feast_report.output[-5000:]}",
            pytrace=False,
        )
    if outcome.failed:
        pytest.fail("\n\n".join(outcome.failed), pytrace=False)
    if not outcome.passed:
        pytest.skip("; ".join(outcome.skipped))
