"""Pub/sub inside one server process: who is subscribed to what, and fan-out.

Rules:
- A message is encoded once per protocol version and the same bytes are queued to every
  receiver (``Connection.push``), so a PUBLISH to 10,000 subscribers costs 10,000 appends,
  not 10,000 encodings.
- Delivery never blocks and never grows memory without bound: a subscriber whose unread
  output passes the pub/sub output-buffer limit (``client-output-buffer-limit pubsub``) is
  disconnected by ``Connection.push``, as Redis does.
- What a client can make the server hold is bounded: at most ``MAX_SUBSCRIPTIONS`` channels,
  patterns and shard channels per connection (Redis has no bound).
- Channels (``SUBSCRIBE``), patterns (``PSUBSCRIBE``, Redis glob rules) and shard channels
  (``SSUBSCRIBE``; one shard here, so they are a separate namespace delivered locally) are
  three independent maps, as in Redis. A pattern subscriber gets a message once per
  matching pattern, and also as a channel subscriber if it is one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from engramdb.protocol.resp import Push, encode_reply

if TYPE_CHECKING:
    from engramdb.server.connection import Connection

__all__ = ["MAX_SUBSCRIPTIONS", "Hub", "Kind", "Subscriptions"]

# Channels + patterns + shard channels one connection may hold. A reply per subscription
# is sent, so a client asking for more gets an error for the excess, never a larger map.
MAX_SUBSCRIPTIONS = 100_000

Kind = Literal["channel", "pattern", "shard"]

# (subscribe confirmation, unsubscribe confirmation, message type) per kind.
_NAMES: dict[Kind, tuple[bytes, bytes]] = {
    "channel": (b"subscribe", b"unsubscribe"),
    "pattern": (b"psubscribe", b"punsubscribe"),
    "shard": (b"ssubscribe", b"sunsubscribe"),
}


class Subscriptions:
    """What one connection is subscribed to (insertion-ordered, like Redis' replies)."""

    __slots__ = ("channel", "pattern", "shard")

    def __init__(self) -> None:
        self.channel: dict[bytes, None] = {}
        self.pattern: dict[bytes, None] = {}
        self.shard: dict[bytes, None] = {}

    def of(self, kind: Kind) -> dict[bytes, None]:
        if kind == "channel":
            return self.channel
        if kind == "pattern":
            return self.pattern
        return self.shard

    @property
    def total(self) -> int:
        return len(self.channel) + len(self.pattern) + len(self.shard)

    def count(self, kind: Kind) -> int:
        """The count Redis puts in (un)subscribe replies: channels and patterns together,
        shard channels on their own."""
        if kind == "shard":
            return len(self.shard)
        return len(self.channel) + len(self.pattern)


class _Frames:
    """One message, encoded at most once per protocol version."""

    __slots__ = ("resp2", "resp3", "value")

    def __init__(self, *value: bytes) -> None:
        self.value = Push(value)
        self.resp2: bytes | None = None
        self.resp3: bytes | None = None

    def get(self, resp3: bool) -> bytes:
        if resp3:
            if self.resp3 is None:
                self.resp3 = encode_reply(self.value, True)
            return self.resp3
        if self.resp2 is None:
            self.resp2 = encode_reply(self.value, False)
        return self.resp2


class Hub:
    """Subscriptions of every connection of this process, and message delivery."""

    def __init__(self) -> None:
        self.channels: dict[bytes, dict[Connection, None]] = {}
        self.shards: dict[bytes, dict[Connection, None]] = {}
        # pattern -> (its matcher, compiled once; subscribers)
        self.patterns: dict[bytes, tuple[Callable[[bytes], bool], dict[Connection, None]]] = {}
        self.messages = 0  # delivered, for INFO

    @property
    def idle(self) -> bool:
        """Nobody is subscribed to anything: a publish reaches no one."""
        return not (self.channels or self.patterns or self.shards)

    # subscribing -----------------------------------------------------------------------

    def subscribe(self, conn: Connection, kind: Kind, names: list[bytes]) -> list[Push]:
        """Subscribe ``conn``; one confirmation per name, each with the new count."""
        subs = conn.subscriptions
        if subs is None:
            subs = conn.subscriptions = Subscriptions()
        mine = subs.of(kind)
        if subs.total + len(set(names).difference(mine)) > MAX_SUBSCRIPTIONS:
            if not subs.total:
                conn.subscriptions = None
            raise OverflowError(
                f"ERR too many subscriptions on this connection (at most {MAX_SUBSCRIPTIONS} "
                "channels, patterns and shard channels)"
            )
        confirm = _NAMES[kind][0]
        replies: list[Push] = []
        for name in names:
            if name not in mine:
                mine[name] = None
                if kind == "pattern":
                    entry = self.patterns.get(name)
                    if entry is None:
                        entry = self.patterns[name] = (compile_pattern_uncached(name), {})
                    entry[1][conn] = None
                else:
                    table = self.channels if kind == "channel" else self.shards
                    table.setdefault(name, {})[conn] = None
            replies.append(Push((confirm, name, subs.count(kind))))
        return replies

    def unsubscribe(self, conn: Connection, kind: Kind, names: list[bytes]) -> list[Push]:
        """Unsubscribe ``conn`` from ``names`` (all of this kind when empty)."""
        goodbye = _NAMES[kind][1]
        subs = conn.subscriptions
        mine = subs.of(kind) if subs is not None else {}
        if not names:
            names = list(mine)
            if not names:
                return [Push((goodbye, None, 0 if subs is None else subs.count(kind)))]
        replies: list[Push] = []
        for name in names:
            if name in mine:
                del mine[name]
                self._forget(conn, kind, name)
            count = 0 if subs is None else subs.count(kind)
            replies.append(Push((goodbye, name, count)))
        if subs is not None and not subs.total:
            conn.subscriptions = None  # back to normal mode (RESP2)
        return replies

    def _forget(self, conn: Connection, kind: Kind, name: bytes) -> None:
        if kind == "pattern":
            entry = self.patterns.get(name)
            if entry is not None:
                entry[1].pop(conn, None)
                if not entry[1]:
                    del self.patterns[name]
            return
        table = self.channels if kind == "channel" else self.shards
        conns = table.get(name)
        if conns is not None:
            conns.pop(conn, None)
            if not conns:
                del table[name]

    def drop(self, conn: Connection) -> None:
        """Forget every subscription of a connection that closed (or RESET)."""
        subs = conn.subscriptions
        if subs is None:
            return
        kinds: tuple[Kind, ...] = ("channel", "pattern", "shard")
        for kind in kinds:
            mine = subs.of(kind)
            for name in mine:
                self._forget(conn, kind, name)
            mine.clear()
        conn.subscriptions = None

    # publishing ------------------------------------------------------------------------

    def publish(self, channel: bytes, message: bytes) -> int:
        """Deliver to channel and pattern subscribers here; how many received it."""
        received = 0
        conns = self.channels.get(channel)
        if conns:
            frames = _Frames(b"message", channel, message)
            for conn in list(conns):  # a copy: a subscriber cut off leaves the map
                received += conn.push(frames.get(conn.resp3))
        if self.patterns:
            for pattern, (matches, subscribers) in list(self.patterns.items()):
                if matches(channel):
                    frames = _Frames(b"pmessage", pattern, channel, message)
                    for conn in list(subscribers):
                        received += conn.push(frames.get(conn.resp3))
        self.messages += received
        return received

    def spublish(self, channel: bytes, message: bytes) -> int:
        conns = self.shards.get(channel)
        if not conns:
            return 0
        frames = _Frames(b"smessage", channel, message)
        received = 0
        for conn in list(conns):
            received += conn.push(frames.get(conn.resp3))
        self.messages += received
        return received

    # introspection (PUBSUB) ------------------------------------------------------------

    def active(self, kind: Kind, pattern: bytes | None) -> list[bytes]:
        table = self.shards if kind == "shard" else self.channels
        if pattern is None:
            return list(table)
        matches = _compile(pattern)
        return [name for name in table if matches(name)]

    def numsub(self, kind: Kind, name: bytes) -> int:
        table = self.shards if kind == "shard" else self.channels
        return len(table.get(name, ()))


def _compile(pattern: bytes) -> Callable[[bytes], bool]:
    # Imported here: the handlers package (which fills the command table on import)
    # imports this module.
    from engramdb.server.handlers.pattern import compile_pattern

    return compile_pattern(pattern)


def compile_pattern_uncached(pattern: bytes) -> Callable[[bytes], bool]:
    """A matcher kept for the life of the subscription (not in the shared LRU cache, which
    a client with many patterns would thrash)."""
    from engramdb.server.handlers.pattern import compile_pattern

    return compile_pattern.__wrapped__(pattern)
