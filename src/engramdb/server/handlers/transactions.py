"""Redis transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH.

Rules (after Redis, with one engine transaction doing the work):

- After MULTI, a command is checked (known? right arity? allowed in a transaction?) and
  queued with ``+QUEUED``; a failed check replies its error and marks the transaction
  dirty, and EXEC then discards it with ``EXECABORT``. EXEC, DISCARD, MULTI, WATCH and QUIT
  act at once (MULTI and WATCH answer an error that leaves the transaction as it was).
- EXEC submits ONE write plan to group commit. Inside that engine transaction it first
  compares every watched key's generation with the one seen at WATCH (0 when absent or
  expired; generations are never reused, so equal means untouched by anyone: this or
  another connection, another process, a delete, an expiry) and on any change answers nil
  and writes nothing. Otherwise it runs each queued command against the transaction:
  reads see the writes queued before them, and a command's own error (WRONGTYPE, not an
  integer...) is that command's reply, the others still apply, as in Redis. Command errors
  are raised before a plan stages anything (``storage/group_commit.py``), so they leave no
  trace; any other failure (storage, a bug) propagates, and group commit then drops the
  whole EXEC, alone, from its batch: all of it or none of it is committed.
- Commands that would read outside the transaction (KEYS, SCAN, DBSIZE, FLUSHALL, the native
  ``ENGRAM`` calls) or change the connection are refused while queueing, so no EXEC can
  half-run: Redis queues some of them; here they abort the transaction before it starts.
- EXEC, DISCARD and UNWATCH forget the watches; a connection that closes mid-MULTI simply
  never runs what it queued.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from engramdb.errors import Conflict, EngramError, InvalidArgument, NotFound
from engramdb.protocol.errors import error_reply_text
from engramdb.protocol.resp import NULL_ARRAY, ErrorReply, SimpleString
from engramdb.records.writes import Stored, record_from
from engramdb.server.commands import (
    COMMANDS,
    Command,
    Offload,
    RedisError,
    Reply,
    Write,
    command,
    unknown_command,
)
from engramdb.server.handlers.admin import OK
from engramdb.server.handlers.values import key_of

if TYPE_CHECKING:
    from engramdb.records.keys import Key
    from engramdb.records.model import Record
    from engramdb.recordset import RecordSet
    from engramdb.server.connection import Connection
    from engramdb.storage.base import WriteFn, WriteTxn

__all__ = [
    "MAX_QUEUED_BYTES",
    "MAX_QUEUED_COMMANDS",
    "MAX_WATCHED_KEYS",
    "NOT_IN_TRANSACTION",
    "Transaction",
    "TxnRecords",
    "execute",
    "txn_connection",
]

QUEUED = SimpleString("QUEUED")
EXECABORT = "EXECABORT Transaction discarded because of previous errors."

# Bounds on what one client may make the server hold for a transaction (Redis has none;
# every limit here has a server maximum). Past them the transaction is aborted.
MAX_QUEUED_COMMANDS = 100_000
MAX_QUEUED_BYTES = 64 << 20
MAX_WATCHED_KEYS = 10_000

# Commands MULTI does not queue: they act on the transaction itself, or close the connection.
RUN_AT_ONCE = frozenset({"exec", "discard", "multi", "watch", "quit", "reset"})
# Commands queued although they neither read nor write data (they answer the same inside).
PURE = frozenset({"ping", "echo", "select", "unwatch", "script"})
# Data commands that read outside the transaction's view or act on the whole database: they
# would not see the queued writes before them, so they are refused while queueing.
NOT_IN_TRANSACTION = frozenset(
    {"keys", "scan", "dbsize", "flushdb", "flushall", "engram", "engram.debug"}
)
# The request errors group commit keeps to one write: raised before anything is staged.
_COMMAND_ERRORS = (Reply, Conflict, NotFound, InvalidArgument)


def queueable(cmd: Command) -> bool:
    """Whether ``cmd`` can run inside a transaction (or a script) against its view."""
    if cmd.name in NOT_IN_TRANSACTION:
        return False
    return cmd.name in PURE or "write" in cmd.flags or "readonly" in cmd.flags


def arity_ok(cmd: Command, args: Sequence[bytes]) -> bool:
    arity = cmd.arity
    return len(args) == arity if arity > 0 else len(args) >= -arity


class Transaction:
    """The commands a connection queued after MULTI."""

    __slots__ = ("commands", "dirty", "size")

    def __init__(self) -> None:
        self.commands: list[list[bytes]] = []
        self.dirty = False
        self.size = 0

    def queue(self, cmd: Command | None, args: list[bytes]) -> Any:
        """The reply to ``args`` sent inside MULTI, or None when it must run now."""
        if cmd is not None and cmd.name in RUN_AT_ONCE:
            return None
        reply = self._check(cmd, args)
        if reply is not None:
            self.dirty = True
            return reply
        if not self.dirty:  # a doomed transaction keeps nothing (Redis queues, then drops)
            self.commands.append(args)
            self.size += sum(len(a) for a in args)
        return QUEUED

    def _check(self, cmd: Command | None, args: list[bytes]) -> ErrorReply | None:
        if cmd is None:
            return ErrorReply(unknown_command(args))
        if not arity_ok(cmd, args):
            return ErrorReply(f"ERR wrong number of arguments for '{cmd.name}' command")
        if not queueable(cmd):
            return ErrorReply(
                f"ERR Command not allowed inside a transaction ('{cmd.name}' would not see "
                "the queued writes, or changes the connection)"
            )
        if (
            len(self.commands) >= MAX_QUEUED_COMMANDS
            or self.size + sum(len(a) for a in args) > MAX_QUEUED_BYTES
        ):
            return ErrorReply(
                f"ERR transaction too large (at most {MAX_QUEUED_COMMANDS} commands and "
                f"{MAX_QUEUED_BYTES >> 20} MiB of arguments)"
            )
        return None


# reading and writing through one engine transaction ---------------------------------------


class TxnRecords:
    """The default set's records as seen from inside one write transaction.

    Handlers read through ``get``/``get_many``/``exists`` and plan writes with ``_plan_*``
    exactly as on a ``RecordSet``; reads here see the transaction's own earlier writes.
    Anything else a handler might reach for (scans, counts) is refused, never answered from
    outside the transaction.
    """

    def __init__(self, records: RecordSet, txn: WriteTxn, now_ms: int) -> None:
        self._records = records
        self._txn = txn
        self._now = now_ms
        self.name = records.name
        self._plan_transform = records._plan_transform
        self._plan_put = records._plan_put
        # What the string commands' fast paths use (strings.py): keys, limits, plain puts.
        self._plan_put_body = records._plan_put_body
        self._plan_one = records._plan_one
        self._rk = records._rk
        self._rk_of_text = records._rk_of_text
        self._limits = records._limits

    def _live(self, rk: bytes) -> bytes | None:
        stored = Stored(self._txn.get(rk), self._now)
        return stored.raw

    def get(self, key: Key) -> Record | None:
        raw = self._txn.get(self._records._rk(key))
        return None if raw is None else record_from(key, raw, self._now)

    def get_many(self, keys: Sequence[Key]) -> list[Record | None]:
        return [self.get(key) for key in keys]

    def exists(self, key: Key) -> bool:
        return self.generation(key) > 0

    def generation(self, key: Key) -> int:
        """The key's generation now, 0 when it is absent or expired."""
        return Stored(self._txn.get(self._records._rk(key)), self._now).generation

    def __getattr__(self, name: str) -> Any:
        raise Reply(f"ERR '{name}' cannot run inside a transaction or a script")


