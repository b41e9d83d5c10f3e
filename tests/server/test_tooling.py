"""What Redis tools see of ``engramdb serve``: INFO, CONFIG, CLIENT, COMMAND, MEMORY,
SLOWLOG, MONITOR, CLIENT PAUSE, SCAN cursors, redis-cli, redis-benchmark and valkey-glide.

Where a ``redis-server`` is installed, shapes and field sets are compared with it.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import engramdb
from engramdb.protocol.resp import encode_command
from tests.server.conftest import Served as PeerServed
from tests.server_faults.conftest import Raw, ServeFactory, serve, wait_for

__all__ = ["serve"]

WAIT = 10.0


@pytest.fixture
def engram(engramdb_server: PeerServed) -> Iterator[redis.Redis]:
    client = engramdb_server.client()
    client.flushall()
    yield client
    client.config_set("slowlog-log-slower-than", "10000")
    client.config_set("slowlog-max-len", "128")
    client.close()


def _call(port: int, *args: bytes | str | int) -> Any:
    """One command's reply as it came off the wire (no client-side reshaping)."""
    with Raw(("127.0.0.1", port), WAIT) as conn:
        conn.send(encode_command(*args))
        (reply,) = conn.replies(1)
    return reply


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# INFO ------------------------------------------------------------------------------------


def test_info_has_redis_sections_and_standard_fields(
    engramdb_server: PeerServed, engram: redis.Redis
) -> None:
    engram.set("a", "1")
    text = _call(engramdb_server.port, "INFO").decode()
    titles = re.findall(r"^# (\w+)", text, re.MULTILINE)
    for title in ("Server", "Clients", "Memory", "Persistence", "Stats", "Replication", "CPU",
                  "Keyspace"):  # fmt: skip
        assert title in titles, title
    info = engram.info()
    assert info["arch_bits"] == 64
    assert info["role"] == "master"
    assert info["redis_mode"] == "standalone"
    assert info["connected_clients"] >= 1
    assert info["db0"] == {"keys": 1, "expires": 0, "avg_ttl": 0}
    assert info["total_commands_processed"] >= 2
    assert isinstance(info["used_memory"], int)
    assert info["used_memory"] > 0
    assert isinstance(info["used_cpu_user"], float)


def test_replicaof_no_one_is_a_primary_already_and_following_is_refused(
    engram: redis.Redis,
) -> None:
    assert engram.replicaof("NO", "ONE") == b"OK"
    assert engram.execute_command("SLAVEOF", "no", "one") is True  # redis-py parses it
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        engram.execute_command("REPLICAOF", "NO ONE")
    with pytest.raises(redis.ResponseError, match="cluster engine"):
        engram.replicaof("127.0.0.1", 6379)
    assert engram.info("replication")["role"] == "master"


def test_info_takes_sections_in_any_number_and_case(
    engramdb_server: PeerServed, engram: redis.Redis
) -> None:
    port = engramdb_server.port
    text = _call(port, "INFO", "CLIENTS", "replication").decode()
    assert re.findall(r"^# (\w+)", text, re.MULTILINE) == ["Clients", "Replication"]
    assert _call(port, "INFO", "no-such-section") == b""
    everything = _call(port, "INFO", "everything").decode()
    assert "# Latencystats" in everything
    assert "# Commandstats" in everything
    assert "latency_percentiles_usec_info:p50=" in everything


def test_info_section_fields_match_redis(
    engramdb_server: PeerServed, redis_server: PeerServed
) -> None:
    """The standard fields tools read are there, in every section Redis has."""
    wanted = {
        "server": {"redis_version", "redis_mode", "os", "arch_bits", "process_id", "run_id",
                   "tcp_port", "uptime_in_seconds", "uptime_in_days", "hz"},
        "clients": {"connected_clients", "maxclients", "blocked_clients"},
        "memory": {"used_memory", "used_memory_human", "used_memory_rss", "used_memory_peak",
                   "maxmemory", "maxmemory_policy", "mem_fragmentation_ratio"},
        "persistence": {"loading", "rdb_changes_since_last_save", "rdb_bgsave_in_progress",
                        "rdb_last_save_time", "aof_enabled", "aof_rewrite_in_progress"},
        "stats": {"total_connections_received", "total_commands_processed",
                  "instantaneous_ops_per_sec", "total_net_input_bytes",
                  "total_net_output_bytes", "rejected_connections", "pubsub_channels",
                  "pubsub_patterns", "total_error_replies", "evicted_keys"},
        "replication": {"role", "connected_slaves", "master_replid", "master_repl_offset"},
        "cpu": {"used_cpu_sys", "used_cpu_user"},
    }  # fmt: skip
    for section, fields in wanted.items():
        for server in (engramdb_server, redis_server):
            client = server.client()
            found = set(client.info(section))
            client.close()
            assert fields <= found, (server.name, section, fields - found)


