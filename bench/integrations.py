"""Framework adapters against what their users would otherwise pick, in one run.

    python bench/integrations.py                  # the full run (a few minutes on 2 cores)
    python bench/integrations.py --quick          # a smoke run
    python bench/integrations.py --postgres postgresql://user:pw@host/db   # PostgresSaver there
    (or ENGRAMDB_BENCH_POSTGRES=postgresql://...; without either, PostgresSaver runs on a
    local PostgreSQL started for the run by engramdb's harness, fsync on; --no-postgres
    leaves it out)

Needs ``pip install -e '.[bench]'``. What is measured:

1. LangGraph: one run of a 10-step graph whose state is a growing message history (each
   step appends a ~1 KB message), on a fresh thread per run, checkpointed by
   ``EngramSaver`` embedded (LMDB, ``durability`` async and sync), ``EngramSaver`` through
   ``engramdb serve`` (sync client), ``SqliteSaver`` (a file, LangGraph's defaults) and
   ``PostgresSaver`` (a local PostgreSQL over TCP, or the one given); plus ``ainvoke`` on
   embedded engramdb, sync database (the saver's async methods on a worker thread) against
   ``engramdb.aio`` (native), which is how ``EngramSaver`` chooses its async path.
   Per-run latency, sides interleaved.
2. LangChain: ``similarity_search_by_vector`` (k=10) over the same clustered unit vectors
   (``--docs`` of them, deterministic: the embedding is a table lookup, so no model time is
   measured) in ``EngramVectorStore`` (embedded), ``InMemoryVectorStore`` (exact) and
   ``langchain-chroma`` (in-process). The HNSW sides search with the smallest ``ef`` that
   reaches ``--recall`` (default 0.95) recall@10 against exact search, so they are compared
   at equal recall; the time to add the documents is reported too.

A peer whose package is not installed (``langgraph-checkpoint-sqlite``, ``-postgres``,
``langchain-chroma``) is left out with the reason printed. Writes
bench/results/integrations.json (``_common.Report``).
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import os
import sqlite3
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Annotated, Any, TypedDict

import numpy as np
from rich.console import Console

import engramdb
import engramdb.aio
from _common import (
    SKIPPED,
    Report,
    Stats,
    clustered_vectors,
    exact_top_k,
    fmt_ratio,
    fmt_us,
    machine_info,
    measure,
    measure_interleaved,
    missing,
    recall_at_k,
    served,
    temp_dir,
)

SQLITE, POSTGRES, CHROMA = (
    "langgraph.checkpoint.sqlite",
    "langgraph.checkpoint.postgres",
    "langchain_chroma",
)
MESSAGE = "x" * 1000
STEPS = 10


class Chat(TypedDict):
    messages: Annotated[list[str], operator.add]
    step: int


def chat_graph(saver: Any) -> Any:
    from langgraph.graph import END, START, StateGraph

    builder = StateGraph(Chat)

    def speak(state: Chat) -> dict[str, Any]:
        return {"messages": [f"{state['step']}:{MESSAGE}"], "step": state["step"] + 1}

    builder.add_node("speak", speak)
    builder.add_edge(START, "speak")
    builder.add_conditional_edges("speak", lambda s: END if s["step"] >= STEPS else "speak")
    return builder.compile(checkpointer=saver)


def _invoke(graph: Any) -> Callable[[int], object]:
    def run(_: int) -> object:
        config = {"configurable": {"thread_id": uuid.uuid4().hex}}
        return graph.invoke({"messages": [], "step": 0}, config)

    return run


@contextmanager
def langgraph_sides(postgres: str | None) -> Iterator[dict[str, Callable[[int], object]]]:
    from engramdb.integrations.langgraph import EngramSaver

    with ExitStack() as stack:
        directory = stack.enter_context(temp_dir("bench-integrations"))
        sides: dict[str, Callable[[int], object]] = {}
        for durability in ("async", "sync"):
            db = engramdb.open(os.path.join(directory, f"lg-{durability}"), durability=durability)
            stack.callback(db.close)
            sides[f"EngramSaver embedded ({durability})"] = _invoke(chat_graph(EngramSaver(db)))
        _, client = stack.enter_context(served(os.path.join(directory, "lg-server")))
        sides["EngramSaver via engramdb serve (sync)"] = _invoke(chat_graph(EngramSaver(client)))
        if not missing(SQLITE):
            from langgraph.checkpoint.sqlite import SqliteSaver

            conn = sqlite3.connect(os.path.join(directory, "lg.sqlite"), check_same_thread=False)
            stack.callback(conn.close)
            sides["SqliteSaver (file)"] = _invoke(chat_graph(SqliteSaver(conn)))
        if postgres:
            from langgraph.checkpoint.postgres import PostgresSaver

            saver = stack.enter_context(PostgresSaver.from_conn_string(postgres))
            saver.setup()
            sides["PostgresSaver"] = _invoke(chat_graph(saver))
        yield sides


def saver_operations(directory: str, n: int, postgres: str | None) -> dict[str, dict[str, Stats]]:
    """The savers' own cost, without LangGraph's: one step's ``put`` (a checkpoint with
    five ~1 KB messages), ``put_writes`` (two writes) and ``get_tuple``."""
    from engramdb.integrations.langgraph import EngramSaver

    def steps(saver: Any) -> dict[str, Stats]:
        thread = uuid.uuid4().hex
        values = {"messages": [MESSAGE] * 5, "step": 3}
        configs: list[Any] = []

        def put(i: int) -> object:
            conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
            if configs:
                conf["checkpoint_id"] = configs[-1]["configurable"]["checkpoint_id"]
            checkpoint = {
                "v": 1, "id": str(uuid6()), "ts": "2026-01-01T00:00:00+00:00",
                "channel_values": values, "channel_versions": {"messages": i + 1, "step": i + 1},
                "versions_seen": {}, "updated_channels": None,
            }  # fmt: skip
            versions = {"messages": i + 1, "step": i + 1}
            stored = saver.put({"configurable": conf}, checkpoint, {"step": i}, versions)
            configs.append(stored)
            return stored

        found = {"put": measure(put, range(n), description="put")}
        found["put_writes"] = measure(
            lambda i: saver.put_writes(configs[i], [("messages", [MESSAGE]), ("step", i)], "t"),
            range(n),
            description="put_writes",
        )
        found["get_tuple"] = measure(
            lambda i: saver.get_tuple(configs[i]), range(n), description="get_tuple"
        )
        return found

    from langgraph.checkpoint.base.id import uuid6

    out: dict[str, dict[str, Stats]] = {}
    with ExitStack() as stack:
        db = engramdb.open(os.path.join(directory, "ops-async"), durability="async")
        stack.callback(db.close)
        out["EngramSaver embedded (async)"] = steps(EngramSaver(db))
        _, client = stack.enter_context(served(os.path.join(directory, "ops-server")))
        out["EngramSaver via engramdb serve (sync)"] = steps(EngramSaver(client))
        if not missing(SQLITE):
            from langgraph.checkpoint.sqlite import SqliteSaver

            conn = sqlite3.connect(os.path.join(directory, "ops.sqlite"), check_same_thread=False)
            stack.callback(conn.close)
            out["SqliteSaver (file)"] = steps(SqliteSaver(conn))
        if postgres:
            from langgraph.checkpoint.postgres import PostgresSaver

            saver = stack.enter_context(PostgresSaver.from_conn_string(postgres))
            out["PostgresSaver"] = steps(saver)
    return out


def async_dispatch(directory: str, runs: int) -> dict[str, Stats]:
    """``ainvoke`` with EngramSaver over a sync embedded database (its async methods hop
    to a worker thread) and over ``engramdb.aio`` (awaited natively)."""
    from engramdb.integrations.langgraph import EngramSaver

    async def timed(db: Any) -> Stats:
        graph = chat_graph(EngramSaver(db))
        samples = []
        for i in range(runs + 5):
            config = {"configurable": {"thread_id": uuid.uuid4().hex}}
            started = asyncio.get_running_loop().time()
            await graph.ainvoke({"messages": [], "step": 0}, config)
            if i >= 5:
                samples.append(int((asyncio.get_running_loop().time() - started) * 1e9))
        return Stats.from_samples(samples, sum(samples))

    async def both() -> dict[str, Stats]:
        sync_db = engramdb.open(os.path.join(directory, "aio-a"), durability="async")
        aio_db = await engramdb.aio.open(os.path.join(directory, "aio-b"), durability="async")
        try:
            return {
                "ainvoke, sync database (worker thread)": await timed(sync_db),
                "ainvoke, engramdb.aio database": await timed(aio_db),
            }
        finally:
            sync_db.close()
            await aio_db.close()

    return asyncio.run(both())


class Table:
    """Deterministic 'embeddings': each text is the index of a precomputed vector."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.vectors[int(t.split()[1])].tolist() for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        return self.embed_query(text)


