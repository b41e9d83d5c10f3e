"""Server settings: one frozen table, read from the command line or the environment only in
``cli.py``."""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass, field

from engramdb.errors import InvalidArgument, Unavailable
from engramdb.protocol.resp import ParserLimits
from engramdb.storage.base import Durability

__all__ = [
    "DEFAULT_MAX_FRAME",
    "MIN_COMMAND_BYTES",
    "OFFLOAD_ARGS",
    "OFFLOAD_BYTES",
    "PREAUTH_LIMITS",
    "PREAUTH_OUTPUT",
    "PREAUTH_TURN",
    "TURN",
    "TURN_CHECK",
    "CannotListen",
    "ServerConfig",
    "TurnLimits",
    "frame_limits",
    "is_loopback",
    "listen",
]

# Before AUTH a client may send only tiny frames: enough for AUTH/HELLO/PING, nothing to
# make the server buffer or allocate on behalf of a stranger.
PREAUTH_LIMITS = ParserLimits(max_bulk=512, max_args=8, max_inline=1024, max_buffer=4096)
# ...and may have at most this many reply bytes waiting for it (NOAUTH, PONG) before it is
# cut off as a client that does not read.
PREAUTH_OUTPUT = 64 << 10

# The largest argument (``--max-frame``), in bytes: a value, or a native call's whole
# payload (what the Python clients send is one argument). A command of many arguments may
# total more, up to ``MIN_COMMAND_BYTES`` (or ``--max-frame``, if larger).
DEFAULT_MAX_FRAME = 2 << 20
MIN_COMMAND_BYTES = 32 << 20


@dataclass(frozen=True, slots=True)
class TurnLimits:
    """The work one connection gets per event-loop turn before the others get theirs.

    Past any of these the connection's remaining input waits, unread and unparsed, for the
    next turn: a pipelined flood costs other clients at most one turn of it per request.
    """

    commands: int
    args: int
    bytes: int
    seconds: float  # checked every ``TURN_CHECK`` commands


# ~256 small commands is 1-3 ms of loop time; a turn's overhead (one poll) is ~10 µs. The
# time bound adapts the turn to what its commands cost, and to a loaded machine: when the
# server gets less CPU, each turn does less and other clients wait about as long.
TURN = TurnLimits(commands=256, args=1024, bytes=512 << 10, seconds=0.002)
PREAUTH_TURN = TurnLimits(commands=16, args=64, bytes=2048, seconds=0.001)
TURN_CHECK = 32
# A data command with more arguments than this, or more bytes (or an EXEC of more than
# half as many queued commands), runs on a worker thread: handler, point reads, commit and
# reply encoding. Its parsing is spread over turns by the budget above. So a 60,000-key
# MSET or MGET does not hold the loop.
OFFLOAD_ARGS = 256
OFFLOAD_BYTES = 1 << 20


