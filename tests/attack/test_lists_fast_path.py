"""Attacks on the list push and pop fast paths (``handlers/lists.py``: a hot list's header
taken from the parse cache and rewritten without ``Access``): what they write must be what
the general path writes, byte for byte where others read it (a restarted server, the
engramdb API, a pipelined burst sharing one commit), and a kill -9 between commits leaves
every acknowledged push and pop, nothing half-written.
"""

from __future__ import annotations

import engramdb
from engramdb.protocol.resp import encode_command

from .conftest import Raw, ServeFactory


def run(conn: Raw, *args: bytes | str | int) -> object:
    conn.send(encode_command(*args))
    return conn.replies(1)[0]


def test_pipelined_pushes_and_pops_of_one_list_share_a_commit_and_stay_in_order(
    serve: ServeFactory,
) -> None:
    server = serve("--durability", "async")
    with server.raw() as conn:
        assert run(conn, "RPUSH", "q", "seed") == 1
        burst = b"".join(
            encode_command("LPUSH" if i % 2 else "RPUSH", "q", f"v{i}") for i in range(200)
        ) + b"".join(encode_command("LPOP" if i % 3 else "RPOP", "q") for i in range(90))
        conn.send(burst)
        replies = conn.replies(290)
        assert replies[:200] == list(range(2, 202))
        model = ["seed"]
        for i in range(200):
            if i % 2:
                model.insert(0, f"v{i}")
            else:
                model.append(f"v{i}")
        popped = [model.pop(0) if i % 3 else model.pop() for i in range(90)]
        assert replies[200:] == [item.encode() for item in popped]
        assert run(conn, "LRANGE", "q", "0", "-1") == [item.encode() for item in model]


def test_a_list_written_by_the_fast_paths_survives_kill_9_and_reads_the_same_everywhere(
    serve: ServeFactory,
) -> None:
    server = serve("--durability", "async")
    with server.raw() as conn:
        assert run(conn, "LPUSH", "l", "a") == 1
        for i in range(50):
            assert run(conn, "LPUSH", "l", f"x{i}") == i + 2
        assert run(conn, "RPUSH", "l", "z1", "z2") == 53
        assert run(conn, "LPOP", "l") == b"x49"
        assert run(conn, "RPOP", "l") == b"z2"
        assert run(conn, "EXPIRE", "l", "1000") == 1
        assert run(conn, "LPUSH", "l", "head") == 52
        expected = run(conn, "LRANGE", "l", "0", "-1")
    server.kill()
    server.start()
    with server.raw() as conn:
        # A fresh process parses the headers the fast paths wrote: the same list, its TTL
        # kept, and the fast paths go on from there.
        assert run(conn, "LRANGE", "l", "0", "-1") == expected
        assert 0 < run(conn, "TTL", "l") <= 1000  # type: ignore[operator]
        assert run(conn, "TYPE", "l") == b"list"
        assert run(conn, "LPOP", "l") == b"head"
        assert run(conn, "RPUSH", "l", "tail") == 52
        assert run(conn, "LINDEX", "l", "-1") == b"tail"
    server.kill()
    with engramdb.open(server.data) as db:
        record = db.records("default").get("l")
        assert record is not None
        assert record.bins["$type"] == "list"
        assert record.bins["$len"] == 52
