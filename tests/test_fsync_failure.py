"""An fsync error is fatal: stop acknowledging writes, never retry the fsync.

A real failing filesystem, not a patched engine: ``tests/helpers/failfsync.c`` is built into
an ``LD_PRELOAD`` shim whose ``fsync``/``fdatasync``/``msync`` fail with EIO while a trigger
file exists. A child Python runs engramdb over it, creates the trigger, removes it again and
reports what every call did as one JSON line. (LMDB flushes a commit with ``fdatasync`` on
the data file and writes the meta page through an ``O_DSYNC`` descriptor; the shim counts its
calls so the test knows the flushes really go through it.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import engramdb

WAIT = 60.0  # seconds; a bound on hangs, never an expectation of speed

CHILD = r"""
import ctypes
import json
import os
import sys
import time

import engramdb
from engramdb import StorageError, ops

path, durability, trigger = sys.argv[1:4]
calls = ctypes.CDLL(None).engram_failfsync_calls  # AttributeError: the shim is not loaded
calls.restype = ctypes.c_long
report = {}


def attempt(fn):
    try:
        fn()
    except StorageError as e:
        return "StorageError: " + str(e)
    except Exception as e:
        return "unexpected " + repr(e)
    return "ok"


db = engramdb.open(path, durability=durability, sweep_interval=None, flush_interval=0.02)
records = db.records("s")
before = calls()
report["first_put"] = records.put("acked", {"n": 1})
report["shim_calls_for_first_put"] = calls() - before

open(trigger, "w").close()
if durability == "sync":
    report["failure"] = attempt(lambda: records.put("in-doubt", {"n": 1}))
    report["writes_before_failure"] = 0
else:
    # The background flush fails at some point; poll with writes until one is refused.
    report["failure"] = None
    written = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        outcome = attempt(lambda: records.put("k", {"n": written + 1}))
        if outcome != "ok":
            report["failure"] = outcome
            break
        written += 1
        time.sleep(0.002)
    report["writes_before_failure"] = written
    k = records.get("k")
    report["k"] = None if k is None else k["n"]
os.remove(trigger)

after_failure = calls()
report["later_writes"] = [
    attempt(lambda: records.put("later", {"n": 1})),
    attempt(lambda: records.update("acked", {"m": 2})),
    attempt(lambda: records.operate("acked", [ops.incr("n")])),
    attempt(lambda: records.touch("acked", 60)),
    attempt(lambda: records.delete("acked")),
    attempt(lambda: db.records("other").put("x", {"n": 1})),
    attempt(lambda: db.sweep()),
]
acked = records.get("acked")
report["read"] = None if acked is None else [acked.generation, acked.bins]
report["count"] = records.count()
report["scan"] = [r.key for r in records.scan().records]
report["changes"] = [[c.key, c.kind, c.generation] for c in db.changes(0)]
report["stats_failed"] = db.stats()["engine"]["failed"]
if durability == "async":
    # A negative check needs a window: over many flush intervals the flusher, which
    # saw the failure, must not try again.
    time.sleep(0.3)
report["close"] = attempt(db.close)
report["shim_calls_after_failure"] = calls() - after_failure

# After "fixing the disk" a fresh open in this process takes writes again.
with engramdb.open(path, durability=durability, sweep_interval=None) as again:
    report["reopened_put"] = attempt(lambda: again.records("s").put("after", {"n": 1}))
print(json.dumps(report))
"""

# Eight threads write sync (so through group commit) until refused; fsync starts failing
# once a hundred writes are acknowledged. Reports each thread's acknowledged keys.
THREADED_CHILD = r"""
import json
import os
import sys
import threading
import time

import engramdb
from engramdb import StorageError

path, durability, trigger = sys.argv[1:4]
db = engramdb.open(path, durability="sync", sweep_interval=None)
records = db.records("s")
lock = threading.Lock()
acked = [[] for _ in range(8)]
refused = [None] * 8
first_refusal = []
late = []


def writer(i):
    j = 0
    while True:
        started = time.monotonic_ns()
        try:
            records.put(f"t{i}-{j}", {"j": j})
        except StorageError as e:
            with lock:
                first_refusal[:] = first_refusal or [time.monotonic_ns()]
            refused[i] = str(e)
            return
        with lock:
            if first_refusal and started > first_refusal[0]:
                late.append(f"t{i}-{j}")
        acked[i].append(f"t{i}-{j}")
        j += 1


threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
for t in threads:
    t.start()
deadline = time.monotonic() + 20
while sum(map(len, acked)) < 100 and time.monotonic() < deadline:
    time.sleep(0.001)
open(trigger, "w").close()
for t in threads:
    t.join(30)
hung = sum(t.is_alive() for t in threads)
os.remove(trigger)
after = []
for i in range(3):
    try:
        records.put(f"after-{i}", {"n": i})
        after.append("ok")
    except StorageError as e:
        after.append("StorageError: " + str(e))
db.close()
print(json.dumps({"acked": acked, "refused": refused, "late": late, "hung": hung,
                  "after": after}))
