"""Values over the default 1 MiB record limit: a documented, configurable limit on every face.

A LangGraph thread hit ``RecordTooBig`` on its third turn. The limit is ``Limits(
max_record_bytes=...)`` embedded and ``--max-record-bytes`` (with ``--max-frame``, since a
record travels in one request) on the server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import engramdb
from engramdb import RecordTooBig, RequestTooLarge
from tests.server_faults.conftest import ServeFactory, serve

__all__ = ["serve"]

BLOB = b"x" * (3 << 20)


def test_embedded_records_may_be_as_big_as_the_configured_limit(tmp_path: Path) -> None:
    small = engramdb.open(tmp_path / "small", durability="none")
    with small as db, pytest.raises(RecordTooBig, match="limit is 1048576"):
        db.records("threads").put("t1", {"channel_values": BLOB})
    limits = engramdb.Limits(max_record_bytes=8 << 20)
    with engramdb.open(tmp_path / "big", durability="none", limits=limits) as db:
        db.records("threads").put("t1", {"channel_values": BLOB})
        assert db.records("threads").get("t1")["channel_values"] == BLOB  # type: ignore[index]


def test_a_server_takes_big_records_when_told_to(serve: ServeFactory) -> None:
    default = serve("--durability", "none", name="default")
    with engramdb.connect(default.url) as db, pytest.raises(RequestTooLarge):
        db.records("threads").put("t1", {"channel_values": BLOB})
    big = serve(
        "--durability", "none", "--max-record-bytes", "8M", "--max-frame", "16M", name="big"
    )
    with engramdb.connect(big.url) as db:
        db.records("threads").put("t1", {"channel_values": BLOB})
        assert db.records("threads").get("t1")["channel_values"] == BLOB  # type: ignore[index]
        assert db.limits.max_record_bytes == 8 << 20
        with pytest.raises(RecordTooBig):
            db.records("threads").put("t2", {"v": b"x" * (9 << 20)})


def test_a_client_can_learn_the_largest_request_its_server_takes(serve: ServeFactory) -> None:
    server = serve("--durability", "none", "--max-frame", "4M")
    with engramdb.connect(server.url) as db:
        assert db.stats()["server"]["max_frame"] == 4 << 20
