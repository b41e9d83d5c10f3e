"""One agent step: ``db.context`` against separate calls and the glue stack, in one run.

    python bench/context.py            # full run: the issue's sizes (100k memories, 100k chunks)
    python bench/context.py --quick    # seconds: small sizes, a smoke run
    python bench/context.py --help     # every size is configurable

The question (issue 18): an agent step reads its session with the last 20 events, 200 online
features of one entity, a memory search (k=5) and a hybrid search for RAG (k=10). Served as
four calls, the step waits for each call's tail in turn; ``db.context`` asks for all of it in
one call and runs the parts concurrently. What the whole step costs, p50/p99/p999:

- **engramdb, one call**: ``db.context(session=SessionRead(id, last_events=20),
  features=FeatureRead(200 features, [entity]), memory=MemoryQuery(q, user_id=u, k=5),
  search=SearchQuery("chunks", text=q2, vector=v2, k=10))``;
- **engramdb, separate calls**: ``sessions.get``, ``features.get_online_features``,
  ``memory.search(k=5)``, ``collection.hybrid_search(k=10)``, one after the other;
- each of the two embedded (``engramdb.open(dir, durability="none")``) and through a real
  ``engramdb serve --durability none`` on the same directory with the sync client
  (``engramdb.connect``), TCP on 127.0.0.1;
- **the glue stack** users run today, one system per part, called one after the other: a
  private ``redis-server`` for the session (``GET`` state + ``LRANGE -20 -1`` events, one
  pipelined round trip), Chroma (in-process ``PersistentClient``) for retrieval — the memory
  search as Chroma's query over the memories filtered by user (what Mem0 does underneath with
  its Chroma vector store, without Mem0's own layer), its query embedded in the step with the
  same ``HashEmbedder`` engramdb uses, and the chunk search as a vector query (Chroma's local
  client has no BM25, so its side does less than a hybrid search) — and Feast (local provider,
  Redis online store on the same ``redis-server``) for the features. Feast runs in its own
  virtualenv (``--feast-python``; ``bench/_feast_side.py``), so its calls are timed there in
  the same loop for the same entities, and step i of the glue stack is Redis + Chroma step i
  plus Feast call i. Mem0 is not run here (see the report's notes); a part that cannot run is
  reported as skipped, and the glue figure names what it includes.

Data (deterministic): ``--sessions`` sessions with a small state and 20 events each; one
feature view of ``--features`` float64 features over ``--entities`` entities; ``--memories``
memories of 8-14 words spread over ``--users`` users (``db.memory.add``, so dedupe runs); and
``--chunks`` chunks of 30-60 words (``collection.upsert`` in batches of 1,000), texts made of
a fixed pseudo-word vocabulary, embedded with ``HashEmbedder`` (256 dimensions). Every side
holds the same sessions, features, memories and chunks; each step draws a session, an
entity, a user and two queries, and every side runs the same steps.

Timing: ``_common.measure_interleaved_samples``: each step timed alone with
``perf_counter_ns``, warmup first and discarded, ``gc.collect()`` + ``gc.freeze()`` before,
the sides taking turns in 20 slices so load drift falls on all alike. Before timing, a few
steps of every engramdb side are checked against each other (same session, features, memory
ids and chunk ids) and every context part must be ok.

Writes bench/results/context.json (``_common.Report``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

import engramdb
from _common import (
    SKIPPED,
    EngramServer,
    EngramUnavailable,
    Meter,
    RedisServer,
    RedisUnavailable,
    Report,
    Stats,
    Watched,
    exit_on_sigterm,
    fmt_ratio,
    fmt_us,
    machine_info,
    measure_interleaved_samples,
    new_progress,
    stats_cells,
    temp_dir,
)
from engramdb import FeatureRead, MemoryQuery, SearchQuery, SessionRead
from engramdb.embedders import HashEmbedder
from engramdb.features import Entity, FeatureView, Field

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")  # Chroma: no telemetry calls

SECTION = "context"
TARGET_SERVER = 0.5  # server step p99: context / separate calls
TARGET_GLUE = 10.0  # glue stack step p99 / engramdb context (server) p99
EVENTS = 20
MEMORY_K, SEARCH_K = 5, 10
VIEW, ENTITY, JOIN_KEY = "user_stats", "user", "user_id"
DEFAULT_FEAST_PYTHON = "/tmp/feast-venv/bin/python"
FEAST_SIDE = Path(__file__).resolve().with_name("_feast_side.py")
MEM0_NOTE = (
    "Mem0: not run. Loading its memories goes through Mem0's own add path (bench/memory.py "
    "measures it; its time budget runs out well before 100k memories there), which does not "
    "fit this run's time; the memory part of the glue stack is Chroma's filtered query, "
    "what Mem0 calls underneath with its Chroma vector store, so Mem0's own overhead is left "
    "out (in the glue stack's favour)."
)

encode = msgspec.msgpack.Encoder().encode
decode = msgspec.msgpack.Decoder().decode


# configuration -----------------------------------------------------------------------------


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
QUICK = Sizes(
    memories=1_000, users=20, chunks=2_000, sessions=20, entities=20, steps=200, warmup=20
)


# rows of the report: policy as data --------------------------------------------------------


@dataclass(frozen=True)
class Side:
    id: str
    placement: str  # embedded / server / glue
    how: str  # what one step does


SIDES: tuple[Side, ...] = (
    Side("embedded.context", "embedded", "one `db.context` call"),
    Side("embedded.separate", "embedded", "4 calls"),
    Side("server.context", "server", "one `context` call (sync client)"),
    Side("server.separate", "server", "4 calls"),
    Side("glue.partial", "glue", ""),  # how: filled in with the systems that ran
    Side("glue.full", "glue", ""),
)
SIDE = {s.id: s for s in SIDES}


# the dataset -------------------------------------------------------------------------------


def vocabulary(rng: random.Random, n: int = 4_000) -> list[str]:
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


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


def make_data(sizes: Sizes, embedder: HashEmbedder) -> Data:
    rng = random.Random(sizes.seed)
    words = vocabulary(rng)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))

    memories = [(f"user-{i % sizes.users:05d}", text(8, 14)) for i in range(sizes.memories)]
    chunk_texts = [text(30, 60) for _ in range(sizes.chunks)]
    chunk_vectors = np.vstack(
        [embedder.embed(chunk_texts[lo : lo + 2000]) for lo in range(0, sizes.chunks, 2000)]
    ).astype(np.float32)

    def step() -> Step:
        # A query shares words with a real memory / chunk, so searches find something.
        m = memories[rng.randrange(len(memories))]
        c = chunk_texts[rng.randrange(len(chunk_texts))].split()
        chunk_query = " ".join(rng.sample(c, min(6, len(c))))
        return Step(
            session=f"sess-{rng.randrange(sizes.sessions):05d}",
            entity=rng.randrange(sizes.entities),
            user=m[0],
            memory_query=" ".join(rng.sample(m[1].split(), 4)),
            chunk_query=chunk_query,
            chunk_vector=embedder.embed([chunk_query])[0].astype(np.float32),
        )

    steps = [step() for _ in range(sizes.steps)]
    warmup = [step() for _ in range(sizes.warmup)]
    return Data(
        feature_names=[f"f{i:03d}" for i in range(sizes.features)],
        memories=memories,
        chunk_texts=chunk_texts,
        chunk_vectors=chunk_vectors,
        steps=steps,
        warmup=warmup,
    )


def session_state(i: int) -> dict[str, Any]:
    return {"turn": i % 17, "goal": "plan a trip", "user": f"user-{i:05d}", "lang": "en"}


def session_event(i: int, j: int) -> dict[str, Any]:
    return {"role": "user" if j % 2 else "assistant", "n": j, "text": f"message {j} of {i}"}


def feature_table(sizes: Sizes, names: list[str]) -> pa.Table:
    rng = np.random.default_rng(sizes.seed)
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    columns: dict[str, Any] = {
        JOIN_KEY: pa.array(np.arange(sizes.entities, dtype=np.int64)),
        "event_timestamp": pa.array([when] * sizes.entities, pa.timestamp("us", tz="UTC")),
    }
    values = rng.standard_normal((sizes.entities, len(names)))
    for j, name in enumerate(names):
        columns[name] = pa.array(values[:, j])
    return pa.table(columns)


# the run -----------------------------------------------------------------------------------


def normal_priority(pid: int | None) -> None:
    """Every thread of ``pid`` back to nice 0 (Linux niceness is per thread)."""
    if pid is None:
        return
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, int(task), 0)


@contextlib.contextmanager
def held(lock: str | None, log: Callable[[str], None]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock`` (None: no lock), so benchmarks sharing the
    machine never measure at the same time."""
    if lock is None:
        yield
        return
    with open(lock, "a") as f:
        began = time.monotonic()
        fcntl.flock(f, fcntl.LOCK_EX)
        log(f"holding {lock} (waited {time.monotonic() - began:.0f} s)")
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Run:
    def __init__(self, sizes: Sizes, data: Data, root: str, console: Console) -> None:
        self.sizes = sizes
        self.data = data
        self.root = root
        self.console = console
        self.progress = new_progress()
        self.embedder = HashEmbedder()
        self.path = os.path.join(root, "engramdb")
        self.parquet = os.path.join(root, "features.parquet")
        self.refs = [f"{VIEW}:{n}" for n in data.feature_names]
        self.build_s: dict[str, float] = {}
        self.samples: dict[str, tuple[np.ndarray, int]] = {}
        self.skipped: dict[str, str] = {}
        self.redis: Any = None
        self.redis_server: RedisServer | None = None
        self.chroma: Any = None
        self.feast_version = ""

    def log(self, text: str) -> None:
        self.progress.console.print(text)

    # building

    def build_engramdb(self) -> None:
        s, d = self.sizes, self.data
        began = time.perf_counter()
        with engramdb.open(self.path, durability="none", sweep_interval=None) as db:
            meter = Meter(self.progress)
            meter.start("build · engramdb sessions", s.sessions)
            for i in range(s.sessions):
                sid = f"sess-{i:05d}"
                db.sessions.create(sid, session_state(i), user_id=f"user-{i:05d}")
                for j in range(EVENTS):
                    db.sessions.append(sid, session_event(i, j))
                meter.advance(1)
            meter.advance(0, force=True)
            user = Entity(ENTITY, [JOIN_KEY])
            view = FeatureView(VIEW, [user], [Field(n, "float64") for n in d.feature_names])
            db.features.apply([user, view])
            db.features.ingest(VIEW, self.parquet)
            meter = Meter(self.progress)
            meter.start("build · engramdb memories", s.memories)
            for i, (uid, content) in enumerate(d.memories):
                db.memory.add(content, user_id=uid)
                if i % 200 == 199:
                    meter.advance(200)
            meter.advance(s.memories % 200, force=True)
            meter = Meter(self.progress)
            meter.start("build · engramdb chunks", s.chunks)
            chunks = db.vectors.create_collection("chunks", dim=self.embedder.dim)
            for lo in range(0, s.chunks, 1000):
                hi = min(s.chunks, lo + 1000)
                chunks.upsert(
                    [f"c{i}" for i in range(lo, hi)],
                    d.chunk_vectors[lo:hi],
                    texts=d.chunk_texts[lo:hi],
                )
                meter.advance(hi - lo)
            meter.advance(0, force=True)
        self.build_s["engramdb"] = time.perf_counter() - began

    def build_redis(self) -> None:
        r, s = self.redis, self.sizes
        pipe = r.pipeline(transaction=False)
        for i in range(s.sessions):
            sid = f"sess-{i:05d}"
            pipe.set(sid, encode(session_state(i)))
            pipe.rpush(f"{sid}:events", *[encode(session_event(i, j)) for j in range(EVENTS)])
        pipe.execute()

    def build_chroma(self) -> None:
        import chromadb

        s, d = self.sizes, self.data
        began = time.perf_counter()
        self.chroma = chromadb.PersistentClient(
            os.path.join(self.root, "chroma"),
            settings=chromadb.Settings(anonymized_telemetry=False),
        )
        config = {"hnsw": {"space": "cosine"}}
        memories = self.chroma.create_collection(
            "memories", configuration=config, embedding_function=None
        )
        chunks = self.chroma.create_collection(
            "chunks", configuration=config, embedding_function=None
        )
        batch = min(2000, self.chroma.get_max_batch_size())
        meter = Meter(self.progress)
        meter.start("build · Chroma memories + chunks", s.memories + s.chunks)
        for lo in range(0, s.memories, batch):
            part = d.memories[lo : lo + batch]
            texts = [t for _, t in part]
            memories.add(
                ids=[f"m{i}" for i in range(lo, lo + len(part))],
                embeddings=self.embedder.embed(texts).astype(np.float32),
                documents=texts,
                metadatas=[{"user_id": u} for u, _ in part],
            )
            meter.advance(len(part))
        for lo in range(0, s.chunks, batch):
            hi = min(s.chunks, lo + batch)
            chunks.add(
                ids=[f"c{i}" for i in range(lo, hi)],
                embeddings=d.chunk_vectors[lo:hi],
                documents=d.chunk_texts[lo:hi],
            )
            meter.advance(hi - lo)
        meter.advance(0, force=True)
        self.build_s["chroma"] = time.perf_counter() - began

    # the step, on every side

    def context_step(self, db: Any) -> Callable[[Step], Any]:
        refs = self.refs

        def step(s: Step) -> Any:
            return db.context(
                session=SessionRead(s.session, last_events=EVENTS),
                features=FeatureRead(refs, [{JOIN_KEY: s.entity}]),
                memory=MemoryQuery(s.memory_query, user_id=s.user, k=MEMORY_K),
                search=SearchQuery("chunks", text=s.chunk_query, vector=s.chunk_vector, k=SEARCH_K),
            )

        return step

    def separate_step(self, db: Any) -> Callable[[Step], Any]:
        refs = self.refs
        sessions, features, memory = db.sessions, db.features, db.memory
        chunks = db.vectors.get_collection("chunks")

        def step(s: Step) -> Any:
            return (
                sessions.get(s.session),
                features.get_online_features(refs, [{JOIN_KEY: s.entity}]),
                memory.search(s.memory_query, user_id=s.user, k=MEMORY_K),
                chunks.hybrid_search(s.chunk_query, s.chunk_vector, SEARCH_K),
            )

        return step

    def glue_step(self) -> Callable[[Step], Any]:
        r = self.redis
        embed = self.embedder.embed
        memories = self.chroma.get_collection("memories", embedding_function=None)
        chunks = self.chroma.get_collection("chunks", embedding_function=None)

        def step(s: Step) -> Any:
            pipe = r.pipeline(transaction=False)
            pipe.get(s.session)
            pipe.lrange(f"{s.session}:events", -EVENTS, -1)
            state, events = pipe.execute()
            session = (decode(state), [decode(e) for e in events])
            found = memories.query(
                query_embeddings=embed([s.memory_query]).astype(np.float32),
                n_results=MEMORY_K,
                where={"user_id": s.user},
            )
            docs = chunks.query(query_embeddings=[s.chunk_vector], n_results=SEARCH_K)
            return session, found, docs

        return step

    def check(self, sides: dict[str, Callable[[Step], Any]]) -> None:
        """Every engramdb side must answer a step alike, and every context part be ok."""
        for s in self.data.warmup[:5]:
            got = {}
            for name, fn in sides.items():
                out = fn(s)
                if name.endswith("context"):
                    for part in ("session", "features", "memory", "search"):
                        p = getattr(out, part)
                        assert p is not None, f"{name}: no {part} part"
                        assert p.ok, f"{name}: {part} failed: {p.error}"
                    sess, feats, mem, hits = (
                        out.session.value, out.features.value, out.memory.value, out.search.value
                    )  # fmt: skip
                else:
                    sess, feats, mem, hits = out
                got[name] = (
                    sess.state,
                    sess.events[-EVENTS:],
                    feats.to_dict(),
                    [h.memory.id for h in mem],
                    [h.id for h in hits],
                )
            first = next(iter(got.values()))
            assert first[3], "the memory search found nothing"
            assert first[4], "the chunk search found nothing"
            assert len(first[1]) == EVENTS, "the session lost events"
            for name, value in got.items():
                assert value == first, f"{name} answered differently"

    # measuring

    def measure(self, db: Any, client: Any, lock: str | None, server_pid: int | None) -> None:
        d = self.data
        sides: dict[str, Callable[[Step], Any]] = {
            "embedded.context": self.context_step(db),
            "embedded.separate": self.separate_step(db),
        }
        if client is not None:
            sides["server.context"] = self.context_step(client)
            sides["server.separate"] = self.separate_step(client)
        self.check(sides)
        if self.redis is not None and self.chroma is not None:
            sides["glue.partial"] = self.glue_step()
        with held(lock, self.log):
            if lock is not None:  # the build ran at a low priority; measure at the normal one
                for pid in (os.getpid(), server_pid):
                    normal_priority(pid)
            got = measure_interleaved_samples(
                [(fn, d.steps, d.warmup) for fn in sides.values()],
                meter=Meter(self.progress),
                description="steps · every side, taking turns",
                batch=64,
            )
        self.samples.update(zip(sides, got))

    def measure_feast(self, python: str) -> None:
        d = self.data
        spec = {
            "mode": "online-measure",
            **self.feast_spec(),
            "workloads": [
                {"id": "step", "features": self.refs, "dump": 1,
                 "warmup": [[s.entity] for s in d.warmup],
                 "calls": [[s.entity] for s in d.steps]}
            ],
        }  # fmt: skip
        out = self.feast(python, spec, "feast-measure", "steps · Feast (its own process)")
        if out is not None:
            w = out["workloads"]["step"]
            self.samples["feast"] = (np.asarray(w["samples_ns"], np.int64), int(w["wall_ns"]))
            want = d.feature_names[0]
            assert w["answers"][0][want] is not None, "Feast found no features"

    def feast_spec(self) -> dict[str, Any]:
        assert self.redis_server is not None
        return {
            "repo": os.path.join(self.root, "feast"),
            "online_store": {
                "type": "redis",
                "connection_string": f"127.0.0.1:{self.redis_server.port}",
            },
            "entity": {"name": ENTITY, "join_key": JOIN_KEY},
            "views": [
                {"name": VIEW, "path": self.parquet, "ttl_s": 0,
                 "features": [[n, "float64"] for n in self.data.feature_names]}
            ],
        }  # fmt: skip

    def feast(
        self, python: str, spec: dict[str, Any], name: str, what: str
    ) -> dict[str, Any] | None:
        spec_path = os.path.join(self.root, f"{name}.spec.json")
        out_path = os.path.join(self.root, f"{name}.out.json")
        Path(spec_path).write_text(json.dumps(spec), encoding="utf-8")
        meter = Meter(self.progress)
        meter.start(what, 1)
        watched = Watched(
            [python, str(FEAST_SIDE), spec_path, out_path],
            log_path=os.path.join(self.root, f"{name}.log"),
            timeout_s=900,
        )
        done = watched.start().wait(lambda _: meter.advance(0, force=True), poll_s=1.0)
        meter.advance(1, force=True)
        if not done.ok or not os.path.exists(out_path):
            tail = " | ".join(watched.log_tail(800).strip().splitlines()[-3:])
            self.skipped["Feast"] = f"{what} failed: {done.reason or 'no result'}: {tail}"
            self.log(f"[yellow]{self.skipped['Feast']}[/yellow]")
            return None
        out: dict[str, Any] = json.loads(Path(out_path).read_text(encoding="utf-8"))
        self.feast_version = out.get("feast_version", "")
        return out

    def run(self, args: argparse.Namespace) -> None:
        with self.progress:
            # With --lock, other benchmarks may be measuring while this one builds: build
            # at a low priority, and hold the lock only while measuring.
            background = args.lock is not None
            if background:
                os.setpriority(os.PRIO_PROCESS, 0, 15)
            pq.write_table(feature_table(self.sizes, self.data.feature_names), self.parquet)
            self.build_engramdb()
            feast_python = self.feast_python(args)
            if self.redis is not None:
                self.build_redis()
                if feast_python is not None:
                    began = time.perf_counter()
                    spec = {"mode": "online-load", **self.feast_spec()}
                    if self.feast(feast_python, spec, "feast-load", "build · Feast materialize"):
                        self.build_s["feast"] = time.perf_counter() - began
                    else:
                        feast_python = None
            if args.no_chroma:
                self.skipped["Chroma"] = "--no-chroma"
            else:
                try:
                    self.build_chroma()
                except ImportError as e:
                    self.skipped["Chroma"] = f"not installed ({e})"
            with contextlib.ExitStack() as stack:
                client = None
                try:
                    server = stack.enter_context(
                        EngramServer(
                            self.path, durability="none", extra_args=["--embedder", "hash"]
                        )
                    )
                except EngramUnavailable as e:
                    self.skipped["engramdb serve"] = str(e).splitlines()[0]
                else:
                    client = stack.enter_context(engramdb.connect(server.url))
                db = stack.enter_context(
                    engramdb.open(self.path, durability="none", sweep_interval=None)
                )
                self.measure(db, client, args.lock, server.pid if client is not None else None)
            if feast_python is not None and "glue.partial" in self.samples:
                with held(args.lock, self.log):
                    self.measure_feast(feast_python)

    def feast_python(self, args: argparse.Namespace) -> str | None:
        if args.no_feast:
            self.skipped["Feast"] = "--no-feast"
        elif self.redis is None:
            self.skipped["Feast"] = "needs redis-server (its online store)"
        elif not os.access(args.feast_python, os.X_OK):
            self.skipped["Feast"] = (
                f"no virtualenv at {args.feast_python} (python -m venv /tmp/feast-venv && "
                "/tmp/feast-venv/bin/pip install 'feast[redis]' pandas pyarrow)"
            )
        else:
            return str(args.feast_python)
        return None

    def stats(self) -> dict[str, Stats]:
        out = {k: Stats.from_samples(a, w) for k, (a, w) in self.samples.items()}
        if "glue.partial" in self.samples and "feast" in self.samples:
            (a, wa), (b, wb) = self.samples["glue.partial"], self.samples["feast"]
            out["glue.full"] = Stats.from_samples(a + b, wa + wb)
        return out