class _TxnConnection:
    """What a handler sees as its connection while it runs inside a transaction: the real
    connection, except that ``records`` reads and writes through the transaction."""

    def __init__(self, conn: Connection, records: TxnRecords, txn: WriteTxn) -> None:
        self._conn = conn
        self.records = records
        self.txn = txn
        self.in_transaction = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def txn_connection(conn: Connection, txn: WriteTxn) -> Connection:
    """A view of ``conn`` whose reads and writes go through ``txn``."""
    if isinstance(conn, _TxnConnection):  # a script inside EXEC: a view of the real one
        conn = conn._conn
    records = TxnRecords(conn.records, txn, conn.db._now_ms())
    return cast("Connection", _TxnConnection(conn, records, txn))


def command_error(error: BaseException) -> ErrorReply:
    """The error reply of a command-level failure."""
    if isinstance(error, Reply | RedisError):
        return ErrorReply(error.text)
    assert isinstance(error, EngramError)
    return ErrorReply(error_reply_text(error))


def execute(view: Connection, args: list[bytes]) -> Any:
    """Run one command inside the transaction of ``view`` (from ``txn_connection``).

    Returns its reply; a command-level error is returned as an ``ErrorReply`` (nothing of
    that command was staged). Any other exception propagates: the caller's whole write
    must then fail.
    """
    cmd = COMMANDS.get(args[0]) or COMMANDS.get(args[0].upper())
    assert cmd is not None
    try:
        result = cmd.handler(view, args[1:])
        kind = type(result)
        if kind is Write:
            return result.then(result.plan(cast(Any, view).txn))
        if kind is Offload:
            raise Reply(f"ERR '{cmd.name}' cannot run inside a transaction or a script")
        return result
    except _COMMAND_ERRORS as e:
        return command_error(e)


