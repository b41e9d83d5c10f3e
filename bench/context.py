"""One agent step: ``db.context`` against separate calls and the glue stack, in one run.

    python bench/context.py [--quick] [--help for every size]

An agent step (issue 18) reads its session with the last 20 events, 200 online features of
one entity, a memory search (k=5) and a hybrid search over chunks (k=10). Step latency of:
**one ``db.context`` call** (the parts run concurrently) and **four separate calls**
(``sessions.get``, ``features.get_online_features``, ``memory.search``,
``collection.hybrid_search``), each embedded (``durability="none"``) and through
``engramdb serve --durability none`` on the same directory (sync client, TCP on 127.0.0.1);
and **the glue stack**, one system per part called in turn: Redis for the session (GET +
``LRANGE -20 -1``, one pipelined round trip), Chroma (in-process ``PersistentClient``) for
the memory search filtered by user (what Mem0 runs underneath, without Mem0's own layer; the
query embedded in the step with engramdb's ``HashEmbedder``) and for the chunks (a vector
query: Chroma's local client has no BM25, so it does less than a hybrid search), and Feast
(Redis online store) for the features. Feast runs in its own virtualenv via
``bench/_feast_side.py``, timed there in the same loop on the same entities; glue step i is
Redis + Chroma step i plus Feast call i. Mem0 is not run (see the notes).

Every side holds the same deterministic data (pseudo-word texts embedded with
``HashEmbedder``, 256 dimensions) and runs the same steps: ``measure_interleaved_samples``,
warmup first, the sides taking turns in 20 slices; before timing, a few steps of every
engramdb side must give the same answers and every context part must be ok.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import _common
import engramdb
from _common import Meter, Report, Stats, fmt_ratio, fmt_us, stats_cells
from engramdb import FeatureRead, MemoryQuery, SearchQuery, SessionRead
from engramdb.embedders import HashEmbedder
from engramdb.features import Entity, FeatureView, Field

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")  # Chroma: no telemetry calls

TARGET_SERVER = 0.5  # server step p99: context / separate calls
TARGET_GLUE = 10.0  # glue stack step p99 / engramdb context (server) p99
EVENTS, MEMORY_K, SEARCH_K = 20, 5, 10
VIEW, ENTITY, JOIN_KEY = "user_stats", "user", "user_id"
FEAST_SIDE = Path(__file__).resolve().with_name("_feast_side.py")
PARTIAL, FULL_GLUE = "Redis + Chroma", "Redis + Feast + Chroma"
MEM0_NOTE = (
    "Mem0: not run. Loading its memories goes through Mem0's own add path (bench/memory.py "
    "measures it; its time budget runs out well before 100k memories there), which does not "
    "fit this run's time; the memory part of the glue stack is Chroma's filtered query, "
    "what Mem0 calls underneath with its Chroma vector store, so Mem0's own overhead is left "
    "out (in the glue stack's favour)."
)
# id: (where, what one step does)
SIDES = {
    "embedded.context": ("embedded", "one `db.context` call"),
    "embedded.separate": ("embedded", "4 calls"),
    "server.context": ("server", "one `context` call (sync client)"),
    "server.separate": ("server", "4 calls"),
    "glue.partial": ("glue", f"{PARTIAL} (no features)"),
    "glue.full": ("glue", FULL_GLUE),
}

encode = msgspec.msgpack.Encoder().encode
decode = msgspec.msgpack.Decoder().decode


@dataclass(frozen=True)
class Sizes:
    memories: int = 100_000
    users: int = 1_000
    chunks: int = 100_000
    sessions: int = 1_000
    entities: int = 1_000
    features: int = 200
    steps: int = 2_000
    warmup: int = 200
    seed: int = 1


FULL = Sizes()
QUICK = Sizes(memories=1_000, users=20, chunks=2_000, sessions=20, entities=20, steps=200,
              warmup=20)  # fmt: skip


# the dataset -------------------------------------------------------------------------------


@dataclass
class Step:
    session: str
    entity: int
    user: str
    memory_query: str
    chunk_query: str
    chunk_vector: np.ndarray


@dataclass
class Data:
    feature_names: list[str]
    memories: list[tuple[str, str]]  # (user, text)
    chunk_texts: list[str]
    chunk_vectors: np.ndarray
    steps: list[Step]
    warmup: list[Step]


def make_data(s: Sizes, embedder: HashEmbedder) -> Data:
    rng = random.Random(s.seed)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    vocabulary: set[str] = set()
    while len(vocabulary) < 4_000:
        vocabulary.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    words = sorted(vocabulary)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))

    memories = [(f"user-{i % s.users:05d}", text(8, 14)) for i in range(s.memories)]
    chunks = [text(30, 60) for _ in range(s.chunks)]
    vectors = np.vstack([embedder.embed(chunks[lo : lo + 2000])
                         for lo in range(0, s.chunks, 2000)]).astype(np.float32)  # fmt: skip

    def step() -> Step:
        # A query shares words with a real memory / chunk, so searches find something.
        user, memory = memories[rng.randrange(len(memories))]
        c = chunks[rng.randrange(len(chunks))].split()
        query = " ".join(rng.sample(c, min(6, len(c))))
        session, entity = f"sess-{rng.randrange(s.sessions):05d}", rng.randrange(s.entities)
        return Step(session, entity, user, " ".join(rng.sample(memory.split(), 4)), query,
                    embedder.embed([query])[0].astype(np.float32))  # fmt: skip

    steps = [step() for _ in range(s.steps)]
    warmup = [step() for _ in range(s.warmup)]
    return Data([f"f{i:03d}" for i in range(s.features)], memories, chunks, vectors, steps, warmup)


def session_state(i: int) -> dict[str, Any]:
    return {"turn": i % 17, "goal": "plan a trip", "user": f"user-{i:05d}", "lang": "en"}


def session_event(i: int, j: int) -> dict[str, Any]:
    return {"role": "user" if j % 2 else "assistant", "n": j, "text": f"message {j} of {i}"}


def feature_table(s: Sizes, names: list[str]) -> pa.Table:
    values = np.random.default_rng(s.seed).standard_normal((s.entities, len(names)))
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return pa.table({JOIN_KEY: pa.array(np.arange(s.entities, dtype=np.int64)),
                     "event_timestamp": pa.array([when] * s.entities, pa.timestamp("us", tz="UTC")),
                     **{name: pa.array(values[:, j]) for j, name in enumerate(names)}})  # fmt: skip


# the steps ---------------------------------------------------------------------------------


def context_step(db: Any, refs: list[str]) -> Callable[[Step], Any]:
    def step(s: Step) -> Any:
        return db.context(
            session=SessionRead(s.session, last_events=EVENTS),
            features=FeatureRead(refs, [{JOIN_KEY: s.entity}]),
            memory=MemoryQuery(s.memory_query, user_id=s.user, k=MEMORY_K),
            search=SearchQuery("chunks", text=s.chunk_query, vector=s.chunk_vector, k=SEARCH_K),
        )

    return step


def separate_step(db: Any, refs: list[str]) -> Callable[[Step], Any]:
    sessions, features, memory = db.sessions, db.features, db.memory
    chunks = db.vectors.get_collection("chunks")

    def step(s: Step) -> Any:
        return (sessions.get(s.session), features.get_online_features(refs, [{JOIN_KEY: s.entity}]),
                memory.search(s.memory_query, user_id=s.user, k=MEMORY_K),
                chunks.hybrid_search(s.chunk_query, s.chunk_vector, SEARCH_K))  # fmt: skip

    return step


def glue_step(r: Any, chroma: Any, embed: Callable[[list[str]], Any]) -> Callable[[Step], Any]:
    memories = chroma.get_collection("memories", embedding_function=None)
    chunks = chroma.get_collection("chunks", embedding_function=None)

    def step(s: Step) -> Any:
        pipe = r.pipeline(transaction=False)
        pipe.get(s.session)
        pipe.lrange(f"{s.session}:events", -EVENTS, -1)
        state, events = pipe.execute()
        session = (decode(state), [decode(e) for e in events])
        found = memories.query(query_embeddings=embed([s.memory_query]).astype(np.float32),
                               n_results=MEMORY_K, where={"user_id": s.user})  # fmt: skip
        return session, found, chunks.query(query_embeddings=[s.chunk_vector], n_results=SEARCH_K)

    return step


def check(sides: dict[str, Callable[[Step], Any]], steps: list[Step]) -> None:
    """Every engramdb side must answer a step alike, and every context part be ok."""
    for s in steps:
        got = []
        for name, fn in sides.items():
            out = fn(s)
            if name.endswith("context"):
                parts = [getattr(out, p) for p in ("session", "features", "memory", "search")]
                for p in parts:
                    assert p is not None, f"{name}: a part is missing"
                    assert p.ok, f"{name}: a part failed: {p.error}"
                out = [p.value for p in parts]
            sess, feats, mem, hits = out
            got.append((sess.state, sess.events[-EVENTS:], feats.to_dict(),
                        [h.memory.id for h in mem], [h.id for h in hits]))  # fmt: skip
        assert got[0][3], "the memory search found nothing"
        assert got[0][4], "the chunk search found nothing"
        assert len(got[0][1]) == EVENTS, "the session lost events"
        assert all(g == got[0] for g in got), "the engramdb sides answered differently"


# the run -----------------------------------------------------------------------------------


class Run:
    def __init__(self, s: Sizes, data: Data, root: str, args: argparse.Namespace) -> None:
        self.s, self.data, self.root, self.args = s, data, root, args
        self.progress = _common.new_progress()
        self.embedder = HashEmbedder()
        self.path, self.parquet = f"{root}/engramdb", f"{root}/features.parquet"
        self.refs = [f"{VIEW}:{n}" for n in data.feature_names]
        self.build_s: dict[str, float] = {}
        self.samples: dict[str, tuple[np.ndarray, int]] = {}
        self.skipped: dict[str, str] = {}
        self.redis: Any = None
        self.redis_port = 0
        self.chroma: Any = None
        self.feast_version = ""

    def meter(self, what: str, total: int) -> Meter:
        meter = Meter(self.progress)
        meter.start(what, total)
        return meter

    def build_engramdb(self) -> None:
        s, d = self.s, self.data
        with engramdb.open(self.path, durability="none", sweep_interval=None) as db:
            meter = self.meter("build · engramdb", s.sessions + s.memories + s.chunks)
            for i in range(s.sessions):
                db.sessions.create(f"sess-{i:05d}", session_state(i), user_id=f"user-{i:05d}")
                for j in range(EVENTS):
                    db.sessions.append(f"sess-{i:05d}", session_event(i, j))
                meter.advance(1)
            user = Entity(ENTITY, [JOIN_KEY])
            view = FeatureView(VIEW, [user], [Field(n, "float64") for n in d.feature_names])
            db.features.apply([user, view])
            db.features.ingest(VIEW, self.parquet)
            for uid, content in d.memories:
                db.memory.add(content, user_id=uid)
                meter.advance(1)
            chunks = db.vectors.create_collection("chunks", dim=self.embedder.dim)
            for lo in range(0, s.chunks, 1000):
                hi = min(s.chunks, lo + 1000)
                ids = [f"c{i}" for i in range(lo, hi)]
                chunks.upsert(ids, d.chunk_vectors[lo:hi], texts=d.chunk_texts[lo:hi])
                meter.advance(hi - lo)
            # Calibrated (and persisted) now, as in a store that has been serving a while:
            # else each process that opens it calibrates in the background while timed.
            for collection in (chunks, db.memory.collection):
                collection.calibrate()

    def build_chroma(self, chromadb: Any) -> None:
        s, d = self.s, self.data
        self.chroma = chromadb.PersistentClient(
            f"{self.root}/chroma", settings=chromadb.Settings(anonymized_telemetry=False)
        )
        make = self.chroma.create_collection
        config = {"hnsw": {"space": "cosine"}}
        memories = make("memories", configuration=config, embedding_function=None)
        chunks = make("chunks", configuration=config, embedding_function=None)
        batch = min(2000, self.chroma.get_max_batch_size())
        meter = self.meter("build · Chroma memories + chunks", s.memories + s.chunks)
        for lo in range(0, s.memories, batch):
            part = d.memories[lo : lo + batch]
            texts = [t for _, t in part]
            memories.add(ids=[f"m{i}" for i in range(lo, lo + len(part))],
                         embeddings=self.embedder.embed(texts).astype(np.float32),
                         documents=texts, metadatas=[{"user_id": u} for u, _ in part])  # fmt: skip
            meter.advance(len(part))
        for lo in range(0, s.chunks, batch):
            hi = min(s.chunks, lo + batch)
            chunks.add(ids=[f"c{i}" for i in range(lo, hi)], embeddings=d.chunk_vectors[lo:hi],
                       documents=d.chunk_texts[lo:hi])  # fmt: skip
            meter.advance(hi - lo)

    def timed(self, name: str, build: Callable[[], object]) -> Any:
        began = time.perf_counter()
        out = build()
        self.build_s[name] = time.perf_counter() - began
        return out

    def feast(self, mode: str, **spec: Any) -> dict[str, Any] | None:
        """Run ``bench/_feast_side.py`` in Feast's virtualenv; its answer, or None (skipped)."""
        store = {"type": "redis", "connection_string": f"127.0.0.1:{self.redis_port}"}
        features = [[n, "float64"] for n in self.data.feature_names]
        spec = {"mode": mode, "repo": f"{self.root}/feast", "online_store": store,
                "entity": {"name": ENTITY, "join_key": JOIN_KEY},
                "views": [{"name": VIEW, "path": self.parquet, "ttl_s": 0, "features": features}],
                **spec}  # fmt: skip
        base = f"{self.root}/feast-{mode}"
        Path(f"{base}.spec.json").write_text(json.dumps(spec), encoding="utf-8")
        meter = self.meter(f"Feast {mode} (its own process)", 1)
        argv = [self.args.feast_python, str(FEAST_SIDE), f"{base}.spec.json", f"{base}.out.json"]
        watched = _common.Watched(argv, log_path=f"{base}.log", timeout_s=900)
        done = watched.start().wait(lambda _: meter.advance(0, force=True), poll_s=1.0)
        meter.advance(1, force=True)
        if not done.ok or not os.path.exists(f"{base}.out.json"):
            tail = " | ".join(watched.log_tail(800).strip().splitlines()[-3:])
            self.skipped["Feast"] = f"Feast {mode} failed: {done.reason or 'no result'}: {tail}"
            return None
        out: dict[str, Any] = json.loads(Path(f"{base}.out.json").read_text(encoding="utf-8"))
        self.feast_version = out.get("feast_version", "")
        return out

    def run(self) -> None:
        args, d = self.args, self.data
        with self.progress:
            pq.write_table(feature_table(self.s, d.feature_names), self.parquet)
            self.timed("engramdb", self.build_engramdb)
            if self.redis is not None:
                pipe = self.redis.pipeline(transaction=False)
                for i in range(self.s.sessions):
                    events = [encode(session_event(i, j)) for j in range(EVENTS)]
                    pipe.set(f"sess-{i:05d}", encode(session_state(i)))
                    pipe.rpush(f"sess-{i:05d}:events", *events)
                pipe.execute()
            why = ("--no-feast" if args.no_feast else "needs redis-server (its online store)"
                   if self.redis is None else "" if os.access(args.feast_python, os.X_OK) else
                   f"no virtualenv at {args.feast_python} (python -m venv /tmp/feast-venv && "
                   "/tmp/feast-venv/bin/pip install 'feast[redis]' pandas pyarrow)")  # fmt: skip
            self.skipped.update({"Feast": why} if why else {})
            feast = not why and self.timed("feast", lambda: self.feast("online-load")) is not None
            if args.no_chroma:
                self.skipped["Chroma"] = "--no-chroma"
            else:
                try:
                    import chromadb
                except ImportError as e:
                    self.skipped["Chroma"] = f"not installed ({e})"
                else:
                    self.timed("chroma", lambda: self.build_chroma(chromadb))
            if not feast:
                self.build_s.pop("feast", None)
            with contextlib.ExitStack() as stack:
                sides: dict[str, Callable[[Step], Any]] = {}
                client = self.serve(stack)
                db = stack.enter_context(
                    engramdb.open(self.path, durability="none", sweep_interval=None)
                )
                for where, conn in [("embedded", db), ("server", client)]:
                    if conn is not None:
                        sides[f"{where}.context"] = context_step(conn, self.refs)
                        sides[f"{where}.separate"] = separate_step(conn, self.refs)
                check(sides, d.warmup[:5])
                if self.redis is not None and self.chroma is not None:
                    sides["glue.partial"] = glue_step(self.redis, self.chroma, self.embedder.embed)
                meter = Meter(self.progress)
                got = _common.measure_interleaved_samples(
                    [(fn, d.steps, d.warmup) for fn in sides.values()], batch=64, meter=meter,
                    description="steps · every side, taking turns")  # fmt: skip
                self.samples.update(zip(sides, got))
            if feast and "glue.partial" in self.samples:
                calls = {"id": "step", "features": self.refs, "dump": 1,
                         "warmup": [[s.entity] for s in d.warmup],
                         "calls": [[s.entity] for s in d.steps]}  # fmt: skip
                if out := self.feast("online-measure", workloads=[calls]):
                    w = out["workloads"]["step"]
                    assert w["answers"][0][d.feature_names[0]] is not None, "Feast found nothing"
                    self.samples["feast"] = (np.asarray(w["samples_ns"], np.int64), w["wall_ns"])

    def serve(self, stack: contextlib.ExitStack) -> Any:
        """A client of ``engramdb serve`` on the built directory, or None (skipped)."""
        try:
            server = stack.enter_context(_common.EngramServer(
                self.path, durability="none", extra_args=["--embedder", "hash"]))  # fmt: skip
        except _common.EngramUnavailable as e:
            self.skipped["engramdb serve"] = str(e).splitlines()[0]
            return None
        return stack.enter_context(engramdb.connect(server.url))

    def stats(self) -> dict[str, Stats]:
        out = {k: Stats.from_samples(a, w) for k, (a, w) in self.samples.items()}
        if "glue.partial" in self.samples and "feast" in self.samples:
            (a, wa), (b, wb) = self.samples["glue.partial"], self.samples["feast"]
            out["glue.full"] = Stats.from_samples(a + b, wa + wb)  # per step: both parts
        return out


