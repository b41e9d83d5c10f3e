"""CLIENT TRACKING (server-assisted client-side caching) of ``engramdb serve``, on real
sockets, reply for reply against ``redis-server`` where one is installed.

Invalidations come from the change log, so they are also checked for writes made by another
process through the embedded API, and for a write acknowledged to one client: by the time
its reply is read, the tracking connection has the invalidation.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

import engramdb
from engramdb.protocol.resp import encode_command
from tests.server.conftest import Served as PeerServed
from tests.server_faults.conftest import Raw, ServeFactory, serve

__all__ = ["serve"]

WAIT = 10.0


class Session:
    """Named raw connections to one server; ``run`` sends a command and returns the next
    ``frames`` frames that connection receives (replies and pushes, in order)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conns: dict[str, Raw] = {}

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self.conns.values():
            conn.close()

    def run(self, who: str, *command: bytes | str, frames: int = 1) -> list[Any]:
        conn = self.conns.get(who)
        if conn is None:
            conn = self.conns[who] = Raw(("127.0.0.1", self.port), WAIT)
        conn.send(encode_command(*command))
        return conn.replies(frames)

    def pipe(self, who: str, commands: list[tuple[str, ...]], frames: int) -> list[Any]:
        """Send ``commands`` in one write (a pipeline) and read ``frames`` frames."""
        self.conns[who].send(b"".join(encode_command(*command) for command in commands))
        return self.conns[who].replies(frames)

    def read(self, who: str, frames: int) -> list[Any]:
        """Frames that arrive without a command (pushes)."""
        return self.conns[who].replies(frames)


