"""The stock Redis tools against engramdb: redis-cli and redis-benchmark (skipped when they
are not installed). The benchmark run checks that every test completes, not its speed."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import redis

from tests.server.conftest import Served

pytestmark = pytest.mark.peer


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def _cli(server: Served, *args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(
        [_tool("redis-cli"), "-p", str(server.port), *args],
        input=stdin,
        capture_output=True,
        timeout=30,
        check=True,
    )
    return done.stdout.decode()


def test_redis_cli(engramdb_server: Served, engramdb_client: redis.Redis) -> None:
    assert _cli(engramdb_server, "PING").strip() == "PONG"
    assert _cli(engramdb_server, "SET", "greeting", "hello").strip() == "OK"
    assert _cli(engramdb_server, "GET", "greeting").strip() == "hello"
    assert _cli(engramdb_server, "INCRBY", "n", "41").strip() == "41"
    assert _cli(engramdb_server, "RPUSH", "l", "a", "b").strip() == "2"
    assert _cli(engramdb_server, "LRANGE", "l", "0", "-1").split() == ["a", "b"]
    assert _cli(engramdb_server, "-3", "HSET", "h", "f", "v").strip() == "1"
    assert _cli(engramdb_server, "-3", "HGETALL", "h").split() == ["f", "v"]
    assert _cli(engramdb_server, "TYPE", "h").strip() == "hash"
    info = _cli(engramdb_server, "INFO")
    assert "redis_version:" in info
    assert "# Keyspace" in info


def test_redis_cli_pipe(engramdb_server: Served, engramdb_client: redis.Redis) -> None:
    commands = [("SET", f"key:{i}", str(i)) for i in range(200)] + [
        ("INCR", "key:1"),
        ("LPUSH", "queue", "job"),
        ("HSET", "h", "f", "v"),
        ("GET", "key:1"),
    ]
    frames = b"".join(
        b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in c)
        for c in commands
    )
    out = _cli(engramdb_server, "--pipe", stdin=frames)
    assert f"errors: 0, replies: {len(commands)}" in out
    assert engramdb_client.get("key:1") == b"2"
    assert engramdb_client.dbsize() == 202


def test_redis_benchmark(engramdb_server: Served, engramdb_client: redis.Redis) -> None:
    tests = ["GET", "SET", "INCR", "HSET", "LPUSH"]
    done = subprocess.run(
        [_tool("redis-benchmark"), "-p", str(engramdb_server.port), "-t", ",".join(tests),
         "-n", "2000", "-c", "10", "-q"],
        capture_output=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    # -q prints progress lines ending in \r, then "SET: 21276.60 requests per second, ...".
    rps = dict(re.findall(r"(?m)^\s*(\w+): ([\d.]+) requests per second", out.replace("\r", "\n")))
    for test in tests:
        assert test in rps, out
        assert float(rps[test]) > 0, out
    assert engramdb_client.llen("mylist") == 2000
    assert engramdb_client.hlen("myhash") == 1