def test_config_resetstat_zeroes_info_but_not_metrics(serve: ServeFactory) -> None:
    metrics_port = _free_port()
    server = serve("--durability", "none", "--metrics-port", str(metrics_port))
    client = redis.Redis(port=server.port)
    assert client.config_resetstat()
    for _ in range(5):
        client.set("k", "v")
    with pytest.raises(redis.ResponseError):
        client.execute_command("GET", "a", "b")
    assert client.info("commandstats")["cmdstat_set"]["calls"] == 5
    assert client.info("errorstats") == {"errorstat_ERR": {"count": 1}}
    assert client.config_resetstat()
    info = client.info("all")
    assert "cmdstat_set" not in info
    assert "errorstat_ERR" not in info
    assert info["total_commands_processed"] <= 2  # the RESETSTAT and this INFO at most
    client.set("k", "v")
    assert client.info("commandstats")["cmdstat_set"]["calls"] == 1
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    exposition = urllib.request.urlopen(url, timeout=WAIT).read().decode()
    counted = re.search(r'^engramdb_commands_total\{command="set"\} (\S+)', exposition, re.M)
    assert counted is not None
    assert float(counted.group(1)) == 6
    client.close()


def test_errorstats_count_any_code_as_redis_takes_it_within_a_bound(serve: ServeFactory) -> None:
    metrics_port = _free_port()
    server = serve("--durability", "none", "--metrics-port", str(metrics_port))
    raw = Raw(("127.0.0.1", server.port), WAIT)  # replies as sent: bytes that are not UTF-8

    def fail(text: bytes) -> bytes:
        raw.send(encode_command(b"EVAL", b"return redis.error_reply('" + text + b"')", b"0"))
        reply = raw.sock.recv(1 << 16)
        assert reply[:1] == b"-"
        return reply

    assert fail(b"\xff\xfeBAD oops") == b"-\xff\xfeBAD oops\r\n"
    fail(b"lower case")  # a code is whatever precedes the first space, as in Redis
    fail(b"NOSPACE")  # no space in the first 32 bytes: ERR
    raw.send(encode_command(b"INFO", b"errorstats"))
    (stats,) = raw.replies(1)
    assert b"errorstat_\xff\xfeBAD:count=1" in stats
    assert b"errorstat_lower:count=1" in stats
    assert b"errorstat_ERR:count=1" in stats
    for i in range(130):
        fail(b"CODE%d x" % i)
    counted = redis.Redis(port=server.port, decode_responses=True).info("errorstats")
    assert len(counted) == 128 + 1  # 128 distinct codes, then everything new in one line
    assert counted["errorstat_ERRORSTATS_OVERFLOW"] == {"count": 5}  # 3 + 130 - 128
    assert counted["errorstat_lower"] == {"count": 1}
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    exposition = urllib.request.urlopen(url, timeout=WAIT).read().decode()
    assert 'type="\ufffd\ufffdBAD"' in exposition  # a label must be UTF-8
    assert 'type="ERRORSTATS_OVERFLOW"' in exposition
    raw.close()


# CONFIG ----------------------------------------------------------------------------------


def test_config_get_reports_the_settings_that_exist(engram: redis.Redis) -> None:
    everything = engram.config_get("*")
    assert len(everything) > 20
    assert everything["appendonly"] == "no"  # the session server runs --durability none
    assert everything["maxmemory"] == "0"
    assert everything["maxmemory-policy"] == "noeviction"
    assert everything["databases"] == "16"  # SELECT 0-15
    assert "dir" not in everything
    assert "dbfilename" not in everything
    assert engram.config_get("slowlog-*") == {
        "slowlog-log-slower-than": "10000",
        "slowlog-max-len": "128",
    }
    assert engram.config_get("MAXMEMORY", "appendfsync") == {
        "maxmemory": "0",
        "appendfsync": "no",
    }


