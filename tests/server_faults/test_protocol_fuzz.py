"""The RESP codec under hostile input, alone and inside a live server.

Unit half: ``RequestParser`` fed random bytes and mutated valid frames, in random chunks,
either returns commands or reports a ``ProtocolError`` — nothing else — and never holds more
than its limits; valid frames split anywhere parse to the same commands; ``encode_reply``
output reads back through hiredis. Live half: a client sending garbage gets an error and is
disconnected while other clients keep getting correct answers from the same process.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from types import FrameType
from typing import Any

import hiredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engramdb
from engramdb import ProtocolError
from engramdb.protocol import resp
from engramdb.protocol.resp import (
    NULL_ARRAY,
    ErrorReply,
    ParserLimits,
    RequestParser,
    SimpleString,
    Verbatim,
    encode_command,
    encode_reply,
)
from engramdb.server.config import PREAUTH_LIMITS

from .conftest import MORE, Raw, Served, is_protocol_error, wait_for

SMALL = ParserLimits(max_bulk=64, max_args=8, max_inline=128, max_buffer=512)
LIMITS = [ParserLimits(), PREAUTH_LIMITS, SMALL]

# strategies ------------------------------------------------------------------------------

args_st = st.lists(st.binary(max_size=24), min_size=1, max_size=5)
_WHITESPACE = b" \t\r\n\x0b\x0c"  # what bytes.split() splits inline commands on
_word = st.binary(min_size=1, max_size=12).filter(lambda w: not any(c in _WHITESPACE for c in w))
inline_st = st.lists(_word, min_size=1, max_size=4).filter(lambda ws: ws[0][0] != ord("*"))


@st.composite
def frames(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """One valid request (multibulk or inline) and the command it stands for."""
    if draw(st.booleans()):
        args = draw(args_st)
        return encode_command(*args), args
    words = draw(inline_st)
    ending = draw(st.sampled_from([b"\r\n", b"\n"]))
    return b" ".join(words) + ending, words


@st.composite
def streams(draw: st.DrawFn, max_frames: int = 4) -> tuple[bytes, list[list[bytes]]]:
    parts = draw(st.lists(frames(), min_size=1, max_size=max_frames))
    return b"".join(p for p, _ in parts), [c for _, c in parts]


NASTY_HEADERS = [
    b"$1099511627776\r\n", b"*1000000\r\n", b"$99999999999999999999999\r\n",
    b"*4294967296\r\n", b"$-2\r\n", b"*-1\r\n", b"$-1\r\n", b"*-9\r\n", b"$\r\n", b"*\r\n",
    b"$x\r\n", b"*1\r\n$3\r\n", b"*" + b"9" * 40, b"$" + b"1" * 40,
]  # fmt: skip
MUTATIONS = ["truncate", "flip", "header", "drop_crlf", "insert", "repeat", "delete"]


def mutate(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(MUTATIONS))
        at = draw(st.integers(0, len(out)))
        if op == "truncate":
            del out[at:]
        elif op == "flip" and at < len(out):
            out[at] = draw(st.integers(0, 255))
        elif op == "header":
            out[at:at] = draw(st.sampled_from(NASTY_HEADERS))
        elif op == "drop_crlf":
            crlf = out.find(b"\r\n", at)
            if crlf >= 0:
                del out[crlf : crlf + draw(st.sampled_from([1, 2]))]
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "repeat":
            out += out[at:]
        elif op == "delete":
            del out[at : at + draw(st.integers(1, 6))]
    return bytes(out)


@st.composite
def hostile(draw: st.DrawFn) -> bytes:
    """Random bytes, or valid frames with a few mutations."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=600))
    data, _ = draw(streams())
    return mutate(draw, data)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# the parser alone ------------------------------------------------------------------------


def parse(parser: RequestParser) -> list[list[bytes]]:
    """The parser's commands, raising its ``ProtocolError`` if it found one (the parser
    returns the commands before a bad frame and keeps the error for the caller)."""
    got = parser.commands()
    if parser.error is not None:
        raise parser.error
    return got


def feed_all(parser: RequestParser, chunks: list[bytes]) -> list[list[bytes]]:
    """Feed chunk by chunk, checking after each feed what the parser promises."""
    out: list[list[bytes]] = []
    limits = parser.limits
    for chunk in chunks:
        parser.feed(chunk)
        got = parse(parser)
        assert parser.buffered <= limits.max_buffer
        for args in got:
            assert args, "an empty command was returned"
            assert len(args) <= limits.max_args
            assert all(type(a) is bytes for a in args)
            assert all(len(a) <= max(limits.max_bulk, limits.max_inline) for a in args)
        out.extend(got)
    return out


