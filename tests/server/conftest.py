"""Fixtures for the Redis-compatibility tests: a real ``engramdb serve`` and a real
``redis-server`` (the peer), each a subprocess on its own loopback port, shared by the
session and flushed between tests.

Peer tests skip when ``redis-server`` is not installed; tool tests skip without
``redis-cli`` / ``redis-benchmark``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

_START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_ping(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with redis.Redis(port=port, socket_timeout=1) as client:
                if client.ping():
                    return
        except redis.RedisError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not answer PING:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Served:
    """A server subprocess and the port it answers on."""

    def __init__(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        port: int,
        log: Path,
        data: Path | None = None,
    ) -> None:
        self.name = name
        self.proc = proc
        self.port = port
        self.log = log
        self.data = data  # the database directory (engramdb only)

    def client(self, protocol: int = 2) -> redis.Redis:
        return redis.Redis(port=self.port, protocol=protocol, decode_responses=False)


@pytest.fixture(scope="session")
def engramdb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``engramdb serve`` on a free port (it binds port 0 and prints the one it got)."""
    root = tmp_path_factory.mktemp("engramdb-serve")
    log = root / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engramdb.cli", "serve", "--data", str(root / "data"),
             "--port", "0", "--metrics-port", "0", "--durability", "none"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        found = None
        deadline = time.monotonic() + _START_TIMEOUT
        while found is None and time.monotonic() < deadline and proc.poll() is None:
            found = re.search(r" on [\d.]+:(\d+)", log.read_text())
            if found is None:
                time.sleep(0.05)
        if found is None:
            raise RuntimeError(f"engramdb serve did not start:\n{log.read_text()}")
        port = int(found.group(1))
        _wait_for_ping(port, proc, log)
    except BaseException:
        _stop(proc)
        raise
    yield Served("engramdb", proc, port, log, root / "data")
    _stop(proc)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A real ``redis-server`` (no persistence) on a free port; skips when not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    root = tmp_path_factory.mktemp("redis-server")
    log = root / "server.log"
    for _attempt in range(3):  # the free port may be taken before redis binds it
        port = _free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(root)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            _wait_for_ping(port, proc, log)
        except RuntimeError:
            _stop(proc)
            continue
        yield Served("redis", proc, port, log)
        _stop(proc)
        return
    raise RuntimeError(f"redis-server did not start:\n{log.read_text()}")


@pytest.fixture
def engramdb_client(engramdb_server: Served) -> Iterator[redis.Redis]:
    client = engramdb_server.client()
    client.flushall()
    yield client
    client.close()