def _searcher(store: Any, extra: dict[str, Any]) -> Callable[[np.ndarray], object]:
    def search(query: np.ndarray) -> object:
        return store.similarity_search_by_vector(query.tolist(), 10, **extra)

    return search


def vector_sides(
    directory: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, target: float
) -> dict[str, dict[str, Any]]:
    import time

    from langchain_core.vectorstores import InMemoryVectorStore

    from engramdb.integrations.langchain import EngramVectorStore

    texts = [f"doc {i}" for i in range(len(base))]
    ids = [str(i) for i in range(len(base))]
    embedding: Any = Table(base)
    out: dict[str, dict[str, Any]] = {}
    db = engramdb.open(os.path.join(directory, "vs"), durability="async")
    stores: dict[str, tuple[Any, Callable[[int], dict[str, Any]]]] = {
        "EngramVectorStore (embedded)": (
            EngramVectorStore(db, embedding, collection="bench", dim=base.shape[1], text=False),
            lambda ef: {"ef": ef},
        ),
        "InMemoryVectorStore": (InMemoryVectorStore(embedding), lambda ef: {}),
    }
    if not missing(CHROMA):
        import chromadb
        from langchain_chroma import Chroma

        chroma = chromadb.EphemeralClient()
        config = {"hnsw": {"space": "cosine", "ef_search": 16}}
        store = Chroma("bench", embedding, client=chroma, collection_configuration=config)
        stores["Chroma (langchain-chroma)"] = (store, lambda ef: {})
    try:
        for name, (store, _) in stores.items():
            started = time.perf_counter()
            for lo in range(0, len(texts), 1000):
                store.add_texts(texts[lo : lo + 1000], ids=ids[lo : lo + 1000])
            out[name] = {"add_s": time.perf_counter() - started}
        for name, (store, options) in stores.items():
            ladder = [None] if name == "InMemoryVectorStore" else [16, 32, 64, 128, 256, 512]
            for ef in ladder:
                if name.startswith("Chroma") and ef is not None:
                    chroma.get_collection("bench").modify(configuration={"hnsw": {"ef_search": ef}})
                extra = options(ef) if ef is not None else {}
                found = np.array(
                    [
                        [
                            int(d.id)
                            for d in store.similarity_search_by_vector(q.tolist(), 10, **extra)
                        ]
                        for q in queries
                    ]
                )
                recall = recall_at_k(found, truth)
                if recall >= target or ef == ladder[-1]:
                    break
            out[name].update({"ef": ef, "recall": recall, "fn": _searcher(store, extra)})
        sides = [(out[name]["fn"], list(queries), list(queries[:20])) for name in stores]
        for name, stats in zip(stores, measure_interleaved(sides, description="searching")):
            out[name]["stats"] = stats
            del out[name]["fn"]
    finally:
        db.close()
    return out


