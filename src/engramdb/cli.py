"""The ``engramdb`` command. Thin: each command opens the database, calls one public method,
prints the result, and maps ``EngramError`` to a one-line message and exit status 1."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
from rich.console import Console
from rich.table import Table

import engramdb
from engramdb.errors import EngramError

P = ParamSpec("P")
R = TypeVar("R")

console = Console()


DEFAULT_DATA = "./engramdb-data"

# The flag that moves each socket serve binds, for the one-line "in use" message.
_PORT_FLAGS = {"port": "--port", "metrics port": "--metrics-port"}


def _fail(message: str) -> NoReturn:
    """Print one line on stderr and exit 1: what a user did wrong needs no traceback."""
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(1)


def _clean_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Map what a user can cause (an ``EngramError``, a port in use, a path the system
    refuses) to one line on stderr and exit status 1; bugs keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from engramdb.server.config import CannotListen

        try:
            return fn(*args, **kwargs)
        except CannotListen as e:
            flag = _PORT_FLAGS[e.what]
            off = " (or 0 to turn /metrics off)" if e.what == "metrics port" else ""
            if e.in_use:
                _fail(
                    f"{e.what} {e.port} on {e.host} is already in use (another engramdb serve "
                    f"or Redis?): choose another with {flag}{off}"
                )
            _fail(f"{e}: choose another with {flag}{off} or --host")
        except EngramError as e:
            _fail(f"{type(e).__name__}: {e}")
        except OSError as e:
            where = f": {e.filename}" if e.filename else ""
            _fail(f"{e.strerror or e}{where}")

    return wrapper


# What engramdb itself keeps in a data directory (LMDB's two files, index snapshots, the
# offline feature log, the servers' pub/sub sockets and SCAN cursor table).
_OWN_ENTRIES = frozenset({"data.mdb", "lock.mdb", "indexes", "features", "pubsub", "scan-cursors"})


def _check_data_directory(data: str) -> None:
    """Refuse, in one line, a ``--data`` that is a file or a directory of something else
    (serving it would scatter database files among the user's own)."""
    if not os.path.exists(data):
        return
    if not os.path.isdir(data):
        _fail(f"--data {data} is a file, not a database directory")
    theirs = sorted(set(os.listdir(data)) - _OWN_ENTRIES)
    if theirs and not os.path.exists(os.path.join(data, "data.mdb")):
        _fail(
            f"--data {data} holds other files ({', '.join(theirs[:3])}"
            f"{', ...' if len(theirs) > 3 else ''}) and no engramdb database: give a new or "
            "empty directory"
        )
    _check_unlocked(data)


def _check_unlocked(directory: str, wait: float = 3.0) -> None:
    """Fail in one line, instead of hanging, while another process holds the database's
    ``lock.mdb`` exclusively (LMDB's open waits for it forever). A process opening the
    database holds it for a moment, so this waits ``wait`` seconds first. Only the CLI does
    this, before the process opens the database: closing a descriptor of ``lock.mdb`` drops
    every lock the process holds on it, LMDB's own included."""
    import fcntl
    import time

    try:
        fd = os.open(os.path.join(directory, "lock.mdb"), os.O_RDWR)
    except OSError:
        return  # no lock file yet, or one we cannot open: opening the database says so
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                # Byte 0 only: the one LMDB's open locks exclusively. Each process using
                # the database also holds the byte at its pid, which is no obstacle.
                fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, 0, os.SEEK_SET)
                return
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() > deadline:
                _fail(
                    f"{directory} is locked: another process holds its lock.mdb exclusively "
                    "(an LMDB tool, or a process stuck opening it); stop it and try again"
                )
            time.sleep(0.05)
    finally:
        os.close(fd)


