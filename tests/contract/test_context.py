"""The inference-context call (``db.context``): one request for everything an agent step
reads, each part with its own value or error, a per-call deadline, one snapshot for the
record-backed parts. Runs on every face (embedded memory and LMDB, asyncio, remote)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
import numpy as np
import pytest

from engramdb import (
    Conflict,
    Context,
    Database,
    EngramError,
    FakeClock,
    FeatureRead,
    InvalidArgument,
    MemoryQuery,
    NotFound,
    Part,
    SearchQuery,
    SessionRead,
    Timeout,
)
from engramdb.embedders import HashEmbedder
from engramdb.features import Entity, FeatureView, Field

REMOTE = ("server", "server-aio")
DRIVER = Entity("driver", ["driver_id"])
STATS = FeatureView("driver_stats", [DRIVER], [Field("trips", "int64"), Field("city", "string")])


def _step(db: Database, clock: FakeClock) -> None:
    """What an agent step reads: a user, a session with events, features, memory, docs."""
    db.records("users").put("u1", {"name": "Ada"})
    db.records("prefs").put("u1", {"lang": "en"})
    db.sessions.create("s1", {"turn": 3}, user_id="u1")
    for i in range(5):
        db.sessions.append("s1", {"i": i})
    db.features.apply([DRIVER, STATS])
    now = dt.datetime.fromtimestamp(clock(), dt.UTC)
    db.features.push(
        "driver_stats", {"driver_id": 7, "event_timestamp": now, "trips": 12, "city": "Oslo"}
    )
    db.memory.add("Ada likes hiking in the Alps", user_id="u1")
    docs = db.vectors.create_collection("docs", dim=3)
    docs.upsert(
        ["d1", "d2"], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], texts=["alpine hiking", "city walks"]
    )


def test_one_call_returns_every_part(db: Database, clock: FakeClock) -> None:
    _step(db, clock)
    ctx = db.context(
        records={"users": ["u1", "nobody"], "prefs": ["u1"]},
        session=SessionRead("s1", last_events=2),
        features=FeatureRead(["driver_stats:trips", "driver_stats:city"], [{"driver_id": 7}]),
        memory=MemoryQuery("hiking", user_id="u1", k=3),
        search=SearchQuery("docs", text="hiking", vector=[1.0, 0.0, 0.0], k=2),
        timeout=30,
    )
    assert isinstance(ctx, Context)
    assert ctx.records is not None
    assert ctx.records.ok
    users = ctx.records.result()["users"]
    assert [r.bins if r else None for r in users] == [{"name": "Ada"}, None]
    assert ctx.records.result()["prefs"][0].bins == {"lang": "en"}  # type: ignore[union-attr]
    session = ctx.session.result()  # type: ignore[union-attr]
    assert session is not None
    assert session.state == {"turn": 3}
    assert session.events == [{"i": 3}, {"i": 4}]
    features = ctx.features.result()  # type: ignore[union-attr]
    assert features.to_dict() == {"driver_id": [7], "trips": [12], "city": ["Oslo"]}
    assert features.statuses["trips"] == ["PRESENT"]
    hits = ctx.memory.result()  # type: ignore[union-attr]
    assert [h.memory.content for h in hits] == ["Ada likes hiking in the Alps"]
    found = ctx.search.result()  # type: ignore[union-attr]
    assert [h.id for h in found] == ["d1", "d2"]
    assert found[0].text == "alpine hiking"
    assert "text_rank" in found[0].scores


def test_parts_not_asked_are_none_and_each_search_mode_works(db: Database) -> None:
    assert db.context() == Context()
    docs = db.vectors.create_collection("docs", dim=3)
    docs.upsert(["a", "b"], np.eye(3, dtype=np.float32)[:2], texts=["red apple", "green pear"])
    by_vector = db.context(search=SearchQuery("docs", vector=np.array([0, 1, 0], "float32")))
    assert [h.id for h in by_vector.search.result()][:1] == ["b"]  # type: ignore[union-attr]
    by_text = db.context(search=SearchQuery("docs", text="apple", k=1, include=()))
    hit = by_text.search.result()[0]  # type: ignore[union-attr]
    assert hit.id == "a"
    assert hit.text is None
    assert by_text.records is None
    assert by_text.session is None
    assert by_text.memory is None


def test_a_missing_session_is_none_and_last_events_zero_is_empty(db: Database) -> None:
    db.sessions.create("s1", {"n": 1})
    db.sessions.append("s1", "hello")
    ctx = db.context(session=SessionRead("gone"))
    assert ctx.session is not None
    assert ctx.session.ok
    assert ctx.session.value is None
    kept = db.context(session=SessionRead("s1", last_events=0)).session.result()  # type: ignore[union-attr]
    assert kept is not None
    assert kept.events == []
    assert kept.state == {"n": 1}
    every = db.context(session=SessionRead("s1")).session.result()  # type: ignore[union-attr]
    assert every is not None
    assert every.events == ["hello"]


def test_each_part_keeps_its_own_error(db: Database, clock: FakeClock) -> None:
    _step(db, clock)
    ctx = db.context(
        records={"users": ["u1"]},
        session=SessionRead("s1", last_events=1),
        features=FeatureRead(["no_such_view:x"], [{"driver_id": 7}]),
        memory=MemoryQuery("hiking", user_id="u1", filter={"$bogus": 1}),
        search=SearchQuery("no_such_collection", text="hiking"),
    )
    assert ctx.records.result()["users"][0].bins == {"name": "Ada"}  # type: ignore[union-attr]
    assert ctx.session.result().events == [{"i": 4}]  # type: ignore[union-attr]
    assert ctx.search is not None
    assert isinstance(ctx.search.error, NotFound)
    assert ctx.search.value is None
    assert not ctx.search.ok
    assert not ctx.search.timed_out
    with pytest.raises(NotFound):
        ctx.search.result()
    assert isinstance(ctx.features.error, InvalidArgument)  # type: ignore[union-attr]
    assert isinstance(ctx.memory.error, InvalidArgument)  # type: ignore[union-attr]


def test_a_bad_key_fails_the_records_part_only(db: Database) -> None:
    db.sessions.create("s1", {"n": 1})
    ctx = db.context(records={"users": [1.5]}, session=SessionRead("s1"))
    assert isinstance(ctx.records.error, InvalidArgument)  # type: ignore[union-attr]
    assert ctx.session.result().state == {"n": 1}  # type: ignore[union-attr]


def test_a_reserved_set_fails_the_records_part_only(db: Database) -> None:
    db.sessions.create("s1", {"n": 1})
    ctx = db.context(records={"_sessions": ["s1"]}, session=SessionRead("s1"))
    assert isinstance(ctx.records.error, InvalidArgument)  # type: ignore[union-attr]
    assert ctx.session.result().state == {"n": 1}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "make",
    [
        lambda: SessionRead(""),
        lambda: SessionRead("s1", last_events=-1),
        lambda: MemoryQuery("q", k=0),
        lambda: MemoryQuery(""),
        lambda: SearchQuery("docs"),
        lambda: SearchQuery("docs", text="x", k="3"),  # type: ignore[arg-type]
        lambda: FeatureRead("v:f", {"driver_id": 1}),  # type: ignore[arg-type]
    ],
)
def test_a_malformed_part_is_invalid_argument(make: Any) -> None:
    with pytest.raises(InvalidArgument):
        make()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"records": "users"},
        {"records": {"users": "u1"}},
        {"records": {1: ["u1"]}},
        {"session": "s1"},
        {"memory": {"query": "q"}},
        {"timeout": 0},
        {"timeout": -1.0},
        {"timeout": float("nan")},
        {"timeout": True},
    ],
)
def test_a_malformed_call_is_invalid_argument_and_reads_nothing(
    db: Database, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidArgument):
        db.context(**kwargs)


def test_records_and_session_come_from_one_snapshot(db: Database) -> None:
    """A transaction writes two sets at once while context calls read both: every call
    sees both writes or neither (a read per set would see one without the other)."""
    db.records("a").put("k", {"n": 0})
    db.records("b").put("k", {"n": 0})
    db.sessions.create("s1", {"n": 0})
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        n = 0
        try:
            while not stop.is_set():
                n += 1
                with db.transaction() as tx:
                    tx.records("a").put("k", {"n": n})
                    tx.records("b").put("k", {"n": n})
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=writer)
    thread.start()
    seen = set()
    calls, give_up = 0, time.monotonic() + 60  # a bound on a hung writer, not a speed
    try:
        while len(seen) < 5 or calls < 60:  # until writes landed between calls
            calls += 1
            assert time.monotonic() < give_up, seen
            ctx = db.context(records={"a": ["k"], "b": ["k"]}, session=SessionRead("s1"))
            a, b = ctx.records.result()["a"][0], ctx.records.result()["b"][0]  # type: ignore[union-attr]
            assert a is not None
            assert b is not None
            assert a.bins["n"] == b.bins["n"], (a, b)
            assert ctx.session.result().state == {"n": 0}  # type: ignore[union-attr]
            seen.add(a.bins["n"])
    finally:
        stop.set()
        thread.join()
    assert errors == []


def test_the_session_and_the_records_are_read_in_one_snapshot(db: Database) -> None:
    """A writer puts record n, then appends event n to the session. In one snapshot the
    session never holds more events than the record's n; reading the record first and the
    session a moment later (two reads) would see the session ahead of the record."""
    db.records("progress").put("k", {"n": 0})
    db.sessions.create("s1", {})
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        n = 0
        try:
            while not stop.is_set():
                n += 1
                db.records("progress").put("k", {"n": n})
                db.sessions.append("s1", n)
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=writer)
    thread.start()
    seen = set()
    calls, give_up = 0, time.monotonic() + 60  # a bound on a hung writer, not a speed
    try:
        while len(seen) < 5 or calls < 60:  # until writes landed between calls
            calls += 1
            assert time.monotonic() < give_up, seen
            ctx = db.context(records={"progress": ["k"]}, session=SessionRead("s1"))
            record = ctx.records.result()["progress"][0]  # type: ignore[union-attr]
            session = ctx.session.result()  # type: ignore[union-attr]
            assert record is not None
            assert session is not None
            n = record.bins["n"]
            assert n - 1 <= len(session.events) <= n, (n, len(session.events))
            seen.add(n)
    finally:
        stop.set()
        thread.join()
    assert errors == []


def test_a_sliding_session_read_through_context_reports_the_extension(
    db: Database, clock: FakeClock
) -> None:
    db.sessions.create("s1", {"n": 1}, ttl=100)
    clock.advance(50)  # past refresh_after: a read extends the TTL
    got = db.context(session=SessionRead("s1")).session.result()  # type: ignore[union-attr]
    direct = db.sessions.get("s1")
    assert got is not None
    assert direct is not None
    assert got.generation == direct.generation  # the touch's generation, not the snapshot's
    assert got.expires_at == pytest.approx(direct.expires_at)
    assert got.expires_at == pytest.approx(clock() + 100)
    db.sessions.replace("s1", {"n": 2}, expect_generation=got.generation)  # usable for CAS


def test_remote_callers_get_the_servers_caps(db: Database, engine_name: str) -> None:
    big = [
        {"memory": MemoryQuery("q", k=10_001)},
        {"search": SearchQuery("docs", text="q", k=10_001)},
        {"session": SessionRead("s1", last_events=10_001)},
        {"records": {"a": list(range(6000)), "b": list(range(6000))}},
        {"features": FeatureRead(["v:f"], [{"id": i} for i in range(10_001)])},
    ]
    for kwargs in big:
        if engine_name in REMOTE:
            with pytest.raises(InvalidArgument, match="maximum"):
                db.context(**kwargs)
        else:  # an embedded caller owns its memory: nothing capped
            db.context(**kwargs)


class GatedEmbedder:
    """Embeds as the default embedder, but blocks while ``gate`` is closed: a memory search
    that cannot finish until the test lets it (a slow embedding model, for real)."""

    def __init__(self) -> None:
        self.inner = HashEmbedder()
        self.dim = self.inner.dim
        self.gate = threading.Event()
        self.gate.set()

    def embed(self, texts: Sequence[str]) -> Any:
        self.gate.wait(30)
        return self.inner.embed(texts)


@pytest.fixture
def gated(open_db: Any, engine_name: str) -> Iterator[tuple[Database, GatedEmbedder]]:
    if engine_name in REMOTE:
        pytest.skip("a server's embedder is chosen by `serve --embedder` (hash or minilm)")
    embedder = GatedEmbedder()
    try:
        yield open_db(embedder=embedder), embedder
    finally:
        embedder.gate.set()


def test_a_part_past_the_deadline_is_timed_out_and_the_call_is_not_late(
    gated: tuple[Database, GatedEmbedder],
) -> None:
    db, embedder = gated
    db.memory.add("Ada likes hiking", user_id="u1")
    db.sessions.create("s1", {"turn": 1})
    db.records("users").put("u1", {"name": "Ada"})
    embedder.gate.clear()  # from now on the memory search cannot finish
    started = time.monotonic()
    ctx = db.context(
        records={"users": ["u1"]},
        session=SessionRead("s1"),
        memory=MemoryQuery("hiking", user_id="u1"),
        timeout=0.3,
    )
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 0.3 + 1.0  # returns at the deadline, not when the search ends
    assert ctx.memory is not None
    assert ctx.memory.timed_out
    assert isinstance(ctx.memory.error, Timeout)
    assert ctx.session.result().state == {"turn": 1}  # type: ignore[union-attr]
    assert ctx.records.result()["users"][0].bins == {"name": "Ada"}  # type: ignore[union-attr]
    counted = db.stats()["operations"]["context"]
    assert counted["count"] >= 1
    assert counted["errors"] == {"Timeout": 1}
    embedder.gate.set()
    later = db.context(memory=MemoryQuery("hiking", user_id="u1"), timeout=30)
    assert later.memory.ok  # type: ignore[union-attr]


class BrokenEmbedder(GatedEmbedder):
    """An embedding service that is down once the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def embed(self, texts: Sequence[str]) -> Any:
        if self.down:
            raise ConnectionError("embedding service unreachable")
        return super().embed(texts)