def test_config_set_is_all_or_nothing(engram: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match=r"slowlog-max-len.*integer"):
        engram.config_set("slowlog-log-slower-than", "5", "slowlog-max-len", "many")
    assert engram.config_get("slowlog-log-slower-than") == {"slowlog-log-slower-than": "10000"}
    assert engram.execute_command("CONFIG", "SET", "slowlog-log-slower-than", "5",
                                  "slowlog-max-len", "7")  # fmt: skip
    assert engram.config_get("slowlog-*") == {
        "slowlog-log-slower-than": "5",
        "slowlog-max-len": "7",
    }


def test_config_set_refuses_what_does_not_exist_or_cannot_change(engram: redis.Redis) -> None:
    with pytest.raises(
        redis.ResponseError, match="Unknown option or number of arguments for CONFIG SET - 'foo'"
    ):
        engram.config_set("foo", "1")
    with pytest.raises(redis.ResponseError, match=r"argument 'port'.*immutable"):
        engram.config_set("port", "1")
    assert engram.config_set("maxmemory", "0")  # what it already is: accepted
    with pytest.raises(redis.ResponseError, match=r"maxmemory.*immutable"):
        engram.config_set("maxmemory", "100mb")
    with pytest.raises(redis.ResponseError, match="requirepass"):
        engram.config_set("requirepass", "x")


def test_config_set_timeout_closes_idle_clients(serve: ServeFactory) -> None:
    server = serve("--durability", "none", "--testing")
    admin = redis.Redis(port=server.port)
    with server.raw() as idle:
        idle.send(encode_command(b"PING"))
        assert idle.replies(1) == [b"PONG"]
        assert admin.config_set("timeout", "30")
        assert admin.config_get("timeout") == {"timeout": "30"}
        admin.execute_command("ENGRAM.DEBUG", "CLOCK", "ADVANCE", "31")
        assert idle.until_closed()[1] in ("eof", "reset")
    admin.close()


# CLIENT ----------------------------------------------------------------------------------


def _fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split(" ") if "=" in part)


def test_client_list_has_redis_fields(
    engramdb_server: PeerServed, redis_server: PeerServed
) -> None:
    lines = []
    for server in (engramdb_server, redis_server):
        client = server.client()
        client.client_setname("me")
        lines.append(client.execute_command("CLIENT", "LIST", "ID", client.client_id()))
        client.close()
    ours, theirs = (_fields(line.decode().strip()) for line in lines)
    assert set(theirs) - {"rbs", "rbp"} <= set(ours)
    assert ours["name"] == "me"
    assert ours["flags"] == "N"
    assert ours["cmd"] == "client|list"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", ours["laddr"])
    assert int(ours["fd"]) > 0


def test_client_flags_show_subscribers_transactions_and_no_evict(
    engramdb_server: PeerServed, engram: redis.Redis
) -> None:
    with Raw(("127.0.0.1", engramdb_server.port), WAIT) as conn:
        conn.send(encode_command(b"CLIENT", b"NO-EVICT", b"on") + encode_command(b"MULTI"))
        conn.send(encode_command(b"CLIENT", b"INFO"))
        assert conn.replies(2) == [b"OK", b"OK"]
        (_refused,) = conn.replies(1)  # CLIENT inside MULTI aborts it, as documented
        conn.send(encode_command(b"DISCARD") + encode_command(b"CLIENT", b"INFO"))
        _, line = conn.replies(2)
        assert _fields(line.decode().strip())["flags"] == "e"
        conn.send(encode_command(b"SUBSCRIBE", b"c"))
        conn.replies(1)
        (pubsub,) = engram.client_list(_type="pubsub")
        assert pubsub["flags"] == "Pe"
        assert pubsub["sub"] == "1"


