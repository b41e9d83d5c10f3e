"""Attacks on the inference-context call (``db.context``) over the wire: hostile part maps,
sizes over the server's caps, reserved sets. Each is refused with ``-INVALID`` (or fails
only its own part), reads nothing it should not, and the server keeps serving."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

import engramdb
from engramdb import SessionRead
from tests.attack.conftest import Served, ServeFactory
from tests.attack.test_native_attacks import is_invalid, native, still_serving


@pytest.fixture
def server(serve: ServeFactory) -> Served:
    return serve("--durability", "none")


def test_a_reserved_set_a_role_opened_is_out_of_reach(server: Served) -> None:
    with engramdb.connect(server.url) as db:
        db.sessions.create("s1", {"secret": "token"})  # the server's sessions role is open now
    with server.raw() as conn:
        reply = native(conn, "records.get", "_sessions", "s1")
        assert is_invalid(reply), reply
        assert "reserved" in str(reply)
        parts = msgspec.msgpack.decode(
            native(conn, "db.context", records={"part": "records", "sets": {"_sessions": ["s1"]}})
        )
        assert parts["records"]["error"].startswith("INVALID ")
        assert b"token" not in msgspec.msgpack.encode(parts)
    still_serving(server)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"session": "s1"},  # not a part map
        {"session": {"part": "nope", "id": "s1"}},
        {"session": {"part": "session", "id": "s1", "path": "/etc/passwd"}},  # unknown field
        {"session": {"part": "session", "id": 5}},
        {"session": {"part": "session", "id": "s1", "last_events": 10**12}},
        {"memory": {"part": "memory", "query": "q", "k": 10**9}},
        {"search": {"part": "search", "collection": "docs", "text": "x", "k": -1}},
        {"search": {"part": "search", "collection": "docs"}},  # neither text nor vector
        {"features": {"part": "features", "features": ["v:f"], "entity_rows": [{}] * 10_001}},
        {"records": {"part": "records", "sets": {"a": list(range(10_001))}}},
        {"records": {"part": "records", "sets": ["a"]}},
        {"records": {"a": ["k"]}},  # untagged
        {"timeout": "1"},
        {"timeout": -1},
        {"nonsense": 1},
    ],
)
def test_hostile_context_requests_are_refused(server: Served, kwargs: dict[str, Any]) -> None:
    with server.raw() as conn:
        reply = native(conn, "db.context", **kwargs)
        assert is_invalid(reply), (kwargs, reply)
    still_serving(server)


def test_a_tiny_deadline_over_the_wire_is_answered_not_dropped(server: Served) -> None:
    with engramdb.connect(server.url) as db:
        db.sessions.create("s1", {"n": 1})
        for _ in range(20):
            ctx = db.context(session=SessionRead("s1"), timeout=1e-6)
            part = ctx.session
            assert part is not None
            assert part.timed_out or part.result().state == {"n": 1}  # type: ignore[union-attr]
        assert db.context(session=SessionRead("s1"), timeout=30).session.ok  # type: ignore[union-attr]
