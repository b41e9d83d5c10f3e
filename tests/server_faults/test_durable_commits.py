"""Where ``engramdb serve --durability sync`` runs its group commits, and what that may cost
other clients.

While the server answers nothing but durable writes, a commit (and its fsync) runs on the
event loop, as Redis' ``appendfsync always`` does: no thread handoff either way. Once it
serves anything else, or an fsync stalls, commits go back to the committer thread, so a read
never waits for the disk. A disk that stops answering is a real one here, seen through an
``LD_PRELOAD`` shim whose fsync/fdatasync wait while a trigger file exists.
"""

from __future__ import annotations

import select
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engramdb.protocol.resp import encode_command

from .conftest import Raw, Served, ServeFactory, wait_for

WRITES = 300  # unpipelined durable SETs: well over the loop's 50 ms of writes alone


@pytest.fixture(scope="module")
def shim(preload_shim: Callable[[str], Path]) -> Path:
    return preload_shim("stallfsync")


@pytest.fixture
def stalling(
    shim: Path, tmp_path: Path, serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Served, Path]]:
    """A durable server whose disk stalls while the yielded trigger file exists."""
    trigger = tmp_path / "stall-fsync"
    monkeypatch.setenv("LD_PRELOAD", str(shim))
    monkeypatch.setenv("ENGRAM_STALL_FSYNC_TRIGGER", str(trigger))
    server = serve("--durability", "sync")
    try:
        yield server, trigger
    finally:
        trigger.unlink(missing_ok=True)  # never leave the server (or its kill) stalled


def set_(conn: Raw, key: str, value: str) -> None:
    conn.send(encode_command(b"SET", key.encode(), value.encode()))


def get(conn: Raw, key: str) -> object:
    conn.send(encode_command(b"GET", key.encode()))
    (reply,) = conn.replies(1)
    return reply


def nothing_yet(conn: Raw, wait: float = 0.3) -> bool:
    """Whether ``conn`` has no reply waiting after ``wait`` seconds."""
    return not select.select([conn.sock], [], [], wait)[0]


def write_alone(conn: Raw, count: int) -> None:
    for i in range(count):
        set_(conn, f"k{i}", f"v{i}")
        assert conn.replies(1) == [b"OK"]


def test_durable_writes_alone_commit_on_the_loop_and_survive_kill_9(
    serve: ServeFactory,
) -> None:
    server = serve("--durability", "sync")
    with server.raw() as writer:
        write_alone(writer, WRITES)
    info = server.info()
    assert int(info["durable_commits_on_loop"]) > 0, info
    server.kill()
    server.start()
    with server.raw() as reader:
        assert [get(reader, f"k{i}") for i in range(WRITES)] == [
            f"v{i}".encode() for i in range(WRITES)
        ]


def test_a_read_is_answered_while_a_durable_write_waits_on_a_stalled_disk(
    stalling: tuple[Served, Path],
) -> None:
    server, trigger = stalling
    with server.raw() as writer, server.raw() as reader:
        write_alone(writer, WRITES)  # commits on the loop by now (the test above)
        assert get(reader, "k0") == b"v0"  # a read: the next commit goes to the thread
        trigger.touch()
        set_(writer, "stalled", "1")
        assert nothing_yet(writer)  # not acknowledged: its fsync has not returned
        assert get(reader, "k1") == b"v1"  # answered while the commit waits on the disk
        assert nothing_yet(writer, 0.0)
        trigger.unlink()
        assert writer.replies(1) == [b"OK"]
        assert get(reader, "stalled") == b"1"


def test_a_stalled_fsync_sends_commits_back_to_the_thread(
    stalling: tuple[Served, Path],
) -> None:
    server, trigger = stalling
    with server.raw() as writer, server.raw() as reader:
        write_alone(writer, WRITES)
        # Writes alone: this commit runs on the loop, which waits out the stall with it.
        trigger.touch()
        set_(writer, "first", "1")
        assert nothing_yet(writer)
        trigger.unlink()
        assert writer.replies(1) == [b"OK"]
        # That fsync was slow: the next commit runs on the thread, though only writes came.
        trigger.touch()
        set_(writer, "second", "2")
        assert nothing_yet(writer)
        assert get(reader, "first") == b"1"
        assert nothing_yet(writer, 0.0)
        trigger.unlink()
        assert writer.replies(1) == [b"OK"]
    info = server.info()
    assert int(info["durable_commits_on_loop"]) > 0, info
    assert int(info["durable_commits_on_thread"]) > 0, info


def test_save_answers_once_the_disk_has_synced_and_bgsave_at_once(
    stalling: tuple[Served, Path],
) -> None:
    """SAVE and BGSAVE fsync the data (engramdb keeps no snapshot file): SAVE answers after
    the fsync, BGSAVE before it, and other clients are served while either waits."""
    server, trigger = stalling
    with server.raw() as admin, server.raw() as other:
        trigger.touch()
        admin.send(encode_command(b"BGSAVE", b"SCHEDULE"))
        assert admin.replies(1) == [b"Background saving started"]
        admin.send(encode_command(b"BGSAVE"))
        (busy,) = admin.replies(1)
        assert "Background save already in progress" in str(busy)
        assert server.info()["rdb_bgsave_in_progress"] == "1"
        other.send(encode_command(b"SAVE"))
        assert nothing_yet(other)  # the fsync hangs: no reply yet
        assert get(admin, "k") is None  # while the disk hangs, a read is answered
        trigger.unlink()
        assert other.replies(1) == [b"OK"]
    wait_for(lambda: server.info()["rdb_bgsave_in_progress"] == "0", 10, "BGSAVE to end")
    info = server.info()
    assert (info["rdb_saves"], info["rdb_last_bgsave_status"]) == ("2", "ok")