# report ------------------------------------------------------------------------------------


GLUE_PARTIAL = "Redis + Chroma"
GLUE_FULL = "Redis + Feast + Chroma"


def report(
    sizes: Sizes, quick: bool, run: Run, results: dict[str, Stats], machine: dict[str, str]
) -> Report:
    partial, full = GLUE_PARTIAL, GLUE_FULL
    how = {"glue.partial": f"{partial} (no features)", "glue.full": full}
    skipped = "; ".join(f"{k}: {v}" for k, v in run.skipped.items())
    r = Report(
        SECTION,
        "context",
        "Agent step: one context call vs separate calls vs the glue stack",
        f"Step: session + last {EVENTS} events, {sizes.features} features of 1 entity, "
        f"memory search k={MEMORY_K} over {sizes.memories:,} memories, hybrid search "
        f"k={SEARCH_K} over {sizes.chunks:,} chunks; {sizes.steps:,} steps a side, taking "
        "turns. Glue: Redis (session), Feast on Redis (features), Chroma (memory by user, "
        "chunks by vector); Mem0 not run.",
        quick,
        machine,
        about=(__doc__ or "").split("\n\n")[1],
        raw={
            "sizes": asdict(sizes),
            "results": {k: s.to_json() for k, s in results.items()},
            "build_s": run.build_s,
            "skipped": run.skipped,
            "glue_full_includes": full,
            "glue_partial_includes": partial,
        },
    )

    def p99(k: str) -> float:
        return results[k].p99_us

    if "server.context" in results:
        x = p99("server.context") / p99("server.separate")
        r.check(
            "step p99, server: context / separate calls",
            "engramdb, 4 calls",
            f"{fmt_ratio(x)} ({us(p99('server.context'))} vs {us(p99('server.separate'))})",
            f"≤ {TARGET_SERVER:g}x",
            x <= TARGET_SERVER,
        )
        glue = "glue.full" if "glue.full" in results else "glue.partial"
        if glue in results:
            y = p99(glue) / p99("server.context")
            label = full if glue == "glue.full" else f"{partial} (no features)"
            r.check(
                "step p99: glue stack / context (server)",
                label,
                f"{fmt_ratio(y)} ({us(p99(glue))} vs {us(p99('server.context'))})",
                f"≥ {TARGET_GLUE:g}x",
                y >= TARGET_GLUE,
            )
    shown = [s for s in SIDES if s.id in results]
    if "glue.full" in results:  # the partial glue stack stays in the JSON
        shown = [s for s in shown if s.id != "glue.partial"]
    rows = [[s.placement, s.how or how[s.id], *stats_cells(results[s.id])] for s in shown]
    r.table(
        "The whole step",
        ["where", "one step", "p50", "p99", "p999", "steps/s"],
        rows,
        "llrrrr",
    )
    ratios = []
    for place in ("embedded", "server"):
        ctx, sep = f"{place}.context", f"{place}.separate"
        if ctx in results and sep in results:
            ratios.append([f"{place}: context / separate calls", *_ratios(results, ctx, sep)])
    for glue in ("glue.partial", "glue.full"):
        for place in ("embedded", "server"):
            ctx = f"{place}.context"
            if glue in results and ctx in results:
                ratios.append([f"{how[glue]} / {place} context", *_ratios(results, glue, ctx)])
    r.table("Ratios", ["ratio", "p50", "p99", "p999"], ratios, "lrrr", publish=False)
    if "feast" in results:
        r.table(
            "Feast's call alone (its own process, added to each glue step)",
            ["call", "p50", "p99", "p999", "calls/s"],
            [["get_online_features(200 features, 1 entity).to_dict()",
              *stats_cells(results["feast"])]],
            "lrrrr",
            publish=False,
        )  # fmt: skip
    r.note("Mem0", MEM0_NOTE)
    changed = {f.name: getattr(sizes, f.name) for f in fields(Sizes)}
    changed = {k: v for k, v in changed.items() if v != getattr(FULL, k)}
    if changed and not quick:
        r.note("Sizes", f"changed from the defaults (the issue's sizes): {changed}")
    if run.skipped:
        r.note("Skipped", skipped)
    r.note("Build", ", ".join(f"{k} {v:.0f} s" for k, v in run.build_s.items()))
    return r