def test_client_kill_by_address_id_type_and_self(
    engramdb_server: PeerServed, engram: redis.Redis
) -> None:
    port = engramdb_server.port
    victims = [Raw(("127.0.0.1", port), WAIT) for _ in range(4)]
    ids = []
    for victim in victims:
        victim.send(encode_command(b"CLIENT", b"ID"))
        ids.extend(victim.replies(1))
    listed = {int(c["id"]): c for c in engram.client_list()}
    assert engram.client_kill(listed[ids[0]]["addr"])  # the old form: CLIENT KILL addr:port
    assert engram.client_kill_filter(_id=ids[1]) == 1
    with pytest.raises(redis.ResponseError, match="No such client"):
        engram.client_kill("10.1.2.3:4")
    victims[3].send(encode_command(b"CLIENT", b"KILL", b"ID", str(ids[3]), b"SKIPME", b"no"))
    replies, _ = victims[3].until_closed()
    assert replies == [1]  # its own kill is answered, then it is closed
    # LADDR is the server's side of the connection: every client but this one goes.
    assert engram.client_kill_filter(laddr=listed[ids[2]]["laddr"], skipme=True) >= 1
    for victim in victims:
        assert victim.until_closed()[1] in ("eof", "reset")
        victim.close()
    assert engram.ping()
    assert engram.info("stats")["killed_clients"] >= 4


def test_client_pause_holds_writes_until_unpause(
    engramdb_server: PeerServed, engram: redis.Redis
) -> None:
    writer = engramdb_server.client()
    assert engram.client_pause(60_000, all=False)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (writer.set("paused", "1"), done.set()))
    thread.start()
    assert engram.get("paused") is None  # reads go on; the write waits
    assert not done.is_set()
    assert engram.client_unpause()
    thread.join(WAIT)
    assert done.is_set()
    assert engram.get("paused") == b"1"
    writer.close()


# COMMAND ---------------------------------------------------------------------------------


def test_command_info_matches_redis_for_shared_commands(
    engramdb_server: PeerServed, redis_server: PeerServed
) -> None:
    ours = {i[0]: i for i in _call(engramdb_server.port, "COMMAND", "INFO")}
    names = [name for name in ours if not name.startswith(b"engram")]
    theirs = dict(zip(names, _call(redis_server.port, "COMMAND", "INFO", *names)))
    compared = 0
    for name in names:
        if theirs[name] is None:
            continue
        compared += 1
        # arity, first key, last key, step
        assert ours[name][1] == theirs[name][1], name
        assert ours[name][3:6] == theirs[name][3:6], name
    assert compared >= 80
    assert _call(engramdb_server.port, "COMMAND", "COUNT") == len(ours)


def test_command_list_docs_and_getkeys(engramdb_server: PeerServed, engram: redis.Redis) -> None:
    port = engramdb_server.port
    names = _call(port, "COMMAND", "LIST")
    assert b"client|kill" in names
    assert b"get" in names
    assert b"publish" in names
    assert _call(port, "COMMAND", "LIST", "FILTERBY", "PATTERN", "h*get*") == [
        b"hget",
        b"hmget",
        b"hgetall",
    ]
    pubsub = _call(port, "COMMAND", "LIST", "FILTERBY", "ACLCAT", "pubsub")
    assert b"subscribe" in pubsub
    assert b"get" not in pubsub
    docs = _call(port, "COMMAND", "DOCS", "get", "client")
    assert docs[1][docs[1].index(b"group") + 1] == b"string"
    client_docs = docs[3]
    assert b"client|kill" in client_docs[client_docs.index(b"subcommands") + 1]
    assert _call(port, "COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2") == [b"a", b"b"]
    assert _call(port, "COMMAND", "GETKEYS", "EVAL", "return 1", "2", "k1", "k2", "arg") == [
        b"k1",
        b"k2",
    ]
    with pytest.raises(redis.ResponseError, match="no key arguments"):
        engram.command_getkeys("PING")


# MEMORY, SLOWLOG, MONITOR ------------------------------------------------------------------


def test_memory_usage_grows_with_the_value(engram: redis.Redis) -> None:
    engram.set("small", "x")
    engram.set("big", "x" * 100_000)
    small, big = engram.memory_usage("small"), engram.memory_usage("big")
    assert small is not None
    assert big is not None
    assert big > 100_000 > small > 0
    assert engram.memory_usage("missing") is None


