"""Connection and server commands: PING ECHO HELLO AUTH QUIT RESET SELECT CLIENT CONFIG
DBSIZE FLUSHDB FLUSHALL SAVE BGSAVE LASTSAVE ROLE (INFO, COMMAND and the other introspection
commands are in ``introspection.py``).

Before AUTH only AUTH, HELLO, PING and QUIT answer (the ``noauth`` flag); everything else,
COMMAND and INFO included, gets ``-NOAUTH``. A password is checked in constant time, and only
once the failure backoff of the connection and of its address allows (``server/limits.py``):
a checked attempt that comes early waits for its turn, one that would wait past the cap is
refused unchecked.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import engramdb
from engramdb.protocol.resp import SimpleString, Verbatim
from engramdb.server.commands import Defer, Offload, Reply, command, wrong_args
from engramdb.server.handlers.subcommands import Container
from engramdb.server.settings import SettingError, config_get, config_set

if TYPE_CHECKING:
    from engramdb.server.connection import Connection

OK = SimpleString("OK")
REDIS_VERSION = "7.0.0"  # the command set we follow, reported to clients that ask
MAX_CLIENT_NAME = 512  # bytes; names are shown by CLIENT LIST, one per connection


@command("ping", -1, "noauth", "fast", "subscribed", keys=(0, 0, 0))
def ping(conn: Connection, args: list[bytes]) -> Any:
    """Returns the server's liveliness response."""
    if len(args) > 1:
        raise wrong_args("ping")
    if conn.subscriptions is not None and not conn.resp3:
        return [b"pong", args[0] if args else b""]  # subscribed mode (RESP2), as Redis
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


@command("quit", -1, "noauth", "fast", "subscribed", keys=(0, 0, 0))
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


@command("reset", 1, "fast", "subscribed", keys=(0, 0, 0))
def reset(conn: Connection, args: list[bytes]) -> Any:
    """Resets the connection: no transaction, watches, subscriptions, tracking, MONITOR or name;
    RESP2; and, when the server has a password, not authenticated."""
    conn.multi = None
    conn.watched = None
    conn.server.pubsub.drop(conn)
    conn.server.tracker.disable(conn)
    conn.server.monitors.pop(conn, None)
    conn.monitoring = False
    conn.resp3 = False
    conn.name = None
    conn.no_evict = False
    # and back to database 0, as Redis's RESET
    from engramdb.server.handlers.keyspace import database_set

    conn.records = conn.db.records(database_set(conn, 0))
    conn.db_index = 0
    if conn.server.config.password is not None:
        conn.deauthenticate()
    return SimpleString("RESET")


# SAVE, BGSAVE, LASTSAVE -------------------------------------------------------------------
# engramdb writes no snapshot file: the data directory is the database. What a Redis user's
# script wants from SAVE or BGSAVE (before a shutdown, a copy, an upgrade) is every
# acknowledged write on disk: both fsync the data now, SAVE before it answers.


def last_save(conn: Connection) -> int:
    """LASTSAVE and INFO's ``rdb_last_save_time``: with durability, every acknowledged write
    is on disk (``sync``) or will be within the flush interval (``async``), so now; without,
    the last SAVE or BGSAVE, else the server's start."""
    stats = conn.server.stats
    if conn.server.config.durability != "none":
        return int(time.time())
    return int(stats.last_save_at or stats.started_at)


def _saved(conn: Connection, error: BaseException | None) -> None:
    stats = conn.server.stats
    stats.last_save_ok = error is None
    if error is None:
        stats.saves += 1
        stats.last_save_at = time.time()


@command("save", 1, "admin", "noscript", keys=(0, 0, 0))
def save(conn: Connection, args: list[bytes]) -> Any:
    """Makes every acknowledged write durable (an fsync), then answers."""
    engine = conn.db._engine

    def sync() -> Exception | None:  # on a worker thread
        try:
            engine.sync()
        except Exception as e:
            return e
        return None

    def then(error: Exception | None) -> Any:  # back on the loop, which owns the stats
        _saved(conn, error)
        if error is not None:
            raise error
        return OK

    return Offload(sync, then)