def us(value: float) -> str:
    text = fmt_us(value)
    return text if text.endswith("ms") else f"{text} µs"


def _ratios(results: dict[str, Stats], num: str, den: str) -> list[str]:
    a, b = results[num], results[den]
    return [fmt_ratio(a.p50_us / b.p50_us), fmt_ratio(a.p99_us / b.p99_us),
            fmt_ratio(a.p999_us / b.p999_us)]  # fmt: skip


# main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Sizes, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="One agent step: db.context vs separate calls vs Redis + Feast + Chroma."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    for f in fields(Sizes):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=int,
            default=None,
            help=f"default {getattr(FULL, f.name):,}, --quick {getattr(QUICK, f.name):,}",
        )
    parser.add_argument("--data-dir", help="parent of the temporary data directories")
    parser.add_argument("--no-redis", action="store_true", help="skip Redis (and Feast)")
    parser.add_argument("--no-chroma", action="store_true", help="skip Chroma")
    parser.add_argument("--no-feast", action="store_true", help="skip Feast")
    parser.add_argument("--lock", help="a file to flock while measuring (not while building)")
    parser.add_argument("--feast-python", default=DEFAULT_FEAST_PYTHON,
                        help="python of Feast's virtualenv")  # fmt: skip
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    sizes = Sizes(
        **{
            f.name: getattr(args, f.name) if getattr(args, f.name) is not None
            else getattr(base, f.name)
            for f in fields(Sizes)
        }
    )  # fmt: skip
    if min(sizes.memories, sizes.users, sizes.chunks, sizes.sessions, sizes.entities) < 1:
        parser.error("every size must be positive")
    return sizes, args