def _database_at(target: str) -> str:
    """``target`` if it names a database to read (a URL, or a directory holding one);
    otherwise a one-line error, and nothing is created."""
    if "://" in target:
        return target
    if not os.path.exists(target):
        _fail(
            f"no database at {target}: give the directory `engramdb serve --data` uses "
            f"(default {DEFAULT_DATA}) or an engramdb:// URL"
        )
    if not os.path.isdir(target):
        _fail(f"{target} is a file, not a database directory")
    if not os.path.exists(os.path.join(target, "data.mdb")):
        _fail(f"{target} holds no engramdb database (no data.mdb in it)")
    _check_unlocked(target)
    return target


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
DEFAULT_MAX_FRAME_TEXT = "2M"


def _size(text: str, flag: str) -> int:
    """``"32M"`` → 33554432 (K, M, G are powers of 1024)."""
    raw = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (raw[:-1], raw[-1]) if raw[-1:] in _UNITS else (raw, "")
    try:
        return int(float(number) * _UNITS[unit])
    except ValueError:
        raise click.BadParameter(
            f"not a size: {text!r} (e.g. 4194304, 512K, 32M)", param_hint=flag
        ) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """engramdb: the operational data tier for AI inference and agents."""


@main.command()
def version() -> None:
    """Print the engramdb version."""
    click.echo(engramdb.__version__)


@main.command()
@click.argument("target", default=DEFAULT_DATA)
@click.option("--json", "as_json", is_flag=True, help="Print the raw stats as JSON.")
@_clean_errors
def stats(target: str, as_json: bool) -> None:
    """Show record counts, storage use and change-log figures of the database at TARGET: a
    directory (default ./engramdb-data, as for serve) or an engramdb:// or postgresql:// URL."""
    target = _database_at(target)
    db: Any
    if "://" in target and not target.startswith(("postgresql://", "postgres://")):
        db = engramdb.connect(target)
    else:
        db = engramdb.open(target, durability="none", sweep_interval=None)
    with db:
        figures = db.stats()
        sets = figures["sets"]
    if as_json:
        click.echo(json.dumps(figures, indent=2, default=str))
        return
    _print_stats(_where(target), figures, sets)


