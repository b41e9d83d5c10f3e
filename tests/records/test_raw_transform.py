"""The raw transform hook: ``RecordSet._plan_transform(raw=True)`` hands a transform the
stored msgpack body instead of decoded bins, and an internal transform may store an encoded
body (bytes). The server's Redis list commands edit long lists this way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import engramdb
from engramdb import Database, InvalidArgument, Limits, RecordTooBig
from engramdb.records.codec import encode_value
from engramdb.records.writes import KEEP, Current, Outcome


@pytest.fixture(params=["memory", "lmdb"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    path = None if request.param == "memory" else tmp_path / "db"
    database = engramdb.open(
        path, durability="none", sweep_interval=None, limits=Limits(max_record_bytes=4096)
    )
    yield database
    database.close()


def _raw(db: Database, key: str, fn: Any) -> Any:
    records = db.records("s")
    return db._write(records._plan_transform([(key, fn)], single=True, raw=True))


def test_a_raw_transform_sees_the_stored_body(db: Database) -> None:
    db.records("s").put("k", {"a": 1, "b": [b"x"]}, ttl=60)
    seen: list[Current] = []

    def look(current: Current, now: int) -> Outcome:
        seen.append(current)
        return Outcome(bytes(current.body or b""))

    body = _raw(db, "k", look)
    assert body == encode_value({"a": 1, "b": [b"x"]})
    assert seen[0].bins is None
    assert seen[0].generation == 1
    assert seen[0].expires_ms > 0
    assert _raw(db, "missing", look) == b""
    assert seen[1].body is None
    assert seen[1].generation == 0


def test_an_encoded_body_is_stored_as_it_is(db: Database) -> None:
    records = db.records("s")
    records.put("k", {"a": 1}, ttl=60)
    expires = records.get("k").expires_at

    def replace(current: Current, now: int) -> Outcome:
        return Outcome("done", encode_value({"list": [b"a", b"b"]}))

    assert _raw(db, "k", replace) == "done"
    record = records.get("k")
    assert record.bins == {"list": [b"a", b"b"]}
    assert record.generation == 2
    assert record.expires_at == expires
    assert _raw(db, "k", lambda current, now: Outcome(None, None)) is None
    assert records.get("k") is None
    assert _raw(db, "k", lambda current, now: Outcome(None, KEEP)) is None  # nothing written


def test_an_encoded_body_obeys_the_record_size_limit(db: Database) -> None:
    records = db.records("s")
    records.put("k", {"a": 1})

    def grow(current: Current, now: int) -> Outcome:
        return Outcome(None, encode_value({"a": b"x" * 5000}))

    with pytest.raises(RecordTooBig):
        _raw(db, "k", grow)
    assert records.get("k").bins == {"a": 1}


def test_the_public_transform_does_not_take_encoded_bodies(db: Database) -> None:
    records = db.records("s")
    with pytest.raises(InvalidArgument):
        records.transform("k", lambda current, now: Outcome(None, encode_value({"a": 1})))
    assert records.get("k") is None