def test_memory_usage_counts_the_elements_of_a_structure(engram: redis.Redis) -> None:
    """Lists, hashes, sets and sorted sets are stored per element: their usage is the
    elements', not only the header's."""
    engram.rpush("list", *[b"x" * 100] * 2000)
    engram.hset("hash", mapping={f"f{i}": "y" * 100 for i in range(2000)})
    engram.sadd("set", *[f"{i:0100d}" for i in range(2000)])
    engram.zadd("zset", {f"{i:0100d}": i for i in range(2000)})
    for key in ("list", "hash", "set", "zset"):
        usage = engram.memory_usage(key)
        assert usage is not None
        assert usage > 2000 * 100, key
        exact = engram.memory_usage(key, samples=0)
        assert exact is not None
        assert exact > 2000 * 100, key
    with pytest.raises(redis.ResponseError):
        engram.execute_command("MEMORY", "USAGE", "list", "SAMPLES", "-1")


def test_reset_returns_the_connection_to_database_0(engram: redis.Redis) -> None:
    engram.set("k", "in 0")
    with engram.client() as one:  # a single connection
        one.execute_command("SELECT", 3)
        one.set("k", "in 3")
        assert one.execute_command("RESET") == "RESET"
        assert one.get("k") == b"in 0"


def test_redis_cli_memkeys_sees_the_bytes(engramdb_server: PeerServed, engram: redis.Redis) -> None:
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed")
    engram.set("s", "v" * 5000)
    engram.rpush("l", *["item"] * 100)
    out = subprocess.run(
        [cli, "-p", str(engramdb_server.port), "--memkeys"],
        capture_output=True, timeout=60, check=True,
    ).stdout.decode()  # fmt: skip
    found = re.search(r"(\d+) strings with (\d+) bytes", out)
    assert found is not None, out
    assert int(found.group(1)) == 1, out
    assert int(found.group(2)) > 5000, out
    assert re.search(r"1 lists with [1-9]\d* bytes", out), out


def test_slowlog_records_commands_over_the_threshold(engram: redis.Redis) -> None:
    engram.config_set("slowlog-log-slower-than", "0")
    assert engram.slowlog_reset()
    engram.get("a-key")
    engram.execute_command("ECHO", "y" * 1000)
    engram.execute_command("MGET", *[f"k{i}" for i in range(40)])
    entries = engram.slowlog_get(10)
    commands = [e["command"] for e in entries]
    assert b"GET a-key" in commands
    assert b"SLOWLOG RESET" in commands
    echo = next(c for c in commands if c.startswith(b"ECHO"))
    assert echo == b"ECHO " + b"y" * 128 + b"... (872 more bytes)"
    mget = next(c for c in commands if c.startswith(b"MGET"))
    assert mget.endswith(b" k29 ... (10 more arguments)")  # 32 arguments shown
    entry = entries[0]
    assert isinstance(entry["start_time"], int)
    assert isinstance(entry["duration"], int)
    assert re.fullmatch(rb"127\.0\.0\.1:\d+", entry["client_address"])
    engram.config_set("slowlog-max-len", "2")
    for _ in range(5):
        engram.ping()
    assert engram.slowlog_len() == 2
    engram.config_set("slowlog-log-slower-than", "-1")
    assert engram.slowlog_reset()
    engram.ping()
    assert engram.slowlog_len() == 0


def test_monitor_streams_commands_as_redis_prints_them(
    engramdb_server: PeerServed, engram: redis.Redis
) -> None:
    with Raw(("127.0.0.1", engramdb_server.port), WAIT) as monitor:
        monitor.send(encode_command(b"MONITOR"))
        assert monitor.replies(1) == [b"OK"]
        engram.set("key", 'a "quoted"\nvalue\x01')
        engram.config_get("maxmemory")  # admin commands are not shown
        engram.get("key")
        first, second = monitor.replies(2)
    pattern = rb'\d{10}\.\d{6} \[0 127\.0\.0\.1:\d+\] "SET" "key" "a \\"quoted\\"\\nvalue\\x01"'
    assert re.fullmatch(pattern, first), first
    assert re.fullmatch(rb'\d{10}\.\d{6} \[0 127\.0\.0\.1:\d+\] "GET" "key"', second), second


