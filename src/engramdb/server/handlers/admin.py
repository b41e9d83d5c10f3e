"""Connection and server commands: PING ECHO HELLO AUTH QUIT SELECT CLIENT COMMAND INFO
CONFIG DBSIZE FLUSHDB FLUSHALL.

Before AUTH only AUTH, HELLO, PING and QUIT answer (the ``noauth`` flag); everything else,
COMMAND and INFO included, gets ``-NOAUTH``. A password is checked in constant time, and only
once the failure backoff of the connection and of its address allows (``server/limits.py``):
a checked attempt that comes early waits for its turn, one that would wait past the cap is
refused unchecked.
"""

from __future__ import annotations

import hmac
import platform
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import engramdb
from engramdb.protocol.resp import SimpleString, Verbatim
from engramdb.server.commands import COMMANDS, Defer, Offload, Reply, command, wrong_args

if TYPE_CHECKING:
    from engramdb.server.connection import Connection

OK = SimpleString("OK")
REDIS_VERSION = "7.0.0"  # the command set we follow, reported to clients that ask
MAX_CLIENT_NAME = 512  # bytes; names are shown by CLIENT LIST, one per connection


@command("ping", -1, "noauth", "fast", keys=(0, 0, 0))
def ping(conn: Connection, args: list[bytes]) -> Any:
    if len(args) > 1:
        raise wrong_args("ping")
    return args[0] if args else SimpleString("PONG")


@command("echo", 2, "fast", keys=(0, 0, 0))
def echo(conn: Connection, args: list[bytes]) -> Any:
    return args[0]


def _check_password(conn: Connection, username: bytes, password: bytes) -> None:
    expected = conn.server.config.password
    assert expected is not None
    throttle = conn.server.auth_throttle
    # Constant-time comparison: the reply time must not tell how much of a guess was right.
    good_password = hmac.compare_digest(password, expected.encode())
    if not (username == b"default" and good_password):
        throttle.failed(conn.address_key, conn.auth_attempts)
        conn.server.stats.auth_failures += 1
        raise Reply("WRONGPASS invalid username-password pair or user is disabled.")
    throttle.succeeded(conn.address_key, conn.auth_attempts)
    conn.authenticate()


def _authenticate(
    conn: Connection, username: bytes, password: bytes, then: Callable[[], Any]
) -> Any:
    """Check the password when the backoff allows, then reply with ``then()``."""
    if conn.server.config.password is None:
        raise Reply(
            "ERR AUTH <password> called without any password configured for the default user. "
            "Are you sure your configuration is correct?"
        )
    throttle = conn.server.auth_throttle
    wait = throttle.reserve(conn.address_key, conn.auth_attempts)
    if wait is None:
        conn.server.stats.auth_refused += 1
        retry = max(0.1, throttle.retry_after(conn.address_key))
        raise Reply(
            f"ERR too many failed AUTH attempts from this address; retry in {retry:.1f} seconds"
        )

    def check() -> Any:
        _check_password(conn, username, password)
        return then()

    if wait <= 0:
        return check()
    return Defer(wait, check, lambda: throttle.release(conn.address_key, conn.auth_attempts))


@command("auth", -2, "noauth", "fast", keys=(0, 0, 0))
def auth(conn: Connection, args: list[bytes]) -> Any:
    if len(args) == 1:
        return _authenticate(conn, b"default", args[0], lambda: OK)
    if len(args) == 2:
        return _authenticate(conn, args[0], args[1], lambda: OK)
    raise Reply("ERR syntax error")


@command("hello", -1, "noauth", "fast", keys=(0, 0, 0))
def hello(conn: Connection, args: list[bytes]) -> Any:
    resp3 = conn.resp3
    rest = args
    if rest:
        try:
            version = int(rest[0])
        except ValueError:
            raise Reply("ERR Protocol version is not an integer or out of range") from None
        if version not in (2, 3):
            raise Reply("NOPROTO unsupported protocol version")
        resp3 = version == 3
        rest = rest[1:]
    name = conn.name
    credentials: tuple[bytes, bytes] | None = None
    while rest:
        option = rest[0].upper()
        if option == b"AUTH" and len(rest) >= 3:
            credentials = (rest[1], rest[2])
            rest = rest[3:]
        elif option == b"SETNAME" and len(rest) >= 2:
            name = _client_name(rest[1])
            rest = rest[2:]
        else:
            raise Reply(f"ERR Syntax error in HELLO option '{option.decode(errors='replace')}'")

    def answer() -> Any:
        if not conn.authenticated:
            raise Reply(
                "NOAUTH HELLO must be called with the client already authenticated, "
                "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                "authenticate the client and select the RESP protocol version at the "
                "same time"
            )
        conn.resp3 = resp3
        conn.name = name
        return {
            "server": "redis",
            "version": REDIS_VERSION,
            "proto": 3 if resp3 else 2,
            "id": conn.id,
            "mode": "standalone",
            "role": "master",
            "modules": [],
            "engramdb": engramdb.__version__,
        }

    if credentials is not None:
        return _authenticate(conn, *credentials, answer)
    return answer()


