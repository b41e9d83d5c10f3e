"""Attacks on the server's hot path: the shortcuts taken for speed must not change answers.

A received chunk is first parsed by hiredis (``protocol/resp.py``); a command that passes the
dispatch fast path skips checks it provably does not need. Here hostile bytes are fed both
ways (whole: the fast path; a byte at a time: the general parser alone) and must give the
same commands and the same error, and live servers get the shapes the fast path must hand
over: non-canonical encodings, bulks without their CRLF, budgets cut mid-chunk.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engramdb.protocol.resp import Budget, ParserLimits, RequestParser, encode_command
from tests.server_faults.conftest import is_protocol_error

from .conftest import Raw, ServeFactory

_ARG = st.binary(max_size=12)
_COMMAND = st.lists(_ARG, min_size=1, max_size=4).map(lambda args: encode_command(*args))
# Encodings hiredis accepts but a request may not use, and hiredis' own blind spots.
_ODD = st.sampled_from(
    [
        b"+GET\r\n", b":1\r\n", b"$-1\r\n", b"*-1\r\n", b"*0\r\n", b"~1\r\n$1\r\nx\r\n",
        b"%1\r\n$1\r\na\r\n$1\r\nb\r\n", b"*1\r\n*1\r\n$1\r\nx\r\n", b"$3\r\nGETxx",
        b"*1\r\n$3\r\nGETxx", b"*2\r\n$3\r\nGET\r\n+k\r\n", b"*1\r\n$03\r\nGET\r\n",
        b"*1\r\n$3\r\nGET\n\r", b"PING\r\n", b"*1\r\n=7\r\ntxt:abc\r\n", b"*1\r\n$4\r\nPI",
        b"*1\r\n,1.5\r\n", b"*1\r\n#t\r\n", b"*1\r\n-ERR x\r\n", b"*999999\r\n",
        b"*1\r\n$1\r\nx\r\n" * 3, b"\r\n", b"*", b"*1\r\n",
    ]
)  # fmt: skip
_STREAM = st.lists(st.one_of(_COMMAND, _ODD), min_size=1, max_size=6).map(b"".join)


def _drain(parser: RequestParser, budget: Budget | None = None) -> tuple[list[list[bytes]], str]:
    """Every command the parser gives (renewing the budget while it says there is more),
    and its error text ('' for none)."""
    out: list[list[bytes]] = []
    while True:
        if budget is not None:
            budget.commands, budget.args, budget.bytes = 2, 5, 40
        out += parser.commands(None, budget)
        if not parser.more:
            break
    return out, "" if parser.error is None else str(parser.error)


def _whole(data: bytes, budget: Budget | None = None) -> tuple[list[list[bytes]], str]:
    parser = RequestParser(ParserLimits())
    parser.feed(data)
    return _drain(parser, budget)


def _byte_by_byte(data: bytes, budget: Budget | None = None) -> tuple[list[list[bytes]], str]:
    parser = RequestParser(ParserLimits())
    out: list[list[bytes]] = []
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
        got, error = _drain(parser, budget)
        out += got
        if error:
            return out, error
    return out, ""


@settings(max_examples=600, deadline=None)
@given(data=_STREAM)
def test_hiredis_fast_path_and_general_parser_agree_on_hostile_chunks(data: bytes) -> None:
    assert _whole(data) == _byte_by_byte(data)


@settings(max_examples=300, deadline=None)
@given(data=_STREAM)
def test_fast_path_keeps_the_turn_budget_mid_chunk(data: bytes) -> None:
    """A budget of 2 commands, 5 arguments and 40 bytes per call: the fast path stops where
    the general parser would, and the rest comes out on the next calls, in order."""
    assert _whole(data, Budget(2, 5, 40)) == _byte_by_byte(data)


def test_bulk_without_its_crlf_is_a_protocol_error_not_a_command(serve: ServeFactory) -> None:
    """hiredis skips the two bytes after a bulk without looking at them."""
    server = serve()
    with Raw(("127.0.0.1", server.port)) as conn:
        conn.send(b"*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n")
        replies, _ = conn.until_closed()
    assert len(replies) == 1, replies
    assert is_protocol_error(replies[0]), replies


def test_simple_string_inside_a_request_is_a_protocol_error(serve: ServeFactory) -> None:
    """hiredis reads ``+GET`` inside an array as the bytes ``GET``; Redis refuses it."""
    server = serve()
    with Raw(("127.0.0.1", server.port)) as conn:
        conn.send(encode_command(b"SET", b"k", b"v") + b"*2\r\n+GET\r\n$1\r\nk\r\n")
        replies, _ = conn.until_closed()
    assert replies[0] == b"OK"
    assert len(replies) == 2, replies
    assert is_protocol_error(replies[1]), replies


def test_durable_pipelines_from_many_clients_land_in_each_clients_order(
    serve: ServeFactory,
) -> None:
    """At ``sync`` the server batches writes onto its own committer: many clients pipelining
    writes and a read at once must each see their writes applied in the order sent, every
    one acknowledged with its own result, and the read after them must see them all."""
    server = serve("--durability", "sync")
    clients, steps = 12, 150
    conns = [Raw(("127.0.0.1", server.port)) for _ in range(clients)]
    try:
        for n, conn in enumerate(conns):
            script = b"".join(
                encode_command(b"INCR", b"c%d" % n)
                + encode_command(b"APPEND", b"log%d" % n, b"%d," % i)
                for i in range(steps)
            )
            conn.send(script + encode_command(b"GET", b"log%d" % n))
        for n, conn in enumerate(conns):
            replies = conn.replies(2 * steps + 1)
            expected_log = b"".join(b"%d," % i for i in range(steps))
            assert replies[0 : 2 * steps : 2] == list(range(1, steps + 1)), n
            lengths = [len(b"".join(b"%d," % j for j in range(i + 1))) for i in range(steps)]
            assert replies[1 : 2 * steps : 2] == lengths, n
            assert replies[-1] == expected_log, n
    finally:
        for conn in conns:
            conn.close()
