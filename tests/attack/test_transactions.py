"""Attacks on transactions and scripts: a failed pipeline must not half-apply.

Each test is one attack: pipelines that fail at queue time, kill -9 in the middle of a large
EXEC, transactions and watch lists grown without bound, scripts that never end, eat memory,
try to escape the sandbox or to leave half their writes behind.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time

import hiredis
import pytest
import redis

from engramdb.server.handlers.scripting import SCRIPT_TIME_LIMIT
from engramdb.server.handlers.transactions import MAX_QUEUED_COMMANDS, MAX_WATCHED_KEYS
from tests.attack.conftest import Raw, Served, serve, wait_for
from tests.server_faults.conftest import MORE, ServeFactory

__all__ = ["serve"]


def command(*parts: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def client(server: Served) -> redis.Redis:
    return redis.Redis(port=server.port, socket_timeout=30)


def test_three_pipelines_failing_at_queue_time_leave_the_counter_unchanged(
    serve: ServeFactory,
) -> None:
    server = serve("--durability", "sync")
    with server.raw() as conn:
        for _ in range(3):
            conn.send(command("MULTI") + command("INCR", "cnt") + command("GET") + command("EXEC"))
            ok, queued, arity, aborted = conn.replies(4)
            assert (ok, queued) == (b"OK", b"QUEUED")
            assert isinstance(arity, hiredis.ReplyError)
            assert str(aborted).startswith("EXECABORT")
        conn.send(command("GET", "cnt"))
        assert conn.replies(1) == [None]


def test_kill_9_during_a_large_exec_leaves_all_or_none_of_it(
    serve: ServeFactory, soak: bool
) -> None:
    server = serve("--durability", "sync")
    rounds, size = (200, 2000) if soak else (6, 1000)
    rng = random.Random(7)
    outcomes: list[str] = []
    for round_ in range(rounds):
        body = [command("MULTI")]
        body += [command("SET", f"r{round_}:{i}", "x" * 64) for i in range(size)]
        body.append(command("EXEC"))
        raw = Raw(("127.0.0.1", server.port))
        acknowledged = False
        try:
            raw.send(b"".join(body))
            time.sleep(rng.uniform(0, 0.2))
            raw.sock.settimeout(0.001)
            with contextlib.suppress(TimeoutError):
                raw.reader.feed(raw.sock.recv(1 << 20))
            replies: list[object] = []
            while (reply := raw.reader.gets()) is not MORE:
                replies.append(reply)
            acknowledged = len(replies) == size + 2  # OK, QUEUED x size, the EXEC array
            server.kill()
        finally:
            raw.close()
        server.start()
        with client(server) as check:
            present = len(check.keys(f"r{round_}:*"))
        assert present in (0, size), f"round {round_}: {present} of {size} keys survived"
        if acknowledged:
            assert present == size, "an acknowledged EXEC was lost"
        outcomes.append("all" if present else "none")
    print("kill -9 during EXEC:", {o: outcomes.count(o) for o in ("all", "none")})


def test_a_failed_exec_in_a_shared_commit_batch_harms_no_other_client(serve: ServeFactory) -> None:
    server = serve("--durability", "sync")
    with client(server) as setup:
        setup.set("text", "not a number")
    threads, rounds = 6, 20
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with client(server) as mine:
                for i in range(rounds):
                    pipe = mine.pipeline()
                    pipe.set(f"w{n}:{i}", "1").incr("text").set(f"v{n}:{i}", "1")
                    results = pipe.execute(raise_on_error=False)
                    assert isinstance(results[1], redis.ResponseError)
                    mine.set(f"plain{n}:{i}", "1")
        except BaseException as e:  # surfaced below
            errors.append(e)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors, errors
    with client(server) as check:
        for prefix in ("w", "v", "plain"):
            assert len(check.keys(f"{prefix}*")) == threads * rounds


def test_a_transaction_grown_past_its_bound_is_aborted(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    with server.raw(timeout=60) as conn:
        conn.send(command("MULTI"))
        assert conn.replies(1) == [b"OK"]
        chunk = command("SET", "k", "v") * 10_000
        for _ in range(MAX_QUEUED_COMMANDS // 10_000):
            conn.send(chunk)
            assert conn.replies(10_000)[-1] == b"QUEUED"
        conn.send(command("SET", "k", "v") + command("EXEC") + command("GET", "k"))
        too_big, aborted, value = conn.replies(3)
        assert "transaction too large" in str(too_big)
        assert str(aborted).startswith("EXECABORT")
        assert value is None


def test_watching_keys_without_bound_is_refused(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    with server.raw() as conn:
        keys = [f"k{i}" for i in range(MAX_WATCHED_KEYS)]
        conn.send(command("WATCH", *keys) + command("WATCH", "one-more"))
        ok, refused = conn.replies(2)
        assert ok == b"OK"
        assert "too many watched keys" in str(refused)


def test_a_script_that_never_ends_is_stopped_even_inside_pcall(serve: ServeFactory) -> None:
    server = serve("--durability", "sync")
    loops = [
        "redis.call('set', 'spun', '1') while true do end",
        "redis.call('set', 'spun', '1') while true do pcall(function() while true do end end) end",
        "redis.call('set', 'spun', '1') "
        "while true do xpcall(function() while true do end end, function(e) return e end) end",
    ]
    with client(server) as r:
        for script in loops:
            with pytest.raises(redis.ResponseError, match=f"longer than {SCRIPT_TIME_LIMIT:g}s"):
                r.eval(script, 0)
            assert r.get("spun") is None
        assert r.eval("return redis.call('set', 'after', 'ok')", 0) == b"OK"
        assert r.get("after") == b"ok"


def test_a_script_that_eats_memory_is_stopped_and_the_server_lives(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    with client(server) as r:
        with pytest.raises(redis.ResponseError, match="nothing it wrote"):
            r.eval(
                "redis.call('set', 'ate', '1') local t = {} "
                "for i = 1, 1e9 do t[i] = string.rep('x', 1024) .. i end",
                0,
            )
        assert r.get("ate") is None
        # the same through replies handed to Lua by redis.call (tables built from Python)
        r.rpush("big", *[b"z%d" % i + b"x" * 1000 for i in range(200)])
        with pytest.raises(redis.ResponseError, match="nothing it wrote"):
            r.eval(
                "redis.call('set', 'ate', '1') local t = {} "
                "for i = 1, 1e9 do t[i] = redis.call('lrange', KEYS[1], 0, -1) end",
                1,
                "big",
            )
        assert r.get("ate") is None
        assert r.eval("return string.rep('y', 3)", 0) == b"yyy"
        assert r.ping()
    assert server.alive()


SANDBOX_ESCAPES = [
    "return os.execute('touch /tmp/pwned')",
    "return io.open('/etc/passwd'):read('*a')",
    "return require('os')",
    "return loadstring('return 1')()",
    "return load(function() return nil end)",
    "return dofile('/etc/passwd')",
    "return loadfile('/etc/passwd')",
    "return debug.getinfo(1)",
    "return getfenv(0)",
    "return setfenv(1, {})",
    "return python.eval('1')",
    "return string.dump(function() end)",
    "return package.loaded",
    "return module('x')",
    "return coroutine.create(function() end)",
    "return newproxy(true)",
    "return collectgarbage('count')",
    "return getmetatable('').__index",
    "string.upper = function() return 'pwned' end",
    "redis.call = function() return 'pwned' end",
    "KEYS = nil; return 1",
    "_G.x = 1",
]


@pytest.mark.parametrize("script", SANDBOX_ESCAPES)
def test_a_script_cannot_leave_its_sandbox(serve: ServeFactory, script: str) -> None:
    server = serve("--durability", "none")
    with client(server) as r:
        try:
            escaped = r.eval(script, 0)
        except redis.ResponseError as e:
            escaped, refusal = None, str(e)
        else:
            refusal = ""
        assert escaped is None
        assert "script" in refusal or refusal == ""
        # and nothing it tried is visible to the next script
        assert r.eval("return string.upper('a')", 0) == b"A"
        assert r.eval("return redis.call('ping')", 0) == b"PONG"


def test_a_script_cannot_change_what_the_next_script_sees(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    with client(server) as r:
        r.eval("rawset(string, 'upper', function() return 'pwned' end) return 1", 0)
        r.eval("rawset(redis, 'call', function() return 'pwned' end) return 1", 0)
        r.eval("rawset(math, 'floor', nil) return 1", 0)
        assert r.eval("return string.upper('a')", 0) == b"A"
        assert r.eval("return ('a'):upper()", 0) == b"A"
        assert r.eval("return math.floor(2.5)", 0) == 2
        assert r.eval("return redis.call('ping')", 0) == b"PONG"


def test_a_failing_script_inside_exec_leaves_no_half_of_itself(serve: ServeFactory) -> None:
    server = serve("--durability", "sync")
    with server.raw() as conn:
        conn.send(
            command("MULTI")
            + command("SET", "a", "1")
            + command("EVAL", "redis.call('set', 'b', '1') error('half way')", "0")
            + command("SET", "c", "1")
            + command("EXEC")
            + command("MGET", "a", "b", "c")
        )
        replies = conn.replies(6)
        assert replies[:4] == [b"OK", b"QUEUED", b"QUEUED", b"QUEUED"]
        first, failed, last = replies[4]
        assert (first, last) == (b"OK", b"OK")
        assert "half way" in str(failed)
        assert replies[5] == [b"1", None, b"1"]


def test_a_client_that_dies_mid_multi_applies_nothing(serve: ServeFactory) -> None:
    server = serve("--durability", "sync")
    conn = server.raw()
    conn.send(command("MULTI") + command("SET", "orphan", "1") + command("INCR", "orphans"))
    assert conn.replies(3) == [b"OK", b"QUEUED", b"QUEUED"]
    conn.close()
    with client(server) as r:
        wait_for(lambda: len(r.client_list()) == 1, 10, "the dead client to be gone")
        assert r.mget("orphan", "orphans") == [None, None]
