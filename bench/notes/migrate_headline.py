# ruff: noqa: E501  (quoted table rows, kept one per line)
"""The headline rows and one-line summaries of the carried-over runs, quoted from the targets, verdicts and sentences
of the hand-grown BENCHMARKS.md (see migrate_benchmarks_md.py). Figures are copied as printed."""

from __future__ import annotations


def h(
    comparison: str, peer: str, measured: str, target: str = "—", result: str = ""
) -> dict[str, str]:
    return {
        "comparison": comparison,
        "peer": peer,
        "measured": measured,
        "target": target,
        "result": result,
    }


HEADLINE: dict[str, list[dict[str, str]]] = {
    "records": [
        h(
            "get p99: engramdb / raw LMDB floor",
            "LMDB floor",
            "1.58x (9.34 µs vs 5.92 µs)",
            "≤ 3x",
            "PASS",
        ),
        h("get p99: Redis / engramdb", "Redis", "30.0x (280 µs vs 9.34 µs)", "≥ 10x", "PASS"),
    ],
    "server": [
        h(
            "throughput, 50 conns, unpipelined: engramdb (async) / Redis (no fsync), every test",
            "Redis",
            "0.41x (SET 0.50x, GET 0.71x, INCR 0.52x, LPUSH 0.42x, LPOP 0.51x, SADD 0.60x, HSET 0.50x, ZADD 0.41x)",
            "≥ 0.8x",
            "FAIL",
        ),
        h(
            "server CPU per request, 50 conns, unpipelined: engramdb (async) / Redis, every test",
            "Redis",
            "4.10x (SET 2.88x, GET 1.87x, INCR 2.88x, LPUSH 4.10x, LPOP 3.21x, SADD 2.59x, HSET 3.38x, ZADD 3.28x)",
            "≤ 2.5x",
            "FAIL",
        ),
        h(
            "GET p99, single client: engramdb client → engramdb / redis-py → Redis",
            "Redis",
            "1.46x (149 µs vs 102 µs)",
            "≤ 1.5x",
            "PASS",
        ),
        h(
            "SET p99, single client: engramdb client → engramdb / redis-py → Redis",
            "Redis",
            "2.09x (342 µs vs 163 µs)",
            "≤ 1.5x",
            "FAIL",
        ),
        h(
            "GET p99, single client: redis-py → engramdb / redis-py → Redis",
            "Redis",
            "1.34x (137 µs vs 102 µs)",
            "≤ 1.5x",
            "PASS",
        ),
        h(
            "SET p99, single client: redis-py → engramdb / redis-py → Redis",
            "Redis",
            "2.04x (333 µs vs 163 µs)",
            "≤ 1.5x",
            "FAIL",
        ),
        h(
            "durable SET, 50 conns: engramdb (sync) / Redis (appendfsync always)",
            "Redis",
            "0.76x (SET 0.76x)",
            "≥ 1x",
            "FAIL",
        ),
        h(
            "durable writes, 50 conns, unpipelined: engramdb (sync) / Redis (always), every write test",
            "Redis",
            "0.36x (SET 0.76x, INCR 0.87x, LPUSH 0.40x, LPOP 0.83x, SADD 0.57x, HSET 0.71x, ZADD 0.36x)",
            "≥ 1x",
            "FAIL",
        ),
        h(
            "LPUSH server CPU per request on a long list / on an empty one (engramdb)",
            "—",
            "0.94x (0 items: 25.0 µs, 10,000 items: 26.0 µs, 100,000 items: 27.0 µs, 1,000,000 items: 23.5 µs)",
            "≤ 1.25x",
            "PASS",
        ),
        h(
            "throughput, 50 conns: engramdb --workers 2 / one worker, SET and GET",
            "—",
            "0.94x (SET 0.94x, GET 1.08x)",
            "> 1x",
            "FAIL",
        ),
    ],
    "sessions-cache": [
        h("cache hit p99, one thread: Redis p99 ÷ engramdb embedded get_or_set", "Redis", "11.1x"),
        h("cache hit p99, one thread: Redis p99 ÷ engramdb server get_or_set", "Redis", "0.50x"),
        h(
            "stampede: loader calls per burst, get_or_set vs naive cache-aside",
            "naive cache-aside",
            "1 vs 200 (200.0x fewer)",
        ),
        h(
            "hot session, 8 writers, async: updates/s engramdb embedded ÷ Redis WATCH/MULTI",
            "Redis",
            "4.51x",
        ),
        h(
            "hot session, 8 writers, async: updates/s engramdb server ÷ Redis WATCH/MULTI",
            "Redis",
            "0.48x",
        ),
    ],
    "batches": [
        h(
            "server put_many / embedded put_many (records/s)",
            "engramdb embedded",
            "0.63x",
            "≥ 0.50",
            "PASS",
        ),
        h("server put_many / Redis MSET (appendfsync always)", "Redis", "0.39x"),
    ],
    "features": [
        h("engramdb embedded p99, 1 x 200", "—", "487 µs", "≤ 100 µs", "FAIL"),
        h(
            "Feast SQLite p99 / engramdb p99, 1 x 200",
            "Feast SQLite",
            "7.05x (3,432 µs vs 487 µs)",
            "≥ 20x",
            "FAIL",
        ),
        h(
            "Feast Redis p99 / engramdb p99, 1 x 200",
            "Feast Redis",
            "6.01x (2,925 µs vs 487 µs)",
            "≥ 20x",
            "FAIL",
        ),
        h(
            "Feast SQLite p99 / engramdb p99, 100 x 50",
            "Feast SQLite",
            "18.1x (32.8 ms vs 1,820 µs)",
            "≥ 20x",
            "FAIL",
        ),
        h(
            "Feast Redis p99 / engramdb p99, 100 x 50",
            "Feast Redis",
            "18.5x (33.6 ms vs 1,820 µs)",
            "≥ 20x",
            "FAIL",
        ),
        h(
            "point-in-time join time: Feast / engramdb, 1M x 100k",
            "Feast",
            "17.5x (9.4 s vs 0.54 s)",
            "≥ 10x",
            "PASS",
        ),
        h(
            "point-in-time join time: Feast / engramdb, 3M x 299.8k",
            "Feast",
            "24.3x (29.4 s vs 1.21 s)",
            "≥ 10x",
            "PASS",
        ),
        h(
            "identical results (online and point-in-time join)",
            "Feast",
            "0 of 1,182,268 values differ",
            "identical",
            "PASS",
        ),
    ],
    "memory": [
        h(
            "add p99: Mem0 / engramdb embedded (durability none)",
            "Mem0",
            "3.09x (6,123 µs vs 1,981 µs)",
            "≥ 10x",
            "FAIL",
        ),
        h(
            "add p99: Mem0 / engramdb embedded (sync)",
            "Mem0",
            "1.42x (6,123 µs vs 4,317 µs)",
            "≥ 10x",
            "FAIL",
        ),
        h(
            "add p99: Mem0 / engramdb server (none)",
            "Mem0",
            "1.78x (6,123 µs vs 3,447 µs)",
            "≥ 10x",
            "FAIL",
        ),
        h(
            "add p99: Mem0 / engramdb server (sync)",
            "Mem0",
            "1.31x (6,123 µs vs 4,672 µs)",
            "≥ 10x",
            "FAIL",
        ),
        h(
            "search p99: Mem0 / engramdb embedded (hybrid)",
            "Mem0",
            "342.4x (1,668.5 ms vs 4,873 µs)",
            "≥ 10x",
            "PASS",
        ),
        h(
            "search p99: Mem0 / engramdb embedded (vector only)",
            "Mem0",
            "1004.7x (1,668.5 ms vs 1,661 µs)",
            "≥ 10x",
            "PASS",
        ),
        h(
            "search p99: Mem0 / engramdb server (hybrid)",
            "Mem0",
            "278.7x (1,668.5 ms vs 5,987 µs)",
            "≥ 10x",
            "PASS",
        ),
        h("recall@1: engramdb (hybrid) vs Mem0", "Mem0", "0.984 vs 0.969", "≥ Mem0", "PASS"),
        h("recall@5: engramdb (hybrid) vs Mem0", "Mem0", "1.000 vs 0.996", "≥ Mem0", "PASS"),
        h("recall@10: engramdb (hybrid) vs Mem0", "Mem0", "1.000 vs 0.996", "≥ Mem0", "PASS"),
    ],
    "vectors": [
        h(
            "clustered: search overhead vs raw faiss (p50), worst",
            "raw faiss",
            "+9.5% (@0.95 +9.5% ef=20, @0.99 +5.4% ef=40)",
            "≤ 15%",
            "PASS",
        ),
        h(
            "clustered: default recall@10 (no ef)",
            "—",
            "0.997 (calibrated ef=48, 240 µs mean)",
            "≥ 0.95",
            "PASS",
        ),
        h(
            "uniform: default recall@10 (no ef)",
            "—",
            "1.000 (exact search, 845 µs mean)",
            "≥ 0.95",
            "PASS",
        ),
        h(
            "sphere: default recall@10 (no ef)",
            "—",
            "1.000 (exact search, 788 µs mean)",
            "≥ 0.95",
            "PASS",
        ),
        h(
            "clustered @0.95: overhead with the default include (p50)",
            "raw faiss",
            "+11.9% (mean +37.8%)",
            "≤ 15%",
            "PASS",
        ),
        h(
            "clustered @0.95: extra time, include=[] (p50)",
            "raw faiss",
            "+9.5 µs",
            "≤ 30 µs",
            "PASS",
        ),
        h(
            "clustered @0.95: extra time, default include (p50)",
            "raw faiss",
            "+11.9 µs",
            "≤ 30 µs",
            "PASS",
        ),
        h(
            "clustered @0.99: overhead with the default include (p50)",
            "raw faiss",
            "+8.5% (mean +16.7%)",
            "≤ 15%",
            "PASS",
        ),
        h(
            "clustered @0.99: extra time, include=[] (p50)",
            "raw faiss",
            "+8.2 µs",
            "≤ 30 µs",
            "PASS",
        ),
        h(
            "clustered @0.99: extra time, default include (p50)",
            "raw faiss",
            "+12.9 µs",
            "≤ 30 µs",
            "PASS",
        ),
    ],
    "vector-libs": [
        h(
            "index library chosen: native filtered search (IDSelectorBitmap)",
            "hnswlib, usearch",
            "faiss",
        ),
        h(
            "QPS at recall 0.95, one thread: faiss vs hnswlib vs usearch",
            "hnswlib, usearch",
            "8,309 vs 9,061 vs 3,837",
        ),
        h(
            "exact-search crossover of the filtered graph (faiss)",
            "—",
            "≈ 3.4% (≈ 3,364 matching items)",
        ),
    ],
    "search-quality": [
        h(
            "CISI (held out) nDCG@10: engramdb BM25 vs tantivy BM25 reference",
            "tantivy BM25",
            "0.360 vs 0.304",
        ),
        h(
            "CISI (held out) nDCG@10: hybrid RRF, all-MiniLM-L6-v2, defaults vs engramdb BM25",
            "engramdb BM25",
            "+0.079 (p < 0.001)",
        ),
    ],
    "integrations": [
        h(
            "LangGraph run p50: SqliteSaver / EngramSaver embedded (async)",
            "SqliteSaver",
            "1.40x (12.9 ms vs 18.1 ms)",
        ),
        h(
            "LangGraph run p50: PostgresSaver / EngramSaver via serve (sync)",
            "PostgresSaver",
            "1.47x (24.4 ms vs 35.8 ms)",
        ),
        h("vector store p50 at recall ≥ 0.95: Chroma / EngramVectorStore", "Chroma", "4.56x"),
    ],
    "audit": [
        h(
            "acknowledged writes lost after kill -9 (server)",
            "Redis",
            "0 of 75,614 vs 0 of 164,736",
        ),
        h("max rate with p99 ≤ 1 ms", "Redis", "none on any side (best p99 9.18 ms vs 20.56 ms)"),
    ],
    "cluster": [
        h(
            "kill -9 the leader: write outage median / worst",
            "—",
            "20.15 s / 20.79 s",
            "≤ 25 s",
            "PASS",
        ),
        h("switchover: write outage median / worst", "—", "2.53 s / 2.74 s", "≤ 5 s", "PASS"),
        h(
            "remove a replica: write outage median / worst",
            "—",
            "0.15 s / 0.15 s",
            "≤ 5 s",
            "PASS",
        ),
        h(
            "acknowledged writes lost: leader kill / switchover / scale-in",
            "—",
            "0 of 104,149 / 0 of 47,828 / 0 of 24,098",
            "0",
            "PASS",
        ),
    ],
    "redis-py-suite": [
        h(
            "redis-py's command tests passing on redis-server that pass on engramdb",
            "redis-server",
            "1356 of 1367 (99.2%)",
        ),
    ],
}


