"""Attacks on the native call path (``ENGRAM <method> <msgpack [args, kwargs]>``).

Each test sends what a hostile client would, as real bytes to a real ``engramdb serve``, and
checks that the server refuses it with a clear ``InvalidArgument`` (``-INVALID``), writes
nothing, reaches no file, and keeps serving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

import engramdb
from engramdb import InvalidArgument
from engramdb.protocol.resp import encode_command
from tests.attack.conftest import Raw, Served, ServeFactory

RESERVED = ["_feature_registry", "_collections", "vec.docs", "fv.driver_stats", "_sessions"]


def call(conn: Raw, method: str, payload: bytes) -> Any:
    conn.send(encode_command(b"ENGRAM", method.encode(), payload))
    (reply,) = conn.replies(1)
    return reply


def native(conn: Raw, method: str, *args: Any, **kwargs: Any) -> Any:
    return call(conn, method, msgspec.msgpack.encode([list(args), kwargs]))


def is_invalid(reply: Any) -> bool:
    return isinstance(reply, Exception) and str(reply).startswith("INVALID ")


def still_serving(server: Served) -> None:
    with server.raw() as conn:
        conn.send(b"PING\r\n")
        assert conn.replies(1) == [b"PONG"]


@pytest.fixture
def server(serve: ServeFactory) -> Served:
    return serve("--durability", "none")


# the sets roles reserve ------------------------------------------------------------------


@pytest.mark.parametrize("set_name", RESERVED)
def test_forging_a_role_record_over_the_wire_is_refused(server: Served, set_name: str) -> None:
    forged = {"join_keys": ["x\" ; COPY (SELECT 1) TO '/tmp/pwned' --"], "dim": 3}
    with server.raw() as conn:
        for method, args in [
            ("records.put", (set_name, "view:driver_stats", forged)),
            ("records.update", (set_name, "c", forged)),
            ("records.operate", (set_name, "k", [{"type": "write", "bin": "dim", "value": 9}])),
            ("records.delete", (set_name, "k")),
            ("records.get", (set_name, "k")),
            ("records.scan", (set_name,)),
            ("records.count", (set_name,)),
        ]:
            reply = native(conn, method, *args)
            assert is_invalid(reply), (method, reply)
            assert "reserved" in str(reply)
    with engramdb.connect(server.url) as db:
        assert db.sets() == []  # nothing was written anywhere


@pytest.mark.parametrize("set_name", RESERVED)
def test_role_sets_are_not_reachable_through_the_embedded_record_api(
    tmp_path: Path, set_name: str
) -> None:
    with engramdb.open(tmp_path / "db", durability="none") as db:
        with pytest.raises(InvalidArgument, match="reserved"):
            db.records(set_name)
        db.vectors.create_collection("docs", 3)  # the role itself still works
        assert [c.name for c in db.vectors.list_collections()] == ["docs"]


# arguments a remote caller may not send ---------------------------------------------------


def test_a_server_side_output_path_cannot_be_sent(server: Served, tmp_path: Path) -> None:
    target = tmp_path / "overwritten.parquet"
    target.write_bytes(b"precious")
    with server.raw() as conn:
        reply = native(
            conn,
            "features.get_historical_features",
            b"not even arrow",
            ["driver_stats:trips"],
            output=str(target),
        )
    assert is_invalid(reply)
    assert "output=" in str(reply)
    assert target.read_bytes() == b"precious"


def test_a_table_named_by_a_server_path_is_refused(server: Served) -> None:
    # Embedded, ingest() also reads a Parquet path; over the network it must not.
    with server.raw() as conn:
        reply = native(conn, "features.ingest", "driver_stats", "/etc/passwd")
    assert is_invalid(reply)
    assert "Arrow IPC" in str(reply)
    assert "root:" not in str(reply)


class _BrokenEmbedder:
    """An embedder with a bug: its TypeError is the method's, not the caller's."""

    dim = 8

    def embed(self, texts: Any) -> np.ndarray:
        raise TypeError("a bug inside the embedder")


def test_a_type_error_inside_a_method_is_not_called_invalid_arguments(tmp_path: Path) -> None:
    """Only a binding failure (the caller's arguments) is InvalidArgument (see
    test_arguments_outside_the_signature_are_invalid); a TypeError raised by the method's
    own code, here in-process through the same dispatch, is a bug and surfaces as one."""
    import asyncio

    import engramdb.aio

    async def run() -> BaseException:
        adb = await engramdb.aio.open(str(tmp_path / "db"), embedder=_BrokenEmbedder())
        try:
            with pytest.raises(TypeError) as raised:
                await adb.memory.add("Alice likes tea", user_id="alice")
            return raised.value
        finally:
            await adb.close()

    error = asyncio.run(run())
    assert not isinstance(error, InvalidArgument)
    assert "a bug inside the embedder" in str(error)


@pytest.mark.parametrize(
    ("method", "args", "kwargs"),
    [
        ("records.put", ["s", "k", {}], {"durable": False}),  # unknown keyword
        ("records.put", ["s", "k"], {}),  # missing argument
        ("records.put", ["s", "k", {}, 5], {}),  # too many positionals
        ("records.get", ["s", "k"], {"key": "k"}),  # the same argument twice
        ("db.changes", [0], {"limit": 10, "since": 0}),
        ("memory.add", [None, "likes tea"], {"infer": True}),
        ("vectors.create_collection", ["docs", 3], {"dimension": 3}),
    ],
)
def test_arguments_outside_the_signature_are_invalid(
    server: Served, method: str, args: list[Any], kwargs: dict[str, Any]
) -> None:
    with server.raw() as conn:
        reply = native(conn, method, *args, **kwargs)
    assert is_invalid(reply), reply
    assert "bad arguments" in str(reply)


@pytest.mark.parametrize(
    ("method", "args", "kwargs"),
    [
        ("db.changes", [0], {"limit": 10**9}),
        ("records.scan", ["s"], {"limit": 10**7}),
        ("db.sweep", [], {"limit": 10**9}),
        ("sessions.list", [], {"limit": 10**8}),
        ("memory.list", [None], {"limit": 10**8}),
    ],
)
def test_sizes_over_the_server_maximum_are_refused(
    server: Served, method: str, args: list[Any], kwargs: dict[str, Any]
) -> None:
    with server.raw() as conn:
        reply = native(conn, method, *args, **kwargs)
    assert is_invalid(reply), reply
    assert "maximum" in str(reply)
    still_serving(server)


def test_stats_over_the_network_do_not_reveal_the_data_path(server: Served) -> None:
    with engramdb.connect(server.url) as db:
        db.records("s").put("k", {"v": 1})
        stats = db.stats()
    assert str(server.data) not in repr(stats)
    assert "path" not in stats


# values that used to escape as raw Python errors ------------------------------------------


@pytest.mark.parametrize("ttl", [1e16, 1e300, 2**63])
def test_absurd_ttls_are_invalid_not_internal_errors(server: Served, ttl: float) -> None:
    with server.raw() as conn:
        reply = native(conn, "records.put", "s", "k", {"v": 1}, ttl=ttl)
    assert is_invalid(reply), reply
    with engramdb.open(None) as db, pytest.raises(InvalidArgument, match="ttl"):
        db.records("s").put("k", {}, ttl=ttl)


def test_a_set_name_that_is_not_text_is_invalid(server: Served, tmp_path: Path) -> None:
    with engramdb.open(tmp_path / "db", durability="none") as db, pytest.raises(InvalidArgument):
        db.records("\ud800")
    # Over the wire: a msgpack str holding invalid UTF-8 (what a lone surrogate becomes).
    payload = b"\x92\x92\xa3\xed\xa0\x80\xa1k\x80"
    with server.raw() as conn:
        reply = call(conn, "records.get", payload)
    assert is_invalid(reply), reply
    still_serving(server)


def test_a_filter_nested_thousands_deep_is_invalid(tmp_path: Path) -> None:
    nested: dict[str, Any] = {"lang": "en"}
    for _ in range(2000):
        nested = {"$not": nested}
    with engramdb.open(tmp_path / "db", durability="none") as db:
        docs = db.vectors.create_collection("docs", 2)
        docs.upsert([1], [[1.0, 0.0]], [{"lang": "en"}])
        with pytest.raises(InvalidArgument, match="nest"):
            docs.search([1.0, 0.0], 1, filter=nested)


@pytest.mark.parametrize(
    "ext",
    [
        b"",  # no dtype length
        b"\x05abc",  # dtype longer than the data
        b"\x03<f4\x01\x02",  # not a whole number of elements
        b"\x03<c8" + b"\0" * 8,  # complex numbers are not vectors
        b"\x03|O8" + b"\0" * 8,  # object arrays would be pointers
        b"\x02\xff\xfe",  # dtype not ASCII
    ],
)
def test_malformed_arrays_on_the_wire_are_invalid(server: Served, ext: bytes) -> None:
    payload = msgspec.msgpack.encode([["s", "k", {"v": msgspec.msgpack.Ext(1, ext)}], {}])
    with server.raw() as conn:
        reply = call(conn, "records.put", payload)
    assert is_invalid(reply), reply
    with engramdb.connect(server.url) as db:
        assert db.records("s").get("k") is None
    still_serving(server)


def test_msgpack_nested_beyond_reason_is_invalid(server: Served) -> None:
    payload = b"\x92" + b"\x91" * 200_000 + b"\xc0" + b"\x80"
    with server.raw() as conn:
        reply = call(conn, "records.put", payload)
    assert is_invalid(reply), reply
    still_serving(server)


# type slips must not lose data remotely ---------------------------------------------------


def test_a_str_where_ids_belong_deletes_nothing_remotely(server: Served) -> None:
    with engramdb.connect(server.url) as db:
        docs = db.vectors.create_collection("docs", 2)
        docs.upsert(["a", "b", "ab"], np.eye(3, 2, dtype=np.float32) + 0.1)
        with pytest.raises(InvalidArgument):
            docs.delete("ab")
        with pytest.raises(InvalidArgument):
            docs.get("ab")
        with pytest.raises(InvalidArgument):
            docs.touch("ab", 60)
        with pytest.raises(InvalidArgument):
            docs.upsert("ab", np.eye(2, 2, dtype=np.float32))
        with pytest.raises(InvalidArgument):
            db.records("s").get_many("ab")
        assert docs.count() == 3
        assert [item is not None for item in docs.get(["a", "b", "ab"])] == [True] * 3


# memory keyed by client input ------------------------------------------------------------


def test_reading_endless_new_set_names_does_not_grow_the_server(server: Served) -> None:
    def flood(start: int, count: int) -> None:
        with server.raw(timeout=60) as conn:
            for base in range(start, start + count, 5000):
                conn.send(
                    b"".join(
                        encode_command(
                            b"ENGRAM",
                            b"records.get",
                            msgspec.msgpack.encode([[f"set-{i:08d}", "k"], {}]),
                        )
                        for i in range(base, base + 5000)
                    )
                )
                assert conn.replies(5000) == [msgspec.msgpack.encode(None)] * 5000

    flood(0, 20_000)  # warm up: allocator arenas, code paths
    before = server.memory_kb()
    flood(20_000, 150_000)
    grown_mb = (server.memory_kb() - before) / 1024
    # Unbounded, each name cost ~0.6 KiB (150k names: ~90 MiB); bounded it stays flat.
    assert grown_mb < 30, f"the server grew {grown_mb:.0f} MiB on 150k one-off set names"
