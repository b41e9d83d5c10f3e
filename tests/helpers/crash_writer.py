"""Writes to an engramdb database until killed, reporting each acknowledged write.

Run by ``tests/test_crash.py``: ``python crash_writer.py PATH CYCLE SEED``. Prints ``ready``
once the database is open, then one line per write that returned (so is acknowledged), each
flushed before the next write starts:

- ``put KEY GENERATION TOKEN``: ``put(KEY, {"t": TOKEN})`` on a ``p*`` key or a fresh ``d*`` key
- ``update KEY GENERATION TOKEN``: ``update(KEY, {"t": TOKEN, "b<i>": TOKEN})`` on a ``u*`` key
- ``incr KEY VALUE``: ``operate(KEY, [incr("n")])`` on a ``c*`` key returned VALUE
- ``delete KEY``: ``delete(KEY)`` of the ``d*`` key put just before returned True

``p``, ``u`` and ``c`` keys are shared by every cycle; each ``d`` key is written once, then
deleted, and never reused, so an acknowledged delete must stay deleted.
"""

from __future__ import annotations

import random
import sys

import engramdb
from engramdb import ops

SET = "crash"
SHARED_KEYS = 8


def main(path: str, cycle: int, seed: int) -> None:
    rng = random.Random(seed)
    db = engramdb.open(path, durability="sync", changelog_retention=None)
    records = db.records(SET)
    out = sys.stdout

    def ack(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    ack("ready")
    i = 0
    while True:
        i += 1
        token = cycle * 10_000_000 + i
        roll = rng.random()
        if roll < 0.3:
            key = f"p{rng.randrange(SHARED_KEYS)}"
            ack(f"put {key} {records.put(key, {'t': token})} {token}")
        elif roll < 0.55:
            key = f"u{rng.randrange(SHARED_KEYS)}"
            generation = records.update(key, {"t": token, f"b{rng.randrange(4)}": token})
            ack(f"update {key} {generation} {token}")
        elif roll < 0.8:
            key = f"c{rng.randrange(SHARED_KEYS)}"
            [value] = records.operate(key, [ops.incr("n")])
            ack(f"incr {key} {value}")
        else:
            key = f"d{cycle}-{i}"
            ack(f"put {key} {records.put(key, {'t': token})} {token}")
            if not records.delete(key):
                raise AssertionError(f"delete of {key} just after its put found nothing")
            ack(f"delete {key}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