@settings(max_examples=400, deadline=None)
@given(data=st.data(), limits=st.sampled_from(LIMITS))
def test_hostile_input_gives_commands_or_protocol_error(
    data: st.DataObject, limits: ParserLimits
) -> None:
    payload = data.draw(hostile())
    parser = RequestParser(limits)
    chunks = data.draw(chunked(payload))
    # ProtocolError is the one allowed failure; the server closes the connection on it.
    with contextlib.suppress(ProtocolError):
        feed_all(parser, chunks)


@settings(max_examples=150, deadline=None)
@given(stream=streams(max_frames=3))
def test_valid_stream_split_at_every_byte_parses_the_same(
    stream: tuple[bytes, list[list[bytes]]],
) -> None:
    data, expected = stream
    assert feed_all(RequestParser(ParserLimits()), [data]) == expected
    for cut in range(len(data) + 1):
        parser = RequestParser(ParserLimits())
        assert feed_all(parser, [data[:cut], data[cut:]]) == expected, f"split at {cut}"
        assert parser.buffered == 0
    one_by_one = RequestParser(ParserLimits())
    assert feed_all(one_by_one, [data[i : i + 1] for i in range(len(data))]) == expected


@settings(max_examples=150, deadline=None)
@given(data=st.data(), stream=streams(max_frames=6))
def test_valid_stream_in_random_chunks(
    data: st.DataObject, stream: tuple[bytes, list[list[bytes]]]
) -> None:
    payload, expected = stream
    assert feed_all(RequestParser(ParserLimits()), data.draw(chunked(payload))) == expected


@pytest.mark.parametrize(
    "header",
    [
        b"*3\r\n$3\r\nSET\r\n$1099511627776\r\n",
        b"*3\r\n$3\r\nSET\r\n$2097153\r\n",  # max_bulk + 1
        b"*1000000\r\n",
        b"*131073\r\n",  # max_args + 1
        b"*2\r\n$3\r\nGET\r\n$-7\r\n",
        b"*" + b"1" * 30,
    ],
)
def test_oversized_declarations_fail_on_the_header(header: bytes) -> None:
    """Refused as soon as the header arrives: the parser never waits for the payload."""
    parser = RequestParser(ParserLimits())
    parser.feed(header)
    with pytest.raises(ProtocolError):
        parse(parser)


def test_inline_line_over_the_limit_fails_before_its_end() -> None:
    parser = RequestParser(ParserLimits())
    parser.feed(b"SET k " + b"x" * (64 << 10))
    with pytest.raises(ProtocolError, match="inline"):
        parse(parser)


def test_unfinished_frames_fail_past_the_buffer_limit() -> None:
    limits = ParserLimits(max_bulk=1000, max_args=10_000, max_buffer=10_000)
    parser = RequestParser(limits)
    parser.feed(b"*10000\r\n")
    chunk = b"$999\r\n" + b"x" * 999 + b"\r\n"
    for _ in range(limits.max_buffer // len(chunk)):
        parser.feed(chunk)
        assert parse(parser) == []
    parser.feed(chunk)
    with pytest.raises(ProtocolError, match="query buffer"):
        parse(parser)


def _lines_run(chunks: list[bytes]) -> int:
    """Python lines executed inside resp.py while feeding ``chunks``: a deterministic
    measure of the parser's work (no clock involved)."""
    count = 0
    parser = RequestParser(ParserLimits())

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return local

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename == resp.__file__ else None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        for chunk in chunks:
            parser.feed(chunk)
            parser.commands()
    finally:
        sys.settrace(previous)
    return count


def test_parsing_work_grows_linearly_with_a_trickled_command() -> None:
    n = 400
    argument = b"$8\r\n12345678\r\n"
    chunks = [b"*%d\r\n" % n, *([argument] * n)]
    # Linear parsing costs a few dozen lines per argument; re-parsing from the start of the
    # frame on every feed costs ~n^2/2 argument parses (about 1.2 million lines here).
    assert _lines_run(chunks) <= 100 * n


# replies ---------------------------------------------------------------------------------

_safe_text = st.text(max_size=16).filter(lambda t: "\r" not in t and "\n" not in t)
_leaves = st.one_of(
    st.binary(max_size=40),
    st.integers(-(2**63), 2**63 - 1),
    st.none(),
    st.text(max_size=16),
    _safe_text.map(SimpleString),
    st.text(max_size=16).map(Verbatim),
    st.booleans(),
    st.floats(),
    st.just(NULL_ARRAY),
    st.text(max_size=16).map(lambda text: ErrorReply("ERR " + text)),
)
reply_values = st.recursive(
    _leaves,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.tuples(kids, kids),
        st.dictionaries(st.binary(max_size=8), kids, max_size=4),
        st.frozensets(st.binary(max_size=8), max_size=4),
    ),
    max_leaves=25,
)