@command("bgsave", -1, "admin", "noscript", keys=(0, 0, 0))
def bgsave(conn: Connection, args: list[bytes]) -> Any:
    """Starts making every acknowledged write durable (an fsync) and answers at once."""
    if len(args) > 1 or (args and args[0].upper() != b"SCHEDULE"):
        raise Reply("ERR syntax error")
    server = conn.server
    if server.stats.saving:
        raise Reply("ERR Background save already in progress")
    server.stats.saving = True

    def finished(future: Any) -> None:
        server.stats.saving = False
        _saved(conn, future.exception())

    server.in_thread(conn.db._engine.sync).add_done_callback(finished)
    return SimpleString("Background saving started")


@command("lastsave", 1, "fast", keys=(0, 0, 0))
def lastsave(conn: Connection, args: list[bytes]) -> Any:
    """Returns the time of the last save (see ``last_save``)."""
    return last_save(conn)


@command("role", 1, "fast", keys=(0, 0, 0))
def role(conn: Connection, args: list[bytes]) -> Any:
    """Returns the replication role: always a primary with no replicas."""
    return [b"master", 0, []]


@command("replicaof", 3, "admin", "noscript", keys=(0, 0, 0))
def replicaof(conn: Connection, args: list[bytes]) -> Any:
    """``REPLICAOF NO ONE``: this server is a primary already. Following another server is
    refused: engramdb replicates through its cluster engine (PostgreSQL and Patroni, see
    "Run it replicated"), not the Redis replication protocol."""
    return _replicaof(args)


@command("slaveof", 3, "admin", "noscript", keys=(0, 0, 0))
def slaveof(conn: Connection, args: list[bytes]) -> Any:
    """The old name of REPLICAOF."""
    return _replicaof(args)


def _replicaof(args: list[bytes]) -> Any:
    if args[0].upper() == b"NO" and args[1].upper() == b"ONE":
        return OK
    raise Reply(
        "ERR REPLICAOF is not supported: engramdb replicates through its cluster engine "
        "(PostgreSQL with Patroni), not the Redis replication protocol"
    )


# CLIENT --------------------------------------------------------------------------------

client_ = Container("client")


@command("client", -2, "admin", keys=(0, 0, 0), metric=client_.metric)
def client(conn: Connection, args: list[bytes]) -> Any:
    """A container for client connection commands."""
    return client_.dispatch(conn, args)


@client_("setname", 3, summary="Sets the connection name.")
def client_setname(conn: Connection, args: list[bytes]) -> Any:
    conn.name = _client_name(args[0])
    return OK


@client_("getname", 2, summary="Returns the name of the connection.")
def client_getname(conn: Connection, args: list[bytes]) -> Any:
    return conn.name


@client_("id", 2, summary="Returns the unique client ID of the connection.")
def client_id(conn: Connection, args: list[bytes]) -> Any:
    return conn.id


@client_("info", 2, summary="Returns information about the connection.")
def client_info(conn: Connection, args: list[bytes]) -> Any:
    return Verbatim(conn.client_info() + "\n")


_CLIENT_TYPES = {
    b"normal": "normal", b"master": "master", b"replica": "replica", b"slave": "replica",
    b"pubsub": "pubsub",
}  # fmt: skip


def _client_type(conn: Connection) -> str:
    return "pubsub" if conn.subscriptions is not None else "normal"


def _parse_type(raw: bytes) -> str:
    kind = _CLIENT_TYPES.get(raw.lower())
    if kind is None:
        raise Reply(f"ERR Unknown client type '{raw.decode(errors='replace')[:64]}'")
    return kind


def _parse_id(raw: bytes) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise Reply("ERR Invalid client ID") from None
    if value <= 0:
        raise Reply("ERR client-id should be greater than 0")
    return value


@client_("list", -2, summary="Lists open connections.")
def client_list(conn: Connection, args: list[bytes]) -> Any:
    clients = sorted(conn.server.connections, key=lambda c: c.id)
    if args:
        option = args[0].upper()
        if option == b"TYPE" and len(args) == 2:
            kind = _parse_type(args[1])
            clients = [c for c in clients if _client_type(c) == kind]
        elif option == b"ID" and len(args) >= 2:
            ids = {_parse_id(raw) for raw in args[1:]}
            clients = [c for c in clients if c.id in ids]
        else:
            raise Reply("ERR syntax error")
    return Verbatim("".join(c.client_info() + "\n" for c in clients))


