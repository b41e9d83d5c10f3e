"""Feature store contract: definitions, ingestion, online reads, point-in-time joins."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from engramdb import Database, FakeClock, InvalidArgument, NotFound
from engramdb.features import Entity, FeatureService, FeatureView, Field

UTC = dt.UTC


def at(clock: FakeClock, minutes: float) -> dt.datetime:
    """A time ``minutes`` before (negative) or after the fake clock's now."""
    return dt.datetime.fromtimestamp(clock(), UTC) + dt.timedelta(minutes=minutes)


DRIVER = Entity("driver", ["driver_id"])
RIDER = Entity("rider", ["rider_id"], dtype="string")
STATS = FeatureView(
    "driver_stats",
    [DRIVER],
    [Field("conv_rate", "float64"), Field("trips", "int64"), Field("city", "string")],
    ttl=dt.timedelta(hours=2),
)
PREFS = FeatureView("rider_prefs", [RIDER], [Field("tip", "float32"), Field("tags", "string[]")])


@pytest.fixture
def fs(db: Database) -> Any:
    store = db.features
    store.apply(
        [
            DRIVER,
            RIDER,
            STATS,
            PREFS,
            FeatureService("ranker", ["driver_stats:conv_rate", "rider_prefs:tip"]),
        ]
    )
    return store


