"""The Mem0 side of ``bench/memory.py``, run in Mem0's own virtualenv.

    /tmp/mem0-venv/bin/python bench/_mem0_side.py SPEC.json RESULT.json

Mem0 is never imported into engramdb's environment (its pins could change packages engramdb
depends on), so ``bench/memory.py`` writes a spec (JSON, plus the precomputed embeddings as
``.npy``) and runs this script with the Mem0 virtualenv's interpreter. It imports only the
standard library, numpy and Mem0.

What it does:

- builds ``mem0.Memory`` with its default vector store (Qdrant; with no host or URL that is
  Qdrant's local mode, ``QdrantClient(path=...)``) in the spec's work directory, and its
  history SQLite database there too. The LLM is configured as ``lmstudio`` only because Mem0
  constructs an LLM client eagerly and its default (OpenAI) refuses to start without a key;
  ``infer=False`` never calls it.
- swaps ``memory.embedding_model`` for ``Precomputed``: it returns the vector computed once
  by the parent (all-MiniLM-L6-v2) for the exact text asked, and fails loudly for any other
  text, so no embedding work happens inside the timings and none is hidden.
- times each ``add(text, user_id=..., infer=False)`` and each ``search(query,
  filters={"user_id": ...}, top_k=k)`` on its own, in the loop of ``_common.measure``
  (``perf_counter_ns`` around the call alone; warmup first and discarded; ``gc.collect()``
  + ``gc.freeze()`` before the timed calls). Adds and searches stop early, at the end of a
  slice, once their time budget is spent. Raw samples go back so the parent computes every
  percentile with the same code as for engramdb.
- guards the network: any connection to a non-loopback address raises, and is counted.

Progress goes to stdout as JSON lines (``{"event": "start"|"advance"|"note", ...}``) for the
parent's progress display; the result is written to RESULT.json.
"""

from __future__ import annotations

import gc
import importlib.metadata
import ipaddress
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# the network guard -------------------------------------------------------------------------

BLOCKED: list[str] = []
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _allowed(address: Any) -> bool:
    if not isinstance(address, tuple) or not address:
        return True  # a Unix socket
    host = str(address[0])
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if not _allowed(address):
        BLOCKED.append(repr(address))
        raise ConnectionRefusedError(f"benchmark network guard: no connection to {address!r}")
    _connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if not _allowed(address):
        BLOCKED.append(repr(address))
        return 111  # ECONNREFUSED
    return _connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign, assignment]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign, assignment]


# progress to the parent --------------------------------------------------------------------


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class PipeMeter:
    """``_common.Meter``'s interface, reporting to the parent through stdout."""

    def __init__(self) -> None:
        self._last = 0.0
        self._pending = 0

    def start(self, description: str, total: int) -> None:
        if self._pending:
            emit("advance", n=self._pending)  # the previous task's last calls
            self._pending = 0
        emit("start", description=description, total=total)
        self._last = time.monotonic()

    def advance(self, n: int, *, force: bool = False) -> None:
        self._pending += n
        now = time.monotonic()
        if force or now - self._last >= 0.25:
            emit("advance", n=self._pending)
            self._pending = 0
            self._last = now


# the timing loop: _common._run, verbatim but for the meter ---------------------------------


def run_loop(
    fn: Callable[[Any], object],
    args: Sequence[Any],
    meter: PipeMeter,
    batch: int,
    samples: np.ndarray | None,
) -> int:
    clock = time.perf_counter_ns
    lat = [0] * batch
    wall = 0
    for lo in range(0, len(args), batch):
        chunk = args[lo : lo + batch]
        i = 0
        began = clock()
        for arg in chunk:
            t0 = clock()
            fn(arg)
            lat[i] = clock() - t0
            i += 1
        wall += clock() - began
        if samples is not None:
            samples[lo : lo + i] = lat[:i]
        meter.advance(i)
    return wall


def measure_budgeted(
    fn: Callable[[Any], object],
    args: Sequence[Any],
    *,
    warmup: Sequence[Any],
    meter: PipeMeter,
    description: str,
    budget_s: float,
    slice_size: int,
    batch: int,
) -> tuple[np.ndarray, int]:
    """``_common.measure_samples`` in slices of ``slice_size`` calls, stopping after the
    slice during which ``budget_s`` ran out. Returns (samples of the calls made, wall ns)."""
    meter.start(description, len(warmup) + len(args))
    run_loop(fn, warmup, meter, batch, None)
    gc.collect()
    gc.freeze()
    began = time.monotonic()
    samples = np.empty(len(args), dtype=np.int64)
    done = wall = 0
    try:
        while done < len(args):
            hi = min(len(args), done + slice_size)
            wall += run_loop(fn, args[done:hi], meter, batch, samples[done:hi])
            done = hi
            if time.monotonic() - began > budget_s:
                break
    finally:
        gc.unfreeze()
    meter.advance(0, force=True)
    return samples[:done], wall