@client_("kill", -3, "admin", summary="Terminates open connections.")
def client_kill(conn: Connection, args: list[bytes]) -> Any:
    connections = sorted(conn.server.connections, key=lambda c: c.id)
    if len(args) == 1:  # the old form: CLIENT KILL addr:port
        address = args[0].decode(errors="replace")
        found = [c for c in connections if c.address == address]
        if not found:
            raise Reply("ERR No such client")
        _kill(conn, found[0])
        return OK
    if len(args) % 2:
        raise Reply("ERR syntax error")
    wanted: dict[bytes, Any] = {}
    skip_me = True
    for option, raw in zip((a.upper() for a in args[::2]), args[1::2]):
        if option == b"ID":
            wanted[option] = _parse_id(raw)
        elif option == b"TYPE":
            wanted[option] = _parse_type(raw)
        elif option in (b"ADDR", b"LADDR", b"USER"):
            wanted[option] = raw.decode(errors="replace")
        elif option == b"MAXAGE":
            try:
                wanted[option] = int(raw)
            except ValueError:
                raise Reply("ERR syntax error") from None
        elif option == b"SKIPME" and raw.lower() in (b"yes", b"no"):
            skip_me = raw.lower() == b"yes"
        else:
            raise Reply("ERR syntax error")
    killed = 0
    for target in connections:
        if (skip_me and target is conn) or not _kill_matches(target, wanted):
            continue
        _kill(conn, target)
        killed += 1
    return killed


def _kill_matches(target: Connection, wanted: dict[bytes, Any]) -> bool:
    facts: dict[bytes, Callable[[], Any]] = {
        b"ID": lambda: target.id,
        b"TYPE": lambda: _client_type(target),
        b"ADDR": lambda: target.address,
        b"LADDR": lambda: target.local_address,
        b"USER": lambda: "default",
    }
    for option, value in wanted.items():
        if option == b"MAXAGE":
            if target.age() < value:
                return False
        elif facts[option]() != value:
            return False
    return True


def _kill(conn: Connection, target: Connection) -> None:
    if target is conn:
        conn.close_after_reply()
    else:
        target.kill()
    conn.server.stats.killed_clients += 1


@client_("setinfo", 4, summary="Sets information specific to the client or connection.")
def client_setinfo(conn: Connection, args: list[bytes]) -> Any:
    attribute, value = args[0].lower(), args[1]
    if attribute not in (b"lib-name", b"lib-ver"):
        raise Reply(f"ERR Unrecognized option '{args[0].decode(errors='replace')[:64]}'")
    if any(byte < 0x21 or byte > 0x7E for byte in value) or len(value) > MAX_CLIENT_NAME:
        raise Reply(
            f"ERR {attribute.decode()} cannot contain spaces, newlines or special characters."
        )
    name, version = conn.lib
    conn.lib = (value, version) if attribute == b"lib-name" else (name, value)
    return OK


def _on_off(raw: bytes) -> bool:
    option = raw.upper()
    if option not in (b"ON", b"OFF"):
        raise Reply("ERR syntax error")
    return option == b"ON"


@client_("no-evict", 3, "admin", summary="Sets the client eviction mode of the connection.")
def client_no_evict(conn: Connection, args: list[bytes]) -> Any:
    # Nothing is evicted here (no maxmemory-clients); the flag is kept and shown.
    conn.no_evict = _on_off(args[0])
    return OK


@client_("no-touch", 3, summary="Controls whether commands sent by the client affect LRU.")
def client_no_touch(conn: Connection, args: list[bytes]) -> Any:
    _on_off(args[0])  # there is no LRU/LFU to spare
    return OK


@client_("reply", 3, summary="Instructs the server whether to reply to commands.")
def client_reply(conn: Connection, args: list[bytes]) -> Any:
    option = args[0].upper()
    if option == b"ON":
        return OK
    if option in (b"OFF", b"SKIP"):
        raise Reply("ERR CLIENT REPLY OFF|SKIP is not supported by engramdb")
    raise Reply("ERR syntax error")


@client_("pause", -3, "admin", summary="Suspends commands processing.")
def client_pause(conn: Connection, args: list[bytes]) -> Any:
    if len(args) > 2:
        raise Reply("ERR syntax error")
    try:
        ms = int(args[0])
    except ValueError:
        raise Reply("ERR timeout is not an integer or out of range") from None
    if ms < 0:
        raise Reply("ERR timeout is negative")
    mode = args[1].upper() if len(args) == 2 else b"ALL"
    if mode not in (b"ALL", b"WRITE"):
        raise Reply("ERR syntax error")
    if conn.server.config.processes > 1:
        raise Reply(
            "ERR CLIENT PAUSE is not supported with --workers above 1: it would pause the "
            "clients of one worker process only"
        )
    conn.server.pause(ms / 1000, writes_only=mode == b"WRITE")
    return OK


