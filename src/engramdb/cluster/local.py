"""One local PostgreSQL, run as an unprivileged user: the harness of the postgres tests and
the building block of ``engramdb cluster``.

``LocalPostgres`` initialises a data directory (``initdb``, locale ``C.UTF-8``, trust
authentication for local connections, superuser ``postgres``), starts ``postgres`` directly
(not through ``pg_ctl``, so we hold the postmaster's pid) in a process group of its own on a
free 127.0.0.1 port, creates a database with the ``vector`` extension and gives its URL. On
exit it stops the server (fast shutdown, then SIGKILL of the whole group) and removes what it
created. A standby is made with ``standby_of=primary`` (``pg_basebackup -R``).

Rules this file keeps:
- No orphans: the server runs in its own process group and, by default, gets SIGKILL when
  the thread that started it exits (so a test run killed with -9 leaves nothing behind);
  ``stop()`` and ``kill()`` always end the whole group.
- Everything the server user must reach (binaries, data, socket directory) is checked or
  made reachable up front, with a clear error instead of a server that fails to start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from engramdb.cluster.binaries import (
    BinariesNotFound,
    PgBinaries,
    RunAs,
    find_binaries,
    service_user,
)
from engramdb.errors import StorageError

__all__ = ["LocalPostgres", "free_port"]

_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; the socket file name adds ".s.PGSQL.NNNNN"

# Settings for every local server; the caller's ``settings`` override them.
_DEFAULT_SETTINGS: dict[str, str] = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "300",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "hot_standby": "on",
    "wal_keep_size": "256MB",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "lc_messages": "C.UTF-8",
}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (another process may take it before use)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalPostgres:
    """A PostgreSQL server in ``directory`` (a fresh temporary one when None).

    Args:
        directory: where the data directory (``data``), the log (``postgres.log``) and the
            socket directory go. Must be reachable by ``user``. Kept on exit when given;
            a temporary one is removed.
        port: TCP port on 127.0.0.1 (a free one when None); kept across restarts.
        database: the database created with the ``vector`` extension (the URL's).
        user: who runs the server (default ``service_user()``: the current user, or the
            system user ``engramdb`` under root).
        binaries: the PostgreSQL installation (default: the bundled one, made reachable).
        settings: server settings (``-c name=value``), over the defaults above.
        fsync: False runs without fsync (tests that never crash the OS: much faster).
        standby_of: a running ``LocalPostgres`` to stream from (``pg_basebackup -R``)
            instead of ``initdb``; its ``cluster_name`` setting names it to the primary
            (``synchronous_standby_names``).
        die_with_parent: SIGKILL the server when the thread that started it exits.

    Use as a context manager (``with LocalPostgres(d) as pg: pg.url``), or ``start()`` /
    ``stop()``. ``kill()`` is a real ``kill -9`` of the server (for crash tests);
    ``start()`` afterwards runs crash recovery on the same data and port.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        port: int | None = None,
        *,
        database: str = "engramdb",
        user: RunAs | None = None,
        binaries: PgBinaries | None = None,
        settings: Mapping[str, str] | None = None,
        fsync: bool = True,
        standby_of: LocalPostgres | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.user = user or service_user()
        self.binaries = (binaries or find_binaries()).reachable_by(self.user)
        self._temporary = directory is None
        if directory is None:
            directory = tempfile.mkdtemp(prefix="engramdb-pg-")
            self.user.own(directory)
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.data = self.directory / "data"
        self.log_path = self.directory / "postgres.log"
        self.port = port or free_port()
        self.database = database
        self.fsync = fsync
        self.standby_of = standby_of
        self.die_with_parent = die_with_parent
        self.settings = {**_DEFAULT_SETTINGS, **(settings or {})}
        if not fsync:
            self.settings.update(fsync="off", full_page_writes="off")
        self._socket_dir: Path | None = None
        self._owned_socket_dir = False
        self.process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    # urls --------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def socket_dir(self) -> str:
        """The directory of the server's unix socket (for ``host=`` in libpq)."""
        if self._socket_dir is None:
            raise StorageError("the server has not been started")
        return str(self._socket_dir)

    def url(self, database: str | None = None) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/DATABASE`` (TCP; trust authentication)."""
        return f"postgresql://postgres@{self.host}:{self.port}/{database or self.database}"

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``: a host of a multi-host URL."""
        return f"{self.host}:{self.port}"

    # lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self, *, timeout: float = 60.0) -> LocalPostgres:
        """Initialise (first time only) and start the server; return when it accepts
        connections and the database exists."""
        with self._lock:
            if self.process is not None and self.process.poll() is None:
                return self
            self._check_reachable()
            fresh = not (self.data / "PG_VERSION").exists()
            if fresh:
                if self.standby_of is not None:
                    self._basebackup()
                else:
                    self._initdb()
            self._launch(timeout)
            if fresh and self.standby_of is None:
                self.psql(
                    f'CREATE DATABASE "{self.database}"', database="postgres", timeout=timeout
                )
                self.psql("CREATE EXTENSION IF NOT EXISTS vector", timeout=timeout)
            return self

    def _check_reachable(self) -> None:
        if not self.user.can_reach(self.directory, execute=True):
            raise BinariesNotFound(
                f"user {self.user.name} cannot reach {self.directory} (a parent directory "
                "is not searchable by it); pass a directory it can reach, or None"
            )
        self.user.own(self.directory)
        socket_dir = self.directory / "sock"
        if len(str(socket_dir)) + 16 > _SOCKET_PATH_MAX:
            if self._socket_dir is None:
                socket_dir = Path(tempfile.mkdtemp(prefix="engramdb-pgsock-"))
                self._owned_socket_dir = True
            else:
                socket_dir = self._socket_dir
        socket_dir.mkdir(exist_ok=True)
        self.user.own(socket_dir)
        self._socket_dir = socket_dir

    def _initdb(self) -> None:
        argv = [
            self.binaries.initdb,
            "-D", str(self.data),
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ]  # fmt: skip
        if not self.fsync:
            argv.append("--no-sync")
        self.user.run(argv, cwd=str(self.directory))

    def _basebackup(self) -> None:
        primary = self.standby_of
        assert primary is not None
        self.user.run(
            [
                self.binaries.pg_basebackup,
                "-D", str(self.data),
                "-h", primary.host,
                "-p", str(primary.port),
                "-U", "postgres",
                "-R",  # standby.signal + primary_conninfo
                "-X", "stream",
                "-c", "fast",
            ],
            cwd=str(self.directory),
        )  # fmt: skip

    def _launch(self, timeout: float) -> None:
        settings = {
            **self.settings,
            "port": str(self.port),
            "unix_socket_directories": str(self._socket_dir),
        }
        argv = [self.binaries.postgres, "-D", str(self.data)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        pidfile = self.data / "postmaster.pid"
        with self.log_path.open("ab") as log:
            self.process = self.user.popen(
                argv,
                die_with_parent=self.die_with_parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(self.directory),
            )
        deadline = time.monotonic() + timeout
        while True:
            # postmaster.pid's 8th line turns to "ready" once connections are accepted
            # (what pg_ctl waits for).
            try:
                lines = pidfile.read_text().splitlines()
            except OSError:
                lines = []
            if (
                len(lines) >= 8
                and lines[0].strip() == str(self.process.pid)
                and lines[7].strip() == "ready"
            ):
                return
            if self.process.poll() is not None:
                self.process = None
                raise StorageError(f"postgres failed to start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self._end_group(signal.SIGKILL)
                raise StorageError(f"postgres did not start in {timeout}s:\n{self.log_tail()}")
            time.sleep(0.02)

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        process = self.process
        return process.pid if process is not None and process.poll() is None else None

    def stop(self, *, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: roll back sessions, checkpoint); SIGKILL the whole group
        if it takes longer than ``timeout``."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            try:
                os.kill(process.pid, signal.SIGINT)
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        self._end_group(signal.SIGKILL)

    def kill(self) -> None:
        """``kill -9`` the postmaster and every backend (a crash, for tests); the data stays
        and ``start()`` recovers it."""
        self._end_group(signal.SIGKILL)

    def restart(self, *, timeout: float = 60.0) -> None:
        self.stop()
        self.start(timeout=timeout)

    def _end_group(self, sig: int) -> None:
        process = self.process
        if process is None:
            return
        try:
            os.killpg(process.pid, sig)  # the postmaster leads its own session's group
        except ProcessLookupError:
            pass
        except PermissionError:
            # the group is another user's and we are not root: signal what we may
            os.kill(process.pid, sig)
        process.wait()
        self.process = None

    def close(self) -> None:
        """Stop the server and remove what this object created (a temporary directory, a
        socket directory outside ``directory``)."""
        self.stop()
        if self._owned_socket_dir and self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)

    # admin -------------------------------------------------------------------------------

    def psql(self, sql: str, *, database: str | None = None, timeout: float = 60.0) -> str:
        """Run ``sql`` with the bundled ``psql`` as superuser ``postgres``; returns its
        unaligned, tuples-only output. ``StorageError`` on any SQL error."""
        argv = [
            self.binaries.psql,
            "-X", "-q", "-A", "-t",
            "-v", "ON_ERROR_STOP=1",
            "-h", self.host,
            "-p", str(self.port),
            "-U", "postgres",
            "-d", database or self.database,
            "-c", sql,
        ]  # fmt: skip
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, "PGCONNECT_TIMEOUT": "10", "LC_ALL": "C.UTF-8"},
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise StorageError(f"psql failed to run: {e}") from e
        if done.returncode != 0:
            raise StorageError(f"psql: {done.stderr.strip()}")
        return done.stdout.strip()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.pid else "stopped"
        return f"<LocalPostgres {self.directory} port {self.port} {state}>"

    def describe(self) -> dict[str, Any]:
        """What a caller (or a report) needs to find this server."""
        return {
            "directory": str(self.directory),
            "port": self.port,
            "url": self.url(),
            "pid": self.pid,
            "user": self.user.name,
            "binaries": str(self.binaries.root),
        }
