"""``engramdb serve``: the embedded database behind an asyncio (uvloop) RESP server.

The event loop only parses, dispatches point reads and writes replies. Writes are group
committed: at durability ``sync`` (or on PostgreSQL, whose commit is a round trip) the
loop queues them while a commit runs on the server's committer thread (one transaction and
one fsync per batch, each acknowledged only once durable), and hands the next batch over as
soon as the previous one is back; at ``async`` or ``none`` on a local engine (nothing to
wait for on disk) the writes of each loop iteration are committed together on the loop
itself. Either way the server is one writer among the database's own (the TTL sweeper,
big commands on worker threads through ``Database._write``): the engine serialises them.
Slow reads run on a small thread pool. Completions come back to the loop with
``call_soon_threadsafe``, one per batch.

Once per loop turn (after every ready socket was read) ``_end_turn`` writes the replies of
the connections that ran commands and lets those with input left over run their next
budget: see ``connection.py`` for the fairness rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import queue
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import engramdb
from engramdb.clock import FakeClock
from engramdb.database import Database
from engramdb.errors import InvalidArgument
from engramdb.observability.metrics import Metrics
from engramdb.server.blocking import Blocked
from engramdb.server.bus import Bus
from engramdb.server.config import CannotListen, ServerConfig, is_loopback
from engramdb.server.connection import Connection
from engramdb.server.limits import AuthThrottle, LogLimiter, fit_descriptor_limit
from engramdb.server.notify import Notifier
from engramdb.server.pubsub import Hub
from engramdb.server.reclaim import Reclaimer
from engramdb.server.scan_cursor import CursorTable
from engramdb.server.settings import Settings
from engramdb.server.structures import DATABASES, database_name
from engramdb.server.tooling import Baseline, SlowLog
from engramdb.server.tracking import Tracker
from engramdb.storage.base import WriteFn

__all__ = ["Server", "ServerStats", "run_server"]

log = logging.getLogger("engramdb.server")


def _is_url(data: str) -> bool:
    """Whether ``--data`` names a PostgreSQL database rather than a local directory."""
    return data.startswith(("postgresql://", "postgres://"))


_SWITCH_INTERVAL = 0.0005  # seconds (see run_server)
_COMPLETIONS_PER_TURN = 64
_MAX_BATCH = 512  # writes per durable commit (as GroupCommit's default)
# Seconds a durable commit waits at most for the writers of the last one to be back: twice
# as long as that commit took (the writers' round trip overlaps it), within bounds.
_LINGER_MIN, _LINGER_MAX = 0.0005, 0.002
# A durable commit runs on the loop itself only when the loop has served nothing but durable
# writes for this long, and the last commit's fsync was quick (see ``_commit_here``).
_WRITES_ONLY_FOR, _QUICK_COMMIT = 0.05, 0.005

T = TypeVar("T")


@dataclass
class ServerStats:
    """Counters of the server as a whole (per-command figures live in ``Metrics``)."""

    started_at: float = 0.0
    connections_total: int = 0
    rejected_connections: int = 0
    protocol_errors: int = 0
    unknown_commands: int = 0
    shed: int = 0
    output_buffer_disconnects: int = 0
    pubsub_disconnects: int = 0  # subscribers past the pub/sub output-buffer limit
    killed_clients: int = 0  # CLIENT KILL
    idle_disconnects: int = 0
    auth_failures: int = 0
    auth_refused: int = 0  # AUTH attempts refused unchecked by the failure backoff
    bytes_in: int = 0
    bytes_out: int = 0
    loop_lag_s: float = 0.0
    # SAVE and BGSAVE (an fsync of the data): how many, the last one's end and outcome, and
    # whether a BGSAVE runs now.
    saves: int = 0
    last_save_at: float = 0.0
    last_save_ok: bool = True
    saving: bool = False


class Server:
    """A running server. ``await start()``, then ``await wait_closed()``."""

    def __init__(
        self, config: ServerConfig, *, sock: socket.socket | None = None, worker: int = 0
    ) -> None:
        config.check()
        self.config: ServerConfig = config
        # Under ``--workers``: the listening socket the supervisor bound, and which worker
        # this is (see workers.py).
        self._sock = sock
        self.worker = worker
        self.clock: FakeClock | None = FakeClock(time.time()) if config.testing else None
        # ``now``, without the call around it (the connections read it per request).
        self.now_fn: Callable[[], float] = self.clock if self.clock is not None else time.monotonic
        self.db = self._open_db()
        self.records = self.db.records(config.default_set)
        self.metrics = Metrics()
        self.error_codes: set[str] = set()  # the codes error replies were counted under
        self.stats = ServerStats(started_at=time.time())
        self.connections: set[Connection] = set()
        self.blocked = Blocked(self)  # clients parked by BLPOP and friends
        self.reclaimer = self._reclaimer()
        self.inflight = 0
        self.accepting = True
        self.max_clients: int = config.max_clients  # lowered by start() if descriptors are short
        self.auth_throttle = AuthThrottle(time.monotonic)
        # Log lines any client can cause at will, rate-limited so they cannot flood the log.
        self.refusals = LogLimiter(log, time.monotonic)
        self.idle_closes = LogLimiter(log, time.monotonic)
        # Client ids are unique across the workers of one server: worker i issues i+1,
        # i+1+N, i+1+2N...
        self._ids = itertools.count(worker + 1, config.processes)
        self._executor = ThreadPoolExecutor(config.workers, thread_name_prefix="engramdb-slow")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncio.base_events.Server | None = None
        self._closed = asyncio.Event()
        self._lag_task: asyncio.Task[None] | None = None
        self._metrics_server: Any = None
        self._turned: list[Connection] = []
        # Durable writes: queued for the next commit, the commit in flight, and outcomes
        # the loop is still answering (see ``submit_write``).
        self._sync_queue: list[tuple[WriteFn, Connection, Any, Callable[[Any], Any]]] = []
        self._committing = False
        self._start_scheduled = False  # a _start_commit is queued on the loop
        # After a commit: the next waits for this many queued writes (or the linger).
        self._linger: asyncio.TimerHandle | None = None
        self._linger_for = 0
        self._committer: threading.Thread | None = None
        # Held by the committer thread while it runs a batch: ``reset`` takes it to close
        # the database with no transaction of ours open on it.
        self._commit_lock = threading.Lock()
        self._commit_jobs: queue.SimpleQueue[tuple[Database, list[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._completed: deque[tuple[Any, Any, Any]] = deque()
        self._completions_scheduled = False
        # Commands the connections answered other than durable writes (reads, PING, INFO...):
        # while the count moves, durable commits stay on the committer thread.
        self.served = 0
        self._served_seen = 0
        self._served_at = 0.0
        self._last_took = 0.0
        self.commits_on_loop = 0
        self.commits_on_thread = 0
        self._idle_task: asyncio.Task[None] | None = None
        self._loop_batch: list[tuple[WriteFn, Connection, Any, Callable[[Any], Any]]] = []
        # Pub/sub, keyspace notifications and what Redis tools read (CONFIG, SLOWLOG...).
        self.pubsub: Hub = Hub()
        self.monitors: dict[Connection, None] = {}
        self.settings: Settings = Settings()
        self.slowlog: SlowLog = SlowLog()
        self.notifier: Notifier = Notifier(self)
        self.tracker: Tracker = Tracker(self)  # CLIENT TRACKING
        # Shared by the processes serving one data directory; a PostgreSQL database has no
        # directory here, so each front keeps its own (a cursor another front issued still
        # resumes, from its prefix).
        local = not _is_url(config.data)
        self.scan_cursors: CursorTable = CursorTable(config.data if local else None)
        self.bus: Bus | None = None  # the other server processes of this data directory
        self._restarting: asyncio.Future[None] | None = None
        self.changed_settings: dict[bytes, bytes] = {}  # by CONFIG SET, for new peers
        self.idle_timeout: float = config.idle_timeout  # CONFIG SET timeout changes it
        self.max_clients_cap: int = config.max_clients  # what the descriptor limit allows
        self.stats_baseline: Baseline | None = None  # CONFIG RESETSTAT
        # CLIENT PAUSE: until when (loop time; 0: not paused), and whether only writes wait.
        self.paused_until = 0.0
        self.pause_writes_only = False
        self._held: dict[Connection, None] = {}
        self._unpause_timer: asyncio.TimerHandle | None = None
        self._samples: deque[tuple[float, int, int, int]] = deque(maxlen=16)
        # Without an fsync to wait for, a local engine commits on the loop itself; a
        # PostgreSQL commit is a network round trip (or more): it never runs on the loop.
        self._local = not _is_url(config.data)
        self._commit_on_loop = config.durability != "sync" and self._local
        self._call_soon: Callable[..., Any] = _not_started  # the loop's call_soon, from start()

    def _open_db(self, **options: Any) -> Database:
        if self.clock is not None:
            options.setdefault("clock", self.clock)
        if self.config.max_record_bytes != engramdb.Limits().max_record_bytes:
            options.setdefault(
                "limits", engramdb.Limits(max_record_bytes=self.config.max_record_bytes)
            )
        # The server's spans are its calls' (``observability.calls.server_call``), not the
        # embedded ones of the record sets every command uses.
        options.setdefault("telemetry", False)
        if self.config.embedder == "minilm":
            from engramdb.embedders import SentenceEmbedder

            options.setdefault("embedder", SentenceEmbedder())
        return engramdb.open(self.config.data, durability=self.config.durability, **options)

    def _reclaimer(self) -> Reclaimer:
        """Deletes the elements of removed Redis lists, hashes, sets and sorted sets."""
        default = self.config.default_set
        names = [database_name(default, index) for index in range(DATABASES)]
        return Reclaimer(self.db, names)

    def next_client_id(self) -> int:
        return next(self._ids)

    def now(self) -> float:
        """Seconds on the server's clock (the fake one under ``--testing``): what idle
        timeouts are measured with."""
        return self.clock() if self.clock is not None else time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        assert self._loop is not None
        return self._loop.call_later(delay, callback)

    # lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._call_soon = self._loop.call_soon
        self.max_clients = fit_descriptor_limit(self.config.max_clients, log)
        self.max_clients_cap = max(self.max_clients, self.max_clients_cap)
        try:
            if self._sock is not None:
                self._listener = await self._loop.create_server(
                    lambda: Connection(self), sock=self._sock, backlog=1024
                )
            else:
                self._listener = await self._loop.create_server(
                    lambda: Connection(self),
                    self.config.host,
                    self.config.port,
                    reuse_address=True,
                    backlog=1024,
                )
        except OSError as e:
            raise CannotListen("port", self.config.host, self.config.port, e) from None
        self._lag_task = asyncio.create_task(self._watch_loop_lag())
        self.reclaimer.start()
        if _is_url(self.config.data):
            # Fronts of one PostgreSQL database share no directory to meet in: PUBLISH
            # reaches this front's subscribers (keyspace notifications, from the shared
            # change log, reach every front's).
            log.info("pub/sub reaches only this process's subscribers (postgresql:// data)")
        else:
            bus = Bus(self, self.config.data)
            try:
                await bus.start()
                self.bus = bus
            except OSError as e:
                log.warning(
                    "pub/sub reaches only this process's subscribers: %s (%s)", e, bus.directory
                )
        if self.idle_timeout > 0:
            self._idle_task = asyncio.create_task(self._close_idle())
        if self.config.metrics_port is not None and self.worker == 0:
            from engramdb.server.metrics_http import start_metrics_server

            host = self.config.metrics_host
            if not is_loopback(host):
                log.warning(
                    "/metrics listens at %s:%d without authentication (--metrics-host)",
                    host,
                    self.config.metrics_port,
                )
            try:
                self._metrics_server = start_metrics_server(self, host, self.config.metrics_port)
            except OSError as e:
                raise CannotListen("metrics port", host, self.config.metrics_port, e) from None

    @property
    def port(self) -> int:
        assert self._listener is not None
        return int(self._listener.sockets[0].getsockname()[1])

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stop accepting, finish in-flight work, flush replies, sync and close."""
        if not self.accepting:
            return
        self.accepting = False
        if self._listener is not None:
            self._listener.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.pause_reading()
        deadline = time.monotonic() + timeout
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        for conn in list(self.connections):
            conn.finish()
        if self._lag_task is not None:
            self._lag_task.cancel()
        if self._idle_task is not None:
            self._idle_task.cancel()
        self.notifier.close()
        self.tracker.close()
        self.scan_cursors.close()
        if self.bus is not None:
            self.bus.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        self._executor.shutdown(wait=True)
        if self._committer is not None:
            self._commit_jobs.put(None)
            self._committer.join()
        self.reclaimer.stop()
        await asyncio.sleep(0)
        self.db.close()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def _watch_loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 0.1
        while True:
            before = loop.time()
            await asyncio.sleep(interval)
            now = loop.time()
            self.stats.loop_lag_s = max(0.0, now - before - interval)
            commands = sum(m.count for m in self.metrics.ops())
            self._samples.append((now, commands, self.stats.bytes_in, self.stats.bytes_out))

    def rates(self) -> dict[str, float]:
        """Commands and bytes per second over the last ~1.6 s (INFO's instantaneous_*)."""
        samples = self._samples
        if len(samples) < 2:
            return {"commands": 0.0, "bytes_in": 0.0, "bytes_out": 0.0}
        (t0, c0, i0, o0), (t1, c1, i1, o1) = samples[0], samples[-1]
        span = max(t1 - t0, 1e-6)
        return {"commands": (c1 - c0) / span, "bytes_in": (i1 - i0) / span,
                "bytes_out": (o1 - o0) / span}  # fmt: skip

    def pause(self, seconds: float, writes_only: bool) -> None:
        """CLIENT PAUSE: hold clients' commands (all, or writes) for ``seconds``."""
        assert self._loop is not None
        was_paused = self.paused_until > 0
        until = self._loop.time() + seconds
        if until > self.paused_until:
            self.paused_until = until
            if self._unpause_timer is not None:
                self._unpause_timer.cancel()
            self._unpause_timer = self._loop.call_at(until, self.unpause)
        # A second PAUSE may widen what waits (WRITE then ALL), never narrow it.
        self.pause_writes_only = writes_only and (self.pause_writes_only or not was_paused)

    def holds(self, command: Any, args: list[bytes]) -> bool:
        """Whether CLIENT PAUSE holds this command back (CLIENT itself never waits, so an
        operator can always UNPAUSE)."""
        if command.name == "client":
            return False
        if not self.pause_writes_only:
            return True
        return bool(command.is_write(args)) or command.name in ("publish", "spublish")

    def hold(self, conn: Connection) -> None:
        self._held[conn] = None

    def unpause(self) -> None:
        """End CLIENT PAUSE: held connections run what they were sent, in order."""
        self.paused_until = 0.0
        self.pause_writes_only = False
        if self._unpause_timer is not None:
            self._unpause_timer.cancel()
            self._unpause_timer = None
        held, self._held = self._held, {}
        for conn in held:
            conn.resume()

    def apply_setting(self, name: bytes, value: bytes, *, from_peer: bool = False) -> None:
        """A CONFIG SET another process of this data directory made: apply it here too
        (unless this process changed that setting itself, for one that just joined)."""
        from engramdb.server.settings import SettingError, config_set

        if from_peer and name in self.changed_settings and self.changed_settings[name] == value:
            return
        try:
            config_set(self, [(name, value)])
        except (KeyError, SettingError) as e:
            log.warning("could not apply a peer's CONFIG SET %r: %s", name, e)
            return
        self.changed_settings[name] = value

    def reset_stats(self) -> None:
        """CONFIG RESETSTAT: INFO counts from now on (``/metrics`` keeps growing)."""
        self.stats_baseline = Baseline.take(self)

    def set_idle_timeout(self, seconds: float) -> None:
        """CONFIG SET timeout: 0 keeps idle connections."""
        self.idle_timeout = seconds
        if seconds > 0 and self._idle_task is None:
            self._idle_task = asyncio.get_running_loop().create_task(self._close_idle())
        elif seconds <= 0 and self._idle_task is not None:
            self._idle_task.cancel()
            self._idle_task = None

    async def _close_idle(self) -> None:
        while True:
            timeout = self.idle_timeout
            # Checked a few times per timeout (at most once a second): a connection is
            # closed between ``timeout`` and ``timeout + check`` seconds after its last
            # request.
            await asyncio.sleep(min(1.0, timeout / 4))
            now = self.now()
            for conn in list(self.connections):
                idle_for = now - conn.last_active
                if idle_for >= timeout:
                    conn.close_idle(idle_for)

    # work off the loop -------------------------------------------------------------------

    def submit_write(
        self, plan: WriteFn, conn: Connection, slot: Any, then: Callable[[Any], Any]
    ) -> None:
        if self._commit_on_loop:
            # Nothing to wait for on disk: commit the writes of this loop iteration together,
            # on the loop itself, after the reads it is serving (no thread hop).
            batch = self._loop_batch
            if not batch:
                self._call_soon(self._commit_loop_batch)
            batch.append((plan, conn, slot, then))
            return
        # Group commit, run by the loop: writes queue while a commit is on the committer
        # thread; when it is back, the next commit takes everything queued (in order, one
        # commit at a time, so a client's writes land in the order it sent them). Not
        # ``Database._submit``: that costs a lock, an object and a callback per write.
        queue = self._sync_queue
        queue.append((plan, conn, slot, then))
        if self._committing:
            return
        if self._linger is not None:
            if len(queue) < self._linger_for:
                return  # the writers of the last commit are not all back yet
            self._linger.cancel()
            self._linger = None
        if not self._start_scheduled:
            # Started once this loop turn has read every ready socket: a commit started at
            # the turn's first write would hold that write alone (one fsync for it), and
            # the rest of the turn's writes would wait a whole commit for the next.
            self._start_scheduled = True
            self._call_soon(self._start_commit)

    def _start_commit(self) -> None:
        self._start_scheduled = False
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._committing or not self._sync_queue:
            return
        queue = self._sync_queue
        batch = queue[:_MAX_BATCH]
        del queue[:_MAX_BATCH]
        if self._commit_here():
            self.commits_on_loop += 1
            self._committed(batch, *self._run_batch(self.db, batch))
            return
        self.commits_on_thread += 1
        self._committing = True
        if self._committer is None:
            self._committer = threading.Thread(
                target=self._commit_thread, name="engramdb-commit-server", daemon=True
            )
            self._committer.start()
        self._commit_jobs.put((self.db, batch))

    def _commit_here(self) -> bool:
        """Whether the next durable commit runs on the loop, as Redis' ``appendfsync always``
        does, rather than on the committer thread.

        On the loop a commit costs no thread handoff either way: 50 clients of durable SETs
        alone made about 33k SET/s against 28.6k on the thread (and 23-25 against 31 µs of
        server CPU per SET). But the loop then waits out the fsync, and so does every other
        client: GETs beside those 50 writers fell from 24k/s (p99 0.8 ms) on the thread to
        6k/s (p99 1.5 ms). So the loop commits only while it has served nothing but durable writes
        for ``_WRITES_ONLY_FOR`` seconds, and while fsyncs are quick: a read, or a disk that
        stalls, sends commits back to the thread, where the loop keeps answering."""
        if self._last_took > _QUICK_COMMIT or not self._local:
            return False  # a PostgreSQL commit is a round trip: never on the loop
        now = time.monotonic()
        if self.served != self._served_seen:
            self._served_seen = self.served
            self._served_at = now
            return False
        return now - self._served_at > _WRITES_ONLY_FOR

    def _commit_thread(self) -> None:
        """The committer: runs each batch in one transaction and one fsync, then hands the
        outcomes to the loop in one callback (one GIL handoff per batch, not per write)."""
        loop = self._loop
        assert loop is not None
        while True:
            job = self._commit_jobs.get()
            if job is None:
                return
            db, batch = job
            loop.call_soon_threadsafe(self._committed, batch, *self._run_batch(db, batch))

    def _run_batch(self, db: Database, batch: list[Any]) -> tuple[list[Any], list[Any], float]:
        """One batch in one transaction and one fsync: (values, errors, seconds it took)."""
        began = time.perf_counter()
        try:
            with self._commit_lock:
                values, errors = db._commit.run_batch([item[0] for item in batch])
        except BaseException as e:  # the commit path failed itself: fail the batch
            values, errors = [None] * len(batch), [e] * len(batch)
        return values, errors, time.perf_counter() - began

    def _committed(
        self, batch: list[Any], values: list[Any], errors: list[Any], took: float
    ) -> None:
        """A durable batch is back: answer it, a slice per loop turn, and start the next
        commit once the writers of this one are back (or the linger ends).

        The next commit waits (at most about twice as long as this one took) for this
        batch's writers to send their next writes, joining those queued meanwhile: one
        commit and one fsync for all the clients, rather than two alternating halves with an
        fsync each. A lone client waits for nothing: its next write is all there is."""
        self._committing = False
        self._last_took = took
        self._completed.extend(zip(batch, values, errors))
        want = len(self._sync_queue) + len(batch)
        if want > 1 and not self._start_scheduled and self._linger is None:
            assert self._loop is not None
            self._linger_for = want
            linger = min(_LINGER_MAX, max(_LINGER_MIN, 2 * took))
            self._linger = self._loop.call_later(linger, self._start_commit)
        if not self._completions_scheduled:
            self._deliver_completions()

    def _deliver_completions(self) -> None:
        self._completions_scheduled = False
        completed = self._completed
        if self.tracker.clients:
            self.tracker.after_commit()  # invalidations queued before the replies
        # A big batch is delivered a slice per loop turn, polling the sockets in between.
        for _ in range(min(len(completed), _COMPLETIONS_PER_TURN)):
            (_, conn, slot, then), value, error = completed.popleft()
            conn.complete(slot, True, then, value, error)
        if completed:
            self._completions_scheduled = True
            self._call_soon(self._deliver_completions)

    def end_turn_later(self, conn: Connection) -> None:
        """Call ``conn.end_turn()`` at the end of this loop turn (with all others).

        Like Redis' beforeSleep: replies written at once wake the client, which sends its
        next command before we poll again, so each poll finds fewer sockets ready. Writing
        after the reads keeps more work per poll (measured: +40% SET throughput). The
        callback runs before the next poll; whatever a connection runs there is again
        followed by a poll of every other socket.
        """
        turned = self._turned
        if not turned:
            self._call_soon(self._end_turn)
        turned.append(conn)

    def _end_turn(self) -> None:
        turned, self._turned = self._turned, []
        # Every reply of the turn goes out before any connection runs its next budget.
        more = [conn for conn in turned if conn.end_turn()]
        for conn in more:
            conn.continue_turn()

    def _commit_loop_batch(self) -> None:
        batch, self._loop_batch = self._loop_batch, []
        values, errors = self.db._commit.run_batch([item[0] for item in batch])
        self.inflight -= len(batch)  # ``Connection.complete`` of each, in one step
        if self.tracker.clients:
            self.tracker.after_commit()  # invalidations queued before the replies
        for (_, conn, slot, then), value, error in zip(batch, values, errors):
            conn.settle(slot, True, then, value, error)

    def in_thread(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn`` on the slow-work threads (for the server's own background tasks)."""
        assert self._loop is not None
        return self._loop.run_in_executor(self._executor, fn)

    def offload(
        self, fn: Callable[[], Any], conn: Connection, slot: Any, then: Callable[[Any], Any]
    ) -> None:
        loop = self._loop
        assert loop is not None
        future = loop.run_in_executor(self._executor, fn)

        def finished(f: asyncio.Future[Any]) -> None:
            error = f.exception()
            if self.tracker.clients:
                self.tracker.after_commit()  # an offloaded write's invalidations first
            conn.complete(slot, False, then, None if error else f.result(), error)

        future.add_done_callback(finished)

    # testing hooks -----------------------------------------------------------------------

    def reset(self, options: dict[str, Any]) -> None:
        """Wipe the database and reopen it with ``options`` (``--testing`` only)."""
        import shutil

        if _is_url(self.config.data):
            raise InvalidArgument("reset wipes a local database only, not a postgresql:// one")
        self.reclaimer.stop()
        with self._commit_lock:  # not while the committer thread has a write open on it
            self.db.close()
        shutil.rmtree(self.config.data, ignore_errors=True)
        if self.clock is not None:
            self.clock.set(options.pop("clock_start", time.time()))
        limits = options.pop("limits", None)
        if limits is not None:
            options["limits"] = engramdb.Limits(**limits)
        try:
            self.db = self._open_db(**options)
        except Exception:
            self.db = self._open_db()  # never leave the server without a database
            raise
        self.records = self.db.records(self.config.default_set)
        self.reclaimer = self._reclaimer()
        self.reclaimer.start()
        self.scan_cursors.close()
        self.scan_cursors = CursorTable(self.config.data)
        self.notifier.rebase()
        self.tracker.rebase()
        if self.bus is not None:  # its socket went with the directory
            self.bus.close()
            self.bus = Bus(self, self.config.data)
            self._restarting = asyncio.ensure_future(self.bus.start())
        for conn in self.connections:
            conn.db = self.db
            conn.records = self.records
            conn.db_index = 0

    # introspection -----------------------------------------------------------------------

    def saturation(self) -> dict[str, float]:
        stats = self.db.stats()
        return {
            "inflight": self.inflight,
            "connections": len(self.connections),
            "group_commit_queue": stats["saturation"]["group_commit_queue"] + len(self._sync_queue),
            "event_loop_lag_seconds": self.stats.loop_lag_s,
            "map_use_ratio": stats["saturation"]["map_use_ratio"] or 0.0,
            "changelog_length": stats["saturation"]["changelog_length"],
        }


def _not_started(*args: Any) -> Any:
    raise RuntimeError("the server has not started")


def run_server(
    config: ServerConfig,
    *,
    ready: Callable[[Server], None] | None = None,
    sock: socket.socket | None = None,
    worker: int = 0,
) -> int:
    """Run until SIGTERM/SIGINT, then drain and exit. Returns the process exit status.

    ``sock``, ``worker``: a worker process of ``--workers`` (see workers.py) serves on the
    supervisor's listening socket."""
    import uvloop

    # Importing the handlers fills the command table.
    from engramdb.server import handlers  # noqa: F401

    async def main() -> None:
        server = Server(config, sock=sock, worker=worker)
        try:
            await server.start()
        except BaseException:
            await server.shutdown()  # the database is open: close it before the error shows
            raise
        # Everything loaded so far lives as long as the process: keep it out of the
        # collector's full scans, which hold the GIL for as long as they take.
        gc.freeze()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.shutdown()))
        if ready is not None:
            ready(server)
        await server.wait_closed()

    # The loop takes the GIL back for every callback. Behind a thread running Python (a
    # group commit, a big MSET, a search) each take waits up to the switch interval: 5 ms
    # by default, several times per request. 0.5 ms keeps that wait out of the tail.
    sys.setswitchinterval(_SWITCH_INTERVAL)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(main())
    return 0