# report ------------------------------------------------------------------------------------


def us(value: float) -> str:
    text = fmt_us(value)
    return text if text.endswith("ms") else f"{text} µs"


def report(s: Sizes, quick: bool, run: Run, res: dict[str, Stats], machine: Any) -> Report:
    r = Report(
        "context",
        "context",
        "Agent step: one context call vs separate calls vs the glue stack",
        f"Step: session + last {EVENTS} events, {s.features} features of 1 entity, "
        f"memory search k={MEMORY_K} over {s.memories:,} memories, hybrid search "
        f"k={SEARCH_K} over {s.chunks:,} chunks; {s.steps:,} steps a side, taking "
        "turns. Glue: Redis (session), Feast on Redis (features), Chroma (memory by user, "
        "chunks by vector); Mem0 not run.",
        quick,
        machine,
        about=(__doc__ or "").split("\n\n")[2],
        raw={"sizes": asdict(s), "results": {k: v.to_json() for k, v in res.items()},
             "build_s": run.build_s, "skipped": run.skipped, "glue_full_includes": FULL_GLUE,
             "glue_partial_includes": PARTIAL},
    )  # fmt: skip

    def ratios(num: str, den: str) -> list[str]:
        a, b = res[num], res[den]
        return [fmt_ratio(a.p50_us / b.p50_us), fmt_ratio(a.p99_us / b.p99_us),
                fmt_ratio(a.p999_us / b.p999_us)]  # fmt: skip

    glue = "glue.full" if "glue.full" in res else "glue.partial"
    if "server.context" in res:
        ctx, sep = res["server.context"].p99_us, res["server.separate"].p99_us
        r.check("step p99, server: context / separate calls", "engramdb, 4 calls",
                f"{fmt_ratio(ctx / sep)} ({us(ctx)} vs {us(sep)})", f"≤ {TARGET_SERVER:g}x",
                ctx / sep <= TARGET_SERVER)  # fmt: skip
        if glue in res:
            g = res[glue].p99_us
            r.check("step p99: glue stack / context (server)", SIDES[glue][1],
                    f"{fmt_ratio(g / ctx)} ({us(g)} vs {us(ctx)})", f"≥ {TARGET_GLUE:g}x",
                    g / ctx >= TARGET_GLUE)  # fmt: skip
    shown = [k for k in SIDES if k in res and not (k == "glue.partial" and "glue.full" in res)]
    r.table("The whole step", ["where", "one step", "p50", "p99", "p999", "steps/s"],
            [[*SIDES[k], *stats_cells(res[k])] for k in shown], "llrrrr")  # fmt: skip
    rows = [[f"{p}: context / separate calls", *ratios(f"{p}.context", f"{p}.separate")]
            for p in ("embedded", "server") if f"{p}.context" in res]  # fmt: skip
    rows += [[f"{SIDES[g][1]} / {p} context", *ratios(g, f"{p}.context")]
             for g in ("glue.partial", "glue.full") for p in ("embedded", "server")
             if g in res and f"{p}.context" in res]  # fmt: skip
    r.table("Ratios", ["ratio", "p50", "p99", "p999"], rows, "lrrr", publish=False)
    if "feast" in res:
        r.table("Feast's call alone (its own process, added to each glue step)",
                ["call", "p50", "p99", "p999", "calls/s"],
                [["get_online_features(200 features, 1 entity).to_dict()",
                  *stats_cells(res["feast"])]], "lrrrr", publish=False)  # fmt: skip
    r.note("Mem0", MEM0_NOTE)
    changed = {k: v for k, v in asdict(s).items() if v != getattr(FULL, k)}
    if changed and not quick:
        r.note("Sizes", f"changed from the defaults (the issue's sizes): {changed}")
    if run.skipped:
        r.note("Skipped", "; ".join(f"{k}: {v}" for k, v in run.skipped.items()))
    r.note("Build", ", ".join(f"{k} {v:.0f} s" for k, v in run.build_s.items()))
    return r


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="One agent step: db.context vs separate calls vs Redis + Feast + Chroma."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    _common.add_sizes(parser, FULL, QUICK)
    parser.add_argument("--data-dir", help="parent of the temporary data directories")
    parser.add_argument("--no-redis", action="store_true", help="skip Redis (and Feast)")
    parser.add_argument("--no-chroma", action="store_true", help="skip Chroma")
    parser.add_argument("--no-feast", action="store_true", help="skip Feast")
    parser.add_argument("--feast-python", default="/tmp/feast-venv/bin/python",
                        help="python of Feast's virtualenv")  # fmt: skip
    args = parser.parse_args(argv)
    sizes = _common.sizes_from(args, FULL, QUICK)
    _common.exit_on_sigterm()
    print("building the dataset…")
    data = make_data(sizes, HashEmbedder())
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(_common.temp_dir("engramdb-bench-context-", args.data_dir))
        run = Run(sizes, data, root, args)
        extra: dict[str, str] = {}
        if args.no_redis:
            run.skipped["Redis"] = "--no-redis"
        else:
            try:
                server = stack.enter_context(_common.RedisServer(parent=args.data_dir))
            except _common.RedisUnavailable as e:
                run.skipped["Redis"] = str(e).splitlines()[0]
            else:
                import redis

                run.redis_port, extra["redis-server"] = server.port, server.version
                run.redis = stack.enter_context(redis.Redis(server.host, server.port, protocol=2))
        run.run()
        results = run.stats()
        extra.update({"feast": run.feast_version} if run.feast_version else {})
        machine = _common.machine_info(("engramdb", "chromadb", "redis", "hiredis", "numpy"),
                                       data_dir=root, extra=extra)  # fmt: skip
    if "embedded.context" not in results:
        return _common.skip("nothing measured")
    report(sizes, args.quick, run, results, machine).save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