def _server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="graph runs per saver")
    parser.add_argument("--docs", type=int, default=20_000, help="documents in the vector stores")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--recall", type=float, default=0.95)
    parser.add_argument(
        "--postgres", default=os.environ.get("ENGRAMDB_BENCH_POSTGRES"), help="PostgreSQL URL"
    )
    parser.add_argument(
        "--no-postgres", action="store_true", help="leave PostgresSaver out of the run"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.docs, args.queries = 20, 2000, 50
    if why := missing("langgraph", "langchain_core"):
        print(f"skipped: {why}")
        return SKIPPED
    if missing(POSTGRES) or missing("pgserver"):
        print(f"PostgresSaver: skipped, {missing(POSTGRES) or missing('pgserver')}")
        args.no_postgres, args.postgres = True, None
    console = Console()
    with ExitStack() as stack:
        if args.postgres is None and not args.no_postgres:
            from engramdb.cluster.local import LocalPostgres

            console.print("starting a local PostgreSQL for PostgresSaver")
            args.postgres = stack.enter_context(LocalPostgres()).url()
        return run(args, console)


def run(args: argparse.Namespace, console: Console) -> int:
    with langgraph_sides(args.postgres) as sides:
        names = list(sides)
        runs = list(range(args.runs))
        graph_stats = dict(
            zip(
                names,
                measure_interleaved(
                    [(sides[n], runs, list(range(5))) for n in names],
                    rounds=10,
                    description="graph runs",
                ),
            )
        )
    with temp_dir("bench-integrations-aio") as directory:
        dispatch = async_dispatch(directory, args.runs)
        operations = saver_operations(directory, args.runs * 5, args.postgres)

    vectors = clustered_vectors(args.docs + args.queries, args.dim)
    base, queries = vectors[: args.docs], vectors[args.docs :]
    truth = exact_top_k(queries, base, 10)[0]
    with temp_dir("bench-integrations-vs") as directory:
        searched = vector_sides(directory, base, queries, truth, args.recall)

    def vs(ref: Stats | None, s: Stats) -> str:
        return "—" if ref is None else fmt_ratio(ref.p50_us / s.p50_us)

    # Ratios of medians: the machine is shared, and a median shrugs off a neighbour's burst.
    sqlite, postgres = graph_stats.get("SqliteSaver (file)"), graph_stats.get("PostgresSaver")
    r = Report(
        "integrations",
        "integrations",
        "Framework adapters: LangGraph checkpointers, LangChain vector stores",
        f"{args.runs} runs of a {STEPS}-step LangGraph graph per checkpointer (per-run times; ms "
        f"where marked, else µs), and LangChain vector stores at recall@10 ≥ {args.recall} on "
        f"{args.docs:,} {args.dim}-d vectors.",
        args.quick,
        machine_info(
            [
                "langgraph",
                "langgraph-checkpoint-sqlite",
                "langchain-core",
                "langchain-chroma",
                "chromadb",
            ]
        ),
        raw={
            "args": vars(args),
            "graph": {n: s.to_json() for n, s in {**graph_stats, **dispatch}.items()},
            "operations": {
                n: {op: s.to_json() for op, s in o.items()} for n, o in operations.items()
            },
            "vectors": {
                n: {**{k: v for k, v in x.items() if k != "stats"}, **x["stats"].to_json()}
                for n, x in searched.items()
            },
        },
    )
    embedded = graph_stats["EngramSaver embedded (async)"]
    served = graph_stats["EngramSaver via engramdb serve (sync)"]
    for peer, ref, ours in [("SqliteSaver", sqlite, embedded), ("PostgresSaver", postgres, served)]:
        if ref is not None:
            r.check(
                f"LangGraph run p50: {peer} / EngramSaver",
                peer,
                f"{vs(ref, ours)} ({fmt_us(ours.p50_us)} vs {fmt_us(ref.p50_us)})",
            )
    r.table(
        "",
        [
            "checkpointer",
            "p50 / run",
            "p99 / run",
            "mean / run",
            "p50 speed vs SqliteSaver",
            "vs PostgresSaver",
        ],
        [
            [
                name,
                *(fmt_us(x) for x in (s.p50_us, s.p99_us, s.mean_us)),
                vs(sqlite, s),
                vs(postgres, s),
            ]
            for name, s in {**graph_stats, **dispatch}.items()
        ],
        "lrrrrr",
    )
    ref_ops = operations.get("SqliteSaver (file)")
    r.table(
        "The savers' own operations (one step: a checkpoint of five ~1 KB messages, two "
        "pending writes, reading it back)",
        [
            "checkpointer",
            "put p50",
            "put_writes p50",
            "get_tuple p50",
            "put+put_writes vs SqliteSaver",
        ],
        [
            [
                name,
                *(fmt_us(o[op].p50_us) for op in ("put", "put_writes", "get_tuple")),
                "—"
                if ref_ops is None
                else fmt_ratio(
                    (ref_ops["put"].p50_us + ref_ops["put_writes"].p50_us)
                    / (o["put"].p50_us + o["put_writes"].p50_us)
                ),
            ]
            for name, o in operations.items()
        ],
        "lrrrr",
        publish=False,
    )
    exact, chroma = (
        searched.get(n, {}).get("stats")
        for n in ("InMemoryVectorStore", "Chroma (langchain-chroma)")
    )
    engram = searched["EngramVectorStore (embedded)"]["stats"]
    if chroma is not None:
        r.check(
            "vector store p50 at equal recall: Chroma / EngramVectorStore",
            "Chroma",
            vs(chroma, engram),
        )
    r.table(
        "",
        [
            "vector store",
            "ef",
            "recall@10",
            "p50",
            "p99",
            "vs InMemory",
            "vs Chroma",
            "docs/s added",
        ],
        [
            [
                name,
                "exact" if x["ef"] is None else str(x["ef"]),
                f"{x['recall']:.3f}",
                fmt_us(x["stats"].p50_us),
                fmt_us(x["stats"].p99_us),
                vs(exact, x["stats"]),
                vs(chroma, x["stats"]),
                f"{args.docs / x['add_s']:,.0f}",
            ]
            for name, x in searched.items()
        ],
        "lrrrrrrr",
    )
    if args.postgres:
        r.note(
            "PostgresSaver",
            f"PostgreSQL {_server_version(args.postgres)} on this machine "
            "over TCP (fsync on), started by `engramdb.cluster.local.LocalPostgres`, or the "
            "`--postgres` given.",
        )
    for name, module in [("SqliteSaver", SQLITE), ("Chroma", CHROMA)]:
        if why := missing(module):
            print(f"{name}: skipped, {why}")
            r.note(name, f"not measured: {why}")
    r.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