@client_("unpause", 2, "admin", summary="Resumes processing commands from paused clients.")
def client_unpause(conn: Connection, args: list[bytes]) -> Any:
    conn.server.unpause()
    return OK


@client_("getredir", 2, summary="Returns the client ID to which the connection's tracking "
         "notifications are redirected.")  # fmt: skip
def client_getredir(conn: Connection, args: list[bytes]) -> Any:
    return -1 if conn.tracking is None else conn.tracking.redirect


@client_("trackinginfo", 2, summary="Returns information about server-assisted client-side "
         "caching for the connection.")  # fmt: skip
def client_trackinginfo(conn: Connection, args: list[bytes]) -> Any:
    tracking = conn.tracking
    if tracking is None:
        return {b"flags": [b"off"], b"redirect": -1, b"prefixes": []}
    return {
        b"flags": tracking.flags(),
        b"redirect": tracking.redirect,
        b"prefixes": list(tracking.prefixes),
    }


@client_("tracking", -3, summary="Controls server-assisted client-side caching.")
def client_tracking(conn: Connection, args: list[bytes]) -> Any:
    """CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX p ...] [BCAST] [OPTIN] [OPTOUT] [NOLOOP],
    checked as Redis checks it (server/tracking.py has the rules)."""
    from engramdb.server.tracking import Tracking

    redirect = 0
    prefixes: list[bytes] = []
    options: set[bytes] = set()
    i = 1
    while i < len(args):
        word = args[i].upper()
        more = i + 1 < len(args)
        if word == b"REDIRECT" and more:
            if redirect:
                raise Reply("ERR A client can only redirect to a single other client")
            try:
                redirect = int(args[i + 1])
            except ValueError:
                raise Reply("ERR value is not an integer or out of range") from None
            if redirect != conn.id and not any(c.id == redirect for c in conn.server.connections):
                raise Reply("ERR The client ID you want redirect to does not exist")
            i += 2
        elif word == b"PREFIX" and more:
            prefixes.append(args[i + 1])
            i += 2
        elif word in (b"BCAST", b"OPTIN", b"OPTOUT", b"NOLOOP"):
            options.add(word)
            i += 1
        else:
            raise Reply("ERR syntax error")
    mode = args[0].upper()
    tracker = conn.server.tracker
    if mode == b"OFF":
        tracker.disable(conn)
        return OK
    if mode != b"ON":
        raise Reply("ERR syntax error")
    bcast = b"BCAST" in options
    current = conn.tracking
    if prefixes and not bcast:
        raise Reply("ERR PREFIX option requires BCAST mode to be enabled")
    if current is not None and current.bcast != bcast:
        raise Reply(
            "ERR You can't switch BCAST mode on/off before disabling tracking for this "
            "client, and then re-enabling it with a different mode."
        )
    if bcast and options & {b"OPTIN", b"OPTOUT"}:
        raise Reply("ERR OPTIN and OPTOUT are not compatible with BCAST")
    if {b"OPTIN", b"OPTOUT"} <= options:
        raise Reply("ERR You can't specify both OPTIN mode and OPTOUT mode")
    if current is not None and (
        (b"OPTIN" in options and current.optout) or (b"OPTOUT" in options and current.optin)
    ):
        raise Reply(
            "ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this "
            "client, and then re-enabling it with a different mode."
        )
    if bcast:
        overlap = tracker.overlapping(prefixes, conn)
        if overlap is not None:
            raise Reply(overlap)
    unique = tuple(prefixes)
    if current is not None and bcast:  # ON again adds prefixes, as in Redis
        unique = (*current.prefixes, *unique)
    tracker.enable(
        conn,
        Tracking(
            redirect=redirect,
            bcast=bcast,
            prefixes=unique,
            optin=b"OPTIN" in options,
            optout=b"OPTOUT" in options,
            noloop=b"NOLOOP" in options,
        ),
    )
    return OK


@client_("caching", 3, summary="Instructs the server whether to track the keys in the next "
         "request.")  # fmt: skip
