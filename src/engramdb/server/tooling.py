"""What Redis tools read about a running server: the slow log, MONITOR lines, and the
subscribed-mode rule of RESP2 connections.

- The slow log keeps the commands whose latency in the server (from dispatch to reply ready,
  group commit and fsync waits included; Redis counts execution only) reached
  ``slowlog-log-slower-than`` microseconds: at most ``slowlog-max-len`` entries, each with
  at most 32 arguments of at most 128 bytes (as Redis), so its memory is bounded whatever
  clients send.
- ``CONFIG RESETSTAT`` zeroes what INFO reports without touching ``/metrics``, whose
  counters must only grow: it keeps a ``Baseline`` that INFO subtracts.
- MONITOR streams every command this process runs, as Redis prints it, except admin
  commands (CONFIG, CLIENT...) and AUTH/HELLO arguments, which carry passwords. An argument
  is shown up to 8 KiB (then ``... (N more bytes)``; Redis shows it all): quoting runs on
  the event loop for every command while a monitor listens, so its cost must stay small.
  A monitor that does not read is disconnected at the output-buffer limit like any client.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engramdb.server.app import Server
    from engramdb.server.commands import Command
    from engramdb.server.connection import Connection

__all__ = ["Baseline", "SlowLog", "feed_monitors", "quote_arg", "redact", "subscribed_only"]

_MAX_ARGS = 32
_MAX_ARG_BYTES = 128
_MONITOR_ARG_BYTES = 8 << 10
_NEVER_LOGGED = 1 << 62  # a threshold no latency reaches: the slow log is off


def subscribed_only(name: str) -> str:
    return (
        f"ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT "
        "/ RESET are allowed in this context"
    )


class SlowLog:
    """The last ``max_len`` commands at or above the latency threshold (SLOWLOG)."""

    def __init__(self, slower_than_us: int = 10_000, max_len: int = 128) -> None:
        self.entries: deque[list[Any]] = deque(maxlen=max_len)
        self.next_id = 0
        self.slower_than_us = slower_than_us
        self.threshold_ns = _NEVER_LOGGED
        self.configure(slower_than_us, max_len)

    def configure(self, slower_than_us: int, max_len: int) -> None:
        """A negative threshold turns the log off; 0 logs every command."""
        self.slower_than_us = slower_than_us
        self.threshold_ns = _NEVER_LOGGED if slower_than_us < 0 else slower_than_us * 1000
        if max_len != self.entries.maxlen:
            self.entries = deque(self.entries, maxlen=max_len)

    @property
    def max_len(self) -> int:
        return self.entries.maxlen or 0

    def add(self, conn: Connection, args: list[bytes], elapsed_ns: int) -> None:
        if not self.entries.maxlen:
            return
        shown = [_clip(arg) for arg in args[:_MAX_ARGS]]
        if len(args) > _MAX_ARGS:
            shown[-1] = b"... (%d more arguments)" % (len(args) - _MAX_ARGS + 1)
        shown = redact(shown)
        self.entries.appendleft(
            [
                self.next_id,
                int(time.time()),
                elapsed_ns // 1000,
                shown,
                conn.address.encode(),
                conn.name or b"",
            ]
        )
        self.next_id += 1

    def get(self, count: int) -> list[list[Any]]:
        """The newest ``count`` entries (all when negative)."""
        entries = list(self.entries)
        return entries if count < 0 else entries[:count]

    def reset(self) -> None:
        self.entries.clear()


def redact(args: list[bytes]) -> list[bytes]:
    """``args`` without the credentials of AUTH and HELLO ... AUTH user pass (as Redis)."""
    name = args[0].lower() if args else b""
    if name == b"auth":
        return [args[0], *([b"(redacted)"] * (len(args) - 1))]
    if name == b"hello":
        for i, arg in enumerate(args):
            if arg.upper() == b"AUTH":
                hidden = min(2, len(args) - i - 1)
                return [*args[: i + 1], *([b"(redacted)"] * hidden), *args[i + 1 + hidden :]]
    return args


def _clip(arg: bytes) -> bytes:
    if len(arg) <= _MAX_ARG_BYTES:
        return arg
    return arg[:_MAX_ARG_BYTES] + b"... (%d more bytes)" % (len(arg) - _MAX_ARG_BYTES)


_SPECIAL = re.compile(rb"[^\x20\x21\x23-\x5b\x5d-\x7e]")  # all but printable, " and \\
_ESCAPES = {bytes([b]): b"\\x%02x" % b for b in range(256)} | {
    b'"': b'\\"', b"\\": b"\\\\", b"\n": b"\\n", b"\r": b"\\r", b"\t": b"\\t",
    b"\a": b"\\a", b"\b": b"\\b",
}  # fmt: skip


def quote_arg(arg: bytes) -> bytes:
    """An argument as Redis prints it in MONITOR (``sdscatrepr``), at most 8 KiB of it."""
    more = b""
    if len(arg) > _MONITOR_ARG_BYTES:
        more = b"... (%d more bytes)" % (len(arg) - _MONITOR_ARG_BYTES)
        arg = arg[:_MONITOR_ARG_BYTES]
    return b'"' + _SPECIAL.sub(lambda m: _ESCAPES[m.group()], arg) + more + b'"'


def feed_monitors(conn: Connection, cmd: Command, args: list[bytes]) -> None:
    """Send the command ``conn`` is about to run to every MONITOR client."""
    if "admin" in cmd.flags:
        return
    shown = redact(args)
    now = time.time()
    line = b"+%.6f [0 %s] %s\r\n" % (
        now,
        conn.address.encode(),
        b" ".join(quote_arg(arg) for arg in shown),
    )
    for monitor in list(conn.server.monitors):
        if monitor is not conn:
            monitor.push(line)


@dataclass
class Baseline:
    """Figures at the last CONFIG RESETSTAT; INFO subtracts them."""

    stats: dict[str, float] = field(default_factory=dict)
    ops: dict[str, tuple[int, int, dict[str, int], list[int]]] = field(default_factory=dict)

    @classmethod
    def take(cls, server: Server) -> Baseline:
        stats = {f.name: getattr(server.stats, f.name) for f in fields(server.stats)}
        ops = {
            m.name: (m.count, m.total_ns, dict(m.errors), list(m.buckets))
            for m in server.metrics.ops()
        }
        return cls(stats, ops)