@main.command()
@click.option(
    "--data",
    default=DEFAULT_DATA,
    show_default=True,
    help="Database directory, or a postgresql://h1:p1,h2:p2/db URL (extra 'postgres'): many "
    "servers may serve one PostgreSQL database.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=7379, show_default=True, type=int, help="RESP port.")
@click.option(
    "--metrics-port",
    default=9379,
    show_default=True,
    type=int,
    help="Prometheus /metrics port (0 disables it).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address /metrics listens on (it has no authentication; loopback unless set here).",
)
@click.option(
    "--password",
    envvar="ENGRAMDB_PASSWORD",
    default=None,
    help="Require AUTH with this password (env ENGRAMDB_PASSWORD). Mandatory off loopback.",
)
@click.option(
    "--durability",
    type=click.Choice(["sync", "async", "none"]),
    default="sync",
    show_default=True,
    help="sync: acknowledge after fsync; async: flush every second.",
)
@click.option(
    "--max-clients",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Connections beyond this get '-ERR max number of clients reached'. The open-file "
    "limit is raised to fit at start (lowered, and logged, if the hard limit is too low).",
)
@click.option(
    "--idle-timeout",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Close connections idle (no request, nothing in progress) for this many seconds; "
    "0 keeps them (pooled clients hold idle connections on purpose).",
)
@click.option(
    "--max-frame",
    default=DEFAULT_MAX_FRAME_TEXT,
    show_default=True,
    help="Largest request argument accepted, in bytes (suffixes K, M, G): a value, or a "
    "whole call of the Python client. A bigger one is refused with an error naming this "
    "limit; the client raises RequestTooLarge.",
)
@click.option(
    "--max-record-bytes",
    default="1M",
    show_default=True,
    help="Largest encoded record, in bytes (suffixes K, M, G); writes over it raise "
    "RecordTooBig. Raise --max-frame with it: a record travels in one request.",
)
@click.option(
    "--max-inflight",
    default=4096,
    show_default=True,
    type=int,
    help="Writes and slow reads in progress before new ones get -BUSY.",
)
@click.option(
    "--embedder",
    type=click.Choice(["hash", "minilm"]),
    default="hash",
    show_default=True,
    help="How memory calls embed text (minilm needs the 'embeddings' extra).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Server processes sharing the port and the data directory (one event loop, one "
    "core each). Per worker: CLIENT LIST/KILL, SLOWLOG, INFO counters, /metrics (worker 0), "
    "the script cache; CLIENT PAUSE and MONITOR are refused with more than one.",
)
@click.option("--testing", is_flag=True, hidden=True, help="Enable ENGRAM.DEBUG (tests only).")
@click.option("--quiet", is_flag=True, help="Print nothing on start; log warnings only.")
@_clean_errors
def serve(
    data: str,
    host: str,
    port: int,
    metrics_port: int,
    metrics_host: str,
    password: str | None,
    durability: str,
    max_clients: int,
    idle_timeout: float,
    max_frame: str,
    max_record_bytes: str,
    max_inflight: int,
    embedder: str,
    workers: int,
    testing: bool,
    quiet: bool,
) -> None:
    """Serve the database in DATA over the Redis protocol (redis-cli and redis-py work)."""
    import logging

    if "://" not in data:
        _check_data_directory(data)

    from engramdb.server.app import Server, run_server
    from engramdb.server.config import ServerConfig, frame_limits, listen

    # Both ports are claimed (or refused) before the database opens: a port in use must not
    # leave a new, empty data directory behind. /metrics is only probed: its server binds
    # its own socket once the database is open.
    sock = listen(host, port) if workers == 1 else None
    if metrics_port:
        listen(metrics_host, metrics_port, "metrics port").close()

    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = ServerConfig(
        data=data,
        host=host,
        port=port,
        metrics_port=metrics_port or None,
        metrics_host=metrics_host,
        password=password,
        durability=durability,  # type: ignore[arg-type]
        max_clients=max_clients,
        idle_timeout=idle_timeout,
        limits=frame_limits(_size(max_frame, "--max-frame")),
        max_record_bytes=_size(max_record_bytes, "--max-record-bytes"),
        max_inflight=max_inflight,
        embedder=embedder,
        testing=testing,
        processes=workers,
    )

    def ready(port: int) -> None:
        if quiet:
            return
        auth = ":PASSWORD@" if password else ""
        click.echo(
            f"engramdb {engramdb.__version__} serving {_where(data)} "
            f"on {host}:{port} (durability={durability}"
            + (f", {workers} workers" if workers > 1 else "")
            + (
                f", metrics at http://{metrics_host}:{metrics_port}/metrics)"
                if metrics_port
                else ")"
            )
        )
        click.echo(f'  python:  db = engramdb.connect("engramdb://{auth}{host}:{port}")')
        click.echo(f"  shell:   redis-cli -p {port} ping")
        sys.stdout.flush()

    if workers > 1:
        from engramdb.server.workers import run_workers

        sys.exit(run_workers(config, ready=ready))

    def announce(server: Server) -> None:
        ready(server.port)

    sys.exit(run_server(config, ready=announce, sock=sock))


@main.command()
@click.argument("target", required=False, default="")
@click.option("--rate", default=1000.0, show_default=True, help="Requests per second (open loop).")
@click.option("--duration", default=10.0, show_default=True, help="Seconds per load phase.")
@click.option(
    "--workload",
    type=click.Choice(["A", "B", "C", "F"]),
    default="A",
    show_default=True,
    help="YCSB mix: A 50/50, B 95/5, C read-only, F read-modify-write.",
)
@click.option(
    "--report", "report_dir", default="audit-report", show_default=True, help="Output directory."
)
@click.option(
    "--managed",
    is_flag=True,
    help="Start the server (engramdb or redis-server) and kill -9 it mid-load.",
)
@click.option(
    "--durability", type=click.Choice(["sync", "async", "none"]), default="sync", show_default=True
)
@click.option(
    "--appendfsync", default="everysec", show_default=True, help="Managed Redis' appendfsync."
)
@click.option("--workers", default=2, show_default=True, help="Load-generating processes.")
@click.option("--search", is_flag=True, help="Also find the highest rate whose p99 meets the SLO.")
@click.option("--slo-ms", default=5.0, show_default=True, help="p99 latency SLO in ms.")
@click.option(
    "--sections",
    default="latency,burst,consistency,availability,observability",
    show_default=True,
    help="Comma-separated sections to run.",
)
@click.option(
    "--allow-writes",
    is_flag=True,
    help="Audit a target that already holds data (the audit still writes only under its own "
    "namespace and removes it at the end).",
)
@click.option(
    "--cluster-dir",
    type=click.Path(file_okay=False),
    help="A cluster `engramdb cluster up` started: the availability section injects faults "
    "into it (TARGET defaults to its URL). Needs --allow-faults.",
)
@click.option(
    "--allow-faults",
    is_flag=True,
    help="Let the availability section kill -9 the leader node of --cluster-dir, switch its "
    "leader over and stop a replica, under load (clients see outages meanwhile).",
)
@click.option(
    "--faults",
    default="leader_kill,switchover,scale_in",
    show_default=True,
    help="Comma-separated faults to inject into --cluster-dir.",
)
@_clean_errors
def audit(
    target: str,
    rate: float,
    duration: float,
    workload: str,
    report_dir: str,
    managed: bool,
    durability: str,
    appendfsync: str,
    workers: int,
    search: bool,
    slo_ms: float,
    sections: str,
    allow_writes: bool,
    cluster_dir: str | None,
    allow_faults: bool,
    faults: str,
) -> None:
    """Measure TARGET (a path, default ./engramdb-data as for serve; engramdb://host:port,
    redis://host:port or postgresql://...) against the five production guarantees: tail
    latency, burst, consistency, availability, observability.

    What it writes: test records only under its own namespace, fresh per run (the set
    engramdb-audit-<run> of an engramdb target, keys engramdb-audit-<run>:* on Redis),
    deleted at the end, after a failure or Ctrl-C too; it never flushes a database. A target
    that already holds data is refused unless --allow-writes. On an engramdb target every
    write and deletion also appends a change-log entry, which cannot be removed (a database
    directory the audit created is removed whole). --managed runs against the audit's own
    server on a temporary directory: nothing of yours is touched. --cluster-dir DIR
    --allow-faults audits a cluster `engramdb cluster up` started in DIR and, in the
    availability section, kills its leader node, switches over and removes a replica under
    load, healing the cluster after each.
    """
    if not target and cluster_dir is None:
        target = DEFAULT_DATA  # as serve and stats: refused if it holds data (--allow-writes)
    import signal

    from engramdb.audit.report import fault_table, summary_table, write_reports
    from engramdb.audit.runner import AuditConfig, Thresholds, run_audit

    config = AuditConfig(
        target=target,
        rate=rate,
        duration=duration,
        workload=workload,
        workers=workers,
        managed=managed,
        durability=durability,
        search=search,
        sections=tuple(s.strip() for s in sections.split(",") if s.strip()),
        thresholds=Thresholds(p99_ms=slo_ms),
        redis_appendfsync=appendfsync,
        allow_writes=allow_writes,
        cluster_dir=cluster_dir,
        allow_faults=allow_faults,
        faults=tuple(f.strip() for f in faults.split(",") if f.strip()),
    )

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C

    signal.signal(signal.SIGTERM, interrupted)
    with _audit_progress() as (progress, notice, stop):
        try:
            report = run_audit(config, progress=progress, notice=notice)
        except KeyboardInterrupt:
            stop()
            click.echo("interrupted: no report", err=True)
            sys.exit(130)
    console.print(summary_table(report))
    faulted = fault_table(report)
    if faulted is not None:
        console.print(faulted)
    paths = write_reports(report, report_dir)
    click.echo(f"wrote {paths['json']} and {paths['html']}")
    sys.exit(0 if report["pass"] else 3)


@contextlib.contextmanager
def _audit_progress() -> Iterator[tuple[Callable[[str], None], Callable[[str], None], Any]]:
    """``(progress, notice, stop)`` for the audit: a spinner on a terminal; otherwise (a log
    file, CI, a pipe) one plain line per step with the seconds elapsed, so a long run shows
    where it is."""
    if console.is_terminal:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("starting", total=None)
            yield (
                lambda message: bar.update(task, description=message),
                lambda line: bar.console.print(line, markup=False, highlight=False),
                bar.stop,
            )
        return
    import time

    started = time.monotonic()
    last: list[str] = []

    def progress(message: str) -> None:
        if last != [message]:  # a step reported again is not news
            last[:] = [message]
            click.echo(f"[{time.monotonic() - started:6.1f} s] {message}")

    yield progress, click.echo, lambda: None


def _where(data: str) -> str:
    """What ``--data`` names, for humans: the directory, or the URL without credentials."""
    if "://" in data:
        return re.sub(r"://[^@/]*@", "://", data.partition("?")[0])
    return os.path.abspath(data)


@main.group()
def cluster() -> None:
    """Run a local replicated cluster: etcd and Patroni-managed PostgreSQL nodes with
    pgvector and strict synchronous replication, for development, tests and demos.

    Needs the 'cluster' extra (pip install 'engramdb[cluster]') and etcd
    (apt-get install -y etcd-server etcd-client). Run as root, its processes run as the
    unprivileged user 'engramdb' (PostgreSQL refuses root); set ENGRAMDB_RUNTIME_DIR to move
    where that user's copies of the binaries are kept (default /var/cache/engramdb).
    """


_CLUSTER_DIR = click.option(
    "--dir",
    "directory",
    default="./engramdb-cluster",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory holding the cluster's data, logs and state.",
)


def _cluster(directory: str, nodes: int | None = None, *, existing: bool = False) -> Any:
    from engramdb.cluster import Cluster

    runtime = os.environ.get("ENGRAMDB_RUNTIME_DIR")
    options: dict[str, Any] = {"runtime_dir": Path(runtime) if runtime else None}
    if existing:
        return Cluster.open(directory, **options)
    return Cluster(directory, nodes=nodes, **options)


@cluster.command("up")
@_CLUSTER_DIR
@click.option(
    "--nodes",
    type=click.IntRange(1, 9),
    help="PostgreSQL nodes (default 3; a single node has no standby, so no synchronous "
    "replication and no failover).",
)
@click.option(
    "--timeout", default=180.0, show_default=True, help="Seconds to wait for a healthy cluster."
)
@_clean_errors
def cluster_up(directory: str, nodes: int | None, timeout: float) -> None:
    """Start etcd and the PostgreSQL nodes in --dir (or restart the ones already there),
    wait for a leader and a synchronous standby, and print the engine URL on stdout."""
    import time

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    handle = _cluster(directory, nodes)
    handle.timeout = timeout
    started = time.monotonic()
    err = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("preparing", total=None)
        try:
            url = handle.up(progress=lambda message: bar.update(task, description=message))
        except KeyboardInterrupt:
            bar.stop()
            click.echo(
                f"interrupted: processes may still be starting; stop them with: "
                f"engramdb cluster down --dir {directory}",
                err=True,
            )
            sys.exit(130)
    err.print(
        f"cluster up in {time.monotonic() - started:.1f} s: {handle.nodes} nodes in "
        f"{handle.directory}"
    )
    err.print(_members_table(handle.members()))
    click.echo(f'  python:  db = engramdb.open("{url}")', err=True)
    click.echo(f"  status:  engramdb cluster status --dir {directory}", err=True)
    click.echo(f"  stop:    engramdb cluster down --dir {directory}", err=True)
    click.echo(url)


@cluster.command("status")
@_CLUSTER_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@_clean_errors
def cluster_status(directory: str, as_json: bool) -> None:
    """Show each node's role, state, timeline, lag, ports and process ids (from Patroni's
    REST API), and etcd's. Exits 1 when the cluster is not healthy."""
    from engramdb.cluster import Member

    handle = _cluster(directory, existing=True)
    figures = handle.status()
    if as_json:
        click.echo(json.dumps(figures, indent=2))
    else:
        console.print(_members_table([Member(**m) for m in figures["nodes"]]))
        etcd = figures["etcd"]
        console.print(
            f"etcd: port {etcd['client_port']}, pid {etcd['pid'] or '-'}, "
            f"{'healthy' if etcd['healthy'] else 'NOT healthy'}"
        )
        click.echo(f"engine URL: {figures['url']}")
        if figures["problem"] is not None:
            click.echo(f"not healthy: {figures['problem']}")
    sys.exit(0 if figures["problem"] is None else 1)


@cluster.command("down")
@_CLUSTER_DIR
@click.option("--wipe", is_flag=True, help="Also delete the directory (data, logs, state).")
@click.option(
    "--timeout", default=20.0, show_default=True, help="Seconds before SIGTERM becomes SIGKILL."
)
@_clean_errors
def cluster_down(directory: str, wipe: bool, timeout: float) -> None:
    """Stop every process the cluster in --dir started (Patroni, PostgreSQL, etcd)."""
    handle = _cluster(directory, existing=True)
    stopped = handle.down(wipe=wipe, timeout=timeout)
    removed = f" and removed {handle.directory}" if wipe else ""
    click.echo(f"stopped {len(stopped)} processes{removed}")


def _members_table(members: list[Any]) -> Table:
    table = Table(show_edge=False)
    for column in ("node", "role", "state", "TL", "lag", "ports pg/REST", "pids patroni/pg"):
        table.add_column(column, no_wrap=True)
    for m in members:
        table.add_row(
            m.name, m.role, m.state, str(m.timeline or "-"),
            "-" if m.lag is None else f"{m.lag:,} B", f"{m.pg_port}/{m.rest_port}",
            f"{m.patroni_pid or '-'}/{m.postgres_pid or '-'}",
        )  # fmt: skip
    return table


def _print_stats(path: str, figures: dict[str, Any], sets: dict[str, int]) -> None:
    engine = figures["engine"]
    table = Table(title=f"engramdb at {path}", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("records stored", f"{engine['records_stored']:,}")
    if "records_with_ttl" in engine:
        table.add_row("records with a TTL", f"{engine['records_with_ttl']:,}")
    if "map_size_bytes" in engine:  # LMDB's figures; a PostgreSQL engine has none
        table.add_row(
            "map used",
            f"{engine['map_used_bytes'] / 2**20:,.1f} MiB of "
            f"{engine['map_size_bytes'] / 2**30:,.1f} GiB ({engine['map_use_ratio']:.2%})",
        )
        table.add_row("readers in use", f"{engine['readers_used']} of {engine['readers_max']}")
    log = figures["changelog"]
    table.add_row(
        "change log",
        f"{figures['saturation']['changelog_length']:,} entries "
        f"(sequence {log['first_sequence']:,}..{log['last_sequence']:,})",
    )
    console.print(table)
    if sets:
        per_set = Table(title="sets")
        per_set.add_column("set")
        per_set.add_column("live records", justify="right")
        for name, count in sets.items():
            per_set.add_row(name, f"{count:,}")
        console.print(per_set)


if __name__ == "__main__":
    main()
