"""Fixtures of the server fault suite: real ``engramdb serve`` processes, raw sockets.

``Served`` is a variant of ``tests.conftest.ServerProcess`` that takes any CLI flags (a
password, ``--max-inflight``, ``--host``...), can be killed with any signal, restarted on the
same data directory and port, and reports its memory from ``/proc``. Every process a test
starts is killed and reaped at teardown, whatever the test did to it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hiredis
import pytest

START_WAIT = 30.0  # seconds; a bound on a hung start, never an expectation of speed
REPLY_WAIT = 10.0
MORE = object()  # hiredis' "no whole reply yet" (its default, False, is also a RESP3 reply)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 10 ms until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        pause.wait(0.01)


class Served:
    """One ``engramdb serve`` subprocess (restartable on the same data and port)."""

    def __init__(
        self,
        data: Path,
        *flags: str,
        password: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.data = data
        self.flags = flags
        self.password = password
        self.host = host
        self.port = port
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data.parent / f"{data.name}-server.log"

    def command(self) -> list[str]:
        command = [
            sys.executable, "-m", "engramdb.cli", "serve", "--data", str(self.data),
            "--host", self.host, "--port", str(self.port), "--metrics-port", "0",
        ]  # fmt: skip
        if self.password is not None:
            command += ["--password", self.password]
        return [*command, *self.flags]

    def start(self) -> Served:
        """Start (or restart, on the port it had) and wait until it listens."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if k != "ENGRAMDB_PASSWORD"}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log.open("a") as out:
            out.write(f"--- start {self.starts}\n")
            out.flush()
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, env=env
            )
        found: re.Match[str] | None = None

        def listening() -> bool:
            nonlocal found
            text = self.log.read_text().rpartition(f"--- start {self.starts}\n")[2]
            found = re.search(r" on [^ ]+:(\d+) ", text)
            assert self.proc is not None
            if found is None and self.proc.poll() is not None:
                raise AssertionError(f"engramdb serve exited at start:\n{text}")
            return found is not None

        try:
            wait_for(listening, START_WAIT, "engramdb serve to listen")
        except BaseException:
            self.kill()
            raise
        assert found is not None
        self.port = int(found.group(1))
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password is not None else ""
        return f"engramdb://{auth}127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL and reap (a no-op when it already exited)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(START_WAIT)

    def wait_exit(self, timeout: float = START_WAIT) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def memory_kb(self, field: str = "VmRSS") -> int:
        """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) from /proc, in kB."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        found = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
        assert found is not None, status
        return int(found.group(1))

    def raw(self, timeout: float = REPLY_WAIT) -> Raw:
        return Raw(("127.0.0.1", self.port), timeout)

    def info(self) -> dict[str, str]:
        """``INFO`` as a flat dict, over a fresh connection."""
        with self.raw() as conn:
            if self.password is not None:
                conn.send(b"AUTH %s\r\n" % self.password.encode())
                assert conn.replies(1) == [b"OK"]
            conn.send(b"INFO\r\n")
            (text,) = conn.replies(1)
        assert isinstance(text, bytes), text
        pairs = (line.split(":", 1) for line in text.decode().splitlines() if ":" in line)
        return {k: v for k, v in pairs}


class Raw:
    """A plain TCP connection with a RESP reply reader (hiredis)."""

    def __init__(self, address: tuple[str, int], timeout: float = REPLY_WAIT) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader(notEnoughData=MORE)
        self.timeout = timeout

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def replies(self, count: int) -> list[Any]:
        """Exactly ``count`` replies; fails on EOF or when they take over ``timeout``."""
        out: list[Any] = []
        deadline = time.monotonic() + self.timeout
        while True:
            while len(out) < count and (reply := self.reader.gets()) is not MORE:
                out.append(reply)
            if len(out) == count:
                return out
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = self.sock.recv(1 << 16)
            if not data:
                raise AssertionError(f"EOF after {len(out)} of {count} replies: {out!r}")
            self.reader.feed(data)

    def until_closed(self) -> tuple[list[Any], str]:
        """Every reply until the server closes; (replies, "eof" | "reset").

        Fails when the server keeps the connection open for longer than ``timeout``.
        """
        out: list[Any] = []
        deadline = time.monotonic() + self.timeout
        how = ""
        while not how:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the server kept the connection open; got {out!r}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except ConnectionResetError:
                how = "reset"
                break
            if not data:
                how = "eof"
            self.reader.feed(data)
            while (reply := self.reader.gets()) is not MORE:
                out.append(reply)
        return out, how


ServeFactory = Callable[..., Served]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeFactory]:
    """``serve(*flags, password=..., host=..., name=...)`` starts a server; all are killed
    and reaped at teardown."""
    started: list[Served] = []

    def _serve(
        *flags: str,
        password: str | None = None,
        host: str = "127.0.0.1",
        name: str = "db",
        start: bool = True,
    ) -> Served:
        server = Served(tmp_path / name, *flags, password=password, host=host)
        started.append(server)
        return server.start() if start else server

    yield _serve
    for server in started:
        with contextlib.suppress(Exception):
            server.kill()


def is_protocol_error(reply: Any) -> bool:
    return isinstance(reply, hiredis.ReplyError) and str(reply).startswith("ERR Protocol error")