def _client_name(name: bytes) -> bytes | None:
    if b" " in name or b"\n" in name:
        raise Reply("ERR Client names cannot contain spaces, newlines or special characters.")
    if len(name) > MAX_CLIENT_NAME:
        raise Reply(f"ERR Client names are limited to {MAX_CLIENT_NAME} bytes")
    return name or None


@command("quit", -1, "noauth", "fast", keys=(0, 0, 0))
def quit_(conn: Connection, args: list[bytes]) -> Any:
    conn.close_after_reply()
    return OK


@command("select", 2, "fast", keys=(0, 0, 0))
def select(conn: Connection, args: list[bytes]) -> Any:
    """Redis databases 0-15: 0 is the default set, N the set ``default.N``."""
    from engramdb.server.handlers.keyspace import database_set
    from engramdb.server.handlers.transactions import TxnRecords

    try:
        index = int(args[0])
    except ValueError:
        raise Reply("ERR value is not an integer or out of range") from None
    records = conn.db.records(database_set(conn, index))
    view = getattr(conn, "txn", None)
    if view is not None:
        # Inside MULTI or a script: the commands after it address the new database, and
        # (as in Redis) so does the connection after EXEC.
        outer = conn._conn  # type: ignore[attr-defined]
        outer.records, outer.db_index = records, index
        conn.records = TxnRecords(records, view, conn.db._now_ms())  # type: ignore[assignment]
    else:
        conn.records = records
    conn.db_index = index
    return OK


@command("client", -2, "admin", keys=(0, 0, 0))
def client(conn: Connection, args: list[bytes]) -> Any:
    sub = args[0].upper()
    if sub == b"SETNAME" and len(args) == 2:
        conn.name = _client_name(args[1])
        return OK
    if sub == b"GETNAME" and len(args) == 1:
        return conn.name
    if sub == b"ID" and len(args) == 1:
        return conn.id
    if sub == b"INFO" and len(args) == 1:
        return Verbatim(conn.client_info() + "\n")
    if sub == b"LIST" and len(args) == 1:
        return Verbatim("".join(c.client_info() + "\n" for c in conn.server.connections))
    if sub == b"SETINFO" and len(args) == 3:
        return OK  # redis-py sends library name/version; nothing to keep
    raise Reply(f"ERR unknown subcommand '{args[0].decode(errors='replace')}'. Try CLIENT HELP.")


def _command_info(name: bytes) -> list[Any]:
    cmd = COMMANDS[name]
    flags = [
        SimpleString(f)
        for f in sorted(cmd.flags)
        if f in ("write", "readonly", "fast", "admin", "noauth")
    ]
    return [cmd.name.encode(), cmd.arity, flags, cmd.first_key, cmd.last_key, cmd.step]


@command("command", -1, keys=(0, 0, 0))
def command_(conn: Connection, args: list[bytes]) -> Any:
    if not args:
        return [_command_info(name) for name in sorted(COMMANDS)]
    sub = args[0].upper()
    if sub == b"COUNT":
        return len(COMMANDS)
    if sub == b"DOCS":
        return {}  # redis-cli asks at start-up; it works without docs
    if sub == b"INFO":
        return [_command_info(n.upper()) if n.upper() in COMMANDS else None for n in args[1:]]
    raise Reply(f"ERR unknown subcommand '{args[0].decode(errors='replace')}'. Try COMMAND HELP.")


@command("config", -2, "admin", keys=(0, 0, 0))
def config(conn: Connection, args: list[bytes]) -> Any:
    # redis-benchmark reads "save" and "appendonly" to describe the server; report ours.
    if args[0].upper() != b"GET" or len(args) < 2:
        raise Reply("ERR CONFIG supports only GET here")
    durable = conn.server.config.durability
    known = {
        b"save": b"",
        b"appendonly": b"yes" if durable != "none" else b"no",
        b"appendfsync": {"sync": b"always", "async": b"everysec", "none": b"no"}[durable],
        b"maxclients": str(conn.server.max_clients).encode(),
    }
    out: dict[bytes, bytes] = {}
    for pattern in args[1:]:
        for key, value in known.items():
            if pattern == b"*" or pattern.lower() == key:
                out[key] = value
    return out


