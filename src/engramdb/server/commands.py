"""The command table and what a command handler may return.

A handler is ``fn(conn, args) -> reply`` where ``args`` are the raw arguments after the
command name. It either answers at once (a reply value for ``encode_reply``) or returns:

- ``Write(plan, then)``: a planned record write to submit to group commit; ``then(value)``
  turns the committed result into the reply. Writes never block the event loop.
- ``Offload(fn, then)``: slow work (scans, KEYS, searches, FLUSHALL) to run on a worker
  thread, so small reads keep their tail latency.
- ``Defer(delay, fn)``: run ``fn`` on the event loop after ``delay`` seconds and reply with
  its result (AUTH failure backoff). The connection runs nothing else meanwhile; it is a
  wait, not work, so it does not count as in flight.
- ``Block(...)``, returned by the ``then`` of a ``Write`` (BLPOP found nothing to pop):
  park the client until a key it waits on may have changed, or its timeout; then run
  ``retry()``, whose result continues the command the same way (another ``Write``...).
  A ``then`` may also return a ``Write`` to continue with. Parked clients run nothing
  else and are not in flight.

Handlers raise ``Reply(text)`` for a Redis-style error reply, or an ``EngramError`` that the
connection maps to the native error codes of ``protocol/errors.py``. Inside a write plan an
error must be a ``RedisError`` (an ``InvalidArgument``), so group commit treats it as this
request's outcome alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engramdb.errors import InvalidArgument
from engramdb.storage.base import WriteFn

if TYPE_CHECKING:
    from engramdb.server.connection import Connection

__all__ = [
    "COMMANDS",
    "Block",
    "Command",
    "Defer",
    "Offload",
    "RedisError",
    "Reply",
    "Write",
    "command",
    "unknown_command",
    "wrong_args",
]

Handler = Callable[["Connection", list[bytes]], Any]


class Reply(Exception):
    """Raised by a handler to answer with a Redis error reply (``text`` starts with a code)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class RedisError(InvalidArgument):
    """A Redis error raised inside a write plan (e.g. WRONGTYPE found in the transaction)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


@dataclass(slots=True)
class Write:
    plan: WriteFn
    then: Callable[[Any], Any]


@dataclass(slots=True)
class Offload:
    fn: Callable[[], Any]
    then: Callable[[Any], Any]


@dataclass(slots=True)
class Defer:
    delay: float
    fn: Callable[[], Any]
    cancel: Callable[[], None] | None = None  # called instead of fn if the client left


@dataclass(slots=True)
class Block:
    """Wait for a push to one of ``keys`` (raw keys of record set ``set_name`` holding a
    ``kind``), at most until ``deadline`` (``time.monotonic()``; None: for ever)."""

    set_name: str
    keys: list[bytes]
    kind: str
    deadline: float | None
    retry: Callable[[], Any]
    timed_out: Any


@dataclass(frozen=True, slots=True)
class Command:
    """One command: ``arity`` counts the name like Redis does (negative: at least that many).

    Flags: ``write`` (changes data: may pipeline behind earlier writes), ``noauth``
    (allowed before AUTH), ``admin``, ``blocking`` (may park the client: never run on a
    worker thread); ``readonly``/``fast`` are reported by COMMAND.
    """

    name: str
    handler: Handler
    arity: int
    flags: frozenset[str]
    first_key: int = 1
    last_key: int = 1
    step: int = 1
    writes: Callable[[list[bytes]], bool] | None = None
    metric: Callable[[list[bytes]], str] | None = None
    # Derived once, for the dispatch hot path: the argument counts (name included) the
    # arity allows, and whether every call writes (None: decided per call by ``writes``).
    # ``fast_args``: the most arguments a call may have to take the dispatch fast path
    # (within the arity, and few: a command with many is checked for the worker thread).
    min_args: int = field(init=False)
    max_args: int = field(init=False)
    fast_args: int = field(init=False)
    always_writes: bool | None = field(init=False)

    def __post_init__(self) -> None:
        arity = self.arity
        object.__setattr__(self, "min_args", arity if arity > 0 else -arity)
        object.__setattr__(self, "max_args", arity if arity > 0 else 1 << 62)
        # A blocking command (BLPOP) must hold its client's line (``Connection._start``).
        fast = 0 if "blocking" in self.flags else min(self.max_args, 8)
        object.__setattr__(self, "fast_args", fast)
        always = None if self.writes is not None else "write" in self.flags
        object.__setattr__(self, "always_writes", always)

    def is_write(self, args: list[bytes]) -> bool:
        """Whether this call changes data (decided per call for ``ENGRAM``)."""
        if self.writes is not None:
            return self.writes(args)
        return "write" in self.flags

    def key_args(self, args: list[bytes]) -> list[bytes]:
        """The keys at this command's fixed key positions in ``args`` (the name first);
        none when it declares none (``first_key`` 0: no keys, or keys after a count)."""
        if self.first_key <= 0:
            return []
        last = self.last_key if self.last_key >= 0 else len(args) + self.last_key
        return args[self.first_key : last + 1 : max(1, self.step)]

    def metric_name(self, args: list[bytes]) -> str:
        """The name this call is counted under (``ENGRAM`` counts per method)."""
        if self.metric is not None:
            return self.metric(args)
        return self.name


COMMANDS: dict[bytes, Command] = {}


def command(
    name: str,
    arity: int,
    *flags: str,
    keys: tuple[int, int, int] = (1, 1, 1),
    writes: Callable[[list[bytes]], bool] | None = None,
    metric: Callable[[list[bytes]], str] | None = None,
) -> Callable[[Handler], Handler]:
    """Register ``handler`` as command ``name`` (case-insensitive)."""

    def register(handler: Handler) -> Handler:
        first, last, step = keys
        COMMANDS[name.upper().encode()] = Command(
            name.lower(), handler, arity, frozenset(flags), first, last, step, writes, metric
        )
        return handler

    return register


def wrong_args(name: str) -> Reply:
    return Reply(f"ERR wrong number of arguments for '{name}' command")


def unknown_command(args: list[bytes]) -> str:
    """Redis' error text for a command name it does not know."""
    shown = "".join(f"'{a.decode(errors='replace')[:128]}' " for a in args[1:4])
    return (
        f"ERR unknown command '{args[0].decode(errors='replace')[:128]}', "
        f"with args beginning with: {shown}"
    )
