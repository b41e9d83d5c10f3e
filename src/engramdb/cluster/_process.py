"""Processes of a local cluster: start them detached, find them again, stop them.

Rules: a process is only ever signalled by its id, and only after ``/proc/<pid>/cmdline``
shows it is the one we started (ids are reused after a reboot or a crash, and a stale
``cluster.json`` must never make ``down`` kill a stranger). A process found that way owns
its descendants (postgres backends), which are stopped with it. Linux only, like the rest
of the cluster tooling.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "alive",
    "descendants",
    "free_ports",
    "kill_tree",
    "matches",
    "port_in_use",
    "signal_all",
    "spawn",
    "stop",
    "wait_exec",
]


def alive(pid: int | None) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not reaped, does not count)."""
    if pid is None or pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the command name, which may itself hold spaces and ")".
    return stat[stat.rindex(")") + 2 :][:1] not in ("Z", "X")


def matches(pid: int | None, marker: str) -> bool:
    """Whether ``pid`` is alive and its command line mentions ``marker`` (a path we chose)."""
    if not alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return marker.encode() in cmdline


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def descendants(pids: Iterable[int]) -> list[int]:
    """Every live descendant of ``pids`` (not the pids themselves)."""
    children = _children_map()
    found: list[int] = []
    todo = list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.append(child)
                todo.append(child)
    return [pid for pid in found if alive(pid)]


def signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop(
    pids: Sequence[int], *, timeout: float, reap: Iterable[subprocess.Popen[Any]] = ()
) -> None:
    """SIGTERM ``pids`` (already checked to be ours), wait up to ``timeout``, then SIGKILL
    them and every descendant still running. ``reap`` are our own children among them,
    waited for so they do not linger as zombies."""
    waitable = list(reap)
    signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in waitable:
            child.poll()
        if not any(alive(pid) for pid in pids):
            break
        time.sleep(0.1)
    kill_tree([pid for pid in pids if alive(pid)], reap=waitable)


def kill_tree(pids: Sequence[int], *, reap: Iterable[subprocess.Popen[Any]] = ()) -> None:
    """kill -9 ``pids`` and all their descendants at once, as a crash would."""
    family = [*pids, *descendants(pids)]
    signal_all(family, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    waitable = list(reap)
    while time.monotonic() < deadline:
        for child in waitable:
            child.poll()
        if not any(alive(pid) for pid in family):
            return
        time.sleep(0.02)


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    cwd: Path,
    env: dict[str, str],
) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached from our session (it outlives ``engramdb cluster up`` and
    ignores the terminal's Ctrl-C), its output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )


def wait_exec(child: subprocess.Popen[Any], marker: str, timeout: float = 10.0) -> None:
    """Wait until ``child`` runs the program whose command line holds ``marker`` (it may
    start through ``setpriv``, which then execs it) or has exited."""
    deadline = time.monotonic() + timeout
    while not matches(child.pid, marker) and child.poll() is None:
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now (held open together while
    choosing, so none is picked twice)."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            held.append(sock)
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers themselves bind: a port left in TIME_WAIT is free to them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False