# SCAN cursors ------------------------------------------------------------------------------


def _scan_all(client: redis.Redis, count: int, cursor: int = 0) -> tuple[list[bytes], set[int]]:
    found: list[bytes] = []
    cursors: set[int] = set()
    while True:
        cursor, keys = client.scan(cursor, count=count)
        found.extend(keys)
        cursors.add(cursor)
        if cursor == 0:
            return found, cursors


def test_scan_cursors_fit_in_64_bits_and_return_every_key_once(engram: redis.Redis) -> None:
    long_keys = [f"{i:04d}:" + "k" * 1000 for i in range(150)]
    engram.mset({key: "v" for key in long_keys})
    found, cursors = _scan_all(engram, 7)
    assert sorted(found) == sorted(k.encode() for k in long_keys)  # each exactly once
    assert all(0 <= c < 1 << 63 for c in cursors)


def test_scan_under_concurrent_writes_misses_no_key_that_stays(engram: redis.Redis) -> None:
    stay = [f"stay:{i}" for i in range(300)]
    engram.mset({key: "1" for key in stay})
    found: list[bytes] = []
    cursor = 0
    churn = 0
    while True:
        cursor, keys = engram.scan(cursor, count=9)
        found.extend(keys)
        # Between pages, others add and remove keys all over the key space.
        engram.mset({f"a:{churn}": "x", f"stay:{churn % 300}x": "x", f"z:{churn}": "x"})
        engram.delete(f"a:{churn - 1}", f"z:{churn - 1}")
        churn += 1
        if cursor == 0:
            break
    assert {k.encode() for k in stay} <= set(found)
    assert len([k for k in found if k.startswith(b"stay:") and k.count(b"x") == 0]) == 300


def test_scan_resumes_with_a_cursor_from_before_a_restart(serve: ServeFactory) -> None:
    server = serve("--durability", "sync")
    client = redis.Redis(port=server.port)
    keys = [f"user:{i:05d}" for i in range(500)]
    client.mset({key: "v" for key in keys})
    found: list[bytes] = []
    cursor = 0
    for _ in range(20):
        cursor, page = client.scan(cursor, count=10)
        found.extend(page)
    client.close()
    server.kill()
    server.start()  # the new process never issued this cursor
    client = redis.Redis(port=server.port)
    rest, _ = _scan_all(client, 10, cursor)
    client.close()
    # The cursor table is shared through the data directory: the resume is exact.
    assert sorted(found + rest) == sorted(k.encode() for k in keys)


# tools -------------------------------------------------------------------------------------


