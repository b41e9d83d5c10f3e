"""Mem0's side of ``bench/memory.py``, in Mem0's own virtualenv:
``/tmp/mem0-venv/bin/python bench/_mem0_side.py SPEC.json RESULT.json``. ``mem0.Memory`` with
its default vector store (Qdrant's local mode); the LLM is ``lmstudio`` only because Mem0 builds
one eagerly and OpenAI's needs a key (``infer=False`` never calls it). The embedder returns the
parent's precomputed vector of the exact text and fails on any other, so no embedding work
hides in the timings. Each ``add`` and ``search`` is timed alone (``_side.timed``), each phase
within its budget. A connection to a non-loopback address raises, and is counted.
"""

from __future__ import annotations

import importlib.metadata
import ipaddress
import logging
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

from _side import main, timed

BLOCKED: list[str] = []


def _guard(real: Any, refused: Any) -> Any:
    def guarded(self: socket.socket, address: Any) -> Any:
        host = str(address[0]) if isinstance(address, tuple) and address else "localhost"
        try:
            local = host == "localhost" or ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            local = False
        if local:
            return real(self, address)
        BLOCKED.append(repr(address))
        return refused(address)

    return guarded


def _refuse(address: Any) -> None:
    raise ConnectionRefusedError(f"benchmark network guard: no connection to {address!r}")


socket.socket.connect = _guard(socket.socket.connect, _refuse)  # type: ignore[method-assign]
socket.socket.connect_ex = _guard(socket.socket.connect_ex, lambda _: 111)  # type: ignore[method-assign]


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def build_memory(spec: dict[str, Any]) -> Any:
    from mem0 import Memory
    from mem0.embeddings.base import EmbeddingBase

    logging.disable(logging.WARNING)  # Mem0 warns once that spaCy / fastembed are missing
    work, dim = Path(spec["workdir"]), spec["dim"]
    memory = Memory.from_config({
        "vector_store": {"provider": "qdrant", "config": {
            "collection_name": "bench", "embedding_model_dims": dim, "path": str(work / "qdrant")}},
        "llm": {"provider": "lmstudio", "config": {}},
        "embedder": {"provider": "lmstudio", "config": {"embedding_dims": dim}},
        "history_db_path": str(work / "history.db"),
    })  # fmt: skip
    rows = {"add": {t: i for i, t in enumerate(spec["texts"])},
            "search": {q["text"]: q["row"] for q in spec["queries"]}}  # fmt: skip
    vectors = {"add": np.load(spec["memory_vectors"], mmap_mode="r"),
               "search": np.load(spec["query_vectors"], mmap_mode="r")}  # fmt: skip

    class Precomputed(EmbeddingBase):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(None)

        def embed(self, text: Any, memory_action: Any = None) -> list[float]:
            kind = "search" if memory_action == "search" else "add"
            if (row := rows[kind].get(text)) is None:
                raise KeyError(f"Mem0 asked to embed a text with no precomputed vector: {text!r}")
            return vectors[kind][row].tolist()  # type: ignore[no-any-return]

    memory.embedding_model = Precomputed()
    return memory


def run(spec: dict[str, Any]) -> dict[str, Any]:
    texts, users, k = spec["texts"], spec["users"], spec["k"]
    began = time.perf_counter()
    memory = build_memory(spec)
    init_s = time.perf_counter() - began
    ids: dict[str, int] = {}
    events: dict[str, int] = {}

    def add(i: int) -> None:
        for item in memory.add(texts[i], user_id=users[i], infer=False)["results"]:
            ids[item["id"]] = i
            events[item["event"]] = events.get(item["event"], 0) + 1

    for i in spec["warmup_adds"]:
        memory.add(texts[i], user_id=f"warmup-{users[i]}", infer=False)
    adds, add_wall = timed(add, spec["add_order"], budget_s=spec["add_budget_s"],
                           slice_size=spec["add_slice"])  # fmt: skip
    # Only queries whose memory went in (the first len(adds) of the add order) are asked.
    loaded = set(spec["add_order"][: len(adds)])
    queries = [q for q in spec["queries"] if q["source"] in loaded][: spec["max_searches"]]
    found: list[list[int]] = []

    def search(q: dict[str, Any], keep: bool = True) -> None:
        out = memory.search(q["text"], filters={"user_id": q["user"]}, top_k=k)
        if keep:
            found.append([ids.get(str(hit["id"]), -1) for hit in out["results"]])

    for q in queries[: spec["search_warmup"]]:
        search(q, keep=False)
    searches, search_wall = timed(search, queries, budget_s=spec["search_budget_s"],
                                  slice_size=spec["search_slice"])  # fmt: skip
    store = memory.vector_store
    packages = ("mem0ai", "qdrant-client", "numpy", "pydantic", "sqlalchemy")
    return {
        "versions": {p: _version(p) for p in packages},
        "vector_store": f"{type(store).__module__}.{type(store).__name__}",
        "vector_store_local": bool(getattr(store, "is_local", False)),
        "init_s": init_s, "added": len(adds), "add_events": events, "add_samples": adds,
        "add_wall_ns": add_wall, "search_samples": searches, "search_wall_ns": search_wall,
        "search_queries": [q["qi"] for q in queries[: len(searches)]],
        "found": found[: len(searches)], "blocked_connections": BLOCKED,
    }  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main({"run": run}))
