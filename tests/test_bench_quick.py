"""The benchmarks still run: the scripts whose ``--quick`` takes seconds, in a smoke size.

Each runs as ``python bench/<name>.py --quick`` would, with ``$ENGRAMDB_BENCH_RESULTS`` pointing
at ``tmp_path`` so nothing in the checkout changes; a peer that is not installed is skipped by
the script itself (and a script with nothing to run here exits ``SKIPPED``, which skips the
test). What is asserted is that the run completes and writes a result the renderer can
publish, never how fast anything was. The slow areas (sessions, features, memory, vectors,
the audit, the cluster) run with ``python -m bench --quick``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIPPED = 77


def run_bench(tmp_path: Path, *argv: str, module: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ENGRAMDB_BENCH_RESULTS": str(tmp_path)}
    head = ["-m", "bench"] if module else [str(ROOT / "bench" / f"{argv[0]}.py")]
    args = argv if module else argv[1:]
    done = subprocess.run(
        [sys.executable, *head, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if done.returncode == SKIPPED:
        pytest.skip(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def result(tmp_path: Path, script: str) -> dict[str, Any]:
    data = json.loads((tmp_path / f"{script}.json").read_text(encoding="utf-8"))
    assert data["schema"] == 1
    assert data["quick"] is True
    assert data["tables"]
    assert all(t["rows"] for t in data["tables"] if t["publish"])
    assert data["machine"]["date"]
    return data


def render_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_render", ROOT / "bench" / "render.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_batches_quick_through_python_m_bench(tmp_path: Path) -> None:
    run_bench(tmp_path, "--quick", "batches", module=True)
    data = result(tmp_path, "batches")
    assert next(h["comparison"] for h in data["headline"]).startswith("server put_many")


def test_records_quick(tmp_path: Path) -> None:
    sizes = ["--records", "2000", "--gets", "5000", "--get-many", "200", "--puts", "2000",
             "--sync-puts", "50", "--operates", "2000"]  # fmt: skip
    run_bench(tmp_path, "records", "--quick", *sizes)
    data = result(tmp_path, "records")
    systems = {row[1] for row in data["tables"][0]["rows"]}
    assert {"engramdb", "LMDB floor"} <= systems


def test_server_quick(tmp_path: Path) -> None:
    """engramdb serve against redis-server through redis-benchmark, every phase, in tiny sizes:
    the headline holds every target and the page's throughput table every test."""
    sizes = ["--requests", "2000", "--pipelined-requests", "2000", "--durable-requests", "1000",
             "--repeats", "1", "--latency-calls", "1000", "--keys", "500", "--flat-items",
             "10000", "--flat-requests", "1000", "--workers-requests", "2000",
             "--workers-pipelined-requests", "4000"]  # fmt: skip
    run_bench(tmp_path, "server", "--quick", *sizes)
    data = result(tmp_path, "server")
    names = [h["comparison"] for h in data["headline"]]
    assert names[0].startswith("throughput, 50 conns, unpipelined")
    assert len(names) == 11
    assert names[-2].startswith("throughput, 50 conns, unpipelined: engramdb --workers 2")
    assert names[-1].startswith("throughput, 50 conns, -P 16: engramdb --workers 2")
    (published,) = [t for t in data["tables"] if t["publish"]]
    assert [row[0] for row in published["rows"]] == [
        "SET", "GET", "INCR", "LPUSH", "LPOP", "SADD", "HSET", "ZADD"
    ]  # fmt: skip


def test_context_quick_without_peers(tmp_path: Path) -> None:
    """One agent step as a context call and as separate calls, embedded and through a
    server; the glue stack's peers (Redis, Chroma, Feast) are left out and reported so."""
    run_bench(tmp_path, "context", "--quick", "--no-redis", "--no-chroma", "--no-feast",
              "--steps", "40", "--warmup", "10")  # fmt: skip
    data = result(tmp_path, "context")
    sides = [row[1] for row in data["tables"][0]["rows"]]
    assert sides[0] == "one `db.context` call"
    assert "one `context` call (sync client)" in sides
    assert data["headline"][0]["comparison"].startswith("step p99, server")
    assert set(data["raw"]["skipped"]) == {"Redis", "Chroma", "Feast"}


def test_integrations_quick(tmp_path: Path) -> None:
    run_bench(tmp_path, "integrations", "--quick", "--no-postgres", "--runs", "5",
              "--docs", "500", "--queries", "20")  # fmt: skip
    data = result(tmp_path, "integrations")
    assert any(r[0].startswith("EngramSaver embedded") for r in data["tables"][0]["rows"])


def test_search_quality_quick(tmp_path: Path) -> None:
    """BM25 and the hash embedder on Cranfield and CISI (skipped without the IR data)."""
    run_bench(tmp_path, "search_quality", "--quick")
    data = result(tmp_path, "search_quality")
    assert data["tables"][0]["rows"][1][0].startswith("engramdb BM25")


def test_a_quick_run_renders_and_leaves_the_checkout_alone(tmp_path: Path) -> None:
    before = (ROOT / "BENCHMARKS.md").read_bytes()
    run_bench(tmp_path, "batches", "--quick")
    assert (ROOT / "BENCHMARKS.md").read_bytes() == before
    render = render_module()
    render.RESULTS = tmp_path
    page = render.render()
    assert "quick smoke run, not a measurement" in page
    assert "Bulk loading" in page


def test_the_published_page_fits_and_leads_with_the_headline() -> None:
    render = render_module()
    page = render.render()
    assert page.index("## Headline") < page.index("<!-- bench:")
    for area, _ in render.AREAS:
        assert f"<!-- bench:{area}:start -->" in page
    assert len(page.encode()) < 30_000
