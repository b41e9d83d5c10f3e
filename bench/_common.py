"""Helpers shared by the comparative benchmarks in ``bench/``.

Every benchmark script runs as ``python bench/<name>.py`` from the repository root, so this
module is imported as ``_common`` (``bench/`` is the script's directory, hence on sys.path).

What lives here, so every benchmark measures and reports the same way:

- ``measure``: the one timing harness. Each call is timed with ``perf_counter_ns`` around the
  call alone; the same loop drives engramdb and every peer, so harness overhead is equal.
  ``measure_interleaved`` runs that same loop over several sides taking turns, and
  ``measure_samples`` returns that loop's raw samples (to pool or cut them before ``Stats``).
- ``Stats``: exact nearest-rank percentiles (p50/p99/p999) and ops/s of a measured loop.
- ``machine_info``: CPU, cores, RAM, OS, Python, package and server versions, date.
- ``RedisServer``: a throwaway ``redis-server`` on a free 127.0.0.1 port, always stopped.
- ``EngramServer``: a throwaway ``engramdb serve`` subprocess, likewise.
- ``process_cpu_seconds``: CPU time a process (all its threads) has used, from ``/proc``.
- ``Report``: what a run found (headline checks, tables, notes, the machine), saved as
  ``bench/results/<script>.json`` for ``bench/render.py``, which publishes BENCHMARKS.md.
  ``missing`` / ``skip``: a peer that is not installed is left out with the reason printed.
- ``redis_peer`` / ``add_redis_args``: the Redis side of a comparison (servers, redis-py
  clients, or why not); ``served``: ``engramdb serve`` plus one client of it.
- ``$ENGRAMDB_BENCH_RESULTS`` redirects every result (smoke runs, the tests).
- ``clustered_vectors``, ``exact_top_k`` and ``recall_at_k``: synthetic embedding-like data
  and exact nearest-neighbour ground truth for the vector benchmarks.
- ``wait_for_quiet``: wait (bounded) for the machine's load average to drop before a run.
- ``Watched`` and ``rss_kib``: a subprocess with a wall-time and memory bound whose peak RSS
  is watched (for peers run in their own interpreter, and clean memory measurements).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import datetime as dt
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

import numpy as np
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"


# statistics --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """Latency distribution and throughput of one measured loop.

    Percentiles are exact nearest-rank over every sample (no histogram rounding). ``ops_s`` is
    calls divided by the wall time of the measured loop (harness overhead included, progress
    display excluded).
    """

    n: int
    wall_s: float
    ops_s: float
    mean_us: float
    p50_us: float
    p99_us: float
    p999_us: float
    max_us: float

    @classmethod
    def from_samples(cls, samples_ns: Sequence[int] | np.ndarray, wall_ns: int) -> Stats:
        a = np.sort(np.asarray(samples_ns, dtype=np.int64))
        n = int(a.size)
        if n == 0:
            raise ValueError("no samples")

        def pct(q: float) -> float:
            return float(a[max(0, math.ceil(q * n) - 1)]) / 1000

        wall_s = wall_ns / 1e9
        return cls(
            n=n,
            wall_s=wall_s,
            ops_s=n / wall_s if wall_s > 0 else float("inf"),
            mean_us=float(a.mean()) / 1000,
            p50_us=pct(0.50),
            p99_us=pct(0.99),
            p999_us=pct(0.999),
            max_us=float(a[-1]) / 1000,
        )

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


# harness -----------------------------------------------------------------------------------


def new_progress() -> Progress:
    """A rich progress display that never redraws on its own.

    ``auto_refresh=False`` means no background refresh thread competing for the GIL while a
    loop is being timed; ``measure`` redraws between batches of calls, outside the timings.
    """
    return Progress(
        TextColumn("[progress.description]{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        auto_refresh=False,
        transient=False,
    )


@dataclass
class Meter:
    """Where ``measure`` reports progress: a rich ``Progress`` and its task (or nothing)."""

    progress: Progress | None = None
    task: TaskID | None = None
    _last: float = field(default=0.0, repr=False)

    def start(self, description: str, total: int) -> None:
        if self.progress is not None:
            self.task = self.progress.add_task(description, total=total)
            self.progress.refresh()
            self._last = time.monotonic()

    def advance(self, n: int, *, force: bool = False) -> None:
        if self.progress is None or self.task is None:
            return
        self.progress.update(self.task, advance=n)
        now = time.monotonic()
        if force or now - self._last >= 0.25:
            self.progress.refresh()
            self._last = now


def measure(
    fn: Callable[[T], object],
    args: Sequence[T],
    *,
    warmup: Sequence[T] = (),
    meter: Meter | None = None,
    description: str = "",
    batch: int = 512,
) -> Stats:
    """Call ``fn(arg)`` for each of ``args`` and time every call on its own.

    ``warmup`` args are run first through the same loop and discarded. Before the timed loop
    the collector runs and every object alive is frozen (``gc.freeze``), so garbage collection
    stays on but only walks objects created while measuring, never the benchmark's own
    dataset; every side of a comparison goes through this same function.
    """
    return Stats.from_samples(
        *measure_samples(fn, args, warmup=warmup, meter=meter, description=description, batch=batch)
    )


def measure_samples(
    fn: Callable[[T], object],
    args: Sequence[T],
    *,
    warmup: Sequence[T] = (),
    meter: Meter | None = None,
    description: str = "",
    batch: int = 512,
) -> tuple[np.ndarray, int]:
    """``measure``, but returns ``(per-call ns, wall ns)`` instead of ``Stats``, for a loop
    measured in parts whose samples are pooled afterwards."""
    sides = [(fn, args, warmup)]
    return measure_interleaved_samples(
        sides, rounds=1, meter=meter, description=description, batch=batch
    )[0]


def measure_interleaved_samples(
    sides: Sequence[tuple[Callable[[Any], object], Sequence[Any], Sequence[Any]]],
    *,
    rounds: int = 20,
    meter: Meter | None = None,
    description: str = "",
    batch: int = 512,
) -> list[tuple[np.ndarray, int]]:
    """``measure_interleaved``'s loop, returning each side's ``(per-call ns, wall ns)``.

    For sides whose samples are combined afterwards (a step's calls into several systems,
    one of them timed in its own process, added per step before ``Stats``).
    """
    meter = meter or Meter()
    meter.start(description, sum(len(args) + len(warm) for _, args, warm in sides))
    for fn, _, warm in sides:
        _run(fn, warm, meter, batch, None)
    gc.collect()
    gc.freeze()
    try:
        samples = [np.empty(len(args), dtype=np.int64) for _, args, _ in sides]
        walls = [0] * len(sides)
        for r in range(rounds):
            for k, (fn, args, _) in enumerate(sides):
                lo, hi = len(args) * r // rounds, len(args) * (r + 1) // rounds
                if hi > lo:
                    walls[k] += _run(fn, args[lo:hi], meter, batch, samples[k][lo:hi])
    finally:
        gc.unfreeze()
    meter.advance(0, force=True)
    return list(zip(samples, walls))


def measure_interleaved(
    sides: Sequence[tuple[Callable[[Any], object], Sequence[Any], Sequence[Any]]],
    *,
    rounds: int = 20,
    meter: Meter | None = None,
    description: str = "",
    batch: int = 512,
) -> list[Stats]:
    """``measure`` for several sides at once, taking turns; one ``Stats`` per side.

    Each side is ``(fn, args, warmup)``. Warmups run first, then each side's args are cut
    into ``rounds`` slices and the sides run slice by slice in turn, through the same loop as
    ``measure``. On a shared machine the load drifts over seconds; taking turns makes the
    drift fall on every side alike instead of on whichever ran during a bad moment.
    """
    return [
        Stats.from_samples(a, w)
        for a, w in measure_interleaved_samples(
            sides, rounds=rounds, meter=meter, description=description, batch=batch
        )
    ]


def _run(
    fn: Callable[[T], object],
    args: Sequence[T],
    meter: Meter,
    batch: int,
    samples: np.ndarray | None,
) -> int:
    """The timed loop; returns wall ns of the calls (progress redraws excluded)."""
    clock = time.perf_counter_ns
    lat = [0] * batch
    wall = 0
    for lo in range(0, len(args), batch):
        chunk = args[lo : lo + batch]
        i = 0
        began = clock()
        for arg in chunk:
            t0 = clock()
            fn(arg)
            lat[i] = clock() - t0
            i += 1
        wall += clock() - began
        if samples is not None:
            samples[lo : lo + i] = lat[:i]
        meter.advance(i)
    return wall


def add_sizes(parser: argparse.ArgumentParser, full: Any, quick: Any) -> None:
    """One ``--<field>`` option per field of the sizes dataclass ``full`` (``quick``: its
    ``--quick`` values, shown in the help); ``sizes_from`` reads them back."""
    for f in dataclasses.fields(full):
        a, b = getattr(full, f.name), getattr(quick, f.name)
        shown = [f"{x:,}" if isinstance(x, int | float) else x for x in (a, b)]
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(a), default=None,
                            help=f"default {shown[0]}, --quick {shown[1]}")  # fmt: skip


def sizes_from(args: argparse.Namespace, full: T, quick: T) -> T:
    """The sizes of this run: ``--quick``'s or the full ones, with every option given."""
    base: Any = quick if args.quick else full
    given = {
        f.name: v for f in dataclasses.fields(base) if (v := getattr(args, f.name)) is not None
    }
    return dataclasses.replace(base, **given)  # type: ignore[no-any-return]


