"""What a local cluster needs from the machine, found (or prepared once) before it starts.

PostgreSQL refuses to run as root. So when engramdb runs as root, every process of a local
cluster (etcd, Patroni, postgres) runs as the unprivileged service user of
``engramdb.cluster.binaries`` (``engramdb``, created on first use), which also makes the
bundled PostgreSQL binaries reachable for it. That user must also run a Python that imports
Patroni. When engramdb's own Python is out of its reach (installed under ``/root``, mode
0700), a venv is made once from Debian's ``/usr/bin/python3`` with the same Patroni version,
in a root-owned runtime directory (``/var/cache/engramdb`` by default; about 7 s with a warm
pip cache), and reused by every later cluster. When the service user can run engramdb's
Python, nothing is prepared; run as an ordinary user, processes run as that user.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from engramdb.cluster.binaries import BinariesNotFound, RunAs, find_binaries, service_user
from engramdb.errors import EngramError, InvalidArgument

__all__ = [
    "DEFAULT_RUNTIME_DIR",
    "SERVICE_USER",
    "MissingDependency",
    "Runtime",
    "clean_env",
    "prepare",
]

DEFAULT_RUNTIME_DIR = Path("/var/cache/engramdb")
SERVICE_USER = "engramdb"
SYSTEM_PYTHON = Path("/usr/bin/python3")

INSTALL_CLUSTER_EXTRA = "pip install 'engramdb[cluster]'"
INSTALL_ETCD = "apt-get install -y etcd-server etcd-client"
INSTALL_VENV = "apt-get install -y python3-venv"


class MissingDependency(EngramError):
    """Something a local cluster needs is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Runtime:
    """Everything needed to start cluster processes on this machine."""

    user: RunAs  # who runs them: the current user, or the service user under root
    patroni: tuple[str, ...]  # the command that runs Patroni, before its config argument
    bin_dir: Path  # PostgreSQL binaries (postgres, initdb, pg_ctl, pg_basebackup, pg_rewind)
    etcd: Path

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run as the cluster's user."""
        return self.user.argv(argv)

    def give(self, path: Path) -> None:
        """Hand ``path`` to the cluster's user (no-op when that is us)."""
        self.user.own(path)

    def check_reachable(self, directory: Path) -> None:
        """Raise ``InvalidArgument`` when the cluster's user cannot enter ``directory``."""
        if self.user.can_reach(directory, execute=True):
            return
        blocked = next(
            (p for p in reversed(directory.parents) if not self.user.can_reach(p, execute=True)),
            directory,
        )
        raise InvalidArgument(
            f"cluster processes run as user {self.user.name!r} (PostgreSQL refuses root), "
            f"and {self.user.name!r} cannot reach {directory}: {blocked} is closed to other "
            f"users. Use a directory outside it (e.g. --dir /var/tmp/engramdb-cluster) or "
            f"open it for traversal: chmod o+x {blocked}"
        )


def prepare(
    *,
    runtime_dir: Path | None = None,
    user: str = SERVICE_USER,
    progress: Callable[[str], None] | None = None,
) -> Runtime:
    """Find etcd, Patroni and PostgreSQL, and make them runnable by the cluster's user.
    ``MissingDependency`` says what to install when something is missing."""
    say = progress or (lambda message: None)
    etcd = _find_etcd()
    _require_patroni()
    try:
        run_as = service_user(user)
        say("finding the PostgreSQL binaries")
        binaries = find_binaries().reachable_by(run_as)
    except BinariesNotFound as e:
        raise MissingDependency(str(e)) from None
    patroni: tuple[str, ...] = (sys.executable, "-m", "patroni")
    if not run_as.is_current and not (
        _python_reachable(run_as) and _runs(run_as, [*patroni, "--version"])
    ):
        venv = _patroni_venv(runtime_dir or DEFAULT_RUNTIME_DIR, run_as, say)
        patroni = (str(venv / "bin" / "python"), "-m", "patroni")
        if not _runs(run_as, [*patroni, "--version"]):
            raise MissingDependency(f"user {run_as.name!r} cannot run Patroni from {venv}")
    return Runtime(run_as, patroni, binaries.bin, etcd)