"""


@pytest.fixture(scope="module")
def shim(preload_shim: Callable[[str], Path]) -> Path:
    return preload_shim("failfsync")


def run_child(shim: Path, tmp_path: Path, durability: str, script: str = CHILD) -> dict[str, Any]:
    trigger = tmp_path / "fail-fsync"
    preload = ":".join(p for p in (str(shim), os.environ.get("LD_PRELOAD", "")) if p)
    env = {**os.environ, "LD_PRELOAD": preload, "ENGRAM_FAIL_FSYNC_TRIGGER": str(trigger)}
    child = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "db"), durability, str(trigger)],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert not trigger.exists()
    report: dict[str, Any] = json.loads(child.stdout.splitlines()[-1])
    return report


def assert_fatal_and_readable(report: dict[str, Any]) -> None:
    assert report["failure"] is not None, "no write was refused after fsync started failing"
    assert report["failure"].startswith("StorageError"), report["failure"]
    for outcome in report["later_writes"]:
        assert outcome.startswith("StorageError"), (
            f"a write after a failed fsync was not refused: {outcome}"
        )
    assert report["shim_calls_after_failure"] == 0, "fsync was retried after it failed"
    # Reads still work and show what was acknowledged.
    assert report["read"] == [1, {"n": 1}]
    assert "acked" in report["scan"]
    assert report["count"] == len(report["scan"])
    assert ["acked", "put", 1] in report["changes"]
    assert report["stats_failed"] is True
    assert report["close"] == "ok"
    assert report["reopened_put"] == "ok"


def test_failed_fsync_on_sync_commit_is_fatal(shim: Path, tmp_path: Path) -> None:
    report = run_child(shim, tmp_path, "sync")

    assert report["first_put"] == 1
    assert report["shim_calls_for_first_put"] >= 1, "LMDB did not flush the commit via the shim"
    assert_fatal_and_readable(report)
    # The acknowledged write is on disk for the next process.
    with engramdb.open(tmp_path / "db", durability="sync", sweep_interval=None) as db:
        record = db.records("s").get("acked")
        assert record is not None
        assert record.bins == {"n": 1}


def test_failed_background_flush_is_fatal(shim: Path, tmp_path: Path) -> None:
    report = run_child(shim, tmp_path, "async")

    assert report["first_put"] == 1
    assert_fatal_and_readable(report)
    # Writes acknowledged before the refusal stay visible to this process.
    written = report["writes_before_failure"]
    assert report["k"] == (written or None)
    with engramdb.open(tmp_path / "db", durability="sync", sweep_interval=None) as db:
        record = db.records("s").get("acked")
        assert record is not None
        assert record.bins == {"n": 1}


def test_failed_fsync_under_group_commit_acknowledges_only_durable_writes(
    shim: Path, tmp_path: Path
) -> None:
    report = run_child(shim, tmp_path, "sync", THREADED_CHILD)

    assert report["hung"] == 0, "a writer thread hung after the fsync failure"
    for refusal in report["refused"]:
        assert refusal is not None
    assert report["late"] == [], "writes that started after a refusal were acknowledged"
    for outcome in report["after"]:
        assert outcome.startswith("StorageError"), outcome
    acked = [key for keys in report["acked"] for key in keys]
    assert len(acked) >= 100
    # Every acknowledged write was durable: a fresh process without the shim finds it.
    with engramdb.open(tmp_path / "db", durability="sync", sweep_interval=None) as db:
        records = db.records("s")
        found = records.get_many(acked)
        assert [key for key, record in zip(acked, found) if record is None] == []
        # Each key was written once: its generation is the sequence of that one change.
        logged: dict[Any, int] = {}
        since = 0
        while batch := db.changes(since, limit=1000):
            logged.update((c.key, c.generation) for c in batch if c.kind == "put")
            since = batch[-1].sequence
        assert all(r is not None and r.generation == logged[r.key] for r in found)


# close() whose final flush fails: everything is still released, then the error is raised.
CLOSE_CHILD = r"""
import json
import os
import sys

import engramdb
from engramdb import StorageError

path, durability, trigger = sys.argv[1:4]


def attempt(fn):
    try:
        fn()
    except StorageError as e:
        return "StorageError: " + str(e)
    except Exception as e:
        return "unexpected " + repr(e)
    return "ok"


report = {}
db = engramdb.open(path, durability="async", sweep_interval=None, flush_interval=3600)
db.records("s").put("k", {"n": 1})
open(trigger, "w").close()
report["close"] = attempt(db.close)
os.remove(trigger)
report["close_again"] = attempt(db.close)
report["use_after_close"] = attempt(lambda: db.records("s").get("k"))
# Released: the same process opens the directory again (an environment still open in this
# process would be refused) and takes writes.
with engramdb.open(path, durability="sync", sweep_interval=None) as again:
    report["reopened_put"] = attempt(lambda: again.records("s").put("after", {"n": 1}))
print(json.dumps(report))
"""


def test_close_whose_final_flush_fails_releases_everything_then_raises(
    shim: Path, tmp_path: Path
) -> None:
    report = run_child(shim, tmp_path, "async", CLOSE_CHILD)

    assert report["close"].startswith("StorageError"), report["close"]
    assert report["close_again"] == "ok"  # closed already: safe to call twice
    assert report["use_after_close"].startswith("StorageError"), report["use_after_close"]
    assert report["reopened_put"] == "ok"