def _script(port: int) -> list[Any]:
    """Tracking in every mode, as a client sees it: T tracks, W writes."""
    out: list[Any] = []
    with Session(port) as s:
        s.run("W", "FLUSHALL")
        s.run("T", "HELLO", "3")  # each server's own id and version: not compared
        out += s.run("T", "CLIENT", "TRACKING", "ON")
        out += s.run("T", "GET", "a")
        out += s.run("W", "SET", "a", "1")
        out += s.read("T", 1)  # the key T read changed
        out += s.run("W", "SET", "a", "2")
        out += s.run("T", "PING")  # nothing before the PONG: a key is sent once, then forgotten
        out += s.run("T", "MGET", "a", "b")
        out += s.run("W", "MSET", "a", "3", "b", "4")
        out += s.read("T", 2)  # one message per key
        out += s.run("T", "HGET", "h", "f")
        out += s.run("W", "HSET", "h", "f", "v")
        out += s.read("T", 1)
        out += s.run("T", "LRANGE", "l", "0", "-1")
        out += s.run("W", "RPUSH", "l", "x")
        out += s.read("T", 1)
        out += s.run("T", "GET", "a")
        out += s.run("T", "SET", "a", "5", frames=2)  # its own write: after the reply
        out += s.run("T", "CLIENT", "TRACKING", "ON", "NOLOOP")
        out += s.run("T", "GET", "a")
        out += s.run("T", "SET", "a", "6")  # NOLOOP: not for its own writes
        out += s.run("T", "PING")
        out += s.run("T", "GET", "c")
        out += s.run("W", "FLUSHALL")
        out += s.read("T", 1)  # a flush: drop everything (null)
        out += s.run("T", "CLIENT", "TRACKINGINFO")
        out += s.run("T", "CLIENT", "GETREDIR")
        out += s.run("T", "CLIENT", "TRACKING", "OFF")
        out += s.run("T", "GET", "a")
        out += s.run("W", "SET", "a", "7")
        out += s.run("T", "PING")
        out += s.run("T", "CLIENT", "GETREDIR")

        # BCAST: every key under a prefix, nothing remembered
        s.run("B", "HELLO", "3")
        out += s.run("B", "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "p:", "PREFIX", "q:")
        out += s.run("W", "MSET", "p:2", "x", "q:1", "y", "z", "1", "p:1", "x")
        out += s.read("B", 2)  # per prefix, its keys sorted
        out += s.run("W", "SET", "z", "2")
        out += s.run("B", "PING")
        out += s.run("B", "CLIENT", "TRACKINGINFO")

        # OPTIN: only the read after CLIENT CACHING yes
        s.run("O", "HELLO", "3")
        out += s.run("O", "CLIENT", "TRACKING", "ON", "OPTIN")
        out += s.run("O", "GET", "o1")
        out += s.run("O", "CLIENT", "CACHING", "YES")
        out += s.run("O", "GET", "o2")
        out += s.run("O", "GET", "o3")
        out += s.run("W", "MSET", "o1", "1", "o2", "2", "o3", "3")
        out += s.read("O", 1)
        out += s.run("O", "PING")
        # as rueidis caches: CLIENT CACHING yes, then the read and its TTL in one MULTI
        for command in (("CLIENT", "CACHING", "YES"), ("MULTI",), ("PTTL", "m"), ("GET", "m")):
            out += s.run("O", *command)
        out += s.run("O", "EXEC")
        out += s.run("W", "SET", "m", "1")
        out += s.read("O", 1)
        out += s.run("O", "PING")
        # a cached read pipelined behind the client's own write (held until it commits)
        out += s.pipe("O", [("SET", "n", "1"), ("CLIENT", "CACHING", "YES"), ("GET", "n")], 3)
        out += s.run("W", "SET", "n", "2")
        out += s.read("O", 1)

        # RESP2: through a REDIRECT to a subscribed connection
        out += s.run("R", "SUBSCRIBE", "__redis__:invalidate")
        (redirect,) = s.run("R2", "CLIENT", "ID")
        s.conns["R2"].close()
        del s.conns["R2"]
        (target,) = s.run("I", "CLIENT", "ID")
        s.conns["I"].close()
        del s.conns["I"]
        out += [redirect > 0, target > 0]
        (target,) = s.run("X", "CLIENT", "ID")
        s.run("R", "UNSUBSCRIBE")
        s.run("X", "SUBSCRIBE", "__redis__:invalidate")
        out += s.run("T2", "CLIENT", "TRACKING", "ON", "REDIRECT", str(target))
        out += s.run("T2", "GET", "r")
        out += s.run("W", "SET", "r", "1")
        out += s.read("X", 1)
        out += s.run("T2", "CLIENT", "TRACKING", "ON", "REDIRECT", str(redirect))  # gone

        # errors
        (own,) = s.run("E", "CLIENT", "ID")
        for args in (
            ("ON", "REDIRECT", "999999999"),
            ("ON", "REDIRECT", str(own), "REDIRECT", str(own)),
            ("ON", "PREFIX", "x"),
            ("ON", "OPTIN", "OPTOUT"),
            ("ON", "BCAST", "OPTIN"),
            ("ON", "BCAST", "PREFIX", "ab", "PREFIX", "a"),
            ("ON", "BCAST", "PREFIX", "a", "PREFIX", "a"),
            ("ON", "BOGUS"),
            ("MAYBE",),
        ):
            out += s.run("E", "CLIENT", "TRACKING", *args)
        out += s.run("E", "CLIENT", "CACHING", "YES")
        out += s.run("B", "CLIENT", "TRACKING", "ON")  # BCAST off without OFF first
        out += s.run("O", "CLIENT", "CACHING", "NO")
        out += s.run("O", "CLIENT", "TRACKING", "ON", "OPTOUT")
    return [repr(frame) for frame in out]


def test_tracking_answers_and_invalidates_as_redis(
    engramdb_server: PeerServed, redis_server: PeerServed
) -> None:
    ours = _script(engramdb_server.port)
    theirs = _script(redis_server.port)
    assert ours == theirs


def test_invalidations_are_sent(engramdb_server: PeerServed) -> None:
    """Without a Redis to compare with: the script's invalidations are there at all."""
    got = _script(engramdb_server.port)
    assert "[b'invalidate', [b'a']]" in got
    assert "[b'invalidate', [b'p:1', b'p:2']]" in got
    assert "[b'invalidate', None]" in got
    assert "[b'message', b'__redis__:invalidate', [b'r']]" in got


def _tracking(port: int) -> tuple[Raw, list[Any]]:
    conn = Raw(("127.0.0.1", port), WAIT)
    conn.send(encode_command("HELLO", "3"))
    conn.replies(1)
    conn.send(encode_command("CLIENT", "TRACKING", "ON"))
    return conn, conn.replies(1)


def test_writes_by_another_process_are_invalidated(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    conn, ok = _tracking(server.port)
    assert ok == [b"OK"]
    conn.send(encode_command("MGET", "from-python", "profile", "untouched"))
    conn.replies(1)
    with engramdb.open(server.data, durability="none") as db:
        db.records("default").put("from-python", {"$string": b"v"})
        db.records("elsewhere").put("profile", {"x": 1})  # not a Redis database
        db.records("default.1").put("profile", {"name": "Ada"})  # database 1: same name
    assert conn.replies(2) == [[b"invalidate", [b"from-python"]], [b"invalidate", [b"profile"]]]
    conn.send(encode_command("PING"))
    assert conn.replies(1) == [b"PONG"]
    conn.close()


def test_the_table_of_remembered_keys_is_bounded(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    admin = redis.Redis(port=server.port)
    admin.config_set("tracking-table-max-keys", "3")
    conn, _ = _tracking(server.port)
    conn.send(encode_command("MGET", "k1", "k2", "k3", "k4", "k5"))
    # Past the bound the oldest keys are invalidated (and forgotten) at once, after the
    # reply (before it, the client would cache the values it was just told to drop).
    assert conn.replies(3) == [
        [None, None, None, None, None],
        [b"invalidate", [b"k1"]],
        [b"invalidate", [b"k2"]],
    ]
    stats = admin.info("stats")
    assert stats["tracking_total_keys"] == 3
    assert admin.info("clients")["tracking_clients"] == 1
    admin.set("k1", "x")  # forgotten: nothing sent
    admin.set("k5", "x")
    assert conn.replies(1) == [[b"invalidate", [b"k5"]]]
    assert sorted(c["flags"] for c in admin.client_list()) == ["N", "t"]
    conn.close()
    admin.close()


def test_closing_the_tracking_connection_forgets_it(serve: ServeFactory) -> None:
    server = serve("--durability", "none")
    admin = redis.Redis(port=server.port)
    conn, _ = _tracking(server.port)
    conn.send(encode_command("GET", "gone"))
    conn.replies(1)
    conn.close()
    admin.set("gone", "1")  # sent to nobody, and nothing breaks
    assert admin.ping()
    info = admin.info()
    assert info["tracking_clients"] == 0
    assert info["tracking_total_keys"] == 0
    admin.close()


@pytest.mark.parametrize("durability", ["sync", "async"])
def test_every_write_to_a_read_key_is_invalidated_in_either_commit_path(
    serve: ServeFactory, durability: str
) -> None:
    """The group commit on the committer thread (sync) and on the loop (async)."""
    server = serve("--durability", durability)
    reader, _ = _tracking(server.port)
    writer = redis.Redis(port=server.port)
    for i in range(20):
        key = f"k{i % 3}"
        reader.send(encode_command("GET", key))
        reader.replies(1)
        writer.set(key, str(i))
        assert reader.replies(1) == [[b"invalidate", [key.encode()]]]
    reader.close()
    writer.close()


def test_a_client_cannot_make_tracking_cost_without_bound(serve: ServeFactory) -> None:
    """Prefixes are capped per client and matched by prefix length, overlaps are found in
    O(n log n), and a name no key can have is not remembered."""
    server = serve("--durability", "none")
    admin = redis.Redis(port=server.port)
    conn = Raw(("127.0.0.1", server.port), WAIT)
    conn.send(encode_command("HELLO", "3"))
    conn.replies(1)
    many = [f"p{i:05}:" for i in range(5_000)]
    nested = [*many, "p04999:x"]  # nests the last one: found past the pairwise check
    flags = [word for prefix in nested for word in ("PREFIX", prefix)]
    conn.send(encode_command("CLIENT", "TRACKING", "ON", "BCAST", *flags))
    (error,) = conn.replies(1)
    assert "overlaps with another provided prefix" in str(error)
    assert "p04999:" in str(error)
    too_many = [word for i in range(10_001) for word in ("PREFIX", f"q{i:05}:")]
    conn.send(encode_command("CLIENT", "TRACKING", "ON", "BCAST", *too_many))
    assert "at most 10000 prefixes" in str(conn.replies(1)[0])
    flags = [word for prefix in many for word in ("PREFIX", prefix)]
    conn.send(encode_command("CLIENT", "TRACKING", "ON", "BCAST", *flags))
    assert conn.replies(1) == [b"OK"]
    admin.mset({"p04321:a": "1", "elsewhere": "2"})
    assert conn.replies(1) == [[b"invalidate", [b"p04321:a"]]]
    assert admin.info("stats")["tracking_total_prefixes"] == 5_000
    conn.close()

    reader, _ = _tracking(server.port)
    reader.send(encode_command("GET", "k" * 5_000))  # longer than any key can be
    assert "TOOBIG" in str(reader.replies(1)[0])
    reader.send(encode_command("GET", "short"))
    reader.replies(1)
    assert admin.info("stats")["tracking_total_keys"] == 1
    reader.close()
    admin.close()


def test_fronts_of_one_postgres_database_invalidate_each_others_writes(
    serve: ServeFactory, postgres_url: str
) -> None:
    """On the postgres engine the log is read on a worker thread (a round trip the loop
    must not wait for): a write through either front reaches a tracking client of one."""
    a = serve("--data", postgres_url, "--durability", "sync")
    b = serve("--data", postgres_url, "--durability", "sync")
    conn, ok = _tracking(b.port)
    assert ok == [b"OK"]
    conn.send(encode_command("MGET", "on-a", "on-b"))
    conn.replies(1)
    redis.Redis(port=a.port).set("on-a", "1")
    assert conn.replies(1) == [[b"invalidate", [b"on-a"]]]
    redis.Redis(port=b.port).set("on-b", "1")
    assert conn.replies(1) == [[b"invalidate", [b"on-b"]]]
    conn.close()


# random sequences, differential against Redis ------------------------------------------

TRACKED = ["a", "b", "c", "p:a", "p:b", "q"]
_PINGED = b"PONG"


def _frames_until_pong(conn: Raw) -> list[Any]:
    """Every frame up to the PONG of a PING just sent (the pushes before it, in order)."""
    out: list[Any] = []
    while True:
        (frame,) = conn.replies(1)
        if frame == _PINGED:
            return out
        out.append(frame)


def _tracking_run(port: int, mode: str, seed: int, steps: int) -> list[str]:
    import random

    rng = random.Random(seed)
    key = lambda: rng.choice(TRACKED)  # noqa: E731
    reads = [
        lambda: ("GET", key()),
        lambda: ("MGET", key(), key()),
        lambda: ("HGET", key(), "f"),
        lambda: ("LRANGE", key(), "0", "-1"),
        lambda: ("STRLEN", key()),
        lambda: ("EXISTS", key()),
        lambda: ("TYPE", key()),
    ]
    writes = [
        lambda: ("SET", key(), str(rng.randrange(5))),
        lambda: ("DEL", key(), key()),
        lambda: ("MSET", key(), "1", key(), "2"),
        lambda: ("INCR", key()),
        lambda: ("HSET", key(), "f", "v"),
        lambda: ("RPUSH", key(), "x"),
        lambda: ("EXPIRE", key(), rng.choice(["1000", "0"])),
        lambda: ("PERSIST", key()),
        lambda: ("RENAME", key(), key()),
    ]
    log: list[str] = []
    with Session(port) as s:
        s.run("W", "FLUSHALL")
        s.run("T", "HELLO", "3")
        options = {"default": (), "optin": ("OPTIN",), "bcast": ("BCAST", "PREFIX", "p:")}
        log += map(repr, s.run("T", "CLIENT", "TRACKING", "ON", *options[mode]))
        for _ in range(steps):
            roll = rng.random()
            if roll < 0.45:
                if mode == "optin" and rng.random() < 0.5:
                    log += map(repr, s.run("T", "CLIENT", "CACHING", "YES"))
                command = rng.choice(reads)()
                who = "T"
            elif roll < 0.9:
                command, who = rng.choice(writes)(), "W"
            else:
                command, who = rng.choice(writes)(), "T"  # the tracking client's own write
            log.append(f"{who} {command} -> {s.run(who, *command)!r}")
            s.conns["T"].send(encode_command("PING"))
            log.append(f"pushes {_frames_until_pong(s.conns['T'])!r}")
    return log


@pytest.mark.parametrize("mode", ["default", "optin", "bcast"])
@pytest.mark.parametrize("seed", [1, 2])
def test_random_sequences_invalidate_as_redis(
    mode: str, seed: int, engramdb_server: PeerServed, redis_server: PeerServed
) -> None:
    ours = _tracking_run(engramdb_server.port, mode, seed, 400)
    theirs = _tracking_run(redis_server.port, mode, seed, 400)
    for i, (got, want) in enumerate(zip(ours, theirs)):
        shown = "\n".join(theirs[max(0, i - 8) : i])
        assert got == want, f"after:\n{shown}\nengramdb {got}\nredis    {want}"
    assert len(ours) == len(theirs)


def test_changes_trimmed_before_they_were_read_flush_every_cache(serve: ServeFactory) -> None:
    """The server is stopped (SIGSTOP) while another process writes and trims the log past
    what the tracker read: when it runs again, it cannot know what changed, so every
    tracking client is told to drop everything."""
    import signal

    server = serve("--durability", "none")
    conn, _ = _tracking(server.port)
    conn.send(encode_command("GET", "k"))
    conn.replies(1)
    server.signal(signal.SIGSTOP)
    try:
        with engramdb.open(server.data, changelog_retention=1, sweep_interval=None) as db:
            for i in range(5):
                db.records("default").put("k", {"$string": b"%d" % i})
            db.sweep()  # keeps the last change only
    finally:
        server.signal(signal.SIGCONT)
    assert conn.replies(1) == [[b"invalidate", None]]
    conn.send(encode_command("GET", "k"))
    assert conn.replies(1) == [b"4"]
    redis.Redis(port=server.port).set("k", "again")  # tracked again after the flush
    assert conn.replies(1) == [[b"invalidate", [b"k"]]]
    conn.close()