# Mem0 --------------------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def build_memory(spec: dict[str, Any], texts: dict[str, int], queries: dict[str, int]) -> Any:
    import logging

    from mem0 import Memory
    from mem0.embeddings.base import EmbeddingBase

    # Mem0 warns once per process that spaCy / fastembed are missing; keep stderr readable.
    logging.disable(logging.WARNING)
    work = Path(spec["workdir"])
    config = {
        "vector_store": {
            "provider": "qdrant",
            "config": {
                "collection_name": "bench",
                "embedding_model_dims": spec["dim"],
                "path": str(work / "qdrant"),
            },
        },
        "llm": {"provider": "lmstudio", "config": {}},
        "embedder": {"provider": "lmstudio", "config": {"embedding_dims": spec["dim"]}},
        "history_db_path": str(work / "history.db"),
    }
    memory = Memory.from_config(config)
    add_vectors = np.load(spec["memory_vectors"], mmap_mode="r")
    query_vectors = np.load(spec["query_vectors"], mmap_mode="r")

    class Precomputed(EmbeddingBase):  # type: ignore[misc]
        """The parent's vectors, by exact text; any other text is an error."""

        def __init__(self) -> None:
            super().__init__(None)

        def embed(self, text: Any, memory_action: Any = None) -> list[float]:
            table, vectors = (
                (queries, query_vectors) if memory_action == "search" else (texts, add_vectors)
            )
            row = table.get(text)
            if row is None:
                raise KeyError(f"Mem0 asked to embed a text with no precomputed vector: {text!r}")
            return vectors[row].tolist()  # type: ignore[no-any-return]

    memory.embedding_model = Precomputed()
    return memory


def main(argv: Sequence[str]) -> int:
    spec_path, result_path = argv[1], argv[2]
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    os.environ["MEM0_DIR"] = spec["workdir"]
    all_texts: list[str] = spec["texts"]
    users: list[str] = spec["users"]
    texts = {t: i for i, t in enumerate(all_texts)}
    query_rows = {q["text"]: q["row"] for q in spec["queries"]}
    began = time.perf_counter()
    memory = build_memory(spec, texts, query_rows)
    init_s = time.perf_counter() - began
    vector_store = memory.vector_store
    meter = PipeMeter()

    ids: dict[str, int] = {}
    events: dict[str, int] = {}

    def add(i: int) -> None:
        out = memory.add(all_texts[i], user_id=users[i], infer=False)
        for item in out["results"]:
            ids[item["id"]] = i
            events[item["event"]] = events.get(item["event"], 0) + 1

    warm_adds = [(i, f"warmup-{users[i]}") for i in spec["warmup_adds"]]

    def add_warm(arg: tuple[int, str]) -> None:
        memory.add(all_texts[arg[0]], user_id=arg[1], infer=False)

    meter.start("Mem0 · warmup adds", len(warm_adds))
    run_loop(add_warm, warm_adds, meter, 64, None)
    add_samples, add_wall = measure_budgeted(
        add,
        spec["add_order"],
        warmup=(),
        meter=meter,
        description="Mem0 · add",
        budget_s=spec["add_budget_s"],
        slice_size=spec["add_slice"],
        batch=64,
    )
    added = len(add_samples)
    emit("note", text=f"Mem0 added {added:,} memories")

    # Only queries whose memory went in (the first `added` of the add order) are asked.
    loaded = set(spec["add_order"][:added])
    queries = [q for q in spec["queries"] if q["source"] in loaded][: spec["max_searches"]]
    found: list[list[int]] = []

    def search(q: dict[str, Any]) -> None:
        out = memory.search(q["text"], filters={"user_id": q["user"]}, top_k=spec["k"])
        found.append([ids.get(str(hit["id"]), -1) for hit in out["results"]])

    def search_warm(q: dict[str, Any]) -> None:
        memory.search(q["text"], filters={"user_id": q["user"]}, top_k=spec["k"])

    warm = queries[: spec["search_warmup"]]
    meter.start("Mem0 · warmup searches", len(warm))
    run_loop(search_warm, warm, meter, 8, None)
    search_samples, search_wall = measure_budgeted(
        search,
        queries,
        warmup=(),
        meter=meter,
        description="Mem0 · search",
        budget_s=spec["search_budget_s"],
        slice_size=spec["search_slice"],
        batch=8,
    )
    searched = len(search_samples)

    work = Path(spec["workdir"])
    np.save(work / "mem0-add-samples.npy", add_samples)
    np.save(work / "mem0-search-samples.npy", search_samples)
    result = {
        "versions": {
            p: _version(p) for p in ("mem0ai", "qdrant-client", "numpy", "pydantic", "sqlalchemy")
        },
        "python": sys.version.split()[0],
        "vector_store": f"{type(vector_store).__module__}.{type(vector_store).__name__}",
        "vector_store_local": bool(getattr(vector_store, "is_local", False)),
        "vector_store_client": type(getattr(vector_store, "client", None)).__name__,
        "bm25_encoder": "fastembed" if _importable("fastembed") else "none (fastembed missing)",
        "spacy": _importable("spacy"),
        "init_s": init_s,
        "added": added,
        "add_events": events,
        "add_samples": str(work / "mem0-add-samples.npy"),
        "add_wall_ns": add_wall,
        "searched": searched,
        "search_samples": str(work / "mem0-search-samples.npy"),
        "search_wall_ns": search_wall,
        "search_queries": [q["qi"] for q in queries[:searched]],
        "found": found[:searched],
        "blocked_connections": BLOCKED,
    }
    Path(result_path).write_text(json.dumps(result), encoding="utf-8")
    emit("done")
    with_close = getattr(memory, "close", None)
    if callable(with_close):
        with_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