def assert_read_back(value: Any, got: Any, resp3: bool) -> None:
    """What hiredis gives back for ``encode_reply(value, resp3)``."""
    kind = type(value)
    if value is None or value is NULL_ARRAY:
        assert got is None
    elif kind is bool:
        assert got == value
        assert (type(got) is bool) == resp3
    elif kind is int or kind is bytes:
        assert got == value
    elif kind in (str, SimpleString, Verbatim):
        assert got == value.encode()
    elif kind is float:
        number = got if resp3 else float(got)
        assert number == value or (number != number and value != value)
    elif kind is list or kind is tuple:
        assert type(got) is list
        assert len(got) == len(value)
        for item, item_got in zip(value, got):
            assert_read_back(item, item_got, resp3)
    elif kind is dict:
        if resp3:
            assert type(got) is dict
            assert list(got) == list(value)
            pairs = list(got.items())
        else:
            assert type(got) is list
            assert len(got) == 2 * len(value)
            pairs = list(zip(got[::2], got[1::2]))
        for (k, v), (k_got, v_got) in zip(value.items(), pairs):
            assert k_got == k
            assert_read_back(v, v_got, resp3)
    elif kind is ErrorReply:
        assert isinstance(got, hiredis.ReplyError)
        assert str(got) == value.replace("\r", " ").replace("\n", " ")
    elif kind is frozenset:
        assert sorted(got) == sorted(value)
    else:
        raise AssertionError(f"no expectation for {kind}")


@settings(max_examples=300, deadline=None)
@given(values=st.lists(reply_values, min_size=1, max_size=5), resp3=st.booleans(), data=st.data())
def test_encoded_replies_read_back_through_hiredis(
    values: list[Any], resp3: bool, data: st.DataObject
) -> None:
    wire = b"".join(encode_reply(v, resp3) for v in values)
    reader = hiredis.Reader(notEnoughData=MORE)
    got: list[Any] = []
    for chunk in data.draw(chunked(wire)):
        reader.feed(chunk)
        while (reply := reader.gets()) is not MORE:
            got.append(reply)
    assert len(got) == len(values)
    for value, reply in zip(values, got):
        assert_read_back(value, reply, resp3)


@given(text=st.text(max_size=40))
def test_error_replies_stay_one_line(text: str) -> None:
    reader = hiredis.Reader()
    reader.feed(encode_reply(ErrorReply("ERR " + text)) + encode_reply(b"after"))
    error = reader.gets()
    assert isinstance(error, hiredis.ReplyError)
    assert reader.gets() == b"after"


# the live server -------------------------------------------------------------------------


def _nasty_corpus() -> list[bytes]:
    """Frames no parser state can accept, each alone and behind a valid read."""
    alone = [
        b"*3\r\n$3\r\nSET\r\n$1099511627776\r\n",
        b"*3\r\n$3\r\nSET\r\n$3000000\r\n",
        b"*1000000\r\n",
        b"*200000\r\n$3\r\nGET\r\n",
        b"*99999999999999999999\r\n",
        b"*" + b"9" * 40,
        b"*1\r\n$" + b"9" * 40,
        b"*abc\r\n",
        b"*\r\n",
        b"*-\r\n",
        b"*1.5\r\n",
        b"*0x10\r\n",
        b"*1e3\r\n",
        b"*1\r\n$-5\r\n",
        b"*1\r\n$-1\r\n",
        b"*1\r\n$abc\r\n",
        b"*1\r\n$\r\n",
        b"*1\r\n$1.0\r\n",
        b"*1\r\nPING\r\n",
        b"*2\r\n$3\r\nGET\r\n:1\r\n",
        b"*1\r\n*1\r\n$4\r\nPING\r\n",
        b"*1\r\n$4\r\nPINGXX",
        b"*1\r\n$4\r\nPING\n\n",
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\r",
        b"*1\r\n\x00\r\n",
        b"*\xff\xfe\r\n",
        b"x" * 70_000,
    ]
    prefixes = [b"PING\r\n", encode_command(b"ECHO", b"hello")]
    corpus = list(alone)
    for i, frame in enumerate(alone[:-1]):
        corpus.append(prefixes[i % 2] + frame)
    return corpus


