"""Feast's side of ``bench/features.py`` (and ``context.py``), in Feast's own virtualenv:
``/tmp/feast-venv/bin/python bench/_feast_side.py SPEC.json RESULT.json``. ``online-load``
writes a feature repository (local provider, SQLite or Redis online store, a ``FileSource`` per
view), applies it and materializes; ``online-measure`` times ``get_online_features(...)
.to_dict()`` per call and returns a few answers (untimed); ``offline`` times one
``get_historical_features(...).to_df()`` on the ``file`` (Dask) store, with peak RSS.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from _side import main, rss_kib, timed


def open_store(spec: dict[str, Any], *, apply: bool) -> Any:
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64

    repo = Path(spec["repo"])
    (repo / "data").mkdir(parents=True, exist_ok=True)
    online = spec.get("online_store", {"type": "sqlite"})
    if online["type"] == "redis":
        online_yaml = f'type: redis\n  connection_string: "{online["connection_string"]}"'
    else:
        online_yaml = f"type: sqlite\n  path: {repo / 'data' / 'online.db'}"
    (repo / "feature_store.yaml").write_text(
        f"project: engramdb_bench\nregistry: {repo / 'data' / 'registry.db'}\nprovider: local\n"
        f"online_store:\n  {online_yaml}\noffline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n",
        encoding="utf-8",
    )
    store = FeatureStore(repo_path=str(repo))
    if apply:
        types = {"float64": Float64, "int64": Int64}
        entity = Entity(name=spec["entity"]["name"], join_keys=[spec["entity"]["join_key"]],
                        value_type=ValueType.INT64)  # fmt: skip
        store.apply([entity] + [
            FeatureView(
                name=v["name"], entities=[entity], ttl=dt.timedelta(seconds=v["ttl_s"] or 0),
                schema=[Field(name=name, dtype=types[dtype]) for name, dtype in v["features"]],
                source=FileSource(name=f"{v['name']}_source", path=v["path"],
                                  timestamp_field="event_timestamp"),
                online=True,
            )
            for v in spec["views"]
        ])  # fmt: skip
    return store


def online_load(spec: dict[str, Any]) -> dict[str, Any]:
    store = open_store(spec, apply=True)
    t0 = time.perf_counter()
    store.materialize(start_date=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
                      end_date=dt.datetime(2100, 1, 1, tzinfo=dt.UTC))  # fmt: skip
    return {"materialize_s": time.perf_counter() - t0}


def online_measure(spec: dict[str, Any]) -> dict[str, Any]:
    store, key = open_store(spec, apply=False), spec["entity"]["join_key"]
    out = {}
    for w in spec["workloads"]:

        def call(ids: list[int], features: list[str] = w["features"]) -> dict[str, Any]:
            rows = [{key: i} for i in ids]
            return store.get_online_features(features=features, entity_rows=rows).to_dict()  # type: ignore[no-any-return]

        samples, wall = timed(call, w["calls"], w["warmup"])
        answers = [call(ids) for ids in w["calls"][: w["dump"]]]
        out[w["id"]] = {"samples_ns": samples, "wall_ns": wall, "answers": answers}
    return {"workloads": out}


def offline(spec: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd

    store = open_store(spec, apply=True)
    entity_df = pd.read_parquet(spec["entities"])
    before, _ = rss_kib()
    t0 = time.perf_counter()
    frame = store.get_historical_features(entity_df=entity_df, features=spec["features"]).to_df()
    result = {"seconds": time.perf_counter() - t0, "rows": len(frame), "rss_before_kib": before,
              "peak_rss_kib": rss_kib()[1]}  # fmt: skip
    frame.to_parquet(spec["result"], index=False)
    return result


if __name__ == "__main__":
    import feast

    modes = {"online-load": online_load, "online-measure": online_measure, "offline": offline}
    raise SystemExit(main(modes, feast_version=feast.__version__))
