"""One client connection: parse, dispatch in order, reply in order, bound everything.

Ordering rules (what makes pipelining safe):
- Replies leave in the order commands arrived. A command answered at once while earlier ones
  are still pending waits in its reply slot.
- A write may start while earlier *writes* of this connection are pending: group commit
  applies them in submission order. Anything else waits until nothing is pending, so a read
  always sees every write the same client sent before it (read-your-writes).

Bounds: a client with more than ``max_pending_per_client`` unanswered commands stops being
read until replies drain; one whose unread replies exceed ``max_output_buffer`` bytes is
disconnected; past the server-wide ``max_inflight`` new writes and slow reads are shed with
``-BUSY`` at once. A frame that breaks the protocol gets an error and the connection closes;
one over the frame limit gets an error naming the limit, and the rest of what the client
is still sending is read and dropped for a moment, so it reads that error, not a reset.

Fairness: each event-loop turn a connection runs at most one ``TurnLimits`` budget of
commands, arguments and bytes (a much smaller one before AUTH). Past it, its input stays
buffered, its socket is not read, and it continues at the end of the turn, after every
other ready connection was served. A data command with many arguments (a 60,000-key MSET)
runs entirely on a worker thread. So a client's request waits for at most one turn of any
other client's flood, authenticated or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
from collections import deque
from collections.abc import Iterator
from time import monotonic, perf_counter, perf_counter_ns
from typing import TYPE_CHECKING, Any, cast

from engramdb.errors import EngramError
from engramdb.protocol.errors import TOO_LARGE_PREFIX, error_reply_text
from engramdb.protocol.resp import (
    Budget,
    Encoded,
    ErrorReply,
    FrameTooLarge,
    RequestParser,
    encode_reply,
)
from engramdb.server import tooling
from engramdb.server.commands import (
    COMMANDS,
    Block,
    Command,
    Defer,
    Offload,
    RedisError,
    Reply,
    Write,
    unknown_command,
)
from engramdb.server.config import (
    OFFLOAD_ARGS,
    OFFLOAD_BYTES,
    PREAUTH_LIMITS,
    PREAUTH_OUTPUT,
    PREAUTH_TURN,
    TURN,
    TURN_CHECK,
    TurnLimits,
)
from engramdb.server.limits import AuthAttempts, address_key

if TYPE_CHECKING:
    from engramdb.records.keys import Key
    from engramdb.recordset import RecordSet
    from engramdb.server.app import Server
    from engramdb.server.handlers.transactions import Transaction
    from engramdb.server.pubsub import Subscriptions
    from engramdb.server.tracking import Tracking

__all__ = ["Connection"]

log = logging.getLogger("engramdb.server")

_NOAUTH = encode_reply(ErrorReply("NOAUTH Authentication required."))
_BUSY = ErrorReply("BUSY the server is at its in-flight limit; retry later")
_FLUSH_AT = 64 << 10  # hand replies to the transport once this many bytes are waiting
# After refusing a too-large request, read and drop at most this much more of it, for at
# most this long, before closing (so the client's send completes and it reads the error).
_LINGER_BYTES = 64 << 20
_LINGER_SECONDS = 5.0


def _fresh(limits: TurnLimits) -> Budget:
    return Budget(limits.commands, limits.args, limits.bytes)


class _Slot:
    __slots__ = ("args", "barrier", "data", "metric", "started")

    def __init__(self, metric: str, started: int, args: list[bytes] | None = None) -> None:
        self.metric = metric
        self.started = started
        self.args = args  # for the slow log
        self.data: bytes | None = None
        self.barrier = False  # a blocking command: nothing behind it runs until it answers


class Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.db = server.db
        self.records: RecordSet = server.records
        self.id = server.next_client_id()
        self.name: bytes | None = None
        self.resp3 = False
        self.authenticated = server.config.password is None
        self.parser = RequestParser(server.config.limits if self.authenticated else PREAUTH_LIMITS)
        self.address = ""
        self.address_key = ""  # what the AUTH backoff counts failures by
        self.auth_attempts = AuthAttempts()
        self._now = server.now_fn
        self._stats = server.stats
        self._metrics = server.metrics
        self._ops = server.metrics.by_name
        self._slowlog = server.slowlog
        self.last_active = self._now()
        self.transport: asyncio.Transport | None = None
        self._slots: deque[_Slot] = deque()
        self._backlog: deque[list[bytes] | None] = deque()  # None: the protocol error
        self._out: list[bytes] = []
        self._pending_writes = 0
        self._pending_other = 0
        self._paused = False
        self._closing = False  # aborted or lost: nothing more is sent
        self._draining = False  # no more commands run; close once pending replies are out
        self._finish_after_reply = False
        self._error_queued = False
        self._out_bytes = 0  # reply bytes held here (queued or in finished slots)
        self._turn_pending = False  # registered for the server's end-of-turn callback
        self._budget = _fresh(TURN if self.authenticated else PREAUTH_TURN)
        self._out_limit = server.config.max_output_buffer if self.authenticated else PREAUTH_OUTPUT
        self._max_pending = server.config.max_pending_per_client
        self._max_inflight = server.config.max_inflight
        self._too_large = False  # the protocol error is a FrameTooLarge: linger on close
        self._linger_left = 0
        self._linger_timer: asyncio.TimerHandle | None = None
        self._multi: Transaction | None = None
        # Whether commands may take the dispatch fast path (``_run``): authenticated,
        # outside MULTI and not subscribed. Kept current by ``authenticate``,
        # ``deauthenticate`` and the ``multi`` and ``subscriptions`` setters; any new
        # per-connection state that needs ``_run_checked`` belongs in ``_refresh_plain``.
        self._plain = self.authenticated
        self.db_index = 0  # SELECTed Redis database (0: the default set)
        self.watched: dict[Key, int] | None = None  # WATCHed keys and their generations
        # Pub/sub and tooling state (CLIENT LIST, MONITOR): see server/pubsub.py, tooling.py.
        self._subscriptions: Subscriptions | None = None
        self._tracking: Tracking | None = None
        self.monitoring = False
        self.created = monotonic()
        self.last_command = "NULL"
        self.lib: tuple[bytes, bytes] = (b"", b"")  # CLIENT SETINFO lib-name, lib-ver
        self.no_evict = False
        self.local_address = ""
        self._soft_since = 0.0  # when unread pub/sub output first passed the soft limit

    @property
    def multi(self) -> Transaction | None:
        """Inside MULTI: what is queued (None outside)."""
        return self._multi

    @multi.setter
    def multi(self, transaction: Transaction | None) -> None:
        self._multi = transaction
        self._refresh_plain()

    @property
    def subscriptions(self) -> Subscriptions | None:
        """What this client is subscribed to (None: nothing)."""
        return self._subscriptions

    @subscriptions.setter
    def subscriptions(self, subscriptions: Subscriptions | None) -> None:
        self._subscriptions = subscriptions
        self._refresh_plain()

    @property
    def tracking(self) -> Tracking | None:
        """CLIENT TRACKING's options (None: off); see server/tracking.py."""
        return self._tracking

    @tracking.setter
    def tracking(self, tracking: Tracking | None) -> None:
        self._tracking = tracking
        self._refresh_plain()

    def _refresh_plain(self) -> None:
        self._plain = (
            self.authenticated
            and self._multi is None
            and self._subscriptions is None
            and self._tracking is None
        )

    # transport events --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        local = transport.get_extra_info("sockname")
        self.local_address = f"{local[0]}:{local[1]}" if isinstance(local, tuple) else ""
        self.address_key = address_key(peer[0]) if isinstance(peer, tuple) else str(peer)
        server = self.server
        if not server.accepting or len(server.connections) >= server.max_clients:
            reason = "max number of clients reached" if server.accepting else "shutting down"
            self.transport.write(encode_reply(ErrorReply(f"ERR {reason}")))
            self.transport.close()
            self._closing = True
            server.stats.rejected_connections += 1
            if server.accepting:
                server.refusals.log(
                    logging.WARNING,
                    "refused a connection from %s: max number of clients reached "
                    "(%d, --max-clients)",
                    self.address,
                    server.max_clients,
                )
            return
        self.server.connections.add(self)
        self.server.stats.connections_total += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._linger_left = 0
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        self.server.connections.discard(self)
        self.server.blocked.forget(self)
        if self.subscriptions is not None:
            self.server.pubsub.drop(self)
        if self._tracking is not None:
            self.server.tracker.disable(self)
        if self.monitoring:
            self.server.monitors.pop(self, None)

    def data_received(self, data: bytes) -> None:
        if self._linger_left:
            self._linger_left -= len(data)
            if self._linger_left <= 0 and self.transport is not None:
                self.transport.abort()
            return
        if self._closing or self._draining:
            return
        self._stats.bytes_in += len(data)
        self.last_active = self._now()
        if self._backlog:
            self.parser.feed(data)  # held up behind pending work
            self._serve()
        else:
            # Before AUTH, one command at a time: the frame limits widen only once it passes.
            most = TURN_CHECK if self.authenticated else 1
            parser = self.parser
            commands = parser.take(data, most, self._budget)
            if len(commands) != 1 or parser.more or parser.error is not None:
                self._serve(commands)
                return
            # One whole command, nothing after it (an unpipelined client): ``_serve``
            # unrolled, as it would run it.
            if not self._run(commands[0], parser.largest <= OFFLOAD_BYTES):
                self._backlog.append(commands[0])
            elif self._out_bytes > _FLUSH_AT:
                self._flush()
            if not self._turn_pending and not self._closing:
                self._turn_pending = True
                self.server.end_turn_later(self)
            if self._paused or self._backlog or len(self._slots) > self._max_pending:
                self._update_reading()

    def _serve(self, first: list[list[bytes]] | None = None) -> None:
        """Run buffered commands, within this connection's budget for the current turn
        (``first``: the batch the caller already parsed)."""
        parser = self.parser
        budget = self._budget
        deadline = 0.0  # set once a second batch is parsed in this call
        while not (self._closing or self._draining or self._backlog):
            if first is not None:
                commands, first = first, None
            else:
                commands = parser.commands(TURN_CHECK if self.authenticated else 1, budget)
            if deadline and commands and perf_counter() > deadline:
                budget.commands = 0  # the turn's time is up: the next parse stops at once
            small = parser.largest <= OFFLOAD_BYTES
            for i, args in enumerate(commands):
                if not self._run(args, small):
                    self._backlog.extend(commands[i:])
                    break
                if self._closing or self._draining:
                    break
                if self._out_bytes > _FLUSH_AT:
                    self._flush()
            if not (commands and parser.more):
                break
            if not deadline:
                # The first batch ran at once; what follows in this call shares the turn's
                # time bound (checked every TURN_CHECK commands).
                deadline = perf_counter() + self._budget_limits().seconds
        if parser.error is not None and not self._error_queued and not self._closing:
            # Commands before the bad frame are answered first, then the error, then close.
            self._error_queued = True
            self._backlog.append(None)
            self._run_backlog()
        if not self._turn_pending and not self._closing:
            self._turn_pending = True
            self.server.end_turn_later(self)
        if self._paused or parser.more or self._backlog or len(self._slots) > self._max_pending:
            self._update_reading()

    def resume(self) -> None:
        """CLIENT PAUSE ended: run what waited, then read on."""
        if self._closing or self._draining:
            return
        held_up = bool(self._backlog)
        self._run_backlog()
        if held_up and not self._backlog:
            self._serve()
        else:
            self._update_reading()
        self._end_turn_later()

    def end_turn(self) -> bool:
        """The loop turn is over (every ready socket was read): send the replies and renew
        the budget. True when input is left over for ``continue_turn``."""
        self._turn_pending = False
        budget, limits = self._budget, TURN if self.authenticated else PREAUTH_TURN
        budget.commands, budget.args, budget.bytes = limits.commands, limits.args, limits.bytes
        out = self._out
        if out:
            transport = self.transport
            if transport is not None and not self._closing:  # _flush(), inlined
                if len(out) > 1:
                    data = b"".join(out)
                    out.clear()
                else:
                    data = out.pop()
                self._out_bytes -= len(data)
                self._stats.bytes_out += len(data)
                transport.write(data)
                if transport.get_write_buffer_size() + self._out_bytes > self._out_limit:
                    self._overflow()
        return self.parser.more and not (self._backlog or self._closing or self._draining)

    def continue_turn(self) -> None:
        self._serve()

    def _end_turn_later(self) -> None:
        if not self._turn_pending and not self._closing:
            self._turn_pending = True
            self.server.end_turn_later(self)

    def _update_reading(self) -> None:
        """Read the socket only while there is room: pending work under its bound, and no
        input waiting for a later turn or held up behind pending work."""
        transport = self.transport
        if transport is None or self._closing or self._draining:
            return
        pending = len(self._slots) + len(self._backlog)
        limit = self._max_pending
        held = bool(self._backlog) and self.parser.buffered > self._budget_limits().bytes
        if self._paused:
            if (
                not self.parser.more
                and not held
                and pending <= limit // 2
                and self.server.accepting
            ):
                self._paused = False
                transport.resume_reading()
        elif self.parser.more or held or pending > limit:
            self._paused = True
            transport.pause_reading()

    def _budget_limits(self) -> TurnLimits:
        return TURN if self.authenticated else PREAUTH_TURN

    def _run_backlog(self) -> None:
        backlog = self._backlog
        while backlog and not (self._closing or self._draining):
            args = backlog[0]
            if args is None:
                backlog.popleft()
                self._protocol_error()
                return
            if not self._run(args, False):
                return
            backlog.popleft()
            if self._out_bytes > _FLUSH_AT:
                self._flush()

    def _protocol_error(self) -> None:
        error = self.parser.error
        self.server.stats.protocol_errors += 1
        if isinstance(error, FrameTooLarge):
            text = self._too_large_text(error)
            self.server.refusals.log(
                logging.WARNING, "refused a request from %s: %s", self.address, text
            )
            self._emit_now(ErrorReply(text))
            self._too_large = self.authenticated  # a stranger gets no lingering
        else:
            self._emit_now(ErrorReply(f"ERR Protocol error: {error}"))
        self.finish()

    def _too_large_text(self, error: FrameTooLarge) -> str:
        size = f"{error.size} {error.unit}"
        if error.unit == "bytes" and error.what == "a request":
            size = f"at least {size}"
        if not self.authenticated:
            return (
                f"{TOO_LARGE_PREFIX} before AUTH: {error.what} of {size} exceeds the limit "
                f"of {error.limit} {error.unit} for unauthenticated clients; send AUTH first"
            )
        if error.unit == "arguments":
            limit = f"the server's limit of {error.limit} arguments per command"
        elif error.what == "an inline command line":
            limit = f"the inline limit of {error.limit} bytes (send it as a RESP array)"
        elif error.what == "a request":
            limit = f"the server's limit of {error.limit} bytes per command"
        else:
            limit = f"the server's max frame of {error.limit} bytes (--max-frame)"
        return (
            f"{TOO_LARGE_PREFIX}: {error.what} of {size} exceeds {limit}; split the batch "
            "into smaller calls, or start the server with a larger --max-frame"
        )

    # dispatch ----------------------------------------------------------------------------

    def _run(self, args: list[bytes], small: bool) -> bool:
        """Dispatch one command; False when it must wait for pending work to finish.

        ``small``: the command is known to hold at most ``OFFLOAD_BYTES`` (the parser said
        so), which spares summing its arguments' sizes."""
        if self._pending_other:
            # Behind a slow read, a deferred AUTH or a command on a worker thread (an EXEC
            # still reading ``multi``), nothing of this client's runs, not even a MULTI queue.
            return False
        cmd = COMMANDS.get(args[0]) or COMMANDS.get(args[0].upper())
        server = self.server
        if (
            cmd is None
            or not self._plain
            or not small
            or not cmd.min_args <= len(args) <= cmd.fast_args
            or server.paused_until
            or server.monitors
        ):
            return self._run_checked(cmd, args)
        # The hot path: an authenticated, well-formed, small command outside MULTI and
        # pub/sub, with no CLIENT PAUSE or MONITOR on.
        writes = cmd.always_writes
        if self._pending_writes and not (cmd.is_write(args) if writes is None else writes):
            return False
        metric = cmd.name if cmd.metric is None else cmd.metric(args)
        self.last_command = metric
        started = perf_counter_ns()
        try:
            result = cmd.handler(self, args[1:])
        except Exception as e:
            self._answer(metric, started, self._error_reply(e), args)
            return True
        kind = type(result)
        if kind is Write:
            if server.inflight < self._max_inflight:
                slot = _Slot(metric, started, args)
                self._slots.append(slot)
                server.inflight += 1
                self._pending_writes += 1
                plan = result.plan
                if server.notifier.hinting:
                    plan = server.notifier.hinted(cmd, args, plan)
                server.submit_write(plan, self, slot, result.then)
                return True
            return self._start(cmd, args, started, result)
        if kind is Offload or kind is Defer:
            return self._start(cmd, args, started, result)
        server.served += 1
        data = encode_reply(result, self.resp3)
        self._out_bytes += len(data)
        if self._slots:
            slot = _Slot("", 0)
            slot.data = data
            self._slots.append(slot)
        else:
            self._out.append(data)
        metrics = self._ops.get(metric) or self._metrics.op(metric)
        elapsed = perf_counter_ns() - started
        metrics.observe(elapsed)
        if kind is ErrorReply:
            metrics.error(_error_code(result, self.server.error_codes))
        if elapsed >= self._slowlog.threshold_ns:
            self._slowlog.add(self, args, elapsed)
        if self._out_bytes > self._out_limit:
            self._overflow()
        elif self._finish_after_reply:
            self.finish()
        return True

    def _run_checked(self, cmd: Command | None, args: list[bytes]) -> bool:
        """``_run`` for everything off its hot path, every check in order."""
        if self.multi is not None:
            queued = self.multi.queue(cmd, args)  # None: EXEC, DISCARD... run now
            if queued is not None:
                self._emit_now(queued)
                return True
        if cmd is None:
            self._emit_now(ErrorReply(unknown_command(args)))
            self.server.stats.unknown_commands += 1
            return True
        if not self.authenticated and "noauth" not in cmd.flags:
            self._emit(_NOAUTH)
            self.server.metrics.op(cmd.name).error("NOAUTH")
            return True
        arity = cmd.arity
        if (arity > 0 and len(args) != arity) or (arity < 0 and len(args) < -arity):
            if self._pending_writes:
                return False
            self._emit_now(ErrorReply(f"ERR wrong number of arguments for '{cmd.name}' command"))
            self.server.metrics.op(cmd.name).error("ERR")
            return True
        if self.subscriptions is not None and not self.resp3 and "subscribed" not in cmd.flags:
            self._emit_now(ErrorReply(tooling.subscribed_only(cmd.name)))
            self.server.metrics.op(cmd.name).error("ERR")
            return True
        if self.server.paused_until and self.server.holds(cmd, args):
            self.server.hold(self)
            return False
        if self.server.monitors:
            tooling.feed_monitors(self, cmd, args)
        self.last_command = cmd.name if cmd.metric is None else cmd.metric(args)
        if self._heavy(cmd, args):
            if self._tracking is not None and not (self._pending_writes or self._pending_other):
                self._track(self._tracking, cmd, args)  # it runs now (see _run_off_loop)
            return self._run_off_loop(cmd, args)
        if self._pending_writes and not cmd.is_write(args):
            return False
        if self._tracking is not None:
            self._track(self._tracking, cmd, args)
        started = perf_counter_ns()
        try:
            result = cmd.handler(self, args[1:])
        except Exception as e:
            self._answer(cmd.metric_name(args), started, self._error_reply(e), args)
            return True
        kind = type(result)
        if kind is Write or kind is Offload or kind is Defer:
            return self._start(cmd, args, started, result)
        self._answer(cmd.metric_name(args), started, result, args)
        if self._finish_after_reply:
            self.finish()
        return True

    def _track(self, tracking: Tracking, cmd: Command, args: list[bytes]) -> None:
        """CLIENT TRACKING: note the keys of a read about to run (not when it is held back
        behind a write: that write's invalidation would forget them before the read runs)."""
        if tracking.remembers():
            if "readonly" in cmd.flags:
                self.server.tracker.remember(self, cmd, args)
            elif cmd.name == "exec" and self.multi is not None:
                self.server.tracker.remember_queued(self, self.multi.commands)
        if tracking.caching is not None and not (
            cmd.name == "multi"
            or (cmd.name == "client" and len(args) > 1 and args[1].upper() == b"CACHING")
        ):
            # CLIENT CACHING covers the one command after it (a MULTI: up to its EXEC)
            tracking.caching = None

    def _start(self, cmd: Command, args: list[bytes], started: int, result: Any) -> bool:
        """Start what a handler returned to run later: a write, slow work, a deferral."""
        kind = type(result)
        if kind is Defer:
            self._defer(cmd.metric_name(args), started, result)
            return True
        if kind is Write or kind is Offload:
            server = self.server
            if server.inflight >= server.config.max_inflight:
                server.stats.shed += 1
                self._answer(cmd.metric_name(args), started, _BUSY, args)
                return True
            slot = _Slot(cmd.metric_name(args), started, args)
            self._slots.append(slot)
            server.inflight += 1
            if kind is Write:
                self._pending_writes += 1
                if "blocking" in cmd.flags:
                    # As in Redis, a client blocked in BLPOP runs nothing after it (its own
                    # pipelined RPUSH must not feed it), so it holds the line until answered.
                    slot.barrier = True
                    self._pending_other += 1
                plan = result.plan
                if server.notifier.hinting:
                    plan = server.notifier.hinted(cmd, args, plan)
                if self._tracking is not None and self._tracking.noloop:
                    plan = server.tracker.noted(self, plan)
                server.submit_write(plan, self, slot, result.then)
            else:
                self._pending_other += 1
                server.offload(result.fn, self, slot, result.then)
        return True

    def _heavy(self, cmd: Command, args: list[bytes]) -> bool:
        """Whether this command's work is too big for the event loop: many arguments, many
        bytes, or (EXEC) a big queued transaction."""
        if len(args) > OFFLOAD_ARGS:
            return _offloadable(cmd)
        if len(args) <= 8 and sum(map(len, args)) > OFFLOAD_BYTES:
            return _offloadable(cmd)
        queued = self.multi
        if queued is not None and cmd.name == "exec":
            return queued.size > OFFLOAD_BYTES or len(queued.commands) > OFFLOAD_ARGS // 2
        return False

    def _run_off_loop(self, cmd: Command, args: list[bytes]) -> bool:
        """Run a big data command entirely on a worker thread: its handler (validation,
        planning, point reads), its commit and the encoding of its reply."""
        if self._pending_writes or self._pending_other:
            return False  # it starts alone: nothing of this client's may overtake it
        started = perf_counter_ns()
        server = self.server
        metric = cmd.metric_name(args)
        if server.inflight >= server.config.max_inflight:
            server.stats.shed += 1
            self._answer(metric, started, _BUSY, args)
            return True
        slot = _Slot(metric, started, args)
        self._slots.append(slot)
        server.inflight += 1
        self._pending_other += 1
        resp3 = self.resp3
        notifier = server.notifier

        def run() -> Encoded:
            with _gc_paused():
                result = cmd.handler(self, args[1:])
                kind = type(result)
                if kind is Write:
                    plan = result.plan
                    if notifier.hinting:
                        plan = notifier.hinted(cmd, args, plan)
                    result = result.then(self.db._write(plan))
                elif kind is Offload:
                    result = result.then(result.fn())
                return Encoded(encode_reply(result, resp3))

        server.offload(run, self, slot, _same)
        return True

    def _defer(self, metric: str, started: int, deferred: Defer) -> None:
        slot = _Slot(metric, started)
        self._slots.append(slot)
        self._pending_other += 1

        def fire() -> None:
            if self._closing:
                self._pending_other -= 1
                if deferred.cancel is not None:
                    deferred.cancel()
                return
            try:
                value, error = deferred.fn(), None
            except Exception as e:
                value, error = None, e
            self.settle(slot, False, _same, value, error)

        self.server.call_later(deferred.delay, fire)

    def _answer(self, metric: str, started: int, reply: Any, args: list[bytes]) -> None:
        self._emit_now(reply)
        server = self.server
        metrics = server.metrics.op(metric)
        elapsed = perf_counter_ns() - started
        metrics.observe(elapsed)
        if type(reply) is ErrorReply:
            metrics.error(_error_code(reply, self.server.error_codes))
        if elapsed >= server.slowlog.threshold_ns:
            server.slowlog.add(self, args, elapsed)

    def _error_reply(self, error: BaseException) -> ErrorReply:
        if isinstance(error, Reply | RedisError):
            return ErrorReply(error.text)
        if isinstance(error, EngramError):
            return ErrorReply(error_reply_text(error))
        log.exception("command failed", exc_info=error)
        return ErrorReply(f"ERR internal error: {type(error).__name__}")

    def complete(self, slot: _Slot, is_write: bool, then: Any, value: Any, error: Any) -> None:
        """A write or offloaded read finished (called on the event loop)."""
        self.server.inflight -= 1
        self.settle(slot, is_write, then, value, error)

    def settle(self, slot: _Slot, is_write: bool, then: Any, value: Any, error: Any) -> None:
        """``complete`` with the in-flight count already taken down by the caller."""
        if is_write:
            self._pending_writes -= 1
            if self.server.notifier.hinting:
                self.server.notifier.poke()
        else:
            self._pending_other -= 1
            self.server.served += 1
        if error is None:
            try:
                reply = then(value)
            except Exception as e:
                reply = self._error_reply(e)
        else:
            reply = self._error_reply(error)
        kind = type(reply)
        if kind is Write or kind is Block:
            if not self._closing:
                self._continue(slot, reply)
            return
        if slot.barrier:
            slot.barrier = False
            self._pending_other -= 1
        data = encode_reply(reply, self.resp3)
        metric = slot.metric
        metrics = self._ops.get(metric) or self._metrics.op(metric)
        elapsed = perf_counter_ns() - slot.started
        metrics.observe(elapsed)
        if type(reply) is ErrorReply:
            metrics.error(_error_code(reply, self.server.error_codes))
        if elapsed >= self._slowlog.threshold_ns and slot.args is not None:
            self._slowlog.add(self, slot.args, elapsed)
        if self._closing:
            return
        self._out_bytes += len(data)
        slots = self._slots
        if slots[0] is slot:
            # The oldest pending reply (always, without pipelining): out it goes, with the
            # finished ones queued behind it.
            slots.popleft()
            self._out.append(data)
            while slots and slots[0].data is not None:
                self._out.append(slots.popleft().data)  # type: ignore[arg-type]
        else:
            slot.data = data
        if self._out_bytes > self._out_limit:
            self._overflow()
            return
        if self._backlog:
            self._run_backlog()
            if self._draining and not slots:
                self._close_transport()
                return
            if not self._backlog:
                self._serve()  # input held up behind pending work, within the turn's budget
            else:
                self._update_reading()
        elif self._draining and not slots:
            self._close_transport()
            return
        elif self._paused:
            self._update_reading()
        # Written with every other reply at the end of the turn: a batch of completions
        # (a group commit) then costs one write per connection, not one per command.
        if self._out_bytes > _FLUSH_AT:
            self._flush()
        if not self._turn_pending and not self._closing:
            self._turn_pending = True
            self.server.end_turn_later(self)

    def _continue(self, slot: _Slot, step: Write | Block) -> None:
        """The command in ``slot`` goes on: another write, or a wait (BLPOP)."""
        if type(step) is Block:
            self._pending_other += 1
            self.server.blocked.park(self, slot, step)
            return
        assert type(step) is Write
        server = self.server
        plan = step.plan
        if server.notifier.hinting and slot.args:
            # A woken BLPOP's pop notifies its own event (lpop), like its first try.
            cmd = COMMANDS.get(slot.args[0].upper())
            if cmd is not None:
                plan = server.notifier.hinted(cmd, slot.args, plan)
        self._pending_writes += 1
        server.inflight += 1
        server.submit_write(plan, self, slot, step.then)

    def unpark(self, slot: Any, result: Any) -> None:
        """A parked command woke (or timed out): ``result`` is its next step or its reply."""
        self.settle(slot, False, _same, result, None)

    # output ------------------------------------------------------------------------------

    def _emit_now(self, reply: Any) -> None:
        self._emit(encode_reply(reply, self.resp3))

    def _emit(self, data: bytes) -> None:
        self.server.served += 1
        self._out_bytes += len(data)
        if self._slots:
            slot = _Slot("", 0)
            slot.data = data
            self._slots.append(slot)
        else:
            self._out.append(data)
        if self._out_bytes > self._out_limit:
            self._overflow()

    def push(self, data: bytes) -> bool:
        """Queue an out-of-band message (pub/sub, MONITOR) for this client; False when it
        was not (the client is gone, or is cut off now).

        A subscriber that does not read is disconnected once its unread output passes the
        pub/sub limits (``client-output-buffer-limit pubsub``: hard at once, soft after
        that many seconds over it); it never makes the server hold more."""
        if self._closing or self._draining:
            return False
        if self.subscriptions is not None:
            transport = self.transport
            held = self._out_bytes + len(data)
            if transport is not None:
                held += transport.get_write_buffer_size()
            limit = self.server.settings.pubsub_limit
            if limit.hard and held > limit.hard:
                self._push_overflow(held, "hard")
                return False
            if limit.soft and held > limit.soft:
                now = self.server.now()
                if not self._soft_since:
                    self._soft_since = now
                elif now - self._soft_since > limit.seconds:
                    self._push_overflow(held, "soft")
                    return False
            else:
                self._soft_since = 0.0
        self._emit(data)
        self._end_turn_later()
        return not self._closing

    def _push_overflow(self, held: int, which: str) -> None:
        self.server.stats.pubsub_disconnects += 1
        self.server.pubsub.drop(self)  # counted out of the next PUBLISH at once
        self.server.refusals.log(
            logging.WARNING,
            "disconnected subscriber %s: %d bytes of unread messages passed the pub/sub "
            "%s output-buffer limit (client-output-buffer-limit pubsub)",
            self.address,
            held,
            which,
        )
        self._overflow()

    def kill(self) -> None:
        """Close this connection (CLIENT KILL): at once, or after the reply of the command
        it is running when it kills itself."""
        if self._closing:
            return
        if self._slots or self._backlog or self._out:
            self._overflow_quietly()
        elif self.transport is not None:
            self._closing = True
            self.transport.close()

    def _overflow_quietly(self) -> None:
        self._closing = True
        self._out.clear()
        self._slots.clear()
        self._backlog.clear()
        self._out_bytes = 0
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        out = self._out
        if not out or self.transport is None or self._closing:
            return
        if len(out) > 1:
            data = b"".join(out)
            out.clear()
        else:
            data = out.pop()
        self._out_bytes -= len(data)
        self._stats.bytes_out += len(data)
        transport = self.transport
        transport.write(data)
        if transport.get_write_buffer_size() + self._out_bytes > self._out_limit:
            self._overflow()

    def _overflow(self) -> None:
        """A client that does not read its replies must not grow our memory for ever."""
        self.server.stats.output_buffer_disconnects += 1
        self._closing = True
        self._out.clear()
        self._slots.clear()
        self._backlog.clear()
        self._out_bytes = 0
        if self.transport is not None:
            self.transport.abort()

    def finish(self) -> None:
        """Run no more commands; answer what is pending, then close (QUIT, protocol errors)."""
        if self._closing or self._draining:
            return
        self._draining = True
        self._backlog.clear()
        if self.transport is not None:
            with contextlib.suppress(RuntimeError):
                self.transport.pause_reading()
        self._flush()
        if not self._slots:
            self._close_transport()

    def close_after_reply(self) -> None:
        """Close once the reply of the command being run is sent (QUIT)."""
        self._finish_after_reply = True

    def _close_transport(self) -> None:
        self._flush()
        if self.transport is not None and not self._closing:
            self._closing = True
            if self._too_large:
                self._linger(self.transport)
            else:
                self.transport.close()

    def _linger(self, transport: asyncio.Transport) -> None:
        """Half-close after refusing a too-large request and drop what the client is still
        sending: closing with its bytes unread would reset the connection, and the client,
        still sending, would see the reset instead of our error."""
        try:
            transport.write_eof()
        except (RuntimeError, NotImplementedError):
            transport.close()
            return
        self._linger_left = _LINGER_BYTES
        transport.resume_reading()
        self._linger_timer = self.server.call_later(_LINGER_SECONDS, transport.abort)

    def close_idle(self, idle_for: float) -> bool:
        """Close this connection if it has nothing in progress (``--idle-timeout``)."""
        if self._closing or self._draining or self._slots or self._backlog:
            return False
        if self.subscriptions is not None or self.monitoring:
            return False  # waiting for messages is what they do (Redis spares them too)
        if self.parser.buffered:
            return False  # in the middle of receiving a request
        self.server.idle_closes.log(
            logging.INFO,
            "closed %s after %.0f s idle (--idle-timeout %g)",
            self.address,
            idle_for,
            self.server.idle_timeout,
        )
        self.server.stats.idle_disconnects += 1
        self._close_transport()
        return True

    def authenticate(self) -> None:
        self.authenticated = True
        self.parser.limits = self.server.config.limits
        self._out_limit = self.server.config.max_output_buffer
        self._refresh_plain()

    def deauthenticate(self) -> None:
        """RESET on a server with a password: back to the pre-AUTH limits."""
        self.authenticated = False
        self.parser.limits = PREAUTH_LIMITS
        self._out_limit = PREAUTH_OUTPUT
        self._refresh_plain()

    def age(self) -> float:
        """Seconds since the connection was accepted."""
        return monotonic() - self.created

    def output_bytes(self) -> int:
        """Reply and message bytes waiting to be read by the client."""
        transport = self.transport
        waiting = transport.get_write_buffer_size() if transport and not self._closing else 0
        return self._out_bytes + waiting

    def unblock(self, error: bool) -> bool:
        """CLIENT UNBLOCK: end a blocking command early; False when none is running."""
        return self.server.blocked.unblock(self, error)

    def client_info(self) -> str:
        """This connection as a CLIENT LIST / CLIENT INFO line (Redis' fields, plus
        ``pending``: commands sent and not yet answered)."""
        name = (self.name or b"").decode(errors="replace")
        subs = self.subscriptions
        sub, psub, ssub = (
            (len(subs.channel), len(subs.pattern), len(subs.shard)) if subs else (0, 0, 0)
        )
        tracking = self._tracking
        redirect = -1 if tracking is None else tracking.redirect
        flags = "".join(
            flag
            for flag, on in (
                ("O", self.monitoring),
                ("P", subs is not None),
                ("x", self.multi is not None),
                ("b", self in self.server.blocked),
                ("e", self.no_evict),
                ("c", self._finish_after_reply or self._draining),
                ("t", tracking is not None),
                ("B", tracking is not None and tracking.bcast),
                ("R", tracking is not None and tracking.broken),
            )
            if on
        )
        transport = self.transport
        fd = -1
        obl = 0
        if transport is not None and not self._closing:
            sock = transport.get_extra_info("socket")
            fd = sock.fileno() if sock is not None else -1
            obl = transport.get_write_buffer_size()
        qbuf = self.parser.buffered
        multi = len(self.multi.commands) if self.multi is not None else -1
        omem = self._out_bytes + obl
        lib_name, lib_ver = (part.decode(errors="replace") for part in self.lib)
        return (
            f"id={self.id} addr={self.address} laddr={self.local_address} fd={fd} "
            f"name={name} age={int(monotonic() - self.created)} "
            f"idle={int(max(0.0, self.server.now() - self.last_active))} "
            f"flags={flags or 'N'} db={self.db_index} sub={sub} psub={psub} ssub={ssub} "
            f"multi={multi} qbuf={qbuf} qbuf-free=0 argv-mem=0 multi-mem="
            f"{self.multi.size if self.multi is not None else 0} rbs=0 rbp=0 obl={obl} "
            f"oll={len(self._out) + len(self._slots)} omem={omem} tot-mem={qbuf + omem} "
            f"events=r cmd={self.last_command} user=default redir={redirect} "
            f"resp={3 if self.resp3 else 2} lib-name={lib_name} lib-ver={lib_ver} "
            f"pending={len(self._slots)}"
        )

    def pending(self) -> int:
        return len(self._slots)

    def reads_pending(self) -> bool:
        """Whether a read of this client runs off the loop (or waits) right now."""
        return self._pending_other > 0