CORPUS = _nasty_corpus()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = Served(tmp_path_factory.mktemp("fuzz") / "db", "--durability", "none").start()
    yield server
    server.kill()


class Bystanders:
    """Clients doing ordinary, verified reads and writes until told to stop."""

    def __init__(self, url: str, count: int) -> None:
        self.stop = threading.Event()
        self.done = [0] * count
        self.errors: list[str] = []
        self.threads = [
            threading.Thread(target=self._run, args=(url, i), daemon=True) for i in range(count)
        ]

    def __enter__(self) -> Bystanders:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        assert not any(t.is_alive() for t in self.threads), "a bystander hung"

    def _run(self, url: str, index: int) -> None:
        try:
            with engramdb.connect(url) as db:
                records = db.records("bystanders")
                step = 0
                while not self.stop.is_set():
                    key = f"b{index}-{step % 10}"
                    generation = records.put(key, {"step": step})
                    record = records.get(key)
                    if record is None or record["step"] != step:
                        self.errors.append(f"{key}: read {record} after writing step {step}")
                    elif record.generation != generation:
                        self.errors.append(f"{key}: generation {record.generation}")
                    with Raw(_address(url)) as raw:
                        raw.send(encode_command(b"ECHO", key))
                        if raw.replies(1) != [key.encode()]:
                            self.errors.append(f"{key}: wrong ECHO")
                    step += 1
                    self.done[index] = step
        except Exception as e:  # reported by the test, not lost in a thread
            self.errors.append(f"bystander {index}: {type(e).__name__}: {e}")


def _address(url: str) -> tuple[str, int]:
    host, port = url.rpartition("@")[2].removeprefix("engramdb://").split(":")
    return host, int(port)


def test_garbage_client_is_cut_off_while_others_are_served(live: Served) -> None:
    with Bystanders(live.url, 3) as bystanders:
        wait_for(lambda: all(bystanders.done), 30, "every bystander to finish one round")
        for frame in CORPUS:
            with live.raw() as conn:
                conn.send(frame)
                replies, how = conn.until_closed()
            shown = frame[:60]
            assert replies, f"{shown!r}: closed ({how}) without an error reply"
            assert is_protocol_error(replies[-1]), f"{shown!r}: got {replies!r}"
            assert not any(isinstance(r, hiredis.ReplyError) for r in replies[:-1])
            assert live.alive()
        before = list(bystanders.done)
        wait_for(
            lambda: all(d > b for d, b in zip(bystanders.done, before)),
            30,
            "bystanders to keep going after the garbage",
        )
    assert bystanders.errors == []
    assert live.alive()
    assert int(live.info()["protocol_errors"]) >= len(CORPUS)


_READS = [
    b"PING\r\n",
    b"ECHO hello\r\n",
    encode_command(b"PING"),
    encode_command(b"ECHO", b"a\r\nb"),
    encode_command(b"GET", b"missing"),
    encode_command(b"EXISTS", b"k1", b"k2"),
    encode_command(b"STRLEN", b"k"),
    encode_command(b"GET", b"x" * 30),
]


@st.composite
def mutated_reads(draw: st.DrawFn) -> bytes:
    # Only reads: a write still committing when the connection dies is a separate matter
    # (see test_abuse.py); here the point is the parser and the bystanders.
    frames = draw(st.lists(st.sampled_from(_READS), min_size=1, max_size=4))
    return mutate(draw, b"".join(frames))


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(frame=mutated_reads())
def test_mutated_frames_never_hurt_the_server(live: Served, frame: bytes) -> None:
    with live.raw() as conn:
        conn.send(frame)
        conn.sock.shutdown(socket.SHUT_WR)  # whatever it waits for will never come
        replies, _ = conn.until_closed()  # hiredis raises if the replies are not RESP
    for reply in replies[:-1]:
        assert not is_protocol_error(reply), "the connection went on after a protocol error"
    assert live.alive()
    token = uuid.uuid4().hex.encode()
    with live.raw() as other:
        other.send(encode_command(b"ECHO", token) + b"PING\r\n")
        assert other.replies(2) == [token, b"PONG"]


def test_garbage_split_across_writes_still_gets_its_error(live: Served) -> None:
    """Each corpus frame sent in two writes: the half that is still well-formed is held,
    the rest is refused with the same error."""
    for frame in CORPUS[:27]:
        with live.raw() as conn:
            conn.send(frame[: len(frame) // 2])
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                conn.send(frame[len(frame) // 2 :])  # the first half may be refused already
            replies, _ = conn.until_closed()
        assert replies, frame[:60]
        assert is_protocol_error(replies[-1]), (frame[:60], replies)
    assert live.alive()