@command("dbsize", 1, "readonly", "fast", keys=(0, 0, 0))
def dbsize(conn: Connection, args: list[bytes]) -> Any:
    return conn.records.count()


def _flush(conn: Connection, every_set: bool) -> Offload:
    from engramdb.server.structures import ELEMENTS_SET

    db = conn.db
    # The elements of Redis structures are not records: they go with their headers, in
    # the background (server/reclaim.py).
    names = [n for n in db.sets() if n != ELEMENTS_SET] if every_set else [conn.records.name]

    def wipe() -> int:
        removed = 0
        for name in names:
            records = db._internal_records(name)
            while True:
                page = records.scan(limit=1000)
                if not page.records:
                    break
                records.transform_many([(r.key, _delete) for r in page.records])
                removed += len(page.records)
        return removed

    return Offload(wipe, lambda _: OK)


def _delete(current: Any, now: int) -> Any:
    from engramdb.records.writes import Outcome

    return Outcome(None, None)


@command("flushdb", -1, "write", keys=(0, 0, 0))
def flushdb(conn: Connection, args: list[bytes]) -> Any:
    return _flush(conn, every_set=False)


@command("flushall", -1, "write", keys=(0, 0, 0))
def flushall(conn: Connection, args: list[bytes]) -> Any:
    return _flush(conn, every_set=True)


@command("info", -1, "admin", keys=(0, 0, 0))
def info(conn: Connection, args: list[bytes]) -> Any:
    return Verbatim(render_info(conn))


def render_info(conn: Connection) -> str:
    server = conn.server
    stats = server.stats
    saturation = server.saturation()
    ops = server.metrics.snapshot()
    total = sum(m["count"] for m in ops.values())
    errors = sum(m["error_count"] for m in ops.values())
    sections = {
        "Server": {
            "redis_version": REDIS_VERSION,
            "engramdb_version": engramdb.__version__,
            "redis_mode": "standalone",
            "os": platform.platform(),
            "process_id": __import__("os").getpid(),
            "tcp_port": server.port,
            "uptime_in_seconds": int(time.time() - stats.started_at),
            "durability": server.config.durability,
        },
        "Clients": {
            "connected_clients": saturation["connections"],
            "blocked_clients": len(server.blocked),
            "maxclients": server.max_clients,
        },
        "Stats": {
            "total_connections_received": stats.connections_total,
            "total_commands_processed": total,
            "total_error_replies": errors,
            "rejected_connections": stats.rejected_connections,
            "total_net_input_bytes": stats.bytes_in,
            "total_net_output_bytes": stats.bytes_out,
            "shed_busy_replies": stats.shed,
            "protocol_errors": stats.protocol_errors,
            "output_buffer_disconnects": stats.output_buffer_disconnects,
            "idle_disconnects": stats.idle_disconnects,
            "auth_failures": stats.auth_failures,
            "auth_refused_by_backoff": stats.auth_refused,
        },
        "Saturation": {
            "inflight": saturation["inflight"],
            "max_inflight": server.config.max_inflight,
            "group_commit_queue": saturation["group_commit_queue"],
            "event_loop_lag_ms": round(saturation["event_loop_lag_seconds"] * 1000, 3),
            "map_use_ratio": round(saturation["map_use_ratio"], 6),
            "changelog_length": saturation["changelog_length"],
        },
        "Commandstats": {
            f"cmdstat_{name}": (
                f"calls={m['count']},failed_calls={m['error_count']},"
                f"usec_per_call={m['mean_us']},p50_usec={m['p50_us']},"
                f"p99_usec={m['p99_us']},p999_usec={m['p999_us']}"
            )
            for name, m in ops.items()
        },
        "Keyspace": {"db0": f"keys={conn.records.count()},expires=0,avg_ttl=0"},
        "Indexes": {
            # Figures only: free text (an error message) could hold "," "=" or a newline.
            f"index_{name}": ",".join(
                f"{k}={v}" for k, v in figures.items() if k != "updated" and type(v) in (int, float)
            )
            for name, figures in conn.db.stats().get("indexes", {}).items()
        },
    }
    lines: list[str] = []
    for title, fields in sections.items():
        lines.append(f"# {title}")
        lines.extend(f"{k}:{v}" for k, v in fields.items())
        lines.append("")
    return "\r\n".join(lines)