def rows(clock: FakeClock, data: list[tuple[int, float, float, int, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "driver_id": [r[0] for r in data],
            "event_timestamp": [at(clock, r[1]) for r in data],
            "conv_rate": [r[2] for r in data],
            "trips": [r[3] for r in data],
            "city": [r[4] for r in data],
        }
    )


def test_apply_versions_definitions_and_rejects_incompatible_changes(db: Database) -> None:
    store = db.features
    assert store.apply([DRIVER, STATS]) == [("entity", "driver", 1), ("view", "driver_stats", 1)]
    assert store.apply([STATS]) == [("view", "driver_stats", 1)]  # unchanged: same version
    wider = FeatureView(
        "driver_stats", [DRIVER], [*STATS.schema, Field("rating", "float64")], ttl=7200
    )
    assert store.apply([wider]) == [("view", "driver_stats", 2)]
    narrower = FeatureView("driver_stats", [DRIVER], [Field("conv_rate", "float64")], ttl=7200)
    with pytest.raises(InvalidArgument, match="removed"):
        store.apply([narrower])
    retyped = FeatureView(
        "driver_stats", [DRIVER], [Field("conv_rate", "string"), *STATS.schema[1:]]
    )
    with pytest.raises(InvalidArgument, match="changed type"):
        store.apply([retyped])
    with pytest.raises(InvalidArgument, match="unknown entity"):
        store.apply([FeatureView("x", ["nobody"], [Field("a", "int64")])])
    with pytest.raises(InvalidArgument):
        store.apply([FeatureView("bad name", [DRIVER], [Field("a", "int64")])])
    with pytest.raises(InvalidArgument):
        store.apply([FeatureView("v", [DRIVER], [Field("a", "complex")])])


def test_online_features_are_the_latest_values(fs: Any, clock: FakeClock) -> None:
    fs.ingest(
        "driver_stats",
        rows(
            clock, [(1, -30, 0.1, 10, "oslo"), (1, -10, 0.2, 11, "oslo"), (2, -5, 0.9, 3, "rome")]
        ),
    )
    response = fs.get_online_features(
        ["driver_stats:conv_rate", "driver_stats:trips", "driver_stats:city"],
        [{"driver_id": 1}, {"driver_id": 2}, {"driver_id": 3}],
    )
    assert response.to_dict() == {
        "driver_id": [1, 2, 3],
        "conv_rate": [0.2, 0.9, None],
        "trips": [11, 3, None],
        "city": ["oslo", "rome", None],
    }
    assert response.statuses["conv_rate"] == ["PRESENT", "PRESENT", "NOT_FOUND"]
    assert list(response.to_pandas().columns) == ["driver_id", "conv_rate", "trips", "city"]
    assert response.to_arrow().num_rows == 3


def test_a_late_older_event_never_overwrites_a_newer_value(fs: Any, clock: FakeClock) -> None:
    fs.ingest("driver_stats", rows(clock, [(1, -10, 0.5, 5, "new")]))
    fs.ingest("driver_stats", rows(clock, [(1, -60, 0.1, 1, "old")]))  # arrives late
    fs.push(
        "driver_stats",
        {
            "driver_id": 1,
            "event_timestamp": at(clock, -20),
            "conv_rate": 0.3,
            "trips": 3,
            "city": "mid",
        },
    )
    online = fs.get_online_features(["driver_stats:city"], [{"driver_id": 1}])
    assert online.to_dict()["city"] == ["new"]


def test_outside_ttl_values_are_not_served(fs: Any, clock: FakeClock) -> None:
    fs.ingest("driver_stats", rows(clock, [(1, -60, 0.5, 5, "x")]))
    assert fs.get_online_features(["driver_stats:trips"], [{"driver_id": 1}]).statuses["trips"] == [
        "PRESENT"
    ]
    clock.advance(61 * 60)  # now 2 h 1 min after the event; the view's ttl is 2 h
    response = fs.get_online_features(["driver_stats:trips"], [{"driver_id": 1}])
    assert response.statuses["trips"] == ["OUTSIDE_MAX_AGE"]
    assert response.to_dict()["trips"] == [None]


def test_services_and_full_feature_names(fs: Any, clock: FakeClock) -> None:
    fs.ingest("driver_stats", rows(clock, [(1, -1, 0.5, 5, "x")]))
    fs.ingest(
        "rider_prefs",
        pa.table(
            {
                "rider_id": ["r1"],
                "event_timestamp": pa.array([at(clock, -1)]),
                "tip": [0.15],
                "tags": [["a", "b"]],
            }
        ),
    )
    response = fs.get_online_features("ranker", [{"driver_id": 1, "rider_id": "r1"}])
    assert response.to_dict() == {
        "driver_id": [1],
        "conv_rate": [0.5],
        "rider_id": ["r1"],
        "tip": [pytest.approx(0.15)],
    }
    full = fs.get_online_features(
        ["rider_prefs:tags"], [{"rider_id": "r1"}], full_feature_names=True
    )
    assert full.to_dict()["rider_prefs__tags"] == [["a", "b"]]


def test_point_in_time_join_on_hand_computed_cases(fs: Any, clock: FakeClock) -> None:
    # driver 1: values at -100, -50 (twice: the later created wins), -10; a late row at -70.
    feed = rows(clock, [(1, -100, 0.1, 1, "a"), (1, -50, 0.2, 2, "b"), (1, -10, 0.4, 4, "d")])
    feed["created_timestamp"] = [at(clock, -1)] * 3
    fs.ingest("driver_stats", feed)
    tie = rows(clock, [(1, -50, 0.3, 3, "c")])
    tie["created_timestamp"] = [at(clock, 0)]  # created later: wins the tie at -50
    fs.ingest("driver_stats", tie)
    fs.ingest("driver_stats", rows(clock, [(1, -70, 0.15, 9, "late")]))
    entity = pd.DataFrame(
        {
            "driver_id": [1, 1, 1, 1, 1, 2, 1],
            "event_timestamp": [at(clock, m) for m in (-200, -100, -60, -50, -5, -5, 200)],
            "label": list("abcdefg"),
        }
    )
    result = fs.get_historical_features(
        entity, ["driver_stats:trips", "driver_stats:city"]
    ).to_arrow()
    assert result.column_names == ["driver_id", "event_timestamp", "label", "trips", "city"]
    assert result["label"].to_pylist() == list("abcdefg")  # rows keep their order
    assert result["trips"].to_pylist() == [None, 1, 9, 3, 4, None, None]
    # -200: no history yet; -100: exact boundary is included; -60: the late row (-70);
    # -50: the tie broken by created_timestamp; driver 2: no history; +200: beyond the 2 h ttl
    assert result["city"].to_pylist() == [None, "a", "late", "c", "d", None, None]


def test_several_views_with_different_entities(fs: Any, clock: FakeClock) -> None:
    fs.ingest("driver_stats", rows(clock, [(1, -30, 0.5, 5, "x")]))
    fs.ingest(
        "rider_prefs",
        [{"rider_id": "r1", "event_timestamp": at(clock, -20), "tip": 0.2, "tags": []}],
    )
    entity = pd.DataFrame(
        {
            "driver_id": [1, 1],
            "rider_id": ["r1", "r2"],
            "event_timestamp": [at(clock, -25), at(clock, -1)],
        }
    )
    result = fs.get_historical_features(
        entity, ["driver_stats:conv_rate", "rider_prefs:tip"]
    ).to_arrow()
    assert result["conv_rate"].to_pylist() == [0.5, 0.5]
    assert result["tip"].to_pylist() == [
        None,
        None,
    ]  # r1 at -25 is before its first row; r2 unknown


def test_online_equals_historical_at_now_after_out_of_order_ingests(
    fs: Any, clock: FakeClock
) -> None:
    import random

    rng = random.Random(5)
    batches = [
        [
            (d, -rng.randint(1, 100), rng.random(), rng.randint(0, 50), f"c{rng.randint(0, 3)}")
            for d in range(1, 30)
        ]
        for _ in range(6)
    ]
    for batch in batches:
        fs.ingest("driver_stats", rows(clock, batch))
    entities = [{"driver_id": d} for d in range(1, 32)]
    online = fs.get_online_features(
        ["driver_stats:conv_rate", "driver_stats:trips", "driver_stats:city"], entities
    ).to_dict()
    now = pd.DataFrame(
        {
            "driver_id": [e["driver_id"] for e in entities],
            "event_timestamp": [at(clock, 0)] * len(entities),
        }
    )
    offline = (
        fs.get_historical_features(
            now, ["driver_stats:conv_rate", "driver_stats:trips", "driver_stats:city"]
        )
        .to_arrow()
        .to_pydict()
    )
    for name in ("conv_rate", "trips", "city"):
        assert online[name] == offline[name], name
    report = fs.validate_online("driver_stats", sample=50, seed=1)
    assert report.checked == 29
    assert report.mismatches == []


def test_materialize_loads_the_online_store_from_the_offline_log(
    db: Database, clock: FakeClock
) -> None:
    store = db.features
    offline_only = FeatureView("offline_stats", [DRIVER], [Field("x", "int64")], online=False)
    store.apply([DRIVER, offline_only])
    store.ingest("offline_stats", [{"driver_id": 1, "event_timestamp": at(clock, -5), "x": 7}])
    assert store.get_online_features(["offline_stats:x"], [{"driver_id": 1}]).to_dict()["x"] == [
        None
    ]
    assert store.materialize(["offline_stats"]) == 1
    assert store.get_online_features(["offline_stats:x"], [{"driver_id": 1}]).to_dict()["x"] == [7]


def test_a_feature_added_to_a_view_reads_as_null_until_rows_carry_it(
    fs: Any, clock: FakeClock
) -> None:
    fs.ingest("driver_stats", rows(clock, [(1, -30, 0.5, 5, "x")]))
    wider = FeatureView(
        "driver_stats", [DRIVER], [*STATS.schema, Field("rating", "float64")], ttl=STATS.ttl
    )
    fs.apply([wider])
    entity = pd.DataFrame({"driver_id": [1, 2], "event_timestamp": [at(clock, 0)] * 2})
    got = fs.get_historical_features(entity, ["driver_stats:trips", "driver_stats:rating"])
    table = got.to_arrow()
    assert table["trips"].to_pylist() == [5, None]
    assert table["rating"].to_pylist() == [None, None]
    assert table.schema.field("rating").type == pa.float64()
    assert fs.validate_online("driver_stats", sample=10).ok
    row = {"driver_id": 1, "event_timestamp": at(clock, -1), "conv_rate": 0.1, "trips": 6}
    fs.ingest("driver_stats", [{**row, "city": "y", "rating": 4.5}])
    got = fs.get_historical_features(entity, ["driver_stats:trips", "driver_stats:rating"])
    assert got.to_arrow()["rating"].to_pylist() == [4.5, None]


@pytest.mark.parametrize(
    "bad",
    [
        lambda c: [
            {"event_timestamp": at(c, 0), "conv_rate": 0.1, "trips": 1, "city": "x"}
        ],  # no key
        lambda c: [{"driver_id": 1, "conv_rate": 0.1, "trips": 1, "city": "x"}],  # no timestamp
        lambda c: [
            {
                "driver_id": 1,
                "event_timestamp": at(c, 0),
                "conv_rate": "high",
                "trips": 1,
                "city": "x",
            }
        ],
        lambda c: [
            {
                "driver_id": 1,
                "event_timestamp": at(c, 0),
                "conv_rate": 0.1,
                "trips": 1.5,
                "city": "x",
            }
        ],
        lambda c: [
            {"driver_id": 1, "event_timestamp": at(c, 0), "conv_rate": 0.1, "trips": 1}
        ],  # no city
        lambda c: [
            {
                "driver_id": 1,
                "event_timestamp": at(c, 0),
                "conv_rate": 0.1,
                "trips": 1,
                "city": "x",
                "extra": 1,
            }
        ],
        lambda c: [
            {
                "driver_id": None,
                "event_timestamp": at(c, 0),
                "conv_rate": 0.1,
                "trips": 1,
                "city": "x",
            }
        ],
        lambda c: [],
        lambda c: 42,
    ],
)
def test_bad_rows_are_rejected_and_nothing_is_ingested(fs: Any, clock: FakeClock, bad: Any) -> None:
    fs.ingest("driver_stats", rows(clock, [(1, -5, 0.5, 5, "keep")]))
    with pytest.raises(InvalidArgument):
        fs.ingest("driver_stats", bad(clock))
    assert fs.get_online_features(["driver_stats:city"], [{"driver_id": 1}]).to_dict()["city"] == [
        "keep"
    ]
    entity = pd.DataFrame({"driver_id": [1], "event_timestamp": [at(clock, 0)]})
    assert fs.get_historical_features(entity, ["driver_stats:city"]).to_arrow()[
        "city"
    ].to_pylist() == ["keep"]


def test_unknown_views_and_features(fs: Any) -> None:
    with pytest.raises((NotFound, InvalidArgument)):
        fs.ingest("nope", [{"driver_id": 1}])
    with pytest.raises(InvalidArgument):
        fs.get_online_features(["driver_stats:nope"], [{"driver_id": 1}])
    with pytest.raises(InvalidArgument):
        fs.get_online_features(["nope:x"], [{"driver_id": 1}])
    with pytest.raises(InvalidArgument):
        fs.get_online_features(["driver_stats:trips"], [{"rider_id": "r"}])  # no join key


def test_ingest_accepts_arrow_polars_and_parquet(fs: Any, clock: FakeClock, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(rows(clock, [(7, -3, 0.7, 7, "pq")]), preserve_index=False)
    pq.write_table(table, tmp_path / "rows.parquet")
    fs.ingest("driver_stats", str(tmp_path / "rows.parquet"))
    polars = pytest.importorskip("polars")
    fs.ingest("driver_stats", polars.from_pandas(rows(clock, [(8, -3, 0.8, 8, "pl")])))
    got = fs.get_online_features(["driver_stats:city"], [{"driver_id": 7}, {"driver_id": 8}])
    assert got.to_dict()["city"] == ["pq", "pl"]


def test_definitions_can_be_read_back(fs: Any) -> None:
    assert [v.name for v in fs.list_feature_views()] == ["driver_stats", "rider_prefs"]
    assert fs.get_feature_view("driver_stats") == STATS
    with pytest.raises(NotFound):
        fs.get_feature_view("nope")


def test_timezone_naive_timestamps_are_refused_not_taken_as_utc(fs: Any, clock: FakeClock) -> None:
    naive = rows(clock, [(1, -5, 0.5, 5, "x")])
    naive["event_timestamp"] = naive["event_timestamp"].dt.tz_localize(None)
    with pytest.raises(InvalidArgument, match="timezone-naive"):
        fs.ingest("driver_stats", naive)
    fs.ingest("driver_stats", rows(clock, [(1, -5, 0.5, 5, "x")]))
    entity = pd.DataFrame({"driver_id": [1], "event_timestamp": [at(clock, 0)]})
    assert fs.get_historical_features(entity, ["driver_stats:city"]).to_arrow()[
        "city"
    ].to_pylist() == ["x"]
    entity["event_timestamp"] = entity["event_timestamp"].dt.tz_localize(None)
    with pytest.raises(InvalidArgument, match="timezone-naive"):
        fs.get_historical_features(entity, ["driver_stats:city"])


@pytest.mark.parametrize("bad", [[1, 2], [None], [["driver_id", 1]]])
def test_rows_that_are_not_dicts_are_invalid_argument(fs: Any, bad: Any) -> None:
    with pytest.raises(InvalidArgument):
        fs.ingest("driver_stats", bad)
