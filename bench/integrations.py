"""Framework adapters against what their users would otherwise pick, in one run.

    python bench/integrations.py [--quick] [--postgres URL | --no-postgres]

LangGraph: a 10-step graph whose state is a growing message history (~1 KB a step), a fresh
thread per run, checkpointed by ``EngramSaver`` (embedded, async and sync; through ``engramdb
serve``), ``SqliteSaver`` (a file) and ``PostgresSaver`` (local, over TCP, fsync on, or
``--postgres``), sides interleaved; the savers' own put / put_writes / get_tuple; ``ainvoke`` on
a sync database (worker thread) against ``engramdb.aio``. LangChain: k=10 search by vector over
the same clustered vectors (the embedding is a table lookup) in ``EngramVectorStore``,
``InMemoryVectorStore`` (exact) and Chroma, each HNSW side at the smallest ``ef`` reaching
``--recall`` against exact search, so they compare at equal recall.
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from typing import Annotated, Any, TypedDict

import numpy as np

import _common as c
import engramdb
import engramdb.aio
from _common import Stats, fmt_ratio, fmt_us, missing

SQLITE, POSTGRES = "langgraph.checkpoint.sqlite", "langgraph.checkpoint.postgres"
CHROMA, MESSAGE, STEPS = "langchain_chroma", "x" * 1000, 10


@dataclass(frozen=True)
class Sizes:
    runs: int = 200  # graph runs per saver
    docs: int = 20_000  # documents in the vector stores
    dim: int = 384
    queries: int = 500


class Chat(TypedDict):
    messages: Annotated[list[str], operator.add]
    step: int


def chat_graph(saver: Any) -> Any:
    from langgraph.graph import END, START, StateGraph

    builder = StateGraph(Chat)
    builder.add_node("speak", lambda s: {"messages": [f"{s['step']}:{MESSAGE}"],
                                         "step": s["step"] + 1})  # fmt: skip
    builder.add_edge(START, "speak")
    builder.add_conditional_edges("speak", lambda s: END if s["step"] >= STEPS else "speak")
    return builder.compile(checkpointer=saver)


def thread() -> dict[str, Any]:
    return {"configurable": {"thread_id": uuid.uuid4().hex}}


@contextmanager
def savers(postgres: str | None, durabilities: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Every checkpointer of the comparison by its label, on fresh files."""
    from engramdb.integrations.langgraph import EngramSaver

    with ExitStack() as stack:
        folder, out = stack.enter_context(c.temp_dir("bench-integrations")), {}
        for durability in durabilities:
            db = stack.enter_context(engramdb.open(f"{folder}/{durability}", durability=durability))
            out[f"EngramSaver embedded ({durability})"] = EngramSaver(db)
        _, client = stack.enter_context(c.served(f"{folder}/server"))
        out["EngramSaver via engramdb serve (sync)"] = EngramSaver(client)
        if not missing(SQLITE):
            from langgraph.checkpoint.sqlite import SqliteSaver

            conn = sqlite3.connect(f"{folder}/lg.sqlite", check_same_thread=False)
            stack.callback(conn.close)
            out["SqliteSaver (file)"] = SqliteSaver(conn)
        if postgres:
            from langgraph.checkpoint.postgres import PostgresSaver

            out["PostgresSaver"] = stack.enter_context(PostgresSaver.from_conn_string(postgres))
            out["PostgresSaver"].setup()
        yield out


