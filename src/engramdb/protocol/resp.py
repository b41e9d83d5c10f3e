"""RESP2/RESP3 as a sans-I/O codec: bytes in, commands out; replies in, bytes out.

Rules of this file:
- Nothing here touches a socket, a clock or the database. The server feeds received bytes
  to a ``RequestParser`` and writes whatever ``encode_reply`` returns.
- Every length a client declares is checked against the parser's limits when its header is
  read, before any payload is buffered for it: a ``*1000000`` array or a ``$1099511627776``
  bulk is refused at once, so memory stays bounded by the limits, never by the client.
- A malformed frame sets ``ProtocolError`` on the parser; the connection cannot be
  resynchronised and must be closed after answering the commands before it and replying
  with the error. Nothing is half-parsed: a command is returned only when its whole frame
  has arrived.
- A limit that is exceeded raises ``FrameTooLarge`` (a ``ProtocolError`` carrying the size and
  the limit), so the server can tell the client which limit it hit and what to do about it.
- A ``Budget`` bounds what one ``commands()`` call parses (commands, arguments, bytes): the
  parse stops there, even inside a command, keeps its state, and sets ``more``. That is how
  the server bounds the work one connection gets per event-loop turn.
- Both request forms Redis accepts are parsed: multibulk (``*2\\r\\n$3\\r\\nGET\\r\\n...``) and
  inline (``GET key\\r\\n``, as typed into telnet).

Two parsers share that contract. The general one, in Python, keeps every rule above across
any split of the input. A received chunk that starts clean (no unfinished command before it)
and is small (at most 64 KiB and the largest argument allowed) is first handed to hiredis,
which parses a GET in ~0.3 µs against ~3 µs for the Python loop: the chunk is already in
memory, so no bulk can make it buffer more, and a chunk naming an array of 100,000 or more
elements is never given to it (hiredis allocates arrays from their header). What hiredis
returns is taken only while the chunk is exactly the canonical multibulk encoding of it
(each argument a ``$`` bulk at the offset its predecessors imply, each one CRLF-terminated:
hiredis checks neither the element types nor the bulk terminators); from the first byte
where that fails (an inline command, a partial or malformed frame, ``*0``), the general
parser takes over with the same limits and budget, so both give the same commands and
errors for any input. Before hiredis, a chunk under 4 KiB is tried as exactly one command
(an unpipelined client's request): split at CRLF, it must be ``*n``, then n pairs of
``$len`` and an argument of that length, and nothing after (~0.9 µs for a SET, against
~2.4 µs through hiredis and its canonical check); anything else goes on to hiredis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import hiredis

from engramdb.errors import ProtocolError

__all__ = [
    "NULL_ARRAY",
    "Budget",
    "Double",
    "Encoded",
    "ErrorReply",
    "FrameTooLarge",
    "ParserLimits",
    "Push",
    "RequestParser",
    "SetReply",
    "SimpleString",
    "Verbatim",
    "encode_command",
    "encode_reply",
]


@dataclass(frozen=True, slots=True)
class ParserLimits:
    """Frame limits of a connection (a tiny set applies before authentication).

    Attributes:
        max_bulk: longest bulk string argument, in bytes.
        max_args: most arguments in one command.
        max_inline: longest inline command line, in bytes.
        max_buffer: most bytes of one unfinished command held while waiting for the rest.
    """

    max_bulk: int = 2 << 20
    max_args: int = 1 << 17
    max_inline: int = 64 << 10
    max_buffer: int = 32 << 20


@dataclass(slots=True)
class Budget:
    """What ``RequestParser.commands`` may still consume; decremented in place.

    Commands and bytes are checked between commands, arguments before each one (a command
    with a million arguments is parsed over several calls).
    """

    commands: int
    args: int
    bytes: int


class FrameTooLarge(ProtocolError):
    """A request over one of the parser's limits, refused from its header.

    ``size`` is what the client declared or sent so far (at least that much), ``limit`` the
    bound it broke and ``unit`` what both count (``bytes`` or ``arguments``); ``what``
    names the part that is too large. ``str()`` keeps Redis' wording.
    """

    def __init__(self, message: str, what: str, size: int, limit: int, unit: str) -> None:
        super().__init__(message)
        self.what = what
        self.size = size
        self.limit = limit
        self.unit = unit


_CRLF = b"\r\n"
_MAX_HEADER = 24  # "*" or "$" + 20 digits + CRLF fits comfortably

# The hiredis fast path (see the top of this file): chunks up to this size, with limits that
# allow at least this many arguments (not the tiny set before AUTH).
_FAST_MAX = 64 << 10
_FAST_MIN_ARGS = 1024
_BIG_ARRAY = re.compile(rb"\*[0-9]{6}")  # an array header of 100,000+ elements
# A chunk under this size is first tried as exactly one command (``take``).
_ONE_MAX = 4096


_pack = hiredis.pack_command


class RequestParser:
    """Incremental parser of client commands.

    An unfinished command keeps its parse state between feeds (arguments read so far, the
    pending bulk length), so a command trickled in one byte at a time costs the same as one
    that arrives whole. When a frame breaks the protocol, the commands before it are still
    returned and ``error`` holds the ``ProtocolError``; nothing after it is parsed.

    >>> parser = RequestParser(ParserLimits())
    >>> parser.feed(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*1\r\n$4\r\nPI")
    >>> parser.commands()
    [[b'GET', b'k'], [b'PING']]
    """

    def __init__(self, limits: ParserLimits) -> None:
        self.error: ProtocolError | None = None
        self.more = False  # the last call stopped on its budget with bytes left to parse
        self.largest = 0  # bytes of the largest command the last call returned (at least)
        # Unparsed input: a chunk as received (bytes, a candidate for the fast path) or,
        # once anything is appended to a remainder, a bytearray.
        self._buf: bytes | bytearray = b""
        self._fresh = False  # _buf is one received chunk, untouched: try the fast path
        self._pos = 0
        self._args: list[bytes] | None = None  # the unfinished multibulk command, if any
        self._remaining = 0  # its arguments still to read
        self._bulk = -1  # the pending bulk's length once its header is read
        self._held = 0  # bytes of it already consumed (headers and arguments)
        self._reader: Any = None  # hiredis.Reader, made on first use
        self.limits = limits

    @property
    def limits(self) -> ParserLimits:
        return self._limits

    @limits.setter
    def limits(self, limits: ParserLimits) -> None:
        self._limits = limits
        self._fast_max = min(_FAST_MAX, limits.max_bulk) if limits.max_args >= _FAST_MIN_ARGS else 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as commands."""
        return len(self._buf) - self._pos + self._held

    def feed(self, data: bytes) -> None:
        buf = self._buf
        if self._pos == len(buf):
            # Nothing unparsed: keep the chunk itself (no copy); a chunk with no command
            # unfinished before it may take the fast path.
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
            self._fresh = self._args is None
            return
        if type(buf) is not bytearray:
            buf = self._buf = bytearray(memoryview(buf)[self._pos :])
            self._pos = 0
        buf += data
        self._fresh = False

    def commands(self, most: int | None = None, budget: Budget | None = None) -> list[list[bytes]]:
        """Complete commands buffered so far, in order (at most ``most``, within ``budget``).

        On a protocol violation, returns the commands before it and sets ``error``. Stopping
        at ``most`` or on the budget with bytes still unparsed sets ``more``.
        """
        if self._fresh:
            self._fresh = False
            data, self._buf = self._buf, b""
            return self.take(data, most, budget)  # type: ignore[arg-type]
        self.more = False
        self.largest = 0
        return self._parse_kept([], most, budget)

    def take(
        self, data: bytes, most: int | None = None, budget: Budget | None = None
    ) -> list[list[bytes]]:
        """``feed(data)`` then ``commands(most, budget)``, in one call (the server's)."""
        if self._buf or self._args is not None or type(data) is not bytes:
            self.feed(data)  # ``_buf`` is empty exactly when nothing is left unparsed
            return self.commands(most, budget)
        self.more = False
        out: list[list[bytes]] = []
        size = len(data)
        if self.error is not None or not 0 < size <= self._fast_max or data[0] != 42:
            return self._general(data, out, most, budget)
        # The fast paths (see the top of this file): they stop at the first byte they cannot
        # vouch for, and ``_parse`` goes on from there.
        if budget is None:
            commands_left, args_left, bytes_left = 1 << 62, 1 << 62, 1 << 62
        else:
            commands_left, args_left, bytes_left = budget.commands, budget.args, budget.bytes
        if most is not None and most < commands_left:
            commands_left = most
        if size < _ONE_MAX and commands_left > 0 and bytes_left > 0:
            # A chunk that is exactly one small canonical command (an unpipelined client's
            # request): split at CRLF, it is the header, then (length, argument) pairs that
            # match. An argument holding CRLF, a length off by one, a second command or a
            # partial one all break the match, and the general path below takes the chunk.
            parts = data.split(b"\r\n")
            command = parts[2:-1:2]
            count = len(command)
            if (
                not parts[-1]
                and 0 < count <= args_left
                and parts[0] == b"*%d" % count
                and parts[1:-1:2] == [b"$%d" % len(arg) for arg in command]
            ):
                if budget is not None:
                    budget.commands -= 1
                    budget.args -= count
                    budget.bytes -= size
                self.largest = size
                return [command]
        if _BIG_ARRAY.search(data):
            return self._general(data, out, most, budget)
        # A command takes at least 10 bytes and an argument 6: a chunk this small cannot
        # reach the budget, which then needs no check per command.
        checked = size >= 10 * commands_left or size >= 6 * args_left or size > bytes_left
        reader = self._reader
        if reader is None:
            reader = self._reader = hiredis.Reader()
        reader.feed(data)
        gets = reader.gets
        pos = args = 0
        while True:
            if checked and (len(out) >= commands_left or args >= args_left or pos >= bytes_left):
                self.more = True
                break
            if data[pos] != 42:  # "*"
                break
            try:
                command = gets()
                # What hiredis returned is taken only if these bytes are exactly its
                # canonical encoding: hiredis checks neither the element types nor the
                # CRLF after a bulk. TypeError: no whole array here (False, None).
                packed = _pack(tuple(command))
            except (TypeError, hiredis.ProtocolError):
                break
            count = len(command)
            if (
                not data.startswith(packed, pos)
                or not count
                or (checked and count > args_left - args)
            ):
                break  # not canonical; ``*0``; or taken apart over turns by ``_parse``
            out.append(command)
            args += count
            pos += len(packed)
            if pos == size:
                break
        if budget is not None:
            budget.commands -= len(out)
            budget.args -= args
            budget.bytes -= pos
        self.largest = pos
        if pos == size:
            return out
        self._reader = None  # it may hold part of what follows: start afresh next time
        self._buf = data
        self._pos = pos
        self._fresh = False
        if self.more:
            return out
        if most is not None:
            most -= len(out)
        return self._parse_kept(out, most, budget)

    def _general(
        self, data: bytes, out: list[list[bytes]], most: int | None, budget: Budget | None
    ) -> list[list[bytes]]:
        """``take`` of a chunk no fast path may read: all of it by ``_parse``."""
        self._buf = data
        self._fresh = False
        self.largest = 0
        return self._parse_kept(out, most, budget)

    def _parse_kept(
        self, out: list[list[bytes]], most: int | None, budget: Budget | None
    ) -> list[list[bytes]]:
        """``_parse`` into ``out``, a protocol error kept in ``error`` (the commands parsed
        before it still run); nothing is parsed past an earlier error."""
        if self.error is None:
            try:
                self._parse(out, most, budget)
            except ProtocolError as e:
                self.error = e
        return out

    def _parse(self, out: list[list[bytes]], most: int | None, budget: Budget | None) -> None:
        # The hot loop of the server: parse state lives in locals and is written back once.
        buf = self._buf
        size = len(buf)
        pos = start = self._pos
        limits = self.limits
        max_bulk, max_buffer = limits.max_bulk, limits.max_buffer
        args, remaining, bulk, held = self._args, self._remaining, self._bulk, self._held
        find = buf.find
        # Without a budget the bounds are out of reach; ``most`` is folded into the commands'.
        if budget is None:
            commands_left, args_left, bytes_left = 1 << 62, 1 << 62, 1 << 62
        else:
            commands_left, args_left, bytes_left = budget.commands, budget.args, budget.bytes
        # ``out`` may already hold what the fast path took: count from there.
        if most is not None and most < commands_left:
            commands_left = most
        commands_left += len(out)
        taken = len(out)
        stopped = False
        largest = 0
        try:
            while True:
                if args is None:
                    if len(out) >= commands_left or args_left <= 0 or pos - start >= bytes_left:
                        stopped = True
                        break
                    if pos >= size:
                        break
                    if buf[pos] != 42:  # not "*": an inline command
                        end = find(b"\n", pos, pos + limits.max_inline + 1)
                        if end < 0:
                            if size - pos > limits.max_inline:
                                raise FrameTooLarge(
                                    "too big inline request",
                                    "an inline command line",
                                    size - pos,
                                    limits.max_inline,
                                    "bytes",
                                )
                            break
                        words = bytes(buf[pos:end]).strip().split()
                        if end + 1 - pos > largest:
                            largest = end + 1 - pos
                        pos = end + 1
                        if words:
                            if len(words) > limits.max_args:
                                raise FrameTooLarge(
                                    "invalid multibulk length",
                                    "a command",
                                    len(words),
                                    limits.max_args,
                                    "arguments",
                                )
                            out.append(words)
                            args_left -= len(words)
                        continue
                    eol = find(_CRLF, pos, pos + _MAX_HEADER)
                    if eol < 0:
                        if size - pos >= _MAX_HEADER:
                            raise ProtocolError("invalid multibulk length")
                        break
                    count = _length(buf[pos + 1 : eol], "invalid multibulk length")
                    if count > limits.max_args:
                        raise FrameTooLarge(
                            "invalid multibulk length",
                            "a command",
                            count,
                            limits.max_args,
                            "arguments",
                        )
                    held = eol + 2 - pos
                    pos = eol + 2
                    if count <= 0:
                        continue
                    args, remaining = [], count
                while remaining:
                    if args_left <= 0:
                        stopped = True  # mid-command: the state below resumes it next call
                        return
                    if bulk < 0:
                        if pos >= size:
                            return
                        if buf[pos] != 36:  # "$"
                            raise ProtocolError(f"expected '$', got '{chr(buf[pos])}'")
                        eol = find(_CRLF, pos, pos + _MAX_HEADER)
                        if eol < 0:
                            if size - pos >= _MAX_HEADER:
                                raise ProtocolError("invalid bulk length")
                            return
                        bulk = _length(buf[pos + 1 : eol], "invalid bulk length")
                        if bulk < 0:
                            raise ProtocolError("invalid bulk length")
                        if bulk > max_bulk:
                            raise FrameTooLarge(
                                "invalid bulk length", "an argument", bulk, max_bulk, "bytes"
                            )
                        held += eol + 2 - pos
                        if held + bulk + 2 > max_buffer:
                            raise FrameTooLarge(
                                "query buffer limit exceeded",
                                "a request",
                                held + bulk + 2,
                                max_buffer,
                                "bytes",
                            )
                        pos = eol + 2
                    end = pos + bulk
                    if end + 2 > size:
                        return
                    if buf[end] != 13 or buf[end + 1] != 10:
                        raise ProtocolError("bulk string not terminated by CRLF")
                    args.append(bytes(buf[pos:end]))
                    args_left -= 1
                    held += bulk + 2
                    bulk = -1
                    remaining -= 1
                    pos = end + 2
                out.append(args)
                if held > largest:
                    largest = held
                args, held = None, 0
        finally:
            if largest > self.largest:
                self.largest = largest
            if budget is not None:
                budget.commands -= len(out) - taken
                budget.args = args_left
                budget.bytes -= pos - start
            self.more = stopped and pos < size
            self._pos = pos
            self._args, self._remaining, self._bulk, self._held = args, remaining, bulk, held
            # Stopping on the budget leaves whole commands unparsed, not an oversized one;
            # they are judged by the limits in force when they are parsed.
            self._compact(limits, check=not stopped)

    def _compact(self, limits: ParserLimits, check: bool) -> None:
        pos = self._pos
        size = len(self._buf)
        pending = size - pos + self._held
        if check and pending > limits.max_buffer and self.error is None:
            self.error = FrameTooLarge(
                "query buffer limit exceeded", "a request", pending, limits.max_buffer, "bytes"
            )
        if pos >= size:
            self._buf = b""
            self._pos = 0
        elif pos > 65536:
            self._buf = bytearray(memoryview(self._buf)[pos:])
            self._pos = 0


def _length(digits: bytes | bytearray, what: str) -> int:
    """A declared length: an optional ``-`` and decimal digits, nothing else (as Redis)."""
    if digits.isdigit() and len(digits) < 20:
        return int(digits)
    if digits[:1] == b"-" and digits[1:].isdigit() and len(digits) < 21:
        return int(digits)
    raise ProtocolError(what)


def encode_command(*args: bytes | str | int) -> bytes:
    """A command as a multibulk frame (what clients send)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if type(arg) is bytes else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


# replies --------------------------------------------------------------------------------


class SimpleString(str):
    """A ``+OK``-style status reply."""

    __slots__ = ()


class ErrorReply(str):
    """An error reply; its text starts with the error code (``ERR``, ``WRONGTYPE``, ...)."""

    __slots__ = ()


class Verbatim(str):
    """RESP3 verbatim text (``INFO``); a bulk string in RESP2."""

    __slots__ = ()


class Push(tuple[Any, ...]):
    """An out-of-band message (pub/sub, MONITOR): a RESP3 push, an array in RESP2."""

    __slots__ = ()


class Encoded(bytes):
    """A reply already encoded (by a worker thread, off the event loop): sent as is."""

    __slots__ = ()


class Double(float):
    """A score as Redis 7.0 writes it (``%.17g``): a bulk string in RESP2, a double in RESP3."""

    __slots__ = ()


class SetReply(list):  # type: ignore[type-arg]
    """An array that RESP3 sends as a set (SMEMBERS, SINTER...), in the order given."""

    __slots__ = ()


class _NullArray:
    pass


NULL_ARRAY: Any = _NullArray()

_OK = b"+OK\r\n"
_INTS = [b":%d\r\n" % i for i in range(-1, 1024)]


def _encode_double(value: float) -> bytes:
    if value != value:
        return b"nan"
    if value in (float("inf"), float("-inf")):
        return b"inf" if value > 0 else b"-inf"
    return repr(value).encode()


def encode_reply(value: Any, resp3: bool = False) -> bytes:
    """Encode one reply value.

    Python types map to RESP types: ``bytes``/``str`` → bulk string, ``int`` → integer,
    ``None`` → null, ``list``/``tuple`` → array, ``dict`` → map (flat array in RESP2),
    ``set``/``frozenset`` → set, ``float`` → double (bulk in RESP2), ``bool`` → boolean
    (integer in RESP2), ``SimpleString`` → status, ``ErrorReply`` → error, ``Push`` → push
    (array in RESP2).
    """
    kind = type(value)
    # The commonest replies first: values, counts, OK, nil.
    if kind is bytes:
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if kind is int:
        number: int = value
        if -1 <= number < 1023:
            return _INTS[number + 1]
        return b":%d\r\n" % number
    if kind is SimpleString:
        if value == "OK":
            return _OK
        status = str(value).replace("\r", " ").replace("\n", " ")
        return b"+%s\r\n" % status.encode("utf-8", "surrogateescape")
    if value is None:
        return b"_\r\n" if resp3 else b"$-1\r\n"
    if kind is ErrorReply:
        error = value.replace("\r", " ").replace("\n", " ")
        return b"-%s\r\n" % error.encode("utf-8", "surrogateescape")
    if kind is str or kind is Verbatim:
        # Text may carry bytes that are not UTF-8 as surrogate escapes (a script's error or
        # status reply, and INFO's errorstats after it): written back as those bytes.
        data = value.encode("utf-8", "surrogateescape")
        if kind is Verbatim and resp3:
            return b"=%d\r\ntxt:%s\r\n" % (len(data) + 4, data)
        return b"$%d\r\n%s\r\n" % (len(data), data)
    if kind is list or kind is tuple:
        parts = [b"*%d\r\n" % len(value)]
        parts.extend(encode_reply(item, resp3) for item in value)
        return b"".join(parts)
    if kind is dict:
        parts = [b"%%%d\r\n" % len(value) if resp3 else b"*%d\r\n" % (2 * len(value))]
        for k, v in value.items():
            parts.append(encode_reply(k, resp3))
            parts.append(encode_reply(v, resp3))
        return b"".join(parts)
    if kind is bool:
        if resp3:
            return b"#t\r\n" if value else b"#f\r\n"
        return _INTS[2] if value else _INTS[1]
    if kind is float:
        text = _encode_double(value)
        return b",%s\r\n" % text if resp3 else b"$%d\r\n%s\r\n" % (len(text), text)
    if kind is set or kind is frozenset:
        parts = [b"~%d\r\n" % len(value) if resp3 else b"*%d\r\n" % len(value)]
        parts.extend(encode_reply(item, resp3) for item in value)
        return b"".join(parts)
    if value is NULL_ARRAY:
        return b"_\r\n" if resp3 else b"*-1\r\n"
    if kind is Encoded:
        return bytes(value)
    if kind is Double:
        text = b"%.17g" % value
        return b",%s\r\n" % text if resp3 else b"$%d\r\n%s\r\n" % (len(text), text)
    if kind is SetReply:
        parts = [b"~%d\r\n" % len(value) if resp3 else b"*%d\r\n" % len(value)]
        parts.extend(encode_reply(item, resp3) for item in value)
        return b"".join(parts)
    if kind is Push:
        parts = [b">%d\r\n" % len(value) if resp3 else b"*%d\r\n" % len(value)]
        parts.extend(encode_reply(item, resp3) for item in value)
        return b"".join(parts)
    raise TypeError(f"cannot encode a {kind.__name__} as a RESP reply")