# What each area measures, in a line for the page (the old section's opening, shortened).
SUMMARY: dict[str, str] = {
    "records": "100,000 records of 5 bins (~146 B as msgpack), uniform random access, against raw LMDB and Redis; every call timed on its own after warmup; latencies in µs; ops/s = calls / wall time (a get_many call is 100 keys).",
    "server": '`redis-benchmark -t TEST -c 50` (and `-P 16`) against `engramdb serve --durability async` and `redis-server --save "" --appendonly no`; ratios are engramdb / Redis requests per second; latencies are redis-benchmark\'s, in ms.',
    "sessions-cache": "`update(sid, fn)` under contention against Redis WATCH/MULTI, cache hits, and a burst of 1,000 requests on a hot key whose TTL runs out; latencies in µs unless marked ms.",
    "batches": "100,000 records of ~40 bytes in batches of 1,000, median of 3 interleaved runs; embedded and server at `durability=sync` (an fsync per batch).",
    "features": "Online lookups (1 driver x 200 features from 5 views; 100 drivers x 50 features) and point-in-time joins, against Feast with SQLite and Redis online stores and its file (Dask) offline store; latencies in µs.",
    "memory": "100,000 memories across 1,000 users and 2,000 labelled paraphrased queries; all-MiniLM-L6-v2 embeddings computed once and passed to every system, so latencies are store time, in µs.",
    "vectors": "Single-query search through each system's Python API (one thread for engramdb and raw faiss) on 100,000 x 384 clustered vectors; recall@10 against exact top-10; engramdb and raw faiss at the same ef.",
    "vector-libs": "100,000 x 384 float32 clustered vectors, 1,000 held-out queries, M = 16, ef_construction = 200; builds and batch search on 2 threads, single-query search on one.",
    "search-quality": "BM25, vector and hybrid search scored by nDCG@10 and MAP@100 against human relevance judgments: Cranfield (settings tuned on it) and CISI (held out, run once).",
    "integrations": "200 runs of a 10-step LangGraph graph per checkpointer (per-run times; ms where marked, else µs), and LangChain vector stores at recall@10 ≥ 0.95 on 20,000 384-d vectors.",
    "audit": "The figures of `engramdb audit` on each side with the same workload (A (50/50 read/update), zipfian keys, 1000 B values) and the same 2 open-loop load processes; latency from each request's intended send time.",
    "cluster": "A local 3-node cluster (etcd, Patroni, PostgreSQL 18 + pgvector, quorum synchronous replication): failover under load, and latency against the LMDB engine and Redis.",
    "redis-py-suite": "redis-py 8.2.0's own command and pub/sub tests against a private `redis-server` and `engramdb serve`; a test counts when it passes on redis-server.",
}