# the commands ----------------------------------------------------------------------------


@command("multi", 1, "fast", keys=(0, 0, 0))
def multi(conn: Connection, args: list[bytes]) -> Any:
    if conn.multi is not None:
        raise Reply("ERR MULTI calls can not be nested")
    conn.multi = Transaction()
    return OK


@command("discard", 1, "fast", keys=(0, 0, 0))
def discard(conn: Connection, args: list[bytes]) -> Any:
    if conn.multi is None:
        raise Reply("ERR DISCARD without MULTI")
    conn.multi = None
    conn.watched = None
    return OK


@command("watch", -2, "fast", keys=(1, -1, 1))
def watch(conn: Connection, args: list[bytes]) -> Any:
    if conn.multi is not None:
        raise Reply("ERR WATCH inside MULTI is not allowed")
    watched = conn.watched if conn.watched is not None else {}
    fresh = list(dict.fromkeys(k for k in map(key_of, args) if k not in watched))
    if len(watched) + len(fresh) > MAX_WATCHED_KEYS:
        raise Reply(f"ERR too many watched keys (at most {MAX_WATCHED_KEYS})")
    # WATCH is a read: it runs once this client's earlier writes are committed, and keeps
    # the first generation seen per key (watching a key twice does not move its mark).
    for key, record in zip(fresh, conn.records.get_many(fresh)):
        watched[key] = 0 if record is None else record.generation
    conn.watched = watched
    return OK


@command("unwatch", 1, "fast", keys=(0, 0, 0))
def unwatch(conn: Connection, args: list[bytes]) -> Any:
    conn.watched = None  # inside EXEC this sets the view's copy: the watches are spent
    return OK


@command("exec", 1, "write", keys=(0, 0, 0))
def exec_(conn: Connection, args: list[bytes]) -> Any:
    transaction = conn.multi
    if transaction is None:
        raise Reply("ERR EXEC without MULTI")
    watched = conn.watched
    conn.multi = None
    conn.watched = None  # EXEC ends the transaction whatever happens next (even -BUSY)
    if transaction.dirty:
        raise Reply(EXECABORT)
    if not transaction.commands and not watched:
        return []
    return Write(plan_exec(conn, transaction.commands, watched or {}), _exec_reply)


def plan_exec(conn: Connection, commands: list[list[bytes]], watched: dict[Key, int]) -> WriteFn:
    """The one write plan of an EXEC: check the watches, then run every queued command."""

    def run(txn: WriteTxn) -> list[Any] | None:
        view = txn_connection(conn, txn)
        records = cast(TxnRecords, view.records)
        for key, generation in watched.items():
            if records.generation(key) != generation:
                return None  # nothing was staged: the transaction is simply not applied
        return [execute(view, args) for args in commands]

    return run


def _exec_reply(replies: list[Any] | None) -> Any:
    return NULL_ARRAY if replies is None else replies
