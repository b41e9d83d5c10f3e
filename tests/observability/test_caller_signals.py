"""Golden signals from the caller's side: per-method latency, traffic and errors in
``stats()`` on every face, and OpenTelemetry spans (the ``otel`` extra) whose trace runs
from the client into ``engramdb serve``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import engramdb
import engramdb.aio
from engramdb import Conflict, InvalidArgument, NotFound
from engramdb.protocol.resp import encode_command
from tests.observability.conftest import Served, ServeFactory, wait_for

otel_sdk = pytest.importorskip("opentelemetry.sdk.trace")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Telemetry on in this process; its spans land in memory."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, otel_sdk.TracerProvider):
        provider = otel_sdk.TracerProvider()
        trace.set_tracer_provider(provider)
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    monkeypatch.setenv("ENGRAMDB_TELEMETRY", "1")
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def _traced_server(serve: ServeFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Served:
    """A server run with telemetry on, writing its spans to a file (no SDK set up there)."""
    out = tmp_path / "server-spans.jsonl"
    with monkeypatch.context() as env:
        env.setenv("ENGRAMDB_TELEMETRY", "1")
        env.setenv("ENGRAMDB_TELEMETRY_FILE", str(out))
        return serve()


def _server_spans(tmp_path: Path, count: int) -> list[dict[str, Any]]:
    out = tmp_path / "server-spans.jsonl"

    def lines() -> list[str]:
        return out.read_text().splitlines() if out.exists() else []

    wait_for(lambda: len(lines()) >= count, 10, f"{count} server spans")
    return [json.loads(line) for line in lines()]


def _hex(number: int, width: int) -> str:
    return f"0x{number:0{width}x}"


def test_one_trace_runs_from_the_sync_client_into_the_server(
    serve: ServeFactory,
    spans: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    server = _traced_server(serve, monkeypatch, tmp_path)
    with engramdb.connect(server.url) as db:
        users = db.records("users")
        users.put("u1", {"n": 1})  # a write: group commit on the server
        assert users.get("u1") is not None  # a read: on the event loop
        with pytest.raises(Conflict):
            users.put("u1", {}, create_only=True)
        assert [r.key for r in users.scan().records] == ["u1"]  # slow: on a worker thread
    mine = [s for s in spans.get_finished_spans() if s.name.startswith("records.")]
    assert [s.name for s in mine] == [
        "records.put users", "records.get users", "records.put users", "records.scan users",
    ]  # fmt: skip
    theirs = {s["context"]["span_id"]: s for s in _server_spans(tmp_path, 4)}
    for span in mine:
        assert span.kind is SpanKind.CLIENT
        assert span.context is not None
        attributes = dict(span.attributes or {})
        assert attributes["db.system.name"] == "engramdb"
        assert attributes["db.operation.name"] == span.name.split()[0]
        assert attributes["db.collection.name"] == "users"
        assert attributes["server.address"] == "127.0.0.1"
        assert attributes["server.port"] == server.port
        # The server's span of this call: same trace, the client span its parent.
        [served] = [s for s in theirs.values() if s["parent_id"] == _hex(span.context.span_id, 16)]
        assert served["context"]["trace_id"] == _hex(span.context.trace_id, 32)
        assert served["kind"] == "SpanKind.SERVER"
        assert served["name"] == span.name
        assert served["attributes"]["db.collection.name"] == "users"
    failed = mine[2]
    assert failed.status.status_code is StatusCode.ERROR
    assert dict(failed.attributes or {})["error.type"] == "Conflict"
    assert failed.context is not None
    [served] = [s for s in theirs.values() if s["parent_id"] == _hex(failed.context.span_id, 16)]
    assert served["status"]["status_code"] == "ERROR"
    assert served["attributes"]["error.type"] == "Conflict"


def test_one_trace_runs_from_the_asyncio_client_into_the_server(
    serve: ServeFactory,
    spans: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    server = _traced_server(serve, monkeypatch, tmp_path)
    tracer = trace.get_tracer("test")

    async def main() -> None:
        async with await engramdb.aio.connect(server.url) as db:
            with tracer.start_as_current_span("agent step"):
                await db.records("notes").put("n1", {"text": "hi"})

    asyncio.run(main())
    finished = spans.get_finished_spans()
    [step] = [s for s in finished if s.name == "agent step"]
    [call] = [s for s in finished if s.name == "records.put notes"]
    assert step.context is not None
    assert call.context is not None
    assert call.parent is not None
    assert call.parent.span_id == step.context.span_id  # the call is part of the caller's step
    [served] = [s for s in _server_spans(tmp_path, 1) if s["name"] == "records.put notes"]
    assert served["context"]["trace_id"] == _hex(step.context.trace_id, 32)
    assert served["parent_id"] == _hex(call.context.span_id, 16)


def test_the_embedded_database_runs_each_call_in_a_span(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    with engramdb.open(tmp_path / "db") as db:
        db.records("users").put("u1", {"n": 1})
        with pytest.raises(NotFound):
            db.records("users").touch("nobody", 5)
        db.sessions.create("s1")
        notes = db.vectors.create_collection("notes", 2)
        notes.upsert(["n1"], [[0.1, 0.2]])
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert finished["records.put users"].kind is SpanKind.INTERNAL
    assert dict(finished["records.touch users"].attributes or {})["error.type"] == "NotFound"
    assert dict(finished["sessions.create"].attributes or {}) == {
        "db.system.name": "engramdb",
        "db.operation.name": "sessions.create",
    }
    upsert = dict(finished["collection.upsert notes"].attributes or {})
    assert upsert["db.collection.name"] == "notes"
    # The roles' own record sets are internals, not calls of the caller.
    assert not [name for name in finished if name.startswith("records.") and "users" not in name]


def test_a_traced_client_is_answered_by_a_server_without_telemetry(
    serve: ServeFactory, spans: InMemorySpanExporter
) -> None:
    server = serve()
    with engramdb.connect(server.url) as db:
        assert db.records("users").put("u1", {"n": 1}) == 1
        assert db.records("users").get("u1") is not None
    assert len(spans.get_finished_spans()) == 2
    with server.raw() as raw:
        raw.send(encode_command(b"ENGRAM", b"db.last_sequence", b"\x92\x90\x80", b"a", b"b", b"c"))
        assert "at most a trace context" in str(raw.replies(1)[0])


def _calls(stats: dict[str, Any]) -> dict[str, tuple[int, dict[str, int]]]:
    return {name: (op["count"], op["errors"]) for name, op in stats["operations"].items()}


def test_stats_counts_calls_and_errors_by_method_on_every_face(
    serve: ServeFactory, tmp_path: Path
) -> None:
    def work(users: Any) -> None:
        users.put("u1", {"n": 1})
        users.get("u1")
        users.get("u2")
        with pytest.raises(Conflict):
            users.put("u1", {}, expect_generation=7)
        with pytest.raises(InvalidArgument):  # refused before it is sent: the caller saw it
            users.put("u3", {"bad": {1, 2}})

    expected = {"get": (2, {}), "put": (3, {"Conflict": 1, "InvalidArgument": 1})}
    with engramdb.open(tmp_path / "embedded") as embedded:
        work(embedded.records("users"))
        assert _calls(embedded.stats()) == expected
    server = serve()
    with engramdb.connect(server.url) as remote:
        work(remote.records("users"))
        assert _calls(remote.stats()) == {**expected, "stats": (1, {})}  # this one included
        assert remote.stats()["operations"]["get"]["p99_us"] > 0
        assert remote.metrics.op("put").errors == {"Conflict": 1, "InvalidArgument": 1}

    async def main() -> dict[str, Any]:
        async with await engramdb.aio.connect(server.url) as db:
            users = db.records("users2")
            await users.put("u1", {"n": 1})
            await users.get("u1")
            await users.get("u2")
            with pytest.raises(Conflict):
                await users.put("u1", {}, expect_generation=7)
            with pytest.raises(InvalidArgument):
                await users.put("u3", {"bad": {1, 2}})
            return await db.stats()

    figures = asyncio.run(main())
    counts = _calls(figures)
    assert {k: counts[k] for k in expected} == expected


def test_nothing_imports_opentelemetry_when_telemetry_is_off(
    serve: ServeFactory, tmp_path: Path
) -> None:
    server = serve()
    probe = (
        "import asyncio, sys\n"
        "import engramdb, engramdb.aio\n"
        f"db = engramdb.open({str(tmp_path / 'db')!r})\n"
        "db.records('a').put('k', {'v': 1}); db.records('a').get('k'); db.sessions\n"
        f"client = engramdb.connect({server.url!r})\n"
        "client.records('a').put('k', {'v': 1}); client.stats()\n"
        "async def main():\n"
        f"    async with await engramdb.aio.connect({server.url!r}) as c:\n"
        "        await c.records('a').get('k')\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGRAMDB_TELEMETRY")}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_telemetry_asked_for_without_the_extra_is_a_clear_error() -> None:
    probe = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if the otel extra were not installed\n"
        "import engramdb\n"
        "try:\n"
        "    engramdb.open(None)\n"
        "except engramdb.InvalidArgument as e:\n"
        "    print(e)\n"
        "engramdb.open(None, telemetry=False).close()\n"
    )
    env = {**os.environ, "ENGRAMDB_TELEMETRY": "1"}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    assert "pip install 'engramdb[otel]'" in done.stdout, done.stdout + done.stderr