def _same(value: Any) -> Any:
    return value


_gc_lock = threading.Lock()
_gc_pausers = 0


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a big command runs.

    It allocates hundreds of thousands of objects that survive until it ends, so each
    collection it triggers scans a bigger heap: 50 ms pauses, with the GIL held, measured
    on a 60,000-key MSET. Its objects die by reference counting when it ends.
    """
    global _gc_pausers
    with _gc_lock:
        _gc_pausers += 1
        if _gc_pausers == 1:
            gc.disable()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0:
                gc.enable()


def _offloadable(cmd: Command) -> bool:
    """Data commands (they name keys, or read or write data): their handlers touch only the
    database and this connection, which runs nothing else meanwhile, so they may run on a
    worker thread. Connection commands (HELLO, AUTH, CLIENT...) and pub/sub (whose state
    belongs to the loop) stay on the loop, and so do blocking commands (only the loop can
    park a client)."""
    if "pubsub" in cmd.flags or "blocking" in cmd.flags:
        return False
    return cmd.first_key > 0 or not cmd.flags.isdisjoint(("write", "readonly"))


ERROR_CODES_MAX = 128  # distinct error codes a server counts (errorstats, /metrics)
ERRORSTATS_OVERFLOW = "ERRORSTATS_OVERFLOW"


def _error_code(reply: str, known: set[str]) -> str:
    """The code an error reply is counted under, as Redis takes it: the text before a space
    within its first 32 bytes, else ERR. Codes are any bytes (a script's ``error_reply``
    makes its own), so, as Valkey does, once ``ERROR_CODES_MAX`` distinct codes were counted
    (``known``, updated here) a new one counts as ERRORSTATS_OVERFLOW: INFO and ``/metrics``
    stay bounded whatever texts scripts send."""
    head = reply[:32].encode("utf-8", "surrogateescape")[:32]
    space = head.find(b" ")
    code = "ERR" if space < 0 else head[:space].decode("utf-8", "surrogateescape")
    if code not in known:
        if len(known) >= ERROR_CODES_MAX:
            return ERRORSTATS_OVERFLOW
        known.add(code)
    return code