def busy_loop(n: int) -> int:
    """Pure-Python work with no I/O and no allocation beyond small ints."""
    x = 0
    for i in range(n):
        x += i
    return x


def calibrate_busy_loop(target_us: float) -> int:
    """Iterations of ``busy_loop`` whose median call takes about ``target_us``."""
    clock = time.perf_counter_ns
    n = 64
    for _ in range(3):
        lat = []
        for _ in range(2000):
            t0 = clock()
            busy_loop(n)
            lat.append(clock() - t0)
        median_us = sorted(lat)[len(lat) // 2] / 1000
        n = max(1, round(n * target_us / max(median_us, 1e-3)))
    return n


# formatting --------------------------------------------------------------------------------


def fmt_us(us: float) -> str:
    if us >= 10_000:
        return f"{us / 1000:,.1f} ms"
    if us >= 100:
        return f"{us:,.0f}"
    if us >= 10:
        return f"{us:.1f}"
    return f"{us:.2f}"


def fmt_ratio(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def stats_cells(st: Stats) -> list[str]:
    """p50, p99, p999 (µs, as ``fmt_us``) and ops/s of a measured loop: the usual columns."""
    return [fmt_us(st.p50_us), fmt_us(st.p99_us), fmt_us(st.p999_us), f"{st.ops_s:,.0f}"]


# results -----------------------------------------------------------------------------------


def missing(*modules: str, hint: str = "pip install -e '.[bench]'") -> str | None:
    """Why a peer cannot run here (the first of ``modules`` not installed), or None."""
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            return f"{module} is not installed ({hint})"
    return None


def skip(reason: str) -> int:
    """Print why this benchmark has nothing to run here; the exit status python -m bench counts."""
    print(f"skipped: {reason}")
    return SKIPPED


SKIPPED = 77  # exit status of a script with nothing to run here (python -m bench counts it)


@dataclass
class Report:
    """What one run of a benchmark found: ``save()`` writes ``bench/results/<script>.json``.

    ``bench/render.py`` turns it into the area's section of BENCHMARKS.md: ``check`` rows go
    to the headline table, published tables to the section, everything to the JSON. A quick
    run saves under ``bench/results/quick/`` and never replaces a measurement.
    """

    area: str
    script: str
    title: str
    summary: str
    quick: bool
    machine: dict[str, str]
    about: str = ""
    headline: list[dict[str, str]] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, str]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def check(
        self,
        comparison: str,
        peer: str,
        measured: str,
        target: str = "—",
        passed: bool | None = None,
    ) -> None:
        result = "" if passed is None else "PASS" if passed else "FAIL"
        self.headline.append(
            {"comparison": comparison, "peer": peer, "measured": measured, "target": target,
             "result": result}
        )  # fmt: skip

    def table(
        self,
        title: str,
        headers: Sequence[str],
        rows: Sequence[Sequence[object]],
        align: str = "",
        *,
        text: str = "",
        publish: bool = True,
    ) -> None:
        self.tables.append(
            {"title": title, "text": text, "headers": list(headers), "align": align,
             "rows": [[str(c) for c in row] for row in rows], "publish": publish}
        )  # fmt: skip

    def note(self, title: str, text: str) -> None:
        self.notes.append({"title": title, "text": text})

    def show(self) -> None:
        """The run's headline and tables on stdout, as the page will show them."""
        from render import table  # bench/render.py, beside this module

        rows = [[h["comparison"], h["peer"], h["measured"], h["target"], h["result"]]
                for h in self.headline]  # fmt: skip
        if rows:
            print(table({"headers": ["comparison", "peer", "measured", "target", "result"],
                         "rows": rows}))  # fmt: skip
        for t in self.tables:
            print(f"\n{t['title']}\n{table(t)}")

    def save(self) -> Path:
        """Write the JSON; a full run into bench/results/ also re-renders BENCHMARKS.md."""
        self.show()
        override = os.environ.get("ENGRAMDB_BENCH_RESULTS")
        folder = Path(override) if override else RESULTS_DIR / ("quick" if self.quick else "")
        path = folder / f"{self.script}.json"
        data = {"schema": 1, "command": f"python bench/{self.script}.py", **asdict(self)}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {path}")
        if path.parent == RESULTS_DIR:
            subprocess.run([sys.executable, "-m", "bench.render"], cwd=REPO_ROOT, check=False)
        return path


# the machine -------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _cpu() -> tuple[str, int | None, bool]:
    """(model name, physical cores or None, running under a hypervisor)."""
    text = _read("/proc/cpuinfo")
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in text.splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or platform.machine(),
    )
    cores: set[tuple[str, str]] = set()
    phys = core = ""
    for line in [*text.splitlines(), ""]:
        if line.startswith("physical id"):
            phys = line.split(":", 1)[1].strip()
        elif line.startswith("core id"):
            core = line.split(":", 1)[1].strip()
        elif not line.strip() and core:
            cores.add((phys, core))
            phys = core = ""
    hypervisor = bool(re.search(r"^flags\s*:.*\bhypervisor\b", text, re.MULTILINE))
    return model, (len(cores) or None), hypervisor


