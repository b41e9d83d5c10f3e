"""``engramdb serve --workers N``: N server processes over one port and one data directory.

A Python process runs its event loop on one core; workers put the others to use. The
supervisor (the process the command started) claims the port, then forks the workers before
anything opens the database (an LMDB handle must not cross a fork). Each worker is a whole
server (event loop, group commit, sweeper, reclaimer) listening on a socket of its own in
one ``SO_REUSEPORT`` group (see ``_reserve``); the kernel spreads new connections evenly
across them, and a connection stays on its worker for its whole life.

Across workers (they are one database, as servers started side by side on one directory):
- Data: LMDB serialises the workers' write transactions and every committed write is seen
  by every worker at once. A client's read runs on its own worker after its own writes are
  acknowledged, so it sees them. Group commit batches each worker's writes (one commit and
  one fsync per batch per worker).
- Shared: WATCH (it compares generations stored in the database), keyspace notifications
  (from the change log), PUBLISH and CONFIG SET (the pub/sub bus of ``bus.py``), SCAN
  cursors (their table lives in the data directory).
- Per worker: CLIENT LIST/INFO/KILL (a connection is listed by the worker serving it;
  client ids are unique across workers: worker ``i`` of ``N`` issues ``i+1, i+1+N, ...``),
  SLOWLOG, INFO's counters, ``/metrics`` (served by worker 0, with its own figures), the
  script cache (EVALSHA of a script loaded through another worker's connection answers
  NOSCRIPT; redis-py's ``Script`` then sends EVAL), and blocked clients: a push made on
  another worker wakes a BLPOP within ``blocking.POLL_SECONDS`` rather than at once.
- Refused: ``CLIENT PAUSE`` and ``MONITOR``, which would silently cover one worker only.

Supervision: SIGTERM or SIGINT to the supervisor drains every worker, then it exits. A
worker that dies is started again (at most once a second); a worker that dies before it
first listened stops the whole server, exit status 1 (a broken data directory would
otherwise restart for ever). A ``kill -9`` of the supervisor takes the workers with it
(``PR_SET_PDEATHSIG``): nothing keeps serving behind a supervisor that is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from engramdb.server.config import ServerConfig

__all__ = ["run_workers"]

log = logging.getLogger("engramdb.server")

_PR_SET_PDEATHSIG = 1
_RESTART_INTERVAL = 1.0  # seconds between two starts of one worker
_START_TIMEOUT = 120.0


def _reserve(host: str, port: int) -> socket.socket:
    """The port for the workers, checked free and held: bound with ``SO_REUSEPORT`` but never
    listened on, so it takes no connections and keeps the port while workers restart.

    Each worker listens on a socket of its own in the same ``SO_REUSEPORT`` group, and the
    kernel spreads new connections evenly across them. On one shared listening socket the
    first worker to wake accepted everything queued (libuv accepts until the backlog is
    empty): redis-benchmark's 50 connections split 41 to 9. The cost: connections still
    waiting in a worker's own backlog when it dies are reset, as with nginx's reuseport."""
    from engramdb.server.config import CannotListen, listen

    # A plain bind first: it fails on a port any other server holds, even another
    # engramdb's SO_REUSEPORT group (which would otherwise take us in and split its clients
    # with a different data directory).
    probe = listen(host, port)
    port = int(probe.getsockname()[1])
    probe.close()
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    held = socket.socket(family, socket.SOCK_STREAM)
    try:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind((host, port))
    except OSError as e:
        held.close()
        raise CannotListen("port", host, port, e) from None
    return held


def _own_listener(held: socket.socket) -> socket.socket:
    """A worker's listening socket, in ``held``'s ``SO_REUSEPORT`` group."""
    host, port = held.getsockname()[:2]
    return socket.create_server((host, port), family=held.family, backlog=1024, reuse_port=True)


def _die_with(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _worker(config: ServerConfig, held: socket.socket, index: int, ready_fd: int) -> NoReturn:
    """The body of a forked worker: serve until told to stop, then exit (never return into
    the supervisor's code)."""
    status = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        from engramdb.server.app import Server, run_server

        def ready(server: Server) -> None:
            if ready_fd >= 0:
                os.write(ready_fd, b".")

        sock = _own_listener(held)
        held.close()
        status = run_server(config, ready=ready, sock=sock, worker=index)
    except BaseException:
        log.exception("worker %d failed", index)
    finally:
        logging.shutdown()
        os._exit(status)


def run_workers(config: ServerConfig, *, ready: Callable[[int], None] | None = None) -> int:
    """Serve with ``config.processes`` worker processes; returns the exit status.

    ``ready(port)`` is called once every worker listens."""
    config.check()
    count = config.processes
    held = _reserve(config.host, config.port)
    port = int(held.getsockname()[1])
    config = replace(config, port=port)
    me = os.getpid()
    children: dict[int, int] = {}  # pid -> worker index
    started_at: dict[int, float] = {}  # worker index -> when it was last started
    stopping = False
    ready_r, ready_w = os.pipe()

    def spawn(index: int, announce: bool) -> None:
        started_at[index] = time.monotonic()
        pid = os.fork()
        if pid == 0:  # never returns into this function
            try:
                if announce:
                    os.close(ready_r)
                _die_with(me)
            except BaseException:
                os._exit(1)
            _worker(config, held, index, ready_w if announce else -1)
        children[pid] = index

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(count):
        spawn(index, announce=True)
    os.close(ready_w)
    # Every worker says when it listens; one that exits first fails the start.
    listening = 0
    deadline = time.monotonic() + _START_TIMEOUT
    while listening < count and not stopping:
        readable, _, _ = select.select([ready_r], [], [], 0.05)
        if readable:
            listening += len(os.read(ready_r, count))
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid or time.monotonic() > deadline:
            if pid:
                children.pop(pid, None)
                log.error("a worker exited at start (status %d): stopping", status)
            else:
                log.error("the workers did not start in %.0f s: stopping", _START_TIMEOUT)
            stop(signal.SIGTERM, None)
            _reap(children)
            return 1
    os.close(ready_r)
    # The supervisor keeps ``held`` (never listened on) so restarted workers find the port.
    if ready is not None and not stopping:
        ready(port)
    worst = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in children:
            continue
        index = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            worst = max(worst, code if code > 0 else 0)
            continue
        log.warning("worker %d (pid %d) exited (status %d): starting it again", index, pid, code)
        wait = started_at[index] + _RESTART_INTERVAL - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if not stopping:
            try:
                spawn(index, False)
            except OSError as e:
                log.error("could not start worker %d again: %s", index, e)
    return worst


def _reap(children: dict[int, int]) -> None:
    for pid in list(children):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        children.pop(pid, None)