def saver_steps(saver: Any, n: int) -> dict[str, Stats]:
    """One step's ``put`` (a checkpoint of five ~1 KB messages), ``put_writes`` (two) and
    ``get_tuple``: the saver's own cost, without LangGraph's."""
    from langgraph.checkpoint.base.id import uuid6

    conf: dict[str, Any] = {"thread_id": uuid.uuid4().hex, "checkpoint_ns": ""}
    configs: list[Any] = []

    def put(i: int) -> object:
        last = configs[-1]["configurable"]["checkpoint_id"] if configs else None
        versions = {"messages": i + 1, "step": i + 1}
        checkpoint = {"v": 1, "id": str(uuid6()), "ts": "2026-01-01T00:00:00+00:00",
                      "channel_values": {"messages": [MESSAGE] * 5, "step": 3},
                      "channel_versions": versions, "versions_seen": {},
                      "updated_channels": None}  # fmt: skip
        at = {"configurable": conf | ({"checkpoint_id": last} if last else {})}
        configs.append(saver.put(at, checkpoint, {"step": i}, versions))
        return configs[-1]

    calls = {"put": put,  # then pending writes on each checkpoint, then each read back
             "put_writes": lambda i: saver.put_writes(configs[i], [("messages", [MESSAGE]),
                                                                    ("step", i)], "t"),
             "get_tuple": lambda i: saver.get_tuple(configs[i])}  # fmt: skip
    return {op: c.measure(fn, range(n), description=op) for op, fn in calls.items()}


def async_dispatch(runs: int) -> dict[str, Stats]:
    """``ainvoke`` with EngramSaver over a sync embedded database (async methods on a worker
    thread) and over ``engramdb.aio`` (awaited natively); the first 5 runs are warmup."""
    from engramdb.integrations.langgraph import EngramSaver

    async def timed(db: Any) -> Stats:
        graph, samples, clock = chat_graph(EngramSaver(db)), [], time.perf_counter_ns
        for i in range(runs + 5):
            began = clock()
            await graph.ainvoke({"messages": [], "step": 0}, thread())
            samples += [clock() - began] if i >= 5 else []
        return Stats.from_samples(samples, sum(samples))

    async def both(folder: str) -> dict[str, Stats]:
        aio_db = await engramdb.aio.open(f"{folder}/aio", durability="async")
        try:
            with engramdb.open(f"{folder}/sync", durability="async") as sync_db:
                return {"ainvoke, sync database (worker thread)": await timed(sync_db),
                        "ainvoke, engramdb.aio database": await timed(aio_db)}  # fmt: skip
        finally:
            await aio_db.close()

    with c.temp_dir("bench-integrations-aio") as folder:
        return asyncio.run(both(folder))