def _ram_gib() -> float | None:
    match = re.search(r"^MemTotal:\s+(\d+) kB", _read("/proc/meminfo"), re.MULTILINE)
    return int(match.group(1)) / (1 << 20) if match else None


def _os_name() -> str:
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', _read("/etc/os-release"), re.MULTILINE)
    name = match.group(1) if match else platform.system()
    return f"{name}, kernel {platform.release()}"


def _filesystem(path: str) -> str:
    """Filesystem type and device holding ``path`` (fsync cost depends on it)."""
    best = ("", "", "")
    target = os.path.realpath(path)
    for line in _read("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        device, mount, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best[1]):
            best = (device, mount, fstype)
    return f"{best[2]} on {best[0]} (mounted at {best[1]})" if best[2] else "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info(
    packages: Sequence[str] = (),
    *,
    data_dir: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A description of this machine and software for a benchmark report (strings only)."""
    model, physical, hypervisor = _cpu()
    logical = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    cores = f"{logical} logical"
    if physical:
        cores += f", {physical} physical"
    if usable != logical:
        cores += f", {usable} usable by this process"
    ram = _ram_gib()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    info = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model + (" (virtual machine)" if hypervisor else ""),
        "cores": cores,
        "ram": f"{ram:.1f} GiB" if ram else "unknown",
        "os": _os_name(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }
    if load is not None:
        info["load average at start"] = " ".join(f"{x:.2f}" for x in load)
    if data_dir is not None:
        info["data directory"] = f"{data_dir}: {_filesystem(data_dir)}"
    for package in packages:
        info[package] = _version(package)
    info.update(extra or {})
    return info


# redis-server ------------------------------------------------------------------------------


class RedisUnavailable(RuntimeError):
    """redis-server is not installed or would not start."""


def find_redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    for candidate in ("/usr/bin/redis-server", "/usr/sbin/redis-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def redis_server_version(executable: str) -> str:
    try:
        out = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise RedisUnavailable(f"{executable} --version failed: {e}") from e
    match = re.search(r"v=(\S+)", out)
    return match.group(1) if match else out.strip()


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the benchmark dies without cleaning up."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so context managers (servers, temp dirs) clean up."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command(port: int, *args: str, timeout: float = 1.0) -> bytes:
    """Send one RESP command and return the first reply chunk (no redis-py needed)."""
    frame = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args
    )
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(frame)
        return s.recv(4096)


class _Served:
    """A server subprocess on a free 127.0.0.1 port that answers a RESP ``PING``. Use as a
    context manager: it is stopped (SIGTERM, then SIGKILL) on exit, whatever happened inside."""

    host = "127.0.0.1"
    port = 0
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def _launch(
        self, argv: Callable[[], list[str]], log_path: str, timeout: float, attempts: int
    ) -> str:
        """Start ``argv()`` (a new port each attempt) until it answers; '' or its log's tail."""
        last = ""
        for _ in range(attempts):
            self.port = _free_port()
            with open(log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    argv(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._proc.poll() is None:
                with contextlib.suppress(OSError):
                    if _command(self.port, "PING").startswith(b"+PONG"):
                        return ""
                time.sleep(0.02)
            last = _read(log_path)[-2000:]
            _Served.stop(self)
        return last or "(no log)"


class RedisServer(_Served):
    """A private ``redis-server`` on a free 127.0.0.1 port, in a temporary directory.

    Persistence is off (``--save "" --appendonly no``: Redis's defaults minus RDB snapshots),
    so it never fsyncs on a write. The directory is removed on exit too.
    """

    ARGS: tuple[str, ...] = ("--save", "", "--appendonly", "no")

    def __init__(
        self,
        executable: str | None = None,
        *,
        extra_args: Sequence[str] = (),
        parent: str | None = None,
    ) -> None:
        """``extra_args`` follow ``ARGS`` (a later directive wins); ``parent`` is where the
        temporary directory goes (default: the system's temp dir)."""
        found = executable or find_redis_server()
        if found is None:
            raise RedisUnavailable(
                "redis-server is not installed (Debian: apt install redis-server)"
            )
        self.executable = found
        self.version = redis_server_version(found)
        self.args = (*self.ARGS, *extra_args)
        self._dir: str | None = None
        self._parent = parent

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, *, timeout: float = 10.0, attempts: int = 3) -> None:
        self._dir = folder = tempfile.mkdtemp(prefix="engramdb-bench-redis-", dir=self._parent)
        log = os.path.join(folder, "redis.log")

        def argv() -> list[str]:
            return [self.executable, "--port", str(self.port), "--bind", self.host,
                    "--dir", folder, "--logfile", log, "--daemonize", "no", *self.args]  # fmt: skip

        if failed := self._launch(argv, log, timeout, attempts):
            self.stop()
            raise RedisUnavailable(f"redis-server did not start:\n{failed}")

    def command(self, *args: str) -> bytes:
        return _command(self.port, *args)

    def stop(self) -> None:
        """Stop the server (SHUTDOWN NOSAVE, then SIGTERM, then SIGKILL) and clean up."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(OSError):
                _command(self.port, "SHUTDOWN", "NOSAVE")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
        super().stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


# engramdb serve ----------------------------------------------------------------------------


class EngramUnavailable(RuntimeError):
    """``engramdb serve`` would not start."""


class EngramServer(_Served):
    """A private ``engramdb serve`` subprocess on a free 127.0.0.1 port.

    Serves ``data`` (created if missing) with the given durability and no metrics port. The
    data directory is the caller's to remove.
    """

    def __init__(
        self,
        data: str,
        *,
        durability: str = "sync",
        extra_args: Sequence[str] = (),
        executable: Sequence[str] | None = None,
    ) -> None:
        found = shutil.which("engramdb")
        self.command = list(
            executable or ([found] if found else [sys.executable, "-m", "engramdb.cli"])
        )
        self.data = data
        self.durability = durability
        self.extra_args = tuple(extra_args)
        self.log_path = os.path.join(
            os.path.dirname(os.path.abspath(data)), f"{os.path.basename(data)}.log"
        )

    @property
    def url(self) -> str:
        return f"engramdb://{self.host}:{self.port}"

    @property
    def argv(self) -> list[str]:
        """The command line, for reports (port and data directory elided)."""
        return [
            "engramdb", "serve", "--data", "DIR", "--port", "PORT", "--metrics-port", "0",
            "--durability", self.durability, *self.extra_args,
        ]  # fmt: skip

    def start(self, *, timeout: float = 30.0, attempts: int = 3) -> None:
        def argv() -> list[str]:
            return [*self.command, "serve", "--data", self.data, "--host", self.host,
                    "--port", str(self.port), "--metrics-port", "0",
                    "--durability", self.durability, "--quiet", *self.extra_args]  # fmt: skip

        if failed := self._launch(argv, self.log_path, timeout, attempts):
            raise EngramUnavailable(f"engramdb serve did not start:\n{failed}")

    def command_reply(self, *args: str, timeout: float = 1.0) -> bytes:
        return _command(self.port, *args, timeout=timeout)


@dataclass
class RedisPeer:
    """The Redis side of a comparison: private servers and their redis-py clients (one per
    configuration), or none and ``note`` says why."""

    servers: list[RedisServer] = field(default_factory=list)
    clients: list[Any] = field(default_factory=list)
    note: str = "Redis: not available"
    parser: str = ""
    machine: dict[str, str] = field(default_factory=dict)


def add_redis_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis peer")
    parser.add_argument("--redis-server", help="redis-server executable (default: on PATH)")


def redis_peer(
    stack: contextlib.ExitStack,
    configs: Sequence[Sequence[str]] = ((),),
    *,
    args: argparse.Namespace | None = None,
    parent: str | None = None,
    **client: Any,
) -> RedisPeer:
    """Start one ``RedisServer`` per configuration (its ``extra_args``) and a redis-py client
    of each (RESP2, hiredis when installed) on ``stack``. ``args`` are those of
    ``add_redis_args``. Whatever is missing leaves the peer empty, the reason in ``note``."""
    peer = RedisPeer()
    executable = getattr(args, "redis_server", None)
    if getattr(args, "no_redis", False):
        peer.note = "Redis: skipped (--no-redis)"
        return peer
    why = missing("redis") or (
        None if executable or find_redis_server() else "redis-server not installed"
    )
    if why:
        peer.note = f"Redis: not available ({why})"
        print(peer.note)
        return peer
    try:
        for extra in configs:
            peer.servers.append(
                stack.enter_context(RedisServer(executable, extra_args=extra, parent=parent))
            )
    except RedisUnavailable as e:
        peer.note = f"Redis: not available ({str(e).splitlines()[0]})"
        print(peer.note)
        peer.servers = []
        return peer
    import redis

    for server in peer.servers:
        peer.clients.append(
            stack.enter_context(redis.Redis(host=server.host, port=server.port, protocol=2,
                                            **client))
        )  # fmt: skip
    first = peer.servers[0]
    peer.parser = "hiredis" if redis.utils.HIREDIS_AVAILABLE else "pure-Python parser"
    peer.machine = {
        "redis-server": f"{first.version} ({first.executable})",
        "redis-py parser": peer.parser,
    }
    quoted = " ".join('""' if a == "" else a for a in first.args)
    peer.note = (
        f"Redis {first.version} (`redis-server {quoted}` on 127.0.0.1), redis-py "
        f"{redis.__version__} with {peer.parser}"
    )
    return peer


@contextlib.contextmanager
def served(
    path: str, durability: str = "sync", extra_args: Sequence[str] = (), **connect: Any
) -> Iterator[tuple[EngramServer, Any]]:
    """``engramdb serve`` on ``path`` and one ``engramdb.connect`` client of it; both closed
    on exit (the data directory is the caller's)."""
    import engramdb

    with EngramServer(path, durability=durability, extra_args=extra_args) as server:
        client = engramdb.connect(server.url, **connect)
        try:
            yield server, client
        finally:
            client.close()


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` (all threads); None if unknown."""
    if pid is None:
        return None
    text = _read(f"/proc/{pid}/stat")
    if not text:
        return None
    # Fields after the parenthesised command name (which may itself hold spaces).
    fields = text.rsplit(")", 1)[-1].split()
    try:
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    except (IndexError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def temp_dir(prefix: str, parent: str | None = None) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# vector data -------------------------------------------------------------------------------


def clustered_vectors(
    n: int, dim: int, *, clusters: int = 100, rank: int = 64, seed: int = 1
) -> np.ndarray:
    """``n`` unit-norm float32 vectors that look like embeddings, not like uniform noise.

    ``clusters`` overlapping Gaussian clusters, each spread over its own random
    ``rank``-dimensional subspace with a power-law spectrum, plus isotropic noise (the
    generator of ``bench/vector_libs.py``). Rows are drawn independently, so any slice of the
    result (e.g. held-out queries) comes from the same distribution as the rest.
    """
    rng = np.random.default_rng(seed)
    rank = min(rank, dim)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    spectrum = (1.0 / np.sqrt(np.arange(1, rank + 1))).astype(np.float32)
    assign = rng.integers(0, clusters, n)
    x = np.empty((n, dim), dtype=np.float32)
    for c in range(clusters):
        rows = np.flatnonzero(assign == c)
        basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0].astype(np.float32)
        z = rng.standard_normal((rows.size, rank)).astype(np.float32) * spectrum
        noise = rng.standard_normal((rows.size, dim)).astype(np.float32)
        x[rows] = centers[c] + z @ basis.T + noise * np.float32(0.5 / math.sqrt(dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def exact_top_k(
    queries: np.ndarray,
    base: np.ndarray,
    k: int,
    *,
    masks: Sequence[np.ndarray] = (),
    chunk: int = 128,
) -> list[np.ndarray]:
    """Exact top-``k`` ids by inner product, best first: ``[unfiltered, *one per mask]``.

    Each mask is a boolean (n,) array of admissible base rows. Queries go ``chunk`` at a time
    so the (queries x n) score matrix never has to fit in memory at once. Rows with fewer
    than ``k`` admissible ids are padded with -1.
    """
    nq = len(queries)
    wanted: list[np.ndarray | None] = [None, *masks]
    out = [np.full((nq, k), -1, dtype=np.int64) for _ in wanted]
    for lo in range(0, nq, chunk):
        scores = queries[lo : lo + chunk] @ base.T
        for j, mask in enumerate(wanted):
            ids = np.arange(base.shape[0]) if mask is None else np.flatnonzero(mask)
            sub = scores[:, ids]
            take = min(k, ids.size)
            if take == 0:
                continue
            top = np.argpartition(-sub, take - 1, axis=1)[:, :take]
            order = np.argsort(-np.take_along_axis(sub, top, axis=1), axis=1, kind="stable")
            out[j][lo : lo + chunk, :take] = ids[np.take_along_axis(top, order, axis=1)]
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` (ids, -1 = none) that ``found`` contains."""
    valid = truth >= 0
    hits = ((found[:, :, None] == truth[:, None, :]) & valid[:, None, :]).any(axis=1)
    per_row = valid.sum(axis=1)
    return float(hits.sum() / max(1, per_row.sum()))


# the machine's load ------------------------------------------------------------------------


def wait_for_quiet(
    threshold: float,
    timeout_s: float,
    *,
    poll_s: float = 15.0,
    report: Callable[[str], None] | None = None,
) -> tuple[bool, float]:
    """Wait until the 1-minute load average is below ``threshold``, at most ``timeout_s``.

    Returns ``(quiet, load)``: whether it got quiet in time, and the last load seen. A
    benchmark on a shared machine calls this first and records the answer in its report.
    """
    if not hasattr(os, "getloadavg"):
        return True, 0.0
    deadline = time.monotonic() + timeout_s
    while True:
        load = os.getloadavg()[0]
        if load < threshold:
            return True, load
        if time.monotonic() >= deadline:
            return False, load
        if report is not None:
            report(f"load average {load:.2f} >= {threshold}; waiting…")
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


# watched subprocesses ----------------------------------------------------------------------


def rss_kib(pid: int | str = "self") -> tuple[int, int]:
    """(current RSS, peak RSS) of process ``pid`` in KiB (``VmRSS``, ``VmHWM``); 0 if gone."""
    found = {"VmRSS": 0, "VmHWM": 0}
    for line in _read(f"/proc/{pid}/status").splitlines():
        key, _, value = line.partition(":")
        if key in found:
            found[key] = int(value.split()[0])
    return found["VmRSS"], found["VmHWM"]


def available_kib() -> int:
    """``MemAvailable`` of this machine in KiB (0 if unknown)."""
    match = re.search(r"^MemAvailable:\s+(\d+) kB", _read("/proc/meminfo"), re.MULTILINE)
    return int(match.group(1)) if match else 0


@dataclass(frozen=True)
class WatchedResult:
    """How a watched subprocess ended. ``reason`` is empty when it exited 0."""

    returncode: int | None
    seconds: float
    peak_rss_kib: int  # the largest VmHWM seen while it ran (it may report its own, exact)
    reason: str

    @property
    def ok(self) -> bool:
        return not self.reason


class Watched:
    """A subprocess bounded in wall time and resident memory, its peak RSS watched.

    ``start`` launches it (output to ``log_path``; it gets SIGTERM if the benchmark dies);
    ``wait`` polls it every ``poll_s`` seconds, calling ``tick(elapsed_s)`` so the caller
    can redraw a progress display, and kills it (SIGKILL) when it runs past ``timeout_s``
    or its RSS passes ``max_rss_kib``. Peers that could take the whole machine (or never
    finish) run this way so one bad size cannot sink the run.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: str,
        timeout_s: float | None = None,
        max_rss_kib: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.timeout_s = timeout_s
        self.max_rss_kib = max_rss_kib
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.peak_rss_kib = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._began = 0.0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> Watched:
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                preexec_fn=_die_with_parent,
            )
        self._began = time.monotonic()
        return self

    def wait(
        self, tick: Callable[[float], None] | None = None, *, poll_s: float = 0.25
    ) -> WatchedResult:
        proc = self._proc
        if proc is None:
            raise RuntimeError("start() the process first")
        reason = ""
        while True:
            elapsed = time.monotonic() - self._began
            _, peak = rss_kib(proc.pid)
            self.peak_rss_kib = max(self.peak_rss_kib, peak)
            if proc.poll() is not None:
                break
            if self.timeout_s is not None and elapsed > self.timeout_s:
                reason = f"killed after {self.timeout_s:.0f} s (time limit)"
            elif self.max_rss_kib is not None and peak > self.max_rss_kib:
                reason = f"killed at {peak / (1 << 20):.1f} GiB RSS (memory limit)"
            if reason:
                self.kill()
                break
            if tick is not None:
                tick(elapsed)
            time.sleep(poll_s)
        seconds = time.monotonic() - self._began
        code = proc.wait()
        if not reason and code != 0:
            reason = f"exit code {code}" + (" (killed: out of memory?)" if code == -9 else "")
        return WatchedResult(code, seconds, self.peak_rss_kib, reason)

    def kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def log_tail(self, chars: int = 2000) -> str:
        return _read(self.log_path)[-chars:]


# --- from benchC: a peer in its own virtualenv (Feast, Mem0), driven by a JSON spec


@dataclass
class PeerRun:
    """What a process started by ``start_peer`` wrote (``data``), or why it did not (``note``)."""

    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def peer_python(python: str, probe: str) -> tuple[str | None, str]:
    """``(python, what python -c probe printed)``, or ``(None, why not)``: a peer whose pins
    could change engramdb's packages runs in its own virtualenv, never imported here."""
    if not os.access(python, os.X_OK):
        return None, f"{python} missing"
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True,
                              timeout=300, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"{python} cannot run `{probe}`: {e}"
    return python, done.stdout.strip()


def start_peer(
    argv: Sequence[str], spec: Mapping[str, Any], work: str, name: str, **watch: Any
) -> Callable[[Progress, str], PeerRun]:
    """Start ``argv SPEC.json OUT.json`` (files ``name.*`` in ``work``) as a ``Watched``
    process (``watch``: its bounds, env, cwd); the function returned waits for the JSON it
    writes, showing ``description`` on ``progress`` meanwhile."""
    spec_path, out = Path(work, f"{name}.spec.json"), Path(work, f"{name}.out.json")
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    out.unlink(missing_ok=True)
    proc = Watched([*argv, str(spec_path), str(out)], log_path=str(Path(work, f"{name}.log")),
                   **watch).start()  # fmt: skip

    def finish(progress: Progress, description: str) -> PeerRun:
        task = progress.add_task(description, total=None)  # the peer reports no progress
        progress.refresh()

        def tick(elapsed: float) -> None:
            progress.update(task, description=f"{description} ({elapsed:.0f} s)")
            progress.refresh()

        done = proc.wait(tick)
        if not done.ok or not out.exists():
            note = done.reason or "no result written"
            progress.console.print(f"[yellow]{description}: {note}[/yellow]", proc.log_tail(600))
            return PeerRun(False, note=note)
        return PeerRun(True, json.loads(out.read_text(encoding="utf-8")))

    return finish


# --- from pass2b: a latency with its unit, for the check strings of features.py and memory.py


def fmt_lat(us: float) -> str:
    """``fmt_us`` with its unit: "12.3 µs" or "4.56 ms"."""
    text = fmt_us(us)
    return text if text.endswith("ms") else f"{text} µs"
