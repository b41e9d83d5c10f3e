"""The other process of ``test_index_coherence.py``, and the views both sides compare.

Run as ``python -m tests.vectors.coherence_child`` from the repository root. It reads one
JSON command per line on stdin and answers each with one JSON line on stdout:

- ``{"op": "open", "path": P, "clock": T}``: open the database at P (fake clock at T);
- ``{"op": "apply", "ops": [...], "clock": T}``: set the clock to T (if given), then apply
  write operations (see ``apply``) in order; answers the clock's time after them;
- ``{"op": "view", "tokens": [...]}``: this process's search results (see ``view``);
- ``{"op": "stream", "seed": S}``: write random operations until killed, answering
  ``{"done": n}`` after each one committed;
- ``{"op": "close"}``, ``{"op": "exit"}``.

A *view* is what the indexes answer: for each query vector the ids and scores of every
visible item (an exhaustive search), for each metadata value the ids a filtered search
returns, and for each text token the ids a BM25 search returns. ``expected_view`` computes
the same from a scan of the records themselves, which is the truth the indexes must match.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

import engramdb
from engramdb import FakeClock

DIM = 4
KEYS: list[str | int] = ["a", "b", "c", "d", 1, 2]
GROUPS = 3
COLLECTION = "c"
QUERIES = np.array(
    [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, -2, 3, -4]], dtype=np.float32
)
COMMON = "common"  # a word every item's text holds

View = dict[str, Any]


def vector_of(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    vector[seed % DIM] += 0.5  # never the zero vector
    return vector


def apply(collection: Any, db: Any, clock: FakeClock, op: Sequence[Any]) -> None:
    """One write: ``["upsert", key, seed, token, group, ttl]``, ``["delete", key]``,
    ``["sweep"]`` or ``["advance", seconds]``."""
    kind = op[0]
    if kind == "upsert":
        _, key, seed, token, group, ttl = op
        collection.upsert(
            [key],
            [vector_of(seed)],
            metadata=[{"g": group}],
            texts=[f"{token} {COMMON}"],
            ttl=ttl,
        )
    elif kind == "delete":
        collection.delete([op[1]])
    elif kind == "sweep":
        db.sweep()
    elif kind == "advance":
        clock.advance(op[1])
    else:
        raise ValueError(f"unknown operation {op!r}")


def random_op(rng: random.Random, tokens: list[str]) -> list[Any]:
    """A random write; deletes are followed by re-creating the same key half the time by
    the caller's next draws (few keys, so keys come back often)."""
    roll = rng.random()
    key = rng.choice(KEYS)
    if roll < 0.55:
        token = f"zq{len(tokens)}x{rng.randrange(1 << 30)}"
        tokens.append(token)
        ttl = rng.choice([None, None, 1, 3])
        return ["upsert", key, rng.randrange(1 << 30), token, rng.randrange(GROUPS), ttl]
    if roll < 0.85:
        return ["delete", key]
    if roll < 0.93:
        return ["advance", rng.choice([1, 2, 4])]
    return ["sweep"]


def _pairs(hits: Sequence[Any]) -> list[list[Any]]:
    return sorted(([h.id, round(float(h.score), 4)] for h in hits), key=repr)


def _ids(hits: Sequence[Any]) -> list[Any]:
    return sorted((h.id for h in hits), key=repr)


def view(collection: Any, tokens: Sequence[str]) -> View:
    """What the indexes answer (``include=[]``: the raw index, records not re-read)."""
    k = len(KEYS) + 1
    return {
        "vector": [_pairs(collection.search(q, k, include=[])) for q in QUERIES],
        "filter": [
            _ids(collection.search(QUERIES[0], k, filter={"g": g}, include=[]))
            for g in range(GROUPS)
        ],
        "text": {t: _ids(collection.text_search(t, k, include=[])) for t in [COMMON, *tokens]},
    }


def expected_view(collection: Any, tokens: Sequence[str]) -> View:
    """The same answers, computed from the records (``get``: visible items only)."""
    live = {key: item for key, item in zip(KEYS, collection.get(KEYS)) if item is not None}
    vector = []
    for q in QUERIES:
        unit = q / np.linalg.norm(q)
        vector.append(
            sorted(
                ([key, round(float(np.dot(unit, item.vector)), 4)] for key, item in live.items()),
                key=repr,
            )
        )
    words = {key: set(item.text.split()) for key, item in live.items()}
    return {
        "vector": vector,
        "filter": [
            sorted((key for key, item in live.items() if item.metadata["g"] == g), key=repr)
            for g in range(GROUPS)
        ],
        "text": {
            t: sorted((key for key in live if t in words[key]), key=repr) for t in [COMMON, *tokens]
        },
    }


def differences(got: View, want: View) -> list[str]:
    """Human-readable differences (scores compared to 1e-3: float32 against float64)."""
    out: list[str] = []
    for i, (g, w) in enumerate(zip(got["vector"], want["vector"])):
        gd, wd = {repr(k): s for k, s in g}, {repr(k): s for k, s in w}
        if gd.keys() != wd.keys() or any(abs(gd[k] - wd[k]) > 1e-3 for k in gd):
            out.append(f"query {i}: index {g} != records {w}")
    for g in range(GROUPS):
        if got["filter"][g] != want["filter"][g]:
            out.append(f"filter g={g}: index {got['filter'][g]} != records {want['filter'][g]}")
    for token, ids in want["text"].items():
        if got["text"].get(token) != ids:
            out.append(f"text {token!r}: index {got['text'].get(token)} != records {ids}")
    return out


def main() -> None:
    db: Any = None
    collection: Any = None
    clock = FakeClock()
    out = sys.stdout

    def reply(value: Any) -> None:
        out.write(json.dumps(value) + "\n")
        out.flush()

    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "open":
            clock.set(command["clock"])
            db = engramdb.open(command["path"], clock=clock, sweep_interval=None, durability="none")
            collection = db.vectors.create_collection(COLLECTION, DIM, exist_ok=True)
            reply({"clock": clock()})
        elif op == "apply":
            if command.get("clock") is not None:
                clock.set(command["clock"])
            for write in command["ops"]:
                apply(collection, db, clock, write)
            reply({"clock": clock()})
        elif op == "view":
            reply(view(collection, command["tokens"]))
        elif op == "stream":
            rng = random.Random(command["seed"])
            tokens: list[str] = []
            done = 0
            again: list[Any] | None = None
            while True:
                write = again or random_op(rng, tokens)
                again = None
                if write[0] == "advance":
                    continue  # the clock stays put: the parent shares it
                apply(collection, db, clock, write)
                done += 1
                reply({"done": done, "op": write})
                if write[0] == "delete" and rng.random() < 0.5:  # re-create it at once
                    again = random_op(rng, tokens)
                    while again[0] != "upsert":
                        again = random_op(rng, tokens)
                    again[1] = write[1]
        elif op == "close":
            db.close()
            db = collection = None
            reply({"closed": True})
        elif op == "exit":
            reply({"bye": True})
            return


if __name__ == "__main__":
    main()