def test_plain_redis_benchmark_runs_every_default_test(
    engramdb_server: PeerServed, engram: redis.Redis
) -> None:
    tool = shutil.which("redis-benchmark")
    if tool is None:
        pytest.skip("redis-benchmark is not installed")
    command = [tool, "-p", str(engramdb_server.port), "-n", "500", "-c", "5", "-q"]
    done = subprocess.run(command, capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode().replace("\r", "\n")
    results = re.findall(r"(?m)^(\S+).*: ([\d.]+) requests per second", out)
    names = {name.rstrip(":") for name, _ in results}
    # every default test of redis-benchmark 7, sets and sorted sets included
    assert {"SET", "GET", "INCR", "LPUSH", "SADD", "HSET", "SPOP", "ZADD", "ZPOPMIN", "MSET"} <= {
        n.split()[0] for n in names
    }, out
    assert len(results) >= 17, out
    assert all(float(rate) > 0 for _, rate in results), out


def _glide(port: int, body: str) -> Any:
    """What ``body`` (the body of ``async def run(glide, address)``) returns, run by
    valkey-glide in a fresh Python: importing glide puts proxies of its deprecated modules
    in ``sys.modules`` that warn when anything walks them (hypothesis does), which would
    break later tests run with warnings as errors."""
    if importlib.util.find_spec("glide") is None:
        pytest.skip("valkey-glide is not installed")
    script = "\n".join([
        "import asyncio, glide",
        "async def run(glide, address):",
        textwrap.indent(textwrap.dedent(body), "    "),
        f"address = [glide.NodeAddress('127.0.0.1', {port})]",
        "print(repr(asyncio.run(run(glide, address))))",
    ])  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return ast.literal_eval(done.stdout.decode().strip().splitlines()[-1])


def test_valkey_glide_connects_and_works(engramdb_server: PeerServed, engram: redis.Redis) -> None:
    body = """
        config = glide.GlideClientConfiguration(address, request_timeout=5000)
        client = await glide.GlideClient.create(config)
        try:
            return [
                await client.set("glide", "ok"),
                await client.get("glide"),
                await client.incr("n"),
                await client.hset("h", {"f": "v"}),
                await client.lpush("l", ["a"]),
            ]
        finally:
            await client.close()
    """
    assert _glide(engramdb_server.port, body) == ["OK", b"ok", 1, 1, 1]


def test_valkey_glide_receives_published_messages_as_resp3_pushes(
    engramdb_server: PeerServed, engram: redis.Redis
) -> None:
    """glide subscribes when it connects (HELLO 3, then SUBSCRIBE/PSUBSCRIBE) and reads the
    push messages while the same connection keeps answering commands."""
    body = """
        modes = glide.GlideClientConfiguration.PubSubChannelModes
        subscriptions = glide.GlideClientConfiguration.PubSubSubscriptions(
            channels_and_patterns={modes.Exact: {"news"}, modes.Pattern: {"ne*"}},
            callback=None,
            context=None,
        )
        listener = await glide.GlideClient.create(
            glide.GlideClientConfiguration(
                address, request_timeout=5000, pubsub_subscriptions=subscriptions
            )
        )
        client = await glide.GlideClient.create(
            glide.GlideClientConfiguration(address, request_timeout=5000)
        )
        try:
            for _ in range(200):  # glide subscribes in the background once connected
                numsub = await client.pubsub_numsub(["news"])
                if numsub == {b"news": 1} and await client.pubsub_numpat() == 1:
                    break
                await asyncio.sleep(0.05)
            replies = [
                await client.publish("hello", "news"),
                await listener.ping(),  # a command between pushes, on the subscriber
                await client.custom_command(["CLIENT", "LIST", "TYPE", "pubsub"]),
            ]
            got = []
            for _ in range(2):
                message = await asyncio.wait_for(listener.get_pubsub_message(), 10)
                got.append((message.channel, message.message, message.pattern))
            return replies, got
        finally:
            await listener.close()
            await client.close()
    """
    replies, got = _glide(engramdb_server.port, body)
    assert replies[:2] == [2, b"PONG"]
    assert b"resp=3" in replies[2]
    assert b"lib-name=GlidePy" in replies[2]
    assert sorted(got, key=repr) == [(b"news", b"hello", None), (b"news", b"hello", b"ne*")]


def test_embedded_writes_and_tooling_share_one_view(serve: ServeFactory, tmp_path: Path) -> None:
    """INFO's keyspace counts what the embedded API wrote into the served directory."""
    server = serve("--durability", "none")
    with engramdb.open(server.data, durability="none") as db:
        db.records("default").put_many([(f"k{i}", {"f": i}) for i in range(7)])
    client = redis.Redis(port=server.port)
    wait_for(lambda: client.info("keyspace").get("db0", {}).get("keys") == 7, WAIT, "7 keys")
    assert client.dbsize() == 7
    client.close()


def test_info_keyspace_lists_every_redis_database(serve: ServeFactory) -> None:
    """db0 is the default set and dbN the set default.N, whoever wrote them; role sets
    and numbers past 15 are not Redis databases."""
    server = serve("--durability", "none")
    with engramdb.open(server.data, durability="none") as db:
        db.records("default").put("a", {"f": 1})
        db.records("default.3").put_many([("b", {"f": 2}), ("c", {"f": 3})])
        db.records("default.12").put("d", {"f": 4})
        db.records("default.16").put("e", {"f": 5})
        db.records("default.03").put("f", {"f": 6})
        db.records("sessions").put("g", {"f": 7})
    text = _call(server.port, "INFO", "keyspace").decode()
    assert re.findall(r"^(db\d+):keys=(\d+),", text, re.MULTILINE) == [
        ("db0", "1"), ("db3", "2"), ("db12", "1"),
    ]  # fmt: skip
