"""What Redis tools ask a server about itself: INFO, COMMAND, MEMORY, SLOWLOG, MONITOR,
LATENCY, OBJECT, MODULE and LOLWUT.

- INFO takes Redis' sections (``server clients memory persistence stats replication cpu
  modules errorstats cluster keyspace``, plus ``commandstats`` and ``latencystats``, and
  ``default``/``all``/``everything``) and engramdb's own (``saturation``, ``indexes``), in
  any number and case (``commandstats`` is part of the default set here). Fields keep
  Redis' names and meanings; a figure engramdb does not track is left out rather than
  invented (``keyspace_hits``...), and those it has that Redis lacks are added
  (``inflight``, ``group_commit_queue``...).
- ``CONFIG RESETSTAT`` zeroes what INFO reports (counters, commandstats, errorstats,
  latencystats) without touching ``/metrics``, whose counters must only grow: INFO shows
  the difference from the figures taken at the reset.
- COMMAND describes the command table as registered (``commands.py``): arity, flags, key
  positions, ACL categories and a group derived from the handler's module, the summary from
  its docstring, and subcommands from ``subcommands.py``. No second table to keep in sync.
"""

from __future__ import annotations

import gc
import os
import platform
import resource
import secrets
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import engramdb
from engramdb.observability.metrics import bucket_upper_ns
from engramdb.protocol.resp import SimpleString, Verbatim
from engramdb.server.commands import COMMANDS, Command, Reply, command
from engramdb.server.handlers.admin import OK, REDIS_VERSION, last_save
from engramdb.server.handlers.pattern import compile_pattern
from engramdb.server.handlers.subcommands import CONTAINERS, Container, Subcommand
from engramdb.server.handlers.values import key_of, kind_of

if TYPE_CHECKING:
    from engramdb.server.app import Server
    from engramdb.server.connection import Connection

__all__ = ["render_info"]

_RUN_ID = secrets.token_hex(20)  # per process, as Redis
_REPL_ID = secrets.token_hex(20)


# statistics since CONFIG RESETSTAT -------------------------------------------------------


@dataclass
class _Op:
    name: str
    calls: int
    total_ns: int
    errors: dict[str, int]
    buckets: list[int]

    def percentile_us(self, q: float) -> float:
        total = sum(self.buckets)
        if not total:
            return 0.0
        rank = max(1, round(q * total))
        seen = 0
        for index, n in enumerate(self.buckets):
            seen += n
            if seen >= rank:
                return round(bucket_upper_ns(index) / 1000, 3)
        return 0.0


def _ops(server: Server) -> list[_Op]:
    """Per-command figures since the last reset, busiest first."""
    base = server.stats_baseline.ops if server.stats_baseline is not None else {}
    out: list[_Op] = []
    for m in server.metrics.ops():
        calls, total, errors, buckets = base.get(m.name, (0, 0, {}, []))
        now_buckets = list(m.buckets)
        if buckets:
            now_buckets = [a - b for a, b in zip(now_buckets, buckets)]
        op = _Op(
            m.name,
            m.count - calls,
            m.total_ns - total,
            {k: v - errors.get(k, 0) for k, v in m.errors.items() if v - errors.get(k, 0)},
            now_buckets,
        )
        if op.calls or op.errors:
            out.append(op)
    return sorted(out, key=lambda op: op.name)


def _stat(server: Server, name: str) -> float:
    value: float = getattr(server.stats, name)
    if server.stats_baseline is not None:
        value -= server.stats_baseline.stats.get(name, 0)
    return value


# INFO ----------------------------------------------------------------------------------