def client_caching(conn: Connection, args: list[bytes]) -> Any:
    tracking = conn.tracking
    if tracking is None:
        raise Reply(
            "ERR CLIENT CACHING can be called only when the client is in tracking mode with "
            "OPTIN or OPTOUT mode enabled"
        )
    option = args[0].upper()
    if option == b"YES":
        if not tracking.optin:
            raise Reply(
                "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode."
            )
        tracking.caching = True
    elif option == b"NO":
        if not tracking.optout:
            raise Reply(
                "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode."
            )
        tracking.caching = False
    else:
        raise Reply("ERR syntax error")
    return OK


@client_("unblock", -3, "admin", summary="Unblocks a client blocked by a blocking command.")
def client_unblock(conn: Connection, args: list[bytes]) -> Any:
    target = _parse_id(args[0])
    if len(args) > 2 or (len(args) == 2 and args[1].upper() not in (b"TIMEOUT", b"ERROR")):
        raise Reply("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
    for other in conn.server.connections:
        if other.id == target:
            return int(other.unblock(error=len(args) == 2 and args[1].upper() == b"ERROR"))
    return 0


# CONFIG --------------------------------------------------------------------------------

config_ = Container("config")


@command("config", -2, "admin", keys=(0, 0, 0), metric=config_.metric)
def config(conn: Connection, args: list[bytes]) -> Any:
    """A container for server configuration commands."""
    return config_.dispatch(conn, args)


@config_("get", -3, "admin", summary="Returns the effective values of configuration parameters.")
def config_get_(conn: Connection, args: list[bytes]) -> Any:
    return config_get(conn.server, args)


@config_("set", -4, "admin", summary="Sets configuration parameters in-flight.")
def config_set_(conn: Connection, args: list[bytes]) -> Any:
    if len(args) % 2:
        raise Reply("ERR syntax error")
    pairs = list(zip(args[::2], args[1::2]))
    try:
        config_set(conn.server, pairs)
    except KeyError as e:
        raise Reply(
            f"ERR Unknown option or number of arguments for CONFIG SET - '{e.args[0]}'"
        ) from None
    except SettingError as e:
        raise Reply(f"ERR {e}") from None
    server = conn.server
    for name, value in pairs:
        name = name.lower()
        server.changed_settings[name] = value
        if server.bus is not None:
            server.bus.setting(name, value)  # every process of the data directory
    return OK


@config_("resetstat", 2, "admin", summary="Resets the server's statistics.")
def config_resetstat(conn: Connection, args: list[bytes]) -> Any:
    conn.server.reset_stats()
    return OK


@config_("rewrite", 2, "admin", summary="Persists the effective configuration to file.")
def config_rewrite(conn: Connection, args: list[bytes]) -> Any:
    raise Reply("ERR The server is running without a config file")


@command("dbsize", 1, "readonly", "fast", keys=(0, 0, 0))
def dbsize(conn: Connection, args: list[bytes]) -> Any:
    return conn.records.count()


def _flush(conn: Connection, args: list[bytes], every_set: bool) -> Offload:
    from engramdb.server.structures import ELEMENTS_SET

    if len(args) > 1 or (args and args[0].upper() not in (b"ASYNC", b"SYNC")):
        raise Reply("ERR syntax error")
    wait = not args or args[0].upper() == b"SYNC"
    db = conn.db
    reclaimer = conn.server.reclaimer
    # The elements of Redis structures are not records: they go with their headers, in
    # the background (server/reclaim.py); unless ASYNC, the reply waits for that, as Redis
    # frees a flushed database before it answers.
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
        if wait:
            reclaimer.drain()
        else:
            reclaimer.nudge()
        return removed

    # Every tracking client drops its whole cache now, before the wipe: a key it reads
    # meanwhile is remembered again, and its deletion is sent as usual.
    conn.server.tracker.flushed()
    return Offload(wipe, lambda _: OK)


def _delete(current: Any, now: int) -> Any:
    from engramdb.records.writes import Outcome

    return Outcome(None, None)


@command("flushdb", -1, "write", keys=(0, 0, 0))
def flushdb(conn: Connection, args: list[bytes]) -> Any:
    return _flush(conn, args, every_set=False)


@command("flushall", -1, "write", keys=(0, 0, 0))
def flushall(conn: Connection, args: list[bytes]) -> Any:
    return _flush(conn, args, every_set=True)