def frame_limits(max_frame: int) -> ParserLimits:
    """Parser limits after AUTH for a ``--max-frame`` of ``max_frame`` bytes."""
    return ParserLimits(max_bulk=max_frame, max_buffer=max(max_frame, MIN_COMMAND_BYTES))


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Settings of ``engramdb serve``.

    Attributes:
        data: database directory (created if missing).
        host, port: where clients connect; loopback by default.
        metrics_port: Prometheus ``/metrics`` port (None: no metrics endpoint).
        metrics_host: where ``/metrics`` listens; loopback unless set, whatever ``host`` is
            (the endpoint has no authentication).
        password: required by AUTH when set; mandatory for a non-loopback ``host``.
        durability: ``sync`` (acknowledge after fsync), ``async`` or ``none``.
        max_clients: connections beyond this are refused with an error (lowered at start
            when the open-file hard limit cannot hold them).
        idle_timeout: seconds without a request after which a connection with nothing in
            progress is closed; 0 keeps idle connections for ever (Redis' ``timeout 0``: a
            pooled client keeps idle connections on purpose, and a write on one the server
            just closed would fail with an unknown outcome). Measured on the server's clock,
            the fake one under ``testing``.
        max_inflight: writes and slow reads in progress across all clients; past it new
            ones get ``-BUSY`` at once instead of queueing.
        max_pending_per_client: a pipelining client whose unanswered commands exceed this is
            paused (no more reads from its socket) until replies drain.
        max_output_buffer: a client that does not read its replies is disconnected once this
            many reply bytes wait for it.
        limits: frame limits after authentication (``frame_limits(max_frame)``).
        max_record_bytes: the database's largest encoded record (``Limits``); a record
            travels in one request, so ``--max-frame`` must be raised with it.
        workers: threads for slow reads (scans, KEYS, searches) off the event loop.
        processes: server processes sharing the port and the data directory (``--workers``;
            see ``workers.py``).
        testing: enables ``ENGRAM.DEBUG`` (reset, fake clock) for the test suite; refused on
            a non-loopback host.
        default_set: the set Redis-compatible commands address.
        embedder: what ``memory`` calls embed text with: ``hash`` (deterministic, no
            dependencies) or ``minilm`` (all-MiniLM-L6-v2; the ``embeddings`` extra).
    """

    data: str = "./engramdb-data"
    host: str = "127.0.0.1"
    port: int = 7379
    metrics_port: int | None = 9379
    metrics_host: str = "127.0.0.1"
    password: str | None = None
    durability: Durability = "sync"
    max_clients: int = 10_000
    idle_timeout: float = 0.0
    max_inflight: int = 4096
    max_pending_per_client: int = 1024
    max_output_buffer: int = 64 << 20
    limits: ParserLimits = field(default_factory=lambda: frame_limits(DEFAULT_MAX_FRAME))
    max_record_bytes: int = 1 << 20
    workers: int = 4
    processes: int = 1
    testing: bool = False
    default_set: str = "default"
    embedder: str = "hash"

    def check(self) -> None:
        if self.durability not in ("sync", "async", "none"):
            raise InvalidArgument(
                f"durability must be sync, async or none, not {self.durability!r}"
            )
        if not is_loopback(self.host):
            if not self.password:
                raise InvalidArgument(
                    f"refusing to listen on {self.host} without a password: pass --password "
                    "(or bind 127.0.0.1)"
                )
            if self.testing:
                raise InvalidArgument("--testing is only allowed on a loopback address")
        if self.embedder not in ("hash", "minilm"):
            raise InvalidArgument(f"embedder must be hash or minilm, not {self.embedder!r}")
        for name in (
            "max_clients", "max_inflight", "max_pending_per_client", "workers", "processes"
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise InvalidArgument(f"{name} must be at least 1")
        if self.processes > 1 and self.testing:
            # ENGRAM.DEBUG reset wipes the directory the other workers have open.
            raise InvalidArgument("--testing serves with one worker only")
        if not self.idle_timeout >= 0:
            raise InvalidArgument("idle_timeout must be 0 (none) or a number of seconds")
        if self.limits.max_bulk < 1024:
            raise InvalidArgument("max_frame must be at least 1024 bytes")

    @property
    def max_frame(self) -> int:
        """The largest argument accepted after AUTH, in bytes (``--max-frame``)."""
        return self.limits.max_bulk


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback
                for info in socket.getaddrinfo(host, None)
            )
        except OSError:
            return False


class CannotListen(Unavailable):
    """A socket the server needs could not be bound: ``what`` is ``"port"`` (RESP) or
    ``"metrics port"``; ``in_use`` when another process holds the address."""

    def __init__(self, what: str, host: str, port: int, error: OSError) -> None:
        self.what, self.host, self.port = what, host, port
        self.in_use = error.errno == errno.EADDRINUSE
        reason = "address already in use" if self.in_use else (error.strerror or str(error))
        super().__init__(f"cannot listen on {host}:{port} ({what}): {reason}")


def listen(host: str, port: int, what: str = "port") -> socket.socket:
    """A listening TCP socket on ``host:port``, or ``CannotListen``. ``engramdb serve`` binds
    before it opens the database, so a busy port leaves no data directory behind."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as e:
        raise CannotListen(what, host, port, e) from None