@dataclass
class Table:
    """Deterministic 'embeddings': text ``doc i`` is precomputed vector ``i``."""

    vectors: np.ndarray

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.vectors[int(t.split()[1])].tolist() for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def vector_stores(sizes: Sizes, target: float) -> dict[str, dict[str, Any]]:
    from langchain_core.vectorstores import InMemoryVectorStore

    from engramdb.integrations.langchain import EngramVectorStore

    vectors = c.clustered_vectors(sizes.docs + sizes.queries, sizes.dim)
    base, queries = vectors[: sizes.docs], vectors[sizes.docs :]
    truth, embedding, ladder = c.exact_top_k(queries, base, 10)[0], Table(base), [16, 32, 64]
    ladder += [128, 256, 512]
    with ExitStack() as stack:
        folder = stack.enter_context(c.temp_dir("bench-integrations-vs"))
        db = stack.enter_context(engramdb.open(f"{folder}/vs", durability="async"))
        # label -> (store, ef ladder, how to set an ef: the search's keyword arguments)
        stores: dict[str, tuple[Any, list[Any], Any]] = {
            "EngramVectorStore (embedded)": (EngramVectorStore(db, embedding, collection="bench",
                dim=sizes.dim, text=False), ladder, lambda ef: {"ef": ef}),
            "InMemoryVectorStore": (InMemoryVectorStore(embedding), [None], lambda ef: {}),
        }  # fmt: skip
        if not missing(CHROMA):
            import chromadb
            from langchain_chroma import Chroma

            client = chromadb.EphemeralClient()
            config = {"hnsw": {"space": "cosine", "ef_search": 16}}
            chroma = Chroma("bench", embedding, client=client, collection_configuration=config)
            stores["Chroma (langchain-chroma)"] = (chroma, ladder, lambda ef: client.get_collection(
                "bench").modify(configuration={"hnsw": {"ef_search": ef}}) or {})  # fmt: skip
        out: dict[str, dict[str, Any]] = {}
        texts, ids = [f"doc {i}" for i in range(sizes.docs)], [str(i) for i in range(sizes.docs)]
        for name, (store, _, _) in stores.items():
            began = time.perf_counter()
            for lo in range(0, sizes.docs, 1000):
                store.add_texts(texts[lo : lo + 1000], ids=ids[lo : lo + 1000])
            out[name] = {"add_s": time.perf_counter() - began}
        for name, (store, efs, set_ef) in stores.items():
            for ef in efs:
                kw = set_ef(ef) if ef else {}

                def search(q: np.ndarray, s: Any = store, kw: Any = kw) -> Any:
                    return s.similarity_search_by_vector(q.tolist(), 10, **kw)

                found = np.array([[int(d.id) for d in search(q)] for q in queries])
                if (recall := c.recall_at_k(found, truth)) >= target or ef == efs[-1]:
                    break
            out[name].update(ef=ef, recall=recall, fn=search)
        sides = [(out[name].pop("fn"), list(queries), list(queries[:20])) for name in stores]
        for name, stats in zip(stores, c.measure_interleaved(sides, description="searching")):
            out[name]["stats"] = stats
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    c.add_sizes(parser, Sizes(), quick := Sizes(runs=20, docs=2000, queries=50))
    parser.add_argument("--recall", type=float, default=0.95)
    parser.add_argument("--postgres", default=os.environ.get("ENGRAMDB_BENCH_POSTGRES"),
                        help="PostgreSQL URL (default: a local one for the run)")  # fmt: skip
    parser.add_argument("--no-postgres", action="store_true", help="leave PostgresSaver out")
    args = parser.parse_args()
    sizes = c.sizes_from(args, Sizes(), quick)
    if why := missing("langgraph", "langchain_core"):
        return c.skip(why)
    if why := missing(POSTGRES) or missing("pgserver"):
        print(f"PostgresSaver: skipped, {why}")
        args.no_postgres, args.postgres = True, None
    with ExitStack() as stack:
        if args.postgres is None and not args.no_postgres:
            from engramdb.cluster.local import LocalPostgres

            print("starting a local PostgreSQL for PostgresSaver")
            args.postgres = stack.enter_context(LocalPostgres()).url()
        with savers(args.postgres, ("async", "sync")) as found:
            graphs = [chat_graph(saver) for saver in found.values()]
            sides = [(lambda _, g=g: g.invoke({"messages": [], "step": 0}, thread()),
                      range(sizes.runs), range(5)) for g in graphs]  # fmt: skip
            graph = dict(zip(found, c.measure_interleaved(sides, rounds=10, description="graph")))
        dispatch = async_dispatch(sizes.runs)
        with savers(args.postgres, ("async",)) as found:
            operations = {name: saver_steps(s, sizes.runs * 5) for name, s in found.items()}
        searched = vector_stores(sizes, args.recall)
        version = ""
        if args.postgres:
            import psycopg

            with psycopg.connect(args.postgres) as conn:
                version = str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]
    raw = {"args": {**vars(args), **asdict(sizes)},
           "graph": {n: s.to_json() for n, s in {**graph, **dispatch}.items()},
           "operations": {n: {op: s.to_json() for op, s in o.items()}
                          for n, o in operations.items()},
           "vectors": {n: {**{k: v for k, v in x.items() if k != "stats"}, **x["stats"].to_json()}
                       for n, x in searched.items()}}  # fmt: skip
    report(raw, version).save()
    return 0


