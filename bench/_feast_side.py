"""The Feast side of ``bench/features.py``, run in Feast's own virtualenv.

    /tmp/feast-venv/bin/python bench/_feast_side.py SPEC.json RESULT.json

Feast is never imported into engramdb's environment (its pins could change packages engramdb
depends on), so ``bench/features.py`` writes a JSON spec and runs this script with the
Feast virtualenv's interpreter. It imports only the standard library, Feast, pandas and
pyarrow, and writes its answer as JSON. Modes (``spec["mode"]``):

- ``online-load``: build a feature repository in ``spec["repo"]`` (``feature_store.yaml``
  with the local provider and the SQLite or Redis online store, a ``FileSource`` per view over
  the benchmark's Parquet files), ``apply`` it and ``materialize`` every view.
- ``online-measure``: open that repository and time ``get_online_features(...).to_dict()``
  per call, with the same loop as ``bench/_common.measure`` (``perf_counter_ns`` around the
  call alone, warmup discarded, ``gc.collect()`` + ``gc.freeze()`` first). Raw samples go
  back so the parent computes percentiles exactly as it does for engramdb; a few answers are
  returned too (outside the timings) for the identity check.
- ``offline``: a repository whose offline store is Feast's local ``file`` store (Dask), one
  ``get_historical_features(entity_df, features).to_df()`` timed, with the peak RSS of this
  process; the result is written to Parquet afterwards (untimed) for the identity check.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

_T0 = time.perf_counter()


def rss_kib() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in KiB, from /proc/self/status."""
    found = {"VmRSS": 0, "VmHWM": 0}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in found:
                found[key] = int(value.split()[0])
    return found["VmRSS"], found["VmHWM"]


def write_repo(spec: dict[str, Any]) -> Path:
    """``feature_store.yaml`` for the local provider with the spec's online store."""
    repo = Path(spec["repo"])
    (repo / "data").mkdir(parents=True, exist_ok=True)
    online = spec.get("online_store", {"type": "sqlite"})
    if online["type"] == "redis":
        online_yaml = (
            f'online_store:\n  type: redis\n  connection_string: "{online["connection_string"]}"'
        )
    else:
        online_yaml = f"online_store:\n  type: sqlite\n  path: {repo / 'data' / 'online.db'}"
    (repo / "feature_store.yaml").write_text(
        "project: engramdb_bench\n"
        f"registry: {repo / 'data' / 'registry.db'}\n"
        "provider: local\n"
        f"{online_yaml}\n"
        "offline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n",
        encoding="utf-8",
    )
    return repo


def definitions(spec: dict[str, Any]) -> list[Any]:
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64

    types = {"float64": Float64, "int64": Int64}
    entity = Entity(
        name=spec["entity"]["name"],
        join_keys=[spec["entity"]["join_key"]],
        value_type=ValueType.INT64,
    )
    views = [
        FeatureView(
            name=view["name"],
            entities=[entity],
            ttl=dt.timedelta(seconds=view["ttl_s"] or 0),
            schema=[Field(name=name, dtype=types[dtype]) for name, dtype in view["features"]],
            source=FileSource(
                name=f"{view['name']}_source",
                path=view["path"],
                timestamp_field="event_timestamp",
            ),
            online=True,
        )
        for view in spec["views"]
    ]
    return [entity, *views]


def open_store(spec: dict[str, Any], *, apply: bool) -> Any:
    from feast import FeatureStore

    repo = write_repo(spec)
    store = FeatureStore(repo_path=str(repo))
    if apply:
        store.apply(definitions(spec))
    return store


# modes -------------------------------------------------------------------------------------


def online_load(spec: dict[str, Any]) -> dict[str, Any]:
    store = open_store(spec, apply=True)
    began = time.perf_counter()
    store.materialize(
        start_date=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
        end_date=dt.datetime(2100, 1, 1, tzinfo=dt.UTC),
    )
    return {"materialize_s": time.perf_counter() - began}


def _run(fn: Any, args: list[Any], samples: list[int] | None) -> int:
    """The same timed loop as ``bench/_common._run``; returns the loop's wall ns."""
    clock = time.perf_counter_ns
    began = clock()
    for arg in args:
        t0 = clock()
        fn(arg)
        if samples is not None:
            samples.append(clock() - t0)
    return clock() - began


def online_measure(spec: dict[str, Any]) -> dict[str, Any]:
    store = open_store(spec, apply=False)
    key = spec["entity"]["join_key"]
    out: dict[str, Any] = {"workloads": {}}
    for workload in spec["workloads"]:
        features = workload["features"]

        def call(ids: list[int], features: list[str] = features) -> dict[str, Any]:
            rows = [{key: i} for i in ids]
            answer: dict[str, Any] = store.get_online_features(
                features=features, entity_rows=rows
            ).to_dict()
            return answer

        _run(call, workload["warmup"], None)
        gc.collect()
        gc.freeze()
        samples: list[int] = []
        try:
            wall = _run(call, workload["calls"], samples)
        finally:
            gc.unfreeze()
        answers = [call(ids) for ids in workload["calls"][: workload["dump"]]]
        out["workloads"][workload["id"]] = {
            "samples_ns": samples,
            "wall_ns": wall,
            "answers": answers,
        }
    return out


def offline(spec: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd

    store = open_store(spec, apply=True)
    entity_df = pd.read_parquet(spec["entities"])
    before, _ = rss_kib()
    began = time.perf_counter()
    frame = store.get_historical_features(entity_df=entity_df, features=spec["features"]).to_df()
    seconds = time.perf_counter() - began
    _, peak = rss_kib()
    rows = len(frame)
    frame.to_parquet(spec["result"], index=False)
    return {
        "seconds": seconds,
        "rows": rows,
        "rss_before_kib": before,
        "peak_rss_kib": peak,
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


MODES = {"online-load": online_load, "online-measure": online_measure, "offline": offline}


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    import feast

    result = MODES[spec["mode"]](spec)
    result["feast_version"] = feast.__version__
    result["python"] = sys.version.split()[0]
    result["process_s"] = time.perf_counter() - _T0
    tmp = argv[2] + ".tmp"
    Path(tmp).write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