def _human(n: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.2f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return f"{n}B"  # unreachable


def _memory_kb(field_name: str) -> int:
    try:
        with open(f"/proc/{os.getpid()}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux


def _system_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def _server(conn: Connection) -> dict[str, Any]:
    server = conn.server
    uptime = int(time.time() - server.stats.started_at)
    return {
        "redis_version": REDIS_VERSION,
        "redis_git_sha1": "00000000",
        "redis_git_dirty": 0,
        "redis_build_id": "0",
        "redis_mode": "standalone",
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "arch_bits": struct.calcsize("P") * 8,
        "monotonic_clock": "POSIX clock_gettime",
        "multiplexing_api": "epoll" if platform.system() == "Linux" else "kqueue",
        "atomicvar_api": "c11-builtin",
        "gcc_version": "0.0.0",
        "process_id": os.getpid(),
        "process_supervised": "no",
        "run_id": _RUN_ID,
        "tcp_port": server.port,
        "server_time_usec": time.time_ns() // 1000,
        "uptime_in_seconds": uptime,
        "uptime_in_days": uptime // 86400,
        "hz": 10,
        "configured_hz": 10,
        "lru_clock": int(time.time()) & ((1 << 24) - 1),
        "io_threads_active": 0,
        "engramdb_version": engramdb.__version__,
        "python_version": platform.python_version(),
        "durability": server.config.durability,
        # Where durable commits ran: on the event loop (writes alone, quick fsyncs) or on
        # the committer thread (see ``Server._commit_here``).
        "durable_commits_on_loop": server.commits_on_loop,
        "durable_commits_on_thread": server.commits_on_thread,
    }


def _clients(conn: Connection) -> dict[str, Any]:
    server = conn.server
    connections = list(server.connections)
    return {
        "connected_clients": len(connections),
        "cluster_connections": 0,
        "maxclients": server.max_clients,
        "client_recent_max_input_buffer": max((c.parser.buffered for c in connections), default=0),
        "client_recent_max_output_buffer": max((c.output_bytes() for c in connections), default=0),
        "blocked_clients": len(server.blocked),
        "tracking_clients": len(server.tracker.clients),
        "pubsub_clients": sum(1 for c in connections if c.subscriptions is not None),
        "watching_clients": sum(1 for c in connections if c.watched),
        "clients_in_timeout_table": 0,
        "total_watched_keys": sum(len(c.watched) for c in connections if c.watched),
        "total_blocking_keys": server.blocked.keys_waited_on(),
    }


def _memory(conn: Connection) -> dict[str, Any]:
    rss = _memory_kb("VmRSS") * 1024
    peak = max(_memory_kb("VmHWM") * 1024, rss)
    engine = conn.server.db.stats()["engine"]
    total = _system_memory()
    return {
        # The Python process has no allocator figures: used_memory is its resident size.
        "used_memory": rss,
        "used_memory_human": _human(rss),
        "used_memory_rss": rss,
        "used_memory_rss_human": _human(rss),
        "used_memory_peak": peak,
        "used_memory_peak_human": _human(peak),
        "used_memory_peak_perc": f"{100 * rss / peak:.2f}%" if peak else "0.00%",
        "used_memory_lua": 0,
        "total_system_memory": total,
        "total_system_memory_human": _human(total),
        "maxmemory": 0,
        "maxmemory_human": "0B",
        "maxmemory_policy": "noeviction",
        "mem_fragmentation_ratio": "1.00",
        "mem_allocator": "libc",
        "lazyfree_pending_objects": 0,
        # The data lives in the LMDB map, not in the process heap.
        "lmdb_map_size": engine.get("map_size_bytes", 0),
        "lmdb_map_used": engine.get("map_used_bytes", 0),
        "lmdb_map_used_human": _human(engine.get("map_used_bytes", 0) or 0),
    }


def _persistence(conn: Connection) -> dict[str, Any]:
    server = conn.server
    durable = server.config.durability != "none"
    failed = bool(server.db.stats()["engine"].get("failed"))
    stats = server.stats
    return {
        "loading": 0,
        "async_loading": 0,
        "rdb_changes_since_last_save": 0,
        "rdb_bgsave_in_progress": int(stats.saving),  # SAVE and BGSAVE: an fsync (admin.py)
        "rdb_last_save_time": last_save(conn),
        "rdb_last_bgsave_status": "ok" if stats.last_save_ok else "err",
        "rdb_last_bgsave_time_sec": -1,
        "rdb_current_bgsave_time_sec": -1,
        "rdb_saves": stats.saves,
        "aof_enabled": int(durable),
        "aof_rewrite_in_progress": 0,
        "aof_rewrite_scheduled": 0,
        "aof_last_rewrite_time_sec": -1,
        "aof_current_rewrite_time_sec": -1,
        "aof_last_bgrewrite_status": "ok",
        "aof_rewrites": 0,
        "aof_last_write_status": "err" if failed else "ok",
        "durability": server.config.durability,
        # Where durable commits ran: on the event loop (writes alone, quick fsyncs) or on
        # the committer thread (see ``Server._commit_here``).
        "durable_commits_on_loop": server.commits_on_loop,
        "durable_commits_on_thread": server.commits_on_thread,
    }


def _stats(conn: Connection) -> dict[str, Any]:
    server = conn.server
    ops = _ops(server)
    hub = server.pubsub
    rates = server.rates()
    return {
        "total_connections_received": int(_stat(server, "connections_total")),
        "total_commands_processed": sum(op.calls for op in ops),
        "instantaneous_ops_per_sec": int(rates["commands"]),
        "total_net_input_bytes": int(_stat(server, "bytes_in")),
        "total_net_output_bytes": int(_stat(server, "bytes_out")),
        "total_net_repl_input_bytes": 0,
        "total_net_repl_output_bytes": 0,
        "instantaneous_input_kbps": f"{rates['bytes_in'] / 1024:.2f}",
        "instantaneous_output_kbps": f"{rates['bytes_out'] / 1024:.2f}",
        "instantaneous_input_repl_kbps": "0.00",
        "instantaneous_output_repl_kbps": "0.00",
        "rejected_connections": int(_stat(server, "rejected_connections")),
        "sync_full": 0,
        "sync_partial_ok": 0,
        "sync_partial_err": 0,
        "evicted_keys": 0,
        "evicted_clients": 0,
        "pubsub_channels": len(hub.channels),
        "pubsub_patterns": len(hub.patterns),
        "pubsubshard_channels": len(hub.shards),
        "pubsub_messages_delivered": hub.messages,
        "keyspace_notifications_sent": server.notifier.sent,
        "keyspace_notifications_lost": server.notifier.lost,
        "tracking_total_keys": len(server.tracker.keys),
        "tracking_total_items": server.tracker.items(),
        "tracking_total_prefixes": len(server.tracker.prefixes),
        "tracking_invalidations_sent": server.tracker.invalidations,
        "total_error_replies": sum(sum(op.errors.values()) for op in ops),
        "unexpected_error_replies": 0,
        "dump_payload_sanitizations": 0,
        "client_query_buffer_limit_disconnections": int(_stat(server, "protocol_errors")),
        "client_output_buffer_limit_disconnections": int(
            _stat(server, "output_buffer_disconnects")
        ),
        "pubsub_output_buffer_limit_disconnections": int(_stat(server, "pubsub_disconnects")),
        "killed_clients": int(_stat(server, "killed_clients")),
        "shed_busy_replies": int(_stat(server, "shed")),
        "protocol_errors": int(_stat(server, "protocol_errors")),
        "output_buffer_disconnects": int(_stat(server, "output_buffer_disconnects")),
        "idle_disconnects": int(_stat(server, "idle_disconnects")),
        "auth_failures": int(_stat(server, "auth_failures")),
        "auth_refused_by_backoff": int(_stat(server, "auth_refused")),
        "unknown_commands": int(_stat(server, "unknown_commands")),
    }


def _replication(conn: Connection) -> dict[str, Any]:
    return {
        "role": "master",
        "connected_slaves": 0,
        "master_failover_state": "no-failover",
        "master_replid": _REPL_ID,
        "master_replid2": "0" * 40,
        "master_repl_offset": 0,
        "second_repl_offset": -1,
        "repl_backlog_active": 0,
        "repl_backlog_size": 0,
        "repl_backlog_first_byte_offset": 0,
        "repl_backlog_histlen": 0,
    }


def _cpu(conn: Connection) -> dict[str, Any]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    out: dict[str, Any] = {
        "used_cpu_sys": f"{me.ru_stime:.6f}",
        "used_cpu_user": f"{me.ru_utime:.6f}",
        "used_cpu_sys_children": f"{children.ru_stime:.6f}",
        "used_cpu_user_children": f"{children.ru_utime:.6f}",
    }
    thread = getattr(resource, "RUSAGE_THREAD", None)
    if thread is not None:  # INFO runs on the event loop's thread: the "main thread"
        main = resource.getrusage(thread)
        out["used_cpu_sys_main_thread"] = f"{main.ru_stime:.6f}"
        out["used_cpu_user_main_thread"] = f"{main.ru_utime:.6f}"
    return out


def _errorstats(conn: Connection) -> dict[str, Any]:
    totals: dict[str, int] = {}
    for op in _ops(conn.server):
        for code, n in op.errors.items():
            totals[code] = totals.get(code, 0) + n
    return {f"errorstat_{code}": f"count={n}" for code, n in sorted(totals.items())}


def _keyspace(conn: Connection) -> dict[str, Any]:
    """One line per Redis database holding keys (whatever the connection SELECTed), in
    database order, as Redis lists them."""
    from engramdb.server.notify import redis_database  # notify imports the handlers

    db = conn.server.db
    default = conn.server.config.default_set
    numbered = ((redis_database(default, name), name) for name in db.sets())
    out: dict[str, Any] = {}
    for index, name in sorted((i, n) for i, n in numbered if i is not None):
        keys = db.records(name).count()
        # Expiring keys are not counted per set (the expiry index spans every set): not
        # shown as a number we do not have, but as 0 so "keys=..,expires=.." parsers work.
        if keys:
            out[f"db{index}"] = f"keys={keys},expires=0,avg_ttl=0"
    return out


def _commandstats(conn: Connection) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for op in _ops(conn.server):
        failed = sum(op.errors.values())
        usec = op.total_ns // 1000
        per_call = usec / op.calls if op.calls else 0.0
        out[f"cmdstat_{op.name}"] = (
            f"calls={op.calls},usec={usec},usec_per_call={per_call:.2f},"
            f"rejected_calls={op.errors.get('BUSY', 0)},failed_calls={failed},"
            f"p50_usec={op.percentile_us(0.5)},p99_usec={op.percentile_us(0.99)},"
            f"p999_usec={op.percentile_us(0.999)}"
        )
    return out


def _latencystats(conn: Connection) -> dict[str, Any]:
    return {
        f"latency_percentiles_usec_{op.name}": (
            f"p50={op.percentile_us(0.5):.3f},p99={op.percentile_us(0.99):.3f},"
            f"p99.9={op.percentile_us(0.999):.3f}"
        )
        for op in _ops(conn.server)
        if op.calls
    }


def _saturation(conn: Connection) -> dict[str, Any]:
    server = conn.server
    saturation = server.saturation()
    return {
        "inflight": saturation["inflight"],
        "max_inflight": server.config.max_inflight,
        "group_commit_queue": saturation["group_commit_queue"],
        "event_loop_lag_ms": round(saturation["event_loop_lag_seconds"] * 1000, 3),
        "map_use_ratio": round(saturation["map_use_ratio"], 6),
        "changelog_length": saturation["changelog_length"],
    }


def _indexes(conn: Connection) -> dict[str, Any]:
    return {
        # Figures only: free text (an error message) could hold "," "=" or a newline.
        f"index_{name}": ",".join(
            f"{k}={v}" for k, v in figures.items() if k != "updated" and type(v) in (int, float)
        )
        for name, figures in conn.db.stats().get("indexes", {}).items()
    }


Section = Callable[["Connection"], dict[str, Any]]
# Redis' order. (title, render, in "default"/"all")
SECTIONS: dict[str, tuple[str, Section, bool]] = {
    "server": ("Server", _server, True),
    "clients": ("Clients", _clients, True),
    "memory": ("Memory", _memory, True),
    "persistence": ("Persistence", _persistence, True),
    "stats": ("Stats", _stats, True),
    "replication": ("Replication", _replication, True),
    "cpu": ("CPU", _cpu, True),
    "modules": ("Modules", lambda conn: {}, True),
    "errorstats": ("Errorstats", _errorstats, True),
    "cluster": ("Cluster", lambda conn: {"cluster_enabled": 0}, True),
    "keyspace": ("Keyspace", _keyspace, True),
    "saturation": ("Saturation", _saturation, True),
    "indexes": ("Indexes", _indexes, True),
    # In the default INFO too (Redis shows it only for "all"): engramdb has always
    # reported per-command figures there, and tools reading plain INFO rely on it.
    "commandstats": ("Commandstats", _commandstats, True),
    "latencystats": ("Latencystats", _latencystats, False),
}
_EVERY = tuple(SECTIONS)
_DEFAULT = tuple(name for name, (_, _, default) in SECTIONS.items() if default)


def render_info(conn: Connection, wanted: Iterable[bytes] = ()) -> str:
    chosen: set[str] = set()
    for raw in wanted:
        name = raw.decode(errors="replace").lower()
        if name in ("all", "everything"):
            chosen.update(_EVERY)
        elif name == "default":
            chosen.update(_DEFAULT)
        elif name in SECTIONS:
            chosen.add(name)
    if not chosen and not list(wanted):
        chosen.update(_DEFAULT)
    lines: list[str] = []
    for name in SECTIONS:
        if name not in chosen:
            continue
        title, render, _ = SECTIONS[name]
        if lines:
            lines.append("")
        lines.append(f"# {title}")
        lines.extend(f"{k}:{v}" for k, v in render(conn).items())
    return "\r\n".join(lines) + ("\r\n" if lines else "")


@command("info", -1, "fast", keys=(0, 0, 0))
def info(conn: Connection, args: list[bytes]) -> Any:
    """Returns information and statistics about the server."""
    return Verbatim(render_info(conn, args))


# COMMAND -------------------------------------------------------------------------------

# The Redis group (and ACL category) of each handler module.
_GROUPS = {
    "strings": ("string", "@string"),
    "lists": ("list", "@list"),
    "hashes": ("hash", "@hash"),
    "sets": ("set", "@set"),
    "zsets": ("sorted_set", "@sortedset"),
    "sorted_sets": ("sorted_set", "@sortedset"),
    "keyspace": ("generic", "@keyspace"),
    "sort": ("generic", "@keyspace"),
    "dump": ("generic", "@keyspace"),
    "pubsub": ("pubsub", "@pubsub"),
    "transactions": ("transactions", "@transaction"),
    "scripting": ("scripting", "@scripting"),
    "native": ("engramdb", "@engramdb"),
    "introspection": ("server", "@admin"),
    "admin": ("server", "@admin"),
}
_CONNECTION = frozenset({"ping", "echo", "auth", "hello", "quit", "reset", "select", "client"})
_DANGEROUS = frozenset(
    {"flushdb", "flushall", "keys", "info", "monitor", "config", "client", "slowlog",
     "latency", "role", "lastsave", "save", "bgsave", "debug", "engram.debug"}
)  # fmt: skip
_REDIS_FLAGS = {"noauth": "no_auth"}
_SHOWN_FLAGS = frozenset({"write", "readonly", "admin", "pubsub", "fast", "noauth", "noscript",
                          "blocking", "loading", "stale", "movablekeys"})  # fmt: skip
_MOVABLE = frozenset({"eval", "evalsha", "engram"})


def _group(cmd: Command | Subcommand) -> tuple[str, str]:
    if isinstance(cmd, Subcommand):
        parent = COMMANDS[cmd.parent.upper().encode()]
        return _group(parent)
    module = cmd.handler.__module__.rsplit(".", 1)[-1]
    group, category = _GROUPS.get(module, ("server", "@admin"))
    if cmd.name in _CONNECTION:
        return "connection", "@connection"
    return group, category


def _flags(flags: frozenset[str], name: str) -> list[SimpleString]:
    shown = {_REDIS_FLAGS.get(f, f) for f in flags if f in _SHOWN_FLAGS}
    if name in _MOVABLE:
        shown.add("movablekeys")
    return [SimpleString(f) for f in sorted(shown)]


def _categories(cmd: Command | Subcommand) -> list[SimpleString]:
    flags = cmd.flags
    if isinstance(cmd, Subcommand):
        flags = flags | COMMANDS[cmd.parent.upper().encode()].flags - {"fast"}
    out = []
    if "write" in flags:
        out.append("@write")
    if "readonly" in flags:
        out.append("@read")
    if "admin" in flags:
        out.append("@admin")
    if "pubsub" in flags:
        out.append("@pubsub")
    out.append("@fast" if "fast" in flags else "@slow")
    if "blocking" in flags:
        out.append("@blocking")
    category = _group(cmd)[1]
    if category not in out and category not in ("@admin", "@engramdb"):
        out.append(category)
    name = cmd.full_name if isinstance(cmd, Subcommand) else cmd.name
    if "admin" in flags or name.split("|")[0] in _DANGEROUS:
        out.append("@dangerous")
    return [SimpleString(c) for c in out]


def _key_specs(cmd: Command) -> list[Any]:
    if cmd.first_key <= 0:
        return []
    access = ["RW", "access", "update"] if "write" in cmd.flags else ["RO", "access"]
    last = cmd.last_key - cmd.first_key if cmd.last_key >= 0 else cmd.last_key
    return [
        {
            b"flags": [SimpleString(f) for f in access],
            b"begin_search": {b"type": b"index", b"spec": {b"index": cmd.first_key}},
            b"find_keys": {
                b"type": b"range",
                b"spec": {b"lastkey": last, b"keystep": cmd.step, b"limit": 0},
            },
        }
    ]


def _sub_info(sub: Subcommand) -> list[Any]:
    return [
        sub.full_name.encode(), sub.arity, _flags(sub.flags, sub.full_name), 0, 0, 0,
        _categories(sub), [], [], [],
    ]  # fmt: skip


def _info(cmd: Command) -> list[Any]:
    container = CONTAINERS.get(cmd.name)
    subs = [_sub_info(s) for s in container.subcommands.values()] if container else []
    return [
        cmd.name.encode(), cmd.arity, _flags(cmd.flags, cmd.name), cmd.first_key,
        cmd.last_key, cmd.step, _categories(cmd), [], _key_specs(cmd), subs,
    ]  # fmt: skip


def _summary(handler: Callable[..., Any]) -> str:
    doc = handler.__doc__ or ""
    return " ".join(doc.strip().split("\n\n", 1)[0].split())


def _docs(cmd: Command) -> dict[bytes, Any]:
    group = _group(cmd)[0]
    doc: dict[bytes, Any] = {
        b"summary": _summary(cmd.handler).encode(),
        b"since": b"1.0.0",
        b"group": group.encode(),
    }
    container = CONTAINERS.get(cmd.name)
    if container:
        doc[b"subcommands"] = {
            sub.full_name.encode(): {
                b"summary": sub.summary.encode(),
                b"since": b"1.0.0",
                b"group": group.encode(),
            }
            for sub in container.subcommands.values()
        }
    return doc


def _lookup(name: bytes) -> Command | Subcommand | None:
    parent, _, sub = name.partition(b"|")
    cmd = COMMANDS.get(parent.upper())
    if cmd is None or not sub:
        return cmd
    container = CONTAINERS.get(cmd.name)
    return container.subcommands.get(sub.upper()) if container else None


def _all_names() -> list[bytes]:
    names: list[bytes] = []
    for cmd in COMMANDS.values():
        names.append(cmd.name.encode())
        container = CONTAINERS.get(cmd.name)
        if container:
            names.extend(s.full_name.encode() for s in container.subcommands.values())
    return names


command_ = Container("command")


@command("command", -1, keys=(0, 0, 0), metric=command_.metric)
def command_cmd(conn: Connection, args: list[bytes]) -> Any:
    """Returns detailed information about all commands."""
    if not args:
        return [_info(cmd) for cmd in COMMANDS.values()]
    return command_.dispatch(conn, args)


@command_("count", 2, summary="Returns a count of commands.")
def command_count(conn: Connection, args: list[bytes]) -> Any:
    return len(COMMANDS)


@command_("list", -2, summary="Returns a list of command names.")
def command_list(conn: Connection, args: list[bytes]) -> Any:
    names = _all_names()
    if not args:
        return names
    if len(args) != 3 or args[0].upper() != b"FILTERBY":
        raise Reply("ERR syntax error")
    kind, value = args[1].upper(), args[2]
    if kind == b"MODULE":
        return []
    if kind == b"PATTERN":
        matches = compile_pattern(value.lower())
        return [n for n in names if matches(n)]
    if kind == b"ACLCAT":
        wanted = "@" + value.decode(errors="replace").lower()
        out = []
        for name in names:
            found = _lookup(name)
            if found is not None and wanted in _categories(found):
                out.append(name)
        return out
    raise Reply("ERR syntax error")


@command_("info", -2, summary="Returns information about one, multiple or all commands.")
def command_info(conn: Connection, args: list[bytes]) -> Any:
    if not args:
        return [_info(cmd) for cmd in COMMANDS.values()]
    out: list[Any] = []
    for name in args:
        found = _lookup(name)
        if found is None:
            out.append(None)
        elif isinstance(found, Subcommand):
            out.append(_sub_info(found))
        else:
            out.append(_info(found))
    return out


@command_("docs", -2, summary="Returns documentary information about one, multiple or all "
          "commands.")  # fmt: skip
def command_docs(conn: Connection, args: list[bytes]) -> Any:
    wanted = args or [cmd.name.encode() for cmd in COMMANDS.values()]
    out: dict[bytes, Any] = {}
    for name in wanted:
        found = _lookup(name)
        if isinstance(found, Command):
            out[found.name.encode()] = _docs(found)
    return out


def _keys_of(args: list[bytes]) -> tuple[Command, list[bytes]]:
    cmd = COMMANDS.get(args[0].upper())
    if cmd is None:
        raise Reply("ERR Invalid command specified")
    arity = cmd.arity
    if (arity > 0 and len(args) != arity) or (arity < 0 and len(args) < -arity):
        raise Reply("ERR Invalid number of arguments specified for command")
    if cmd.name in ("eval", "evalsha"):
        try:
            count = int(args[2])
        except ValueError:
            raise Reply("ERR Invalid arguments specified for command") from None
        if count < 0 or count > len(args) - 3:
            raise Reply("ERR Invalid arguments specified for command")
        keys = args[3 : 3 + count]
    else:
        keys = cmd.key_args(args)
    if not keys and cmd.name not in ("eval", "evalsha"):
        raise Reply("ERR The command has no key arguments")
    return cmd, keys


@command_("getkeys", -3, summary="Extracts the key names from an arbitrary command.")
def command_getkeys(conn: Connection, args: list[bytes]) -> Any:
    return _keys_of(args)[1]


@command_("getkeysandflags", -3, summary="Extracts the key names and access flags for an "
          "arbitrary command.")  # fmt: skip
def command_getkeysandflags(conn: Connection, args: list[bytes]) -> Any:
    cmd, keys = _keys_of(args)
    default = ("RW", "access", "update") if "write" in cmd.flags else ("RO", "access")
    specs = _KEY_SPECS.get(cmd.name, (default,))
    return [
        [key, [SimpleString(f) for f in specs[min(i, len(specs) - 1)]]]
        for i, key in enumerate(keys)
    ]


# Redis' key-spec flags (as its COMMAND GETKEYSANDFLAGS answers them) for commands whose keys
# are not plain read-or-update: per key position, the last one repeating for the rest.
_MOVE = (("RW", "access", "delete"), ("RW", "insert"))
_KEY_SPECS: dict[str, tuple[tuple[str, ...], ...]] = {
    "lmove": _MOVE,
    "blmove": _MOVE,
    "rpoplpush": _MOVE,
    "brpoplpush": _MOVE,
    "smove": _MOVE,
    "del": (("RM", "delete"),),
    "unlink": (("RM", "delete"),),
    "rename": (("RW", "access", "delete"), ("OW", "update")),
    "renamenx": (("RW", "access", "delete"), ("OW", "insert")),
    "copy": (("RO", "access"), ("OW", "update")),
    "set": (("OW", "update"),),
    "getdel": (("RW", "access", "delete"),),
    "lpop": (("RW", "access", "delete"),),
    "rpop": (("RW", "access", "delete"),),
    "lpush": (("RW", "insert"),),
    "rpush": (("RW", "insert"),),
    "sadd": (("RW", "insert"),),
    "srem": (("RW", "delete"),),
    "hset": (("RW", "update"),),
}


# MEMORY --------------------------------------------------------------------------------

_ENTRY_OVERHEAD = 48  # LMDB node header, record metadata and the key's set prefix


def memory_usage(conn: Connection, raw_key: bytes, samples: int = 5) -> Any:
    """Bytes the key takes in the store: its record (or a structure's header), key and
    per-entry overhead, plus, for a structure stored per element, its elements estimated
    as Redis does: the mean of ``samples`` of them (0: all) times their number."""
    from engramdb.server import structures

    def measure(access: structures.Access) -> int | None:
        found = access.find(raw_key)
        if not found.exists:
            return None
        assert found.raw is not None
        size = len(raw_key) + len(found.raw) + _ENTRY_OVERHEAD
        if found.structure and found.length:
            taken = found.length if samples == 0 else min(samples, found.length)
            sampled = access.range(found, limit=taken)
            if sampled:
                each = sum(len(found.prefix) + len(sub) + len(value) for sub, value in sampled)
                size += each * found.length // len(sampled) + _ENTRY_OVERHEAD * found.length
        return size

    return structures.read(conn, measure)


memory_ = Container("memory")


@command("memory", -2, keys=(0, 0, 0), metric=memory_.metric)
def memory(conn: Connection, args: list[bytes]) -> Any:
    """A container for memory diagnostics commands."""
    return memory_.dispatch(conn, args)


@memory_("usage", -3, "readonly", summary="Estimates the memory usage of a key.")
def memory_usage_cmd(conn: Connection, args: list[bytes]) -> Any:
    if len(args) not in (1, 3) or (len(args) == 3 and args[1].upper() != b"SAMPLES"):
        raise Reply("ERR syntax error")
    samples = 5
    if len(args) == 3:
        try:
            samples = int(args[2])
        except ValueError:
            raise Reply("ERR value is not an integer or out of range") from None
        if samples < 0:
            raise Reply("ERR value is out of range, must be positive")
    return memory_usage(conn, args[0], samples)


@memory_("stats", 2, summary="Returns details about memory usage.")
def memory_stats(conn: Connection, args: list[bytes]) -> Any:
    rss = _memory_kb("VmRSS") * 1024
    peak = max(_memory_kb("VmHWM") * 1024, rss)
    engine = conn.server.db.stats()["engine"]
    dataset = int(engine.get("map_used_bytes", 0) or 0)
    keys = conn.records.count()
    return {
        b"peak.allocated": peak,
        b"total.allocated": rss,
        b"startup.allocated": 0,
        b"replication.backlog": 0,
        b"clients.slaves": 0,
        b"clients.normal": sum(c.output_bytes() for c in conn.server.connections),
        b"aof.buffer": 0,
        b"overhead.total": rss,
        b"keys.count": keys,
        b"keys.bytes-per-key": dataset // keys if keys else 0,
        b"dataset.bytes": dataset,
        b"dataset.percentage": 100.0 * dataset / max(1, dataset + rss),
        b"peak.percentage": 100.0 * rss / peak if peak else 0.0,
        b"fragmentation": 1.0,
        b"fragmentation.bytes": 0,
        b"db.0": {b"overhead.hashtable.main": 0, b"overhead.hashtable.expires": 0},
    }


@memory_("doctor", 2, summary="Outputs a memory problems report.")
def memory_doctor(conn: Connection, args: list[bytes]) -> Any:
    ratio = conn.server.saturation()["map_use_ratio"]
    if ratio > 0.9:
        return Verbatim(f"The LMDB map is {ratio:.0%} full: raise map_size before it fills.")
    return Verbatim("Hi Sam, I can't find any memory issue in your instance.")


@memory_("malloc-stats", 2, summary="Returns the allocator statistics.")
def memory_malloc_stats(conn: Connection, args: list[bytes]) -> Any:
    return Verbatim("Stats not supported for the current allocator")


@memory_("purge", 2, summary="Asks the allocator to release memory.")
def memory_purge(conn: Connection, args: list[bytes]) -> Any:
    gc.collect(0)
    return OK


# SLOWLOG -------------------------------------------------------------------------------

slowlog_ = Container("slowlog")


@command("slowlog", -2, "admin", keys=(0, 0, 0), metric=slowlog_.metric)
def slowlog(conn: Connection, args: list[bytes]) -> Any:
    """A container for slow log commands."""
    return slowlog_.dispatch(conn, args)


@slowlog_("get", -2, "admin", summary="Returns the slow log's entries.")
def slowlog_get(conn: Connection, args: list[bytes]) -> Any:
    if len(args) > 1:
        raise Reply("ERR wrong number of arguments for 'slowlog|get' command")
    count = 10
    if args:
        try:
            count = int(args[0])
        except ValueError:
            raise Reply("ERR value is not an integer or out of range") from None
        if count < -1:
            raise Reply("ERR count should be greater than or equal to -1")
    return conn.server.slowlog.get(count)


@slowlog_("len", 2, "admin", summary="Returns the number of entries in the slow log.")
def slowlog_len(conn: Connection, args: list[bytes]) -> Any:
    return len(conn.server.slowlog.entries)


@slowlog_("reset", 2, "admin", summary="Clears all entries from the slow log.")
def slowlog_reset(conn: Connection, args: list[bytes]) -> Any:
    conn.server.slowlog.reset()
    return OK


# MONITOR -------------------------------------------------------------------------------


@command("monitor", 1, "admin", keys=(0, 0, 0))
def monitor(conn: Connection, args: list[bytes]) -> Any:
    """Listens for all requests received by the server in real-time."""
    if conn.multi is not None:
        raise Reply("ERR MONITOR is not allowed inside a transaction")
    if conn.server.config.processes > 1:
        raise Reply(
            "ERR MONITOR is not supported with --workers above 1: it would show the commands "
            "of one worker process only"
        )
    conn.monitoring = True
    conn.server.monitors[conn] = None
    return OK


# LATENCY -------------------------------------------------------------------------------

latency_ = Container("latency")


@command("latency", -2, "admin", keys=(0, 0, 0), metric=latency_.metric)
def latency(conn: Connection, args: list[bytes]) -> Any:
    """A container for latency diagnostics commands."""
    return latency_.dispatch(conn, args)


@latency_("histogram", -2, summary="Returns the cumulative distribution of latencies of a "
          "subset or all commands.")  # fmt: skip
def latency_histogram(conn: Connection, args: list[bytes]) -> Any:
    wanted = {a.decode(errors="replace").lower() for a in args}
    out: dict[bytes, Any] = {}
    for op in _ops(conn.server):
        if not op.calls or (wanted and op.name not in wanted):
            continue
        out[op.name.encode()] = {b"calls": op.calls, b"histogram_usec": _histogram(op.buckets)}
    return out


def _histogram(buckets: list[int]) -> dict[int, int]:
    """Cumulative counts at power-of-two microsecond bounds, as Redis reports them."""
    out: dict[int, int] = {}
    seen = 0
    for index, n in enumerate(buckets):
        if not n:
            continue
        seen += n
        upper_us = max(1, (bucket_upper_ns(index) + 999) // 1000)
        bound = 1 << (upper_us - 1).bit_length()
        out[bound] = seen
    return out


@latency_("latest", 2, summary="Returns the latest latency samples for all events.")
def latency_latest(conn: Connection, args: list[bytes]) -> Any:
    return []  # latency-monitor-threshold is 0: no latency events are sampled


@latency_("history", 3, summary="Returns timestamp-latency samples for an event.")
def latency_history(conn: Connection, args: list[bytes]) -> Any:
    return []


@latency_("reset", -2, summary="Resets the latency data for one or more events.")
def latency_reset(conn: Connection, args: list[bytes]) -> Any:
    return 0


@latency_("doctor", 2, summary="Returns a human-readable latency analysis report.")
def latency_doctor(conn: Connection, args: list[bytes]) -> Any:
    lag = conn.server.saturation()["event_loop_lag_seconds"] * 1000
    return Verbatim(
        "Latency events are not sampled (latency-monitor-threshold 0); per-command "
        f"percentiles are in INFO latencystats. Event-loop lag now: {lag:.3f} ms."
    )


# OBJECT --------------------------------------------------------------------------------

object_ = Container("object")


@command("object", -2, keys=(0, 0, 0), metric=object_.metric)
def object_cmd(conn: Connection, args: list[bytes]) -> Any:
    """A container for object introspection commands."""
    return object_.dispatch(conn, args)


def _record(conn: Connection, raw: bytes) -> Any:
    return conn.records.get(key_of(raw))


@object_("encoding", 3, "readonly", summary="Returns the internal encoding of a Redis object.")
def object_encoding(conn: Connection, args: list[bytes]) -> Any:
    record = _record(conn, args[0])
    if record is None:
        return None
    kind = kind_of(record.bins)
    if kind == "string":
        # What Redis would use for this value (engramdb stores every value encoded).
        value = next(iter(record.bins.values()))
        text = value if isinstance(value, bytes) else str(value).encode()
        if len(text) <= 20 and text.lstrip(b"-").isdigit():
            return b"int"
        return b"embstr" if len(text) <= 44 else b"raw"
    if kind == "list":
        return b"quicklist"
    return b"listpack" if len(record.bins) <= 128 else b"hashtable"


@object_("refcount", 3, "readonly", summary="Returns the reference count of a value of a key.")
def object_refcount(conn: Connection, args: list[bytes]) -> Any:
    return None if _record(conn, args[0]) is None else 1


@object_("idletime", 3, "readonly", summary="Returns the time since the last write to a key.")
def object_idletime(conn: Connection, args: list[bytes]) -> Any:
    record = _record(conn, args[0])
    if record is None:
        return None
    # Reads are not tracked: the idle time is the time since the key was last written.
    return max(0, int(conn.db._now_ms() / 1000 - record.updated_at))


@object_("freq", 3, "readonly", summary="Returns the logarithmic access frequency counter.")
def object_freq(conn: Connection, args: list[bytes]) -> Any:
    raise Reply(
        "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please "
        "note that when switching between policies at runtime LRU and LFU data will take "
        "some time to adjust."
    )


# MODULE, LOLWUT ------------------------------------------------------------------------

module_ = Container("module")


@command("module", -2, "admin", keys=(0, 0, 0), metric=module_.metric)
def module(conn: Connection, args: list[bytes]) -> Any:
    """A container for module commands."""
    return module_.dispatch(conn, args)


@module_("list", 2, "admin", summary="Returns all loaded modules.")
def module_list(conn: Connection, args: list[bytes]) -> Any:
    return []


@command("lolwut", -1, "readonly", "fast", keys=(0, 0, 0))
def lolwut(conn: Connection, args: list[bytes]) -> Any:
    """Displays computer art and the Redis version."""
    art = "\n".join("".join("⠿" if (x * y) % 7 else "⠀" for x in range(1, 40)) for y in (1, 2, 3))
    return Verbatim(f"{art}\n\nengramdb {engramdb.__version__}. Redis ver. {REDIS_VERSION}\n")
