"""Feast on ``EngramOnlineStore``: the cases ``test_feast.py`` runs where Feast is installed.

Feast pins packages this project's environment holds newer (pandas, prometheus_client), so
these run in an interpreter that has Feast (a virtualenv made by ``test_feast.py``, or this
one if it has Feast), each case under its own name in the main run. Everything is real: a
Feast repo in ``tmp_path`` with a Parquet offline source, ``feast apply`` and ``feast
materialize-incremental`` run as the Feast CLI in subprocesses, engramdb embedded (LMDB) or
a live ``engramdb serve``, and Feast's SQLite online store as the reference.
"""

from __future__ import annotations

import asyncio
import random
import runpy
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore
from feast.filter_models import ComparisonFilter, CompoundFilter
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

import engramdb
from engramdb.errors import InvalidArgument
from engramdb.integrations.feast import EngramOnlineStore

NOW = datetime.now(UTC).replace(microsecond=0)
DRIVERS = list(range(1001, 1041))
FEATURES = [
    "driver_stats:conv_rate",
    "driver_stats:acc_rate",
    "driver_stats:trips",
    "driver_stats:city",
    "driver_stats:active",
    "driver_stats:scores",
    "driver_recent:avg_speed",
]

DEFINITIONS = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Bool, Float32, Float64, Int64, String

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
stats_source = FileSource(
    path=r"{stats}", timestamp_field="event_timestamp", created_timestamp_column="created"
)
recent_source = FileSource(path=r"{recent}", timestamp_field="event_timestamp")
driver_stats = FeatureView(
    name="driver_stats",
    entities=[driver],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="conv_rate", dtype=Float32),
        Field(name="acc_rate", dtype=Float64),
        Field(name="trips", dtype=Int64),
        Field(name="city", dtype=String),
        Field(name="active", dtype=Bool),
        Field(name="scores", dtype=Array(Float32)),
    ],
    source=stats_source,
)
driver_recent = FeatureView(
    name="driver_recent",
    entities=[driver],
    ttl=timedelta(days=2),
    schema=[Field(name="avg_speed", dtype=Float64)],
    source=recent_source,
)
"""

DOCUMENTS = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float32, Int64, String

doc = Entity(name="doc", join_keys=["doc_id"], value_type=ValueType.INT64)
source = FileSource(path=r"{docs}", timestamp_field="event_timestamp")
docs = FeatureView(
    name="docs",
    entities=[doc],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="embedding", dtype=Array(Float32), vector_index=True, vector_length={dim},
              vector_search_metric="COSINE"),
        Field(name="title", dtype=String),
        Field(name="year", dtype=Int64),
    ],
    source=source,
)
"""


def feast_cli(repo: Path, *commands: list[str]) -> str:
    """Feast CLI commands, one after the other, in one subprocess of this interpreter (as a
    user runs them; one interpreter because importing Feast takes most of the time)."""
    script = (
        "import sys\nfrom feast.cli.cli import cli\n"
        f"for args in {commands!r}:\n    cli(args, standalone_mode=False)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"feast {commands}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def write_sources(data: Path) -> dict[str, Path]:
    rng = random.Random(7)
    rows = []
    for driver in DRIVERS:
        for age in (30, 10, 2):  # three events per driver; the newest must win
            ts = NOW - timedelta(days=age, minutes=rng.randrange(600))
            rows.append(
                {
                    "driver_id": driver,
                    "event_timestamp": ts,
                    "created": ts + timedelta(seconds=1),
                    "conv_rate": np.float32(rng.random()),
                    "acc_rate": rng.random(),
                    "trips": rng.randrange(10_000),
                    "city": None if driver % 7 == 0 else rng.choice(["Paris", "Lyon", "Nice"]),
                    "active": rng.random() < 0.5,
                    "scores": [np.float32(rng.random()) for _ in range(3)],
                }
            )
    recent = [
        # Half the drivers have only an old speed: outside the view's two-day TTL.
        {"driver_id": d, "event_timestamp": NOW - timedelta(days=1 if d % 2 else 5),
         "avg_speed": rng.uniform(20, 90)}
        for d in DRIVERS
    ]  # fmt: skip
    paths = {"stats": data / "stats.parquet", "recent": data / "recent.parquet"}
    pd.DataFrame(rows).to_parquet(paths["stats"])
    pd.DataFrame(recent).to_parquet(paths["recent"])
    return paths


def make_repo(root: Path, online: str, definitions: str) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "feature_store.yaml").write_text(
        textwrap.dedent(
            """\
            project: drivers
            registry: data/registry.db
            provider: local
            offline_store:
              type: file
            entity_key_serialization_version: 3
            """
        )
        + online
    )
    (root / "features.py").write_text(definitions)
    return root


