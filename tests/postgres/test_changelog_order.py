"""The change log is gap-free in commit order with writers in several processes.

A tailer reading ``changes(since)`` while other processes write must never see a gap (a
sequence it skipped that commits later) nor a sequence lower than one it already read;
what it read must be exactly the final log. Generations must never repeat for a key.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import engramdb

_WRITER = """
import sys, threading, engramdb
url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = engramdb.open(url, durability="none", sweep_interval=None)
print("ready", flush=True)
sys.stdin.readline()  # all writers start together

def work(t):
    s = db.records("s")
    for i in range(count):
        key = f"{name}-{t}-{i % 7}"
        if i % 5 == 4:
            with db.transaction() as tx:
                tx.records("s").put(key, {"i": i})
                tx.records("t").put(key, {"i": i})
        elif i % 11 == 10:
            s.delete(key)
        else:
            s.put(key, {"i": i})

threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
db.close()
print("done", flush=True)
"""


def test_tailer_never_sees_a_gap_or_a_late_lower_sequence(postgres_url: str) -> None:
    setup = engramdb.open(postgres_url, sweep_interval=None)
    setup.close()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, postgres_url, f"p{n}", "60"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for n in range(3)
    ]
    seen: list[Any] = []
    problems: list[str] = []
    finished = threading.Event()
    db = engramdb.open(postgres_url, sweep_interval=None)

    def tail() -> None:
        try:
            follow()
        except Exception as e:
            problems.append(f"tailer failed: {e!r}")

    def follow() -> None:
        since = 0
        while True:
            done = finished.is_set()  # read before the log: nothing commits after this
            batch = db.changes(since, limit=50)  # raises ChangeLogTruncated on a gap
            for change in batch:
                if change.sequence != since + 1:
                    problems.append(f"after {since} came {change.sequence}")
                since = change.sequence
                seen.append(change)
            if done and not batch:
                return
            if not batch:
                time.sleep(0.001)

    tailer = threading.Thread(target=tail)
    try:
        for proc in writers:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        tailer.start()
        for proc in writers:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in writers:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "done"
            assert proc.wait(60) == 0
        finished.set()
        tailer.join(60)
    finally:
        finished.set()
        for proc in writers:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
    try:
        assert problems == []
        final = db.changes(0, limit=100_000)
        assert [c.sequence for c in seen] == [c.sequence for c in final]
        assert seen == final
        assert final[-1].sequence == db.last_sequence()
        assert len(final) > 3 * 3 * 60  # every write logged (transactions log two changes)
        generations: dict[tuple[str, object], list[int]] = {}
        for change in final:
            if change.kind == "put":
                generations.setdefault((change.set_name, change.key), []).append(change.generation)
        for history in generations.values():
            assert history == sorted(set(history))  # strictly growing, never reused
    finally:
        db.close()