def main(argv: Sequence[str] | None = None) -> int:
    sizes, args = parse_args(argv)
    exit_on_sigterm()
    console = Console() if Console().is_terminal else Console(width=120)
    console.print("[bold]building the dataset…[/bold]")
    data = make_data(sizes, HashEmbedder())
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(temp_dir("engramdb-bench-context-", args.data_dir))
        run = Run(sizes, data, root, console)
        extra: dict[str, str] = {}
        if args.no_redis:
            run.skipped["Redis"] = "--no-redis"
        else:
            try:
                server = stack.enter_context(RedisServer(parent=args.data_dir))
            except RedisUnavailable as e:
                run.skipped["Redis"] = str(e).splitlines()[0]
            else:
                import redis

                run.redis_server = server
                run.redis = stack.enter_context(
                    redis.Redis(host=server.host, port=server.port, protocol=2)
                )
                extra["redis-server"] = server.version
        run.run(args)
        results = run.stats()
        if run.feast_version:
            extra["feast"] = run.feast_version
        machine = machine_info(
            ("engramdb", "chromadb", "redis", "hiredis", "numpy"), data_dir=root, extra=extra
        )
    if "embedded.context" not in results:
        console.print("nothing measured")
        return SKIPPED
    report(sizes, args.quick, run, results, machine).save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