SQLITE = "online_store:\n  type: sqlite\n  path: data/online.db\n"


@pytest.fixture(params=["lmdb", "server"])
def engram_online(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ``online_store:`` section for engramdb embedded, or for a live server."""
    head = "online_store:\n  type: engramdb.integrations.feast.EngramOnlineStore\n"
    if request.param == "lmdb":
        return head + f"  path: {tmp_path / 'engram'}\n  durability: none\n"
    url = request.getfixturevalue("engram_server").url
    # The server is shared by the session: each test's project gets its own sets.
    project = f"p{abs(hash(request.node.nodeid)) % 10**8}"
    return head + f"  url: {url}\n" + f"#project:{project}\n"


def _project_of(online: str) -> str | None:
    for line in online.splitlines():
        if line.startswith("#project:"):
            return line.partition(":")[2]
    return None


def repos(tmp_path: Path, online: str, definitions: str) -> tuple[Path, Path]:
    ours = make_repo(tmp_path / "engram-repo", online, definitions)
    reference = make_repo(tmp_path / "sqlite-repo", SQLITE, definitions)
    project = _project_of(online)
    if project is not None:
        for repo in (ours, reference):
            yaml = repo / "feature_store.yaml"
            yaml.write_text(yaml.read_text().replace("project: drivers", f"project: {project}"))
    return ours, reference


def online_features(
    repo: Path, entity_rows: list[dict[str, Any]], features: list[str] = FEATURES, **options: Any
) -> Any:
    store = FeatureStore(repo_path=str(repo))
    return store.get_online_features(features=features, entity_rows=entity_rows, **options)


def test_materialize_then_get_online_features_matches_sqlite(
    tmp_path: Path, engram_online: str
) -> None:
    sources = write_sources(tmp_path)
    definitions = DEFINITIONS.format(stats=sources["stats"], recent=sources["recent"])
    ours, reference = repos(tmp_path, engram_online, definitions)
    # Ours as a user runs it (the Feast CLI finds the store by its ``type:``); the SQLite
    # reference through the same API in this process, which is quicker.
    feast_cli(ours, ["apply"], ["materialize-incremental", NOW.isoformat()])
    apply_in_process(reference).materialize_incremental(NOW)
    for repo in (ours, reference):
        # Speeds older than the view's TTL: they read as OUTSIDE_MAX_AGE.
        old = pd.DataFrame(
            {"driver_id": [2001, 2002], "avg_speed": [50.0, 60.0],
             "event_timestamp": [NOW - timedelta(days=5)] * 2}
        )  # fmt: skip
        FeatureStore(repo_path=str(repo)).write_to_online_store("driver_recent", old)
    rows = [{"driver_id": d} for d in [*DRIVERS, 999, 2001, 2002, 1003]]  # unknown, repeated
    for options in ({}, {"full_feature_names": True}):
        got = online_features(ours, rows, **options)
        want = online_features(reference, rows, **options)
        assert got.to_dict() == want.to_dict()
        assert got.proto == want.proto  # values, statuses (TTL) and event timestamps
    statuses = set(online_features(ours, rows).proto.results[-1].statuses)
    assert statuses == {FieldStatus.PRESENT, FieldStatus.NOT_FOUND}


def test_materializing_again_and_older_pushes_keep_the_newest(
    tmp_path: Path, engram_online: str
) -> None:
    sources = write_sources(tmp_path)
    definitions = DEFINITIONS.format(stats=sources["stats"], recent=sources["recent"])
    ours, _ = repos(tmp_path, engram_online, definitions)
    store = apply_in_process(ours)
    store.materialize_incremental(NOW)
    stats = [f for f in FEATURES if f.startswith("driver_stats:")]
    rows = [{"driver_id": d} for d in DRIVERS]
    before = online_features(ours, rows, stats).to_dict()
    # The whole history again, oldest window first: every row is older or equal.
    store.materialize(NOW - timedelta(days=40), NOW)
    stale = pd.DataFrame(
        {
            "driver_id": DRIVERS,
            "event_timestamp": [NOW - timedelta(days=20)] * len(DRIVERS),
            "created": [NOW] * len(DRIVERS),
            "conv_rate": np.float32(-1.0),
            "acc_rate": -1.0,
            "trips": -1,
            "city": "stale",
            "active": False,
            "scores": [[np.float32(-1.0)]] * len(DRIVERS),
        }
    )
    store.write_to_online_store("driver_stats", stale)
    assert online_features(ours, rows, stats).to_dict() == before
    newer = stale.assign(event_timestamp=NOW - timedelta(minutes=1), trips=424242)
    store.write_to_online_store("driver_stats", newer)
    after = online_features(ours, rows, stats).to_dict()
    assert after["trips"] == [424242] * len(DRIVERS)


def apply_in_process(repo: Path) -> FeatureStore:
    """``feast apply`` without a subprocess: the repo's definitions, applied by the API."""
    from feast import Entity, FeatureView

    found = runpy.run_path(str(repo / "features.py"))
    store = FeatureStore(repo_path=str(repo))
    store.apply([v for v in found.values() if isinstance(v, Entity | FeatureView)])
    return store


def _config_and_view(tmp_path: Path, online: str) -> tuple[FeatureStore, Any]:
    sources = write_sources(tmp_path)
    definitions = DEFINITIONS.format(stats=sources["stats"], recent=sources["recent"])
    ours, _ = repos(tmp_path, online, definitions)
    store = apply_in_process(ours)
    return store, store.get_feature_view("driver_recent")


def _key(driver: int) -> EntityKeyProto:
    return EntityKeyProto(join_keys=["driver_id"], entity_values=[ValueProto(int64_val=driver)])


def _row(driver: int, speed: float, ts: datetime, created: datetime | None = None) -> Any:
    return (_key(driver), {"avg_speed": ValueProto(double_val=speed)}, ts, created)


def test_online_write_batch_newer_event_wins(tmp_path: Path, engram_online: str) -> None:
    store, view = _config_and_view(tmp_path, engram_online)
    online = EngramOnlineStore()
    config = store.config
    t0 = NOW - timedelta(hours=5)
    online.online_write_batch(config, view, [_row(1, 10.0, t0)], None)
    online.online_write_batch(config, view, [_row(1, 5.0, t0 - timedelta(hours=1))], None)
    # Within one batch too: the newest of a key's rows wins, wherever it stands.
    online.online_write_batch(
        config,
        view,
        [_row(2, 30.0, t0 + timedelta(hours=2)), _row(2, 20.0, t0), _row(1, 11.0, t0)],
        None,
    )
    # Same event time: the later created timestamp wins; no created timestamp is oldest.
    online.online_write_batch(config, view, [_row(3, 1.0, t0, t0)], None)
    online.online_write_batch(config, view, [_row(3, 2.0, t0, t0 + timedelta(seconds=1))], None)
    online.online_write_batch(config, view, [_row(3, 3.0, t0, None)], None)
    # A naive timestamp is UTC (Feast's interface says so): older here, so it loses.
    naive_older = (t0 - timedelta(hours=3)).replace(tzinfo=None)
    online.online_write_batch(config, view, [_row(2, 99.0, naive_older)], None)
    got = online.online_read(config, view, [_key(1), _key(2), _key(3), _key(4)])
    assert [None if v is None else v["avg_speed"].double_val for _, v in got] == [
        11.0, 30.0, 2.0, None,
    ]  # fmt: skip
    assert [ts for ts, _ in got] == [t0, t0 + timedelta(hours=2), t0, None]
    online.teardown(config, [view], [])


def test_concurrent_writers_of_old_and_new_events_end_on_the_newest(
    tmp_path: Path, engram_online: str
) -> None:
    store, view = _config_and_view(tmp_path, engram_online)
    config = store.config
    t0 = NOW - timedelta(days=1)
    keys = list(range(20))
    events = [(k, minute) for k in keys for minute in range(30)]
    random.Random(3).shuffle(events)
    errors: list[BaseException] = []

    def writer(part: list[tuple[int, int]]) -> None:
        online = EngramOnlineStore()  # each writer its own store and connection
        try:
            for start in range(0, len(part), 7):
                batch = part[start : start + 7]
                rows = [_row(k, float(m), t0 + timedelta(minutes=m)) for k, m in batch]
                online.online_write_batch(config, view, rows, None)
        except BaseException as e:
            errors.append(e)
        finally:
            asyncio.run(online.close())

    threads = [threading.Thread(target=writer, args=(events[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    got = EngramOnlineStore().online_read(config, view, [_key(k) for k in keys])
    assert [v["avg_speed"].double_val for _, v in got] == [29.0] * len(keys)


def test_async_write_and_read(tmp_path: Path, engram_online: str) -> None:
    store, view = _config_and_view(tmp_path, engram_online)
    online = EngramOnlineStore()
    assert online.async_supported.read
    assert online.async_supported.write
    t0 = NOW - timedelta(hours=1)

    async def scenario() -> list[Any]:
        await online.online_write_batch_async(
            store.config, view, [_row(1, 1.5, t0), _row(2, 2.5, t0)], None
        )
        await online.online_write_batch_async(
            store.config, view, [_row(1, 0.5, t0 - timedelta(hours=1))], None
        )
        return await online.online_read_async(store.config, view, [_key(1), _key(2), _key(3)])

    got = asyncio.run(scenario())
    assert [None if v is None else v["avg_speed"].double_val for _, v in got] == [1.5, 2.5, None]
    sync = online.online_read(store.config, view, [_key(1), _key(2), _key(3)])
    assert got == sync

    async def served() -> dict[str, Any]:
        response = await store.get_online_features_async(
            features=["driver_recent:avg_speed"], entity_rows=[{"driver_id": 1}]
        )
        return response.to_dict()

    assert asyncio.run(served()) == {"driver_id": [1], "avg_speed": [1.5]}


def test_apply_without_a_view_drops_its_rows_and_teardown_drops_all(
    tmp_path: Path, engram_online: str
) -> None:
    sources = write_sources(tmp_path)
    definitions = DEFINITIONS.format(stats=sources["stats"], recent=sources["recent"])
    ours, _ = repos(tmp_path, engram_online, definitions)
    store = apply_in_process(ours)
    store.materialize_incremental(NOW)
    project = store.project
    online = store.config.online_store
    db = (
        engramdb.connect(online.url)
        if online.url
        else engramdb.open(online.path, durability=online.durability)
    )
    try:
        recent = len([d for d in DRIVERS if d % 2])  # the others' speeds are past the TTL
        assert db.records(f"feast.{project}.driver_recent").count() == recent
        assert db.records(f"feast.{project}.driver_stats").count() == len(DRIVERS)
        # What ``feast apply`` does once the view is gone from the definitions.
        recent_view = store.get_feature_view("driver_recent")
        kept = [store.get_entity("driver"), store.get_feature_view("driver_stats")]
        store.apply(kept, objects_to_delete=[recent_view], partial=False)
        assert db.records(f"feast.{project}.driver_recent").count() == 0
        assert db.records(f"feast.{project}.driver_stats").count() == len(DRIVERS)
        store.teardown()
        assert db.records(f"feast.{project}.driver_stats").count() == 0
    finally:
        db.close()


# document retrieval ---------------------------------------------------------------------

DIM = 8
TITLES = [
    "wing flutter at transonic speed",
    "laminar boundary layer separation",
    "sourdough bread and wild yeast",
    "ramen broth with pork bones",
    "mitochondria make ATP",
    "chess openings for beginners",
    "marathon training and glycogen",
    "jet engine turbine blades",
    "espresso and coffee grinders",
    "bees and the waggle dance",
    "helicopter rotor dynamic stall",
    "photosynthesis in chloroplasts",
]


def _docs_repo(tmp_path: Path, online: str) -> tuple[FeatureStore, pd.DataFrame]:
    rng = np.random.default_rng(11)
    frame = pd.DataFrame(
        {
            "doc_id": list(range(len(TITLES))),
            "event_timestamp": [NOW - timedelta(hours=1)] * len(TITLES),
            "embedding": [rng.normal(size=DIM).astype(np.float32).tolist() for _ in TITLES],
            "title": TITLES,
            "year": [2015 + i for i in range(len(TITLES))],
        }
    )
    path = tmp_path / "docs.parquet"
    frame.to_parquet(path)
    repo = make_repo(
        tmp_path / "docs-repo", online + "  vector_enabled: true\n",
        DOCUMENTS.format(docs=path, dim=DIM),
    )  # fmt: skip
    project = _project_of(online)
    if project is not None:
        yaml = repo / "feature_store.yaml"
        yaml.write_text(yaml.read_text().replace("project: drivers", f"project: {project}"))
    store = apply_in_process(repo)
    store.write_to_online_store("docs", frame)
    return store, frame


def _cosine_order(frame: pd.DataFrame, query: np.ndarray) -> list[tuple[int, float]]:
    vectors = np.array(frame["embedding"].tolist(), dtype=np.float64)
    sims = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    return sorted(
        ((int(d), 1.0 - float(s)) for d, s in zip(frame["doc_id"], sims)), key=lambda p: p[1]
    )


def documents(store: FeatureStore, features: list[str], **query: Any) -> list[dict[str, Any]]:
    """``retrieve_online_documents_v2`` of the online store, best first: each document's
    ``doc_id`` and its features as Python values.

    (Called on the store rather than through ``FeatureStore``: Feast 0.67 pairs each
    document's features with the entities sorted by key, not with its own entity, when it
    assembles the response, whatever the online store.)
    """
    from feast.type_map import feast_value_type_to_python_type

    query.setdefault("embedding", None)
    found = EngramOnlineStore().retrieve_online_documents_v2(
        store.config, store.get_feature_view("docs"), features, **query
    )
    out = []
    for _, entity, values in found:
        assert entity is not None
        assert values is not None
        row = {k: feast_value_type_to_python_type(v) for k, v in values.items()}
        out.append({"doc_id": entity.entity_values[0].int64_val, **row})
    return out


def test_retrieve_online_documents_v2_vector_search_is_exact(
    tmp_path: Path, engram_online: str
) -> None:
    store, frame = _docs_repo(tmp_path, engram_online)
    rng = np.random.default_rng(5)
    for _ in range(5):
        query = rng.normal(size=DIM)
        got = documents(store, ["title", "year", "embedding"], embedding=query.tolist(), top_k=4)
        expected = _cosine_order(frame, query)[:4]
        assert [d["doc_id"] for d in got] == [d for d, _ in expected]
        assert [d["distance"] for d in got] == pytest.approx([d for _, d in expected], abs=1e-5)
        assert [d["title"] for d in got] == [TITLES[d] for d, _ in expected]
        assert [d["year"] for d in got] == [2015 + d for d, _ in expected]
        assert np.allclose(got[0]["embedding"], frame["embedding"][expected[0][0]])
    # Through Feast's FeatureStore: the same documents (see ``documents`` on the order).
    query = rng.normal(size=DIM)
    response = store.retrieve_online_documents_v2(
        features=["docs:title"], query=query.tolist(), top_k=4
    ).to_dict()
    assert sorted(response["doc_id"]) == sorted(d for d, _ in _cosine_order(frame, query)[:4])


def test_retrieve_online_documents_v2_text_hybrid_and_filters(
    tmp_path: Path, engram_online: str
) -> None:
    store, frame = _docs_repo(tmp_path, engram_online)
    text = documents(store, ["title"], query_string="glycogen marathon", top_k=3)
    assert text[0]["doc_id"] == 6
    assert text[0]["text_rank"] > 0
    assert "distance" not in text[0]
    query = np.array(frame["embedding"][2], dtype=np.float64)  # the sourdough document's
    hybrid = documents(
        store, ["title"], embedding=query.tolist(), query_string="coffee espresso", top_k=4
    )
    assert {d["doc_id"] for d in hybrid[:2]} == {2, 8}  # the best of each side come first
    by_id = {d["doc_id"]: d for d in hybrid}
    assert by_id[2]["distance"] == pytest.approx(0.0, abs=1e-5)  # the query is its vector
    assert by_id[8]["text_rank"] > 0
    after_2020 = ComparisonFilter(type="gt", key="year", value=2020)
    filtered = documents(store, ["year"], embedding=query.tolist(), top_k=4, filters=after_2020)
    expected = [d for d, _ in _cosine_order(frame, query) if 2015 + d > 2020][:4]
    assert [d["doc_id"] for d in filtered] == expected
    either = CompoundFilter(
        type="or",
        filters=[
            ComparisonFilter(type="eq", key="title", value="chess openings for beginners"),
            ComparisonFilter(type="in", key="year", value=[2015, 2016]),
        ],
    )
    found = documents(store, ["year"], embedding=query.tolist(), top_k=10, filters=either)
    assert sorted(d["doc_id"] for d in found) == [0, 1, 5]


def test_documents_follow_newer_event_wins(tmp_path: Path, engram_online: str) -> None:
    store, frame = _docs_repo(tmp_path, engram_online)
    query = np.array(frame["embedding"][3], dtype=np.float64)
    moved = frame.iloc[[3]].assign(
        embedding=[(-query).astype(np.float32).tolist()], title=["moved away"]
    )
    store.write_to_online_store("docs", moved.assign(event_timestamp=NOW - timedelta(days=3)))
    top = documents(store, ["title"], embedding=query.tolist(), top_k=1)
    assert [(d["doc_id"], d["title"]) for d in top] == [(3, TITLES[3])]  # the old event lost
    store.write_to_online_store("docs", moved.assign(event_timestamp=NOW))
    top = documents(store, ["title"], embedding=query.tolist(), top_k=1)
    assert top[0]["doc_id"] != 3
    text = documents(store, ["title"], query_string="moved away", top_k=1)
    assert [(d["doc_id"], d["title"]) for d in text] == [(3, "moved away")]


def test_documents_of_a_view_without_vector_field_are_refused(
    tmp_path: Path, engram_online: str
) -> None:
    store, view = _config_and_view(tmp_path, engram_online)
    with pytest.raises(InvalidArgument, match="no vector field"):
        EngramOnlineStore().retrieve_online_documents_v2(
            store.config, view, ["avg_speed"], [1.0], 3
        )


def test_a_batch_whose_document_cannot_be_stored_writes_no_row(
    tmp_path: Path, engram_online: str
) -> None:
    store, _ = _docs_repo(tmp_path, engram_online)
    view = store.get_feature_view("docs")
    t1 = NOW + timedelta(minutes=1)

    def doc(doc_id: int, vector: list[float], title: str) -> Any:
        key = EntityKeyProto(join_keys=["doc_id"], entity_values=[ValueProto(int64_val=doc_id)])
        values = {
            "embedding": ValueProto(float_list_val={"val": vector}),
            "title": ValueProto(string_val=title),
            "year": ValueProto(int64_val=2030),
        }
        return (key, values, t1, None)

    good = doc(0, [1.0] * DIM, "rewritten")
    too_long = doc(1, [1.0] * (DIM + 1), "too long")  # the collection's vectors have DIM
    online = EngramOnlineStore()
    with pytest.raises(InvalidArgument):
        online.online_write_batch(store.config, view, [good, too_long], None)
    # Neither the rows nor the documents of the batch were written: all of it or none.
    got = online.online_read(store.config, view, [good[0], too_long[0]], ["title"])
    assert [v["title"].string_val for _, v in got] == [TITLES[0], TITLES[1]]
    assert documents(store, ["title"], query_string="rewritten", top_k=3) == []
    online.online_write_batch(store.config, view, [good], None)
    found = documents(store, ["title", "year"], query_string="rewritten", top_k=3)
    assert [(d["doc_id"], d["title"], d["year"]) for d in found] == [(0, "rewritten", 2030)]


def test_readme_example_runs_as_written(tmp_path: Path) -> None:
    from tests.integrations.readme import examples

    blocks = examples()
    yaml, definitions, script = blocks[3][1], blocks[4][1], blocks[5][1]
    assert yaml.startswith("# feast_repo/feature_store.yaml")
    assert definitions.startswith("# feast_repo/features.py")
    (tmp_path / "feast_repo").mkdir()
    (tmp_path / "feast_repo" / "feature_store.yaml").write_text(yaml)
    (tmp_path / "feast_repo" / "features.py").write_text(definitions)
    feast_cli(tmp_path / "feast_repo", ["apply"])
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script], cwd=tmp_path, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "{'driver_id': [1001, 1002], 'conv_rate': [0.5, 0.25]}\n"