def test_a_failing_embedder_fails_the_memory_part_only(open_db: Any, engine_name: str) -> None:
    if engine_name in REMOTE:
        pytest.skip("a server's embedder is chosen by `serve --embedder` (hash or minilm)")
    embedder = BrokenEmbedder()
    db = open_db(embedder=embedder)
    db.memory.add("Ada likes hiking", user_id="u1")
    db.sessions.create("s1", {"turn": 1})
    embedder.down = True
    ctx = db.context(session=SessionRead("s1"), memory=MemoryQuery("hiking", user_id="u1"))
    assert isinstance(ctx.memory.error, EngramError)  # type: ignore[union-attr]
    assert "embedding service unreachable" in str(ctx.memory.error)  # type: ignore[union-attr]
    assert ctx.session.result().state == {"turn": 1}  # type: ignore[union-attr]


def test_a_reserved_set_a_role_opened_stays_out_of_reach(db: Database) -> None:
    db.sessions.create("s1", {"secret": 1})  # the role has opened _sessions
    with pytest.raises(InvalidArgument, match="reserved"):
        db.records("_sessions").get("s1")


def test_part_errors_cross_the_wire_as_their_own_classes() -> None:
    """What a server sends for each part, and what a client makes of it."""
    sent = Context(
        records=Part({"users": [None]}),
        session=Part(error=Conflict("moved", 7)),
        memory=Part(error=Timeout("not done")),
        search=Part(error=NotFound("no collection 'docs'")),
    )
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(sent.to_wire()))
    got = Context._from_reply(wire, None)
    assert got.records == Part({"users": [None]})
    assert got.features is None
    assert isinstance(got.session.error, Conflict)  # type: ignore[union-attr]
    assert got.session.error.generation == 7  # type: ignore[union-attr]
    assert got.memory.timed_out  # type: ignore[union-attr]
    assert isinstance(got.search.error, NotFound)  # type: ignore[union-attr]
    assert str(got.search.error) == "no collection 'docs'"  # type: ignore[union-attr]
