"""A database on the postgres engine says where it is in its repr, never with the password
(a repr ends up in logs and tracebacks)."""

from __future__ import annotations

from typing import Any

import pytest

import engramdb

pytestmark = pytest.mark.cluster


def test_a_postgres_database_repr_names_where_it_is_without_the_password(healthy: Any) -> None:
    password = healthy.url.split("@", 1)[0].rsplit(":", 1)[1]
    with engramdb.open(healthy.url + "&schema=repr_probe") as db:
        shown = repr(db)
    assert password not in shown
    assert "engramdb:" not in shown  # no user:password@ part at all
    leader_port = str(healthy.members()[0].pg_port)
    assert f"127.0.0.1:{leader_port}" in shown
    assert "schema=repr_probe" in shown
    assert shown.startswith("<engramdb.Database postgresql://")