def report(raw: dict[str, Any], postgres_version: str) -> c.Report:
    args, stats = raw["args"], lambda d: Stats(**{k: d[k] for k in Stats.__dataclass_fields__})
    graph = {n: stats(s) for n, s in raw["graph"].items()}
    ops = {n: {op: stats(s) for op, s in o.items()} for n, o in raw["operations"].items()}
    vec = {n: {**x, "stats": stats(x)} for n, x in raw["vectors"].items()}
    packages = ["langgraph", "langgraph-checkpoint-sqlite", "langchain-core", "langchain-chroma",
                "chromadb"]  # fmt: skip
    r = c.Report(
        "integrations", "integrations",
        "Framework adapters: LangGraph checkpointers, LangChain vector stores",
        f"{args['runs']} runs of a {STEPS}-step LangGraph graph per checkpointer (per-run times; "
        f"ms where marked, else µs), and LangChain vector stores at recall@10 ≥ {args['recall']} "
        f"on {args['docs']:,} {args['dim']}-d vectors.",
        args["quick"], c.machine_info(packages), raw=raw,
    )  # fmt: skip

    # Ratios of medians: the machine is shared, and a median shrugs off a neighbour's burst.
    def vs(ref: Stats | None, s: Stats) -> str:
        return "—" if ref is None else fmt_ratio(ref.p50_us / s.p50_us)

    sqlite, postgres = graph.get("SqliteSaver (file)"), graph.get("PostgresSaver")
    for peer, ref, ours in [("SqliteSaver", sqlite, "EngramSaver embedded (async)"),
                            ("PostgresSaver", postgres, "EngramSaver via engramdb serve (sync)"),
                            ]:  # fmt: skip
        if ref is not None:
            r.check(f"LangGraph run p50: {peer} / EngramSaver", peer, f"{vs(ref, graph[ours])} "
                    f"({fmt_us(graph[ours].p50_us)} vs {fmt_us(ref.p50_us)})")  # fmt: skip
    r.table("", ["checkpointer", "p50 / run", "p99 / run", "mean / run",
                 "p50 speed vs SqliteSaver", "vs PostgresSaver"],
            [[name, fmt_us(s.p50_us), fmt_us(s.p99_us), fmt_us(s.mean_us), vs(sqlite, s),
              vs(postgres, s)] for name, s in graph.items()], "lrrrrr")  # fmt: skip
    sqlite_ops = "SqliteSaver (file)" in ops
    write = {n: o["put"].p50_us + o["put_writes"].p50_us for n, o in ops.items()}
    r.table("The savers' own operations (one step: a checkpoint of five ~1 KB messages, two "
            "pending writes, reading it back)",
            ["checkpointer", "put p50", "put_writes p50", "get_tuple p50",
             "put+put_writes vs SqliteSaver"],
            [[name, *(fmt_us(o[op].p50_us) for op in ("put", "put_writes", "get_tuple")),
              fmt_ratio(write["SqliteSaver (file)"] / write[name]) if sqlite_ops else "—"]
             for name, o in ops.items()], "lrrrr", publish=False)  # fmt: skip
    exact, chroma = (vec.get(n, {}).get("stats")
                     for n in ("InMemoryVectorStore", "Chroma (langchain-chroma)"))  # fmt: skip
    if chroma is not None:
        r.check("vector store p50 at equal recall: Chroma / EngramVectorStore", "Chroma",
                vs(chroma, vec["EngramVectorStore (embedded)"]["stats"]))  # fmt: skip
    r.table("", ["vector store", "ef", "recall@10", "p50", "p99", "vs InMemory", "vs Chroma",
                 "docs/s added"],
            [[name, "exact" if x["ef"] is None else str(x["ef"]), f"{x['recall']:.3f}",
              fmt_us(x["stats"].p50_us), fmt_us(x["stats"].p99_us), vs(exact, x["stats"]),
              vs(chroma, x["stats"]), f"{args['docs'] / x['add_s']:,.0f}"]
             for name, x in vec.items()], "lrrrrrrr")  # fmt: skip
    if postgres_version:
        r.note("PostgresSaver", f"PostgreSQL {postgres_version} on this machine over TCP (fsync "
               "on), started by `engramdb.cluster.local.LocalPostgres`, or the `--postgres` "
               "given.")  # fmt: skip
    for name, module in [("SqliteSaver", SQLITE), ("Chroma", CHROMA)]:
        if why := missing(module):
            print(f"{name}: skipped, {why}")
            r.note(name, f"not measured: {why}")
    return r


if __name__ == "__main__":
    sys.exit(main())
