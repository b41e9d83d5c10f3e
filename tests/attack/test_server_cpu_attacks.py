"""Attacks on what was cut from the server's per-request CPU: each shortcut must answer as
the long way does.

- A received chunk under 4 KiB is first tried as exactly one command, split at CRLF
  (``protocol/resp.py``): arguments full of CRLF, ``$`` and ``*``, lengths off by one, a
  second command behind the first, a command cut short must all parse as the general parser
  parses them fed a byte at a time.
- The reclaimer checks every structure's owner entry instead of reading the change log when
  there are far fewer structures than changes (``server/reclaim.py``): a structure removed
  among thousands of other writes, by the server or by another process through the embedded
  API, must still have its elements reclaimed.
- ZADD's score check looks for an underflow with one ``translate``, not a generator.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

import engramdb
from engramdb.observability.metrics import OpMetrics, bucket_index
from engramdb.protocol.resp import Budget, ParserLimits, RequestParser, encode_command
from engramdb.recordset import after_prefix
from engramdb.server.reclaim import Reclaimer
from engramdb.server.structures import DEAD, ELEMENTS

from .conftest import ServeFactory

_NASTY = st.binary(max_size=10).map(lambda b: b.replace(b"a", b"\r\n").replace(b"b", b"$1"))
_ARGS = st.lists(
    st.one_of(_NASTY, st.sampled_from([b"\r\n", b"$3", b"*2", b"", b"\r"])), min_size=1, max_size=5
)


def _byte_by_byte(data: bytes) -> tuple[list[list[bytes]], str]:
    parser = RequestParser(ParserLimits())
    out: list[list[bytes]] = []
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
        out += parser.commands()
        if parser.error is not None:
            return out, str(parser.error)
    return out, ""


def _calls(data: bytes, limits: ParserLimits, budget: Budget) -> tuple[list[Any], str]:
    """As the server reads a chunk: ``take``, then a call per renewed budget while there is
    more; what each call returned, and the error."""
    parser = RequestParser(limits)
    calls: list[Any] = [parser.take(data, None, budget)]
    while parser.more and parser.error is None:
        budget.commands, budget.args, budget.bytes = 1, 3, 30
        calls.append(parser.commands(None, budget))
    return calls, "" if parser.error is None else str(parser.error)


def _whole(data: bytes) -> tuple[list[list[bytes]], str]:
    parser = RequestParser(ParserLimits())
    out = parser.take(data)
    return out, "" if parser.error is None else str(parser.error)


# Under 1024 arguments a command, the parser takes no shortcut: the general parser alone.
_GENERAL_ONLY = ParserLimits(max_args=1023)


@st.composite
def _one_command_chunks(draw: st.DrawFn) -> bytes:
    """One canonical command, then maybe broken: cut short, a length or the header
    changed by one, a byte flipped, or a second command (or part of one) behind it."""
    data = encode_command(*draw(_ARGS))
    how = draw(st.sampled_from(["as is", "cut", "length", "flip", "two", "tail"]))
    if how == "cut":
        data = data[: draw(st.integers(1, len(data) - 1))]
    elif how == "length":
        digits = [i for i, c in enumerate(data) if 48 <= c <= 57]
        i = draw(st.sampled_from(digits))
        data = data[:i] + bytes([48 + (data[i] - 47) % 10]) + data[i + 1 :]
    elif how == "flip":
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([draw(st.sampled_from(b"\r\n$*0x"))]) + data[i + 1 :]
    elif how == "two":
        data += encode_command(*draw(_ARGS))
    elif how == "tail":
        data += draw(st.sampled_from([b"*", b"*1\r\n", b"\r\n", b"PING\r\n", b"$1\r\nx\r\n"]))
    return data


@settings(max_examples=1500, deadline=None)
@given(data=_one_command_chunks())
def test_one_command_chunk_with_crlf_in_its_arguments_parses_as_the_general_parser(
    data: bytes,
) -> None:
    assert _whole(data) == _byte_by_byte(data)


@settings(max_examples=500, deadline=None)
@given(data=_one_command_chunks())
def test_one_command_chunk_over_a_tiny_turn_budget_stops_where_the_general_parser_does(
    data: bytes,
) -> None:
    """A budget of 1 command, 3 arguments and 30 bytes per call: a command over it is taken
    apart over several calls, call for call as the general parser does, never returned
    whole at once by the shortcut."""
    fast = _calls(data, ParserLimits(), Budget(1, 3, 30))
    assert fast == _calls(data, _GENERAL_ONLY, Budget(1, 3, 30))


# the reclaimer's owner check ---------------------------------------------------------------


def test_structures_removed_amid_thousands_of_writes_are_found_and_reclaimed(
    serve: ServeFactory,
) -> None:
    """Lists made by a real server, then (server stopped) removed through the embedded API
    among 5,000 other writes: nothing buried them, so the reclaimer's next round must find
    them, by the owner check (2 structures, 5,000 changes) rather than the change log."""
    server = serve("--durability", "none")
    r = redis.Redis(port=server.port, socket_timeout=30)
    for name in ("keep", "gone", "overwritten"):
        r.rpush(name, *[b"%d" % i for i in range(500)])
    r.close()
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    db = engramdb.open(server.data)
    try:
        reclaimer = Reclaimer(db, ["default"])
        reclaimer.run()  # where the log stands now
        before = db.stats()["sets"]["_redis"]
        records = db.records("default")
        assert records.delete("gone")
        records.put("overwritten", {"a": 1})
        for i in range(5000):
            records.put(f"s{i % 100}", {"i": i})
        assert reclaimer.run() == 1000
        assert db.stats()["sets"]["_redis"] == before - 1002  # their owner entries too
    finally:
        db.close()
    server.start()
    r = redis.Redis(port=server.port, socket_timeout=30)
    assert r.llen("keep") == 500
    assert r.lrange("keep", 0, 2) == [b"0", b"1", b"2"]
    assert r.exists("gone") == 0
    assert r.hgetall("overwritten") == {b"a": b"1"}


def test_structures_whose_id_ends_in_a_0xff_byte_are_reclaimed(serve: ServeFactory) -> None:
    """An id is a change-log sequence: one in 256 ends in 0xff, and the end of its elements'
    range was once computed by adding one to that byte, which failed, so the reclaimer
    stopped at that structure for good (every removed structure after it leaked)."""
    server = serve("--durability", "none")
    r = redis.Redis(port=server.port, socket_timeout=30)
    # Three changes per round (the list made, the list removed, a pad) step the next id
    # through every residue mod 256 within 256 rounds. 100 items: too many to delete with
    # the list (INLINE_REMOVE), so they are left to the reclaimer.
    items = [b"%d" % i for i in range(100)]
    for i in range(300):
        r.rpush(f"list{i}", *items)
        r.delete(f"list{i}")
        r.set("pad", i)
    r.close()
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    db = engramdb.open(server.data)
    try:
        Reclaimer(db, ["default"]).run()
        engine = db._engine
        assert engine.scan(ELEMENTS, after_prefix(ELEMENTS), 1) == []  # every element gone
        assert engine.scan(DEAD, after_prefix(DEAD), 1) == []  # and every id to reclaim
    finally:
        db.close()


# ZADD's score check -------------------------------------------------------------------------


def test_zadd_scores_that_underflow_to_zero_are_refused_and_zeros_are_not(
    serve: ServeFactory,
) -> None:
    """As Redis' strtod check: a nonzero mantissa that underflows to 0 is ERANGE; any
    spelling of zero is a score."""
    server = serve("--durability", "none")
    r = redis.Redis(port=server.port, socket_timeout=30)
    for bad in ("1e-400", "-0.5e-999", "+00.001e-400"):
        with pytest.raises(redis.ResponseError, match="not a valid float"):
            r.execute_command("ZADD", "z", bad, "m")
    for zero in ("0", "-0", "+0.000", "0e5", ".0e-999", "00"):
        r.execute_command("ZADD", "z", zero, zero)
    assert r.zrange("z", 0, -1, withscores=True) == [
        (m, 0.0) for m in sorted([b"0", b"-0", b"+0.000", b"0e5", b".0e-999", b"00"])
    ]


# latency histogram --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(latencies=st.lists(st.integers(-(1 << 20), 1 << 70), max_size=50))
def test_every_latency_lands_in_the_bucket_bucket_index_names(latencies: list[int]) -> None:
    """``observe`` inlines ``bucket_index`` past its lookup table (every write the server
    answers after its batch): each latency still counts in the bucket it names."""
    metrics = OpMetrics("x")
    expected = [0] * len(metrics.buckets)
    for ns in latencies:
        metrics.observe(ns)
        expected[bucket_index(ns)] += 1
    assert metrics.buckets == expected
    assert metrics.count == len(latencies)