def clean_env() -> dict[str, str]:
    """The environment for processes we start: ours, less what would point them at our
    own Python (a venv, PYTHONPATH) rather than the one they were given."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PGDATA")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    # Only the C.UTF-8 locale is sure to exist; initdb fails on a missing one.
    env["LANG"] = env["LC_ALL"] = "C.UTF-8"
    return env


def _find_etcd() -> Path:
    found = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    if found is None:
        raise MissingDependency(f"etcd is not installed; install it with: {INSTALL_ETCD}")
    return Path(found)


def _require_patroni() -> None:
    if importlib.util.find_spec("patroni") is None or importlib.util.find_spec("psycopg") is None:
        raise MissingDependency(
            f"Patroni (with etcd3 and psycopg 3) is not installed; install it with: "
            f"{INSTALL_CLUSTER_EXTRA}"
        )


def _python_reachable(user: RunAs) -> bool:
    """Whether ``user`` reaches this Python's interpreter and installation by their mode
    bits. ``--version`` running is not enough: a venv whose base Python lives under a
    private ``/root`` (pyenv) answered it, yet the postmaster Patroni spawns from it died,
    and the cluster never elected a leader."""
    places = (Path(sys.executable).resolve(), Path(sys.base_prefix), Path(sys.prefix))
    return all(user.can_reach(place, execute=True) for place in places)


def _runs(user: RunAs, argv: Sequence[str]) -> bool:
    """Whether ``argv`` runs and exits 0 as ``user``."""
    try:
        done = subprocess.run(
            user.argv(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            env=clean_env(),
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    cache.chmod(0o755)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two `cluster up` at once prepare it once
        yield


def _patroni_venv(cache: Path, user: RunAs, say: Callable[[str], None]) -> Path:
    if not SYSTEM_PYTHON.exists():
        raise MissingDependency(
            f"user {user.name!r} needs a Python it can read and {SYSTEM_PYTHON} is missing; "
            f"install it with: apt-get install -y python3 python3-venv"
        )
    probe = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=False, env=clean_env(),
    )  # fmt: skip
    version = _version("patroni")
    target = cache / f"patroni-{version}-py{probe.stdout.strip()}"
    with _locked(cache):
        if (target / "bin" / "python").exists():
            return target
        say(f"installing Patroni {version} for user {user.name} in {target} (once)")
        partial = cache / f".{target.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        made = subprocess.run(
            [str(SYSTEM_PYTHON), "-m", "venv", str(partial)],
            capture_output=True, text=True, check=False, env=clean_env(),
        )  # fmt: skip
        if made.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise MissingDependency(
                f"could not make a venv with {SYSTEM_PYTHON} ({made.stderr.strip()[-200:]}); "
                f"install venv support with: {INSTALL_VENV}"
            )
        installed = subprocess.run(
            [str(partial / "bin" / "python"), "-m", "pip", "install", "--quiet",
             "--disable-pip-version-check", f"patroni[etcd3,psycopg3]=={version}"],
            capture_output=True, text=True, check=False, env=clean_env(), cwd=cache,
        )  # fmt: skip
        if installed.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise MissingDependency(
                f"could not install Patroni {version} for user {user.name!r}: "
                f"{installed.stderr.strip()[-300:]}"
            )
        # bin/python links to /usr/bin/python3 and pyvenv.cfg sits beside bin/, so the venv
        # works under its final name when run as `bin/python -m patroni`.
        partial.rename(target)
    return target


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise MissingDependency(
            f"{distribution} is not installed; install it with: {INSTALL_CLUSTER_EXTRA}"
        ) from None
