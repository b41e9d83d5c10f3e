"""Keyspace notifications (``notify-keyspace-events``), generated from the change log.

Rules:
- The source is the database's change log, not the commands this process runs: a write
  made by another server process, or by the embedded API in any process on the same data
  directory, is notified like one made here. Changes are published in log order, on
  ``__keyspace@0__:<key>`` (message: the event) and ``__keyevent@0__:<event>`` (message:
  the key), filtered by the configured classes exactly as Redis does.
- Off by default, and then free: no task runs and the write path only tests one boolean.
  When on, a task tails ``db.changes()`` (woken by this process's commits, and every
  ``POLL_SECONDS`` for other processes'), reading on a worker thread. With nobody
  subscribed it skips ahead without reading.
- Event names. The log records ``put``, ``delete`` and ``expire``. ``expire`` becomes
  ``expired`` (class ``x``), ``delete`` becomes ``del`` (``g``). A ``put`` made by a Redis
  command of this process carries that command's Redis event (``set``, ``incrby``,
  ``lpush``, ``hset``, ``expire``...; see ``EVENTS``): the command's write plan notes the
  sequence numbers it logged. Any other ``put`` (the Python API, another process, a
  native ``ENGRAM`` call) is reported as ``set``, in the class of the key's type
  (``$`` string, ``h`` hash, ``l`` list...). A command that empties a collection reports
  its own event, then ``del``, as Redis does.
- Not generated: ``n`` (new key: a change does not say whether the key existed before),
  ``m`` (key miss: reads are not logged), ``e`` (nothing is evicted), ``t``/``d`` (no
  streams, no modules). They are accepted in the setting and never fire.
- Only the sets Redis commands address are notified: ``default`` is database 0 and
  ``default.N`` database N (``SELECT N``); role and vector sets are not Redis keys.
- A subscriber that falls behind is cut off by the pub/sub output-buffer limit; the tail
  itself never falls behind memory-wise (it reads ``BATCH`` changes at a time). If the log
  was trimmed past the tail's position (more than the retention behind), the gap is
  skipped and counted in ``INFO`` (``keyspace_notifications_lost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from typing import TYPE_CHECKING, Any

from engramdb.errors import ChangeLogTruncated, EngramError
from engramdb.server.handlers.values import key_bytes, key_of, kind_of
from engramdb.server.settings import parse_events
from engramdb.server.structures import DATABASES

if TYPE_CHECKING:
    from engramdb.records.keys import Key
    from engramdb.records.model import Change
    from engramdb.server.app import Server
    from engramdb.server.commands import Command
    from engramdb.storage.base import WriteFn, WriteTxn

__all__ = ["DATABASES", "EVENTS", "Notifier", "redis_database"]

log = logging.getLogger("engramdb.server")

POLL_SECONDS = 0.01
BATCH = 512
_MAX_HINTS = 200_000  # sequences noted by write plans and not yet read back by the tail

# The Redis event (and class) each write command notifies, when it changes its key (SET
# and GETEX depend on their options: see ``_events_of``).
EVENTS: dict[str, tuple[str, str]] = {
    # strings
    "set": ("set", "$"), "setnx": ("set", "$"), "setex": ("set", "$"),
    "psetex": ("set", "$"), "getset": ("set", "$"), "mset": ("set", "$"),
    "msetnx": ("set", "$"), "setrange": ("setrange", "$"), "append": ("append", "$"),
    "incr": ("incrby", "$"), "decr": ("decrby", "$"), "incrby": ("incrby", "$"),
    "decrby": ("decrby", "$"), "incrbyfloat": ("incrbyfloat", "$"),
    "getdel": ("del", "g"), "getex": ("expire", "g"),
    # keyspace
    "del": ("del", "g"), "unlink": ("del", "g"), "expire": ("expire", "g"),
    "pexpire": ("expire", "g"), "expireat": ("expire", "g"), "pexpireat": ("expire", "g"),
    "persist": ("persist", "g"), "rename": ("rename_to", "g"), "renamenx": ("rename_to", "g"),
    "copy": ("copy_to", "g"), "move": ("move_to", "g"), "restore": ("restore", "g"),
    # lists
    "lpush": ("lpush", "l"), "lpushx": ("lpush", "l"), "rpush": ("rpush", "l"),
    "rpushx": ("rpush", "l"), "lpop": ("lpop", "l"), "rpop": ("rpop", "l"),
    "blpop": ("lpop", "l"), "brpop": ("rpop", "l"), "lset": ("lset", "l"),
    "ltrim": ("ltrim", "l"), "linsert": ("linsert", "l"), "lrem": ("lrem", "l"),
    "lmpop": ("lpop", "l"), "blmpop": ("lpop", "l"), "sort": ("sortstore", "l"),
    # hashes
    "hset": ("hset", "h"), "hmset": ("hset", "h"), "hsetnx": ("hset", "h"),
    "hincrby": ("hincrby", "h"), "hincrbyfloat": ("hincrbyfloat", "h"), "hdel": ("hdel", "h"),
    # sets
    "sadd": ("sadd", "s"), "srem": ("srem", "s"), "spop": ("spop", "s"),
    "sinterstore": ("sinterstore", "s"), "sunionstore": ("sunionstore", "s"),
    "sdiffstore": ("sdiffstore", "s"),
    # sorted sets
    "zadd": ("zadd", "z"), "zincrby": ("zincr", "z"), "zrem": ("zrem", "z"),
    "zpopmin": ("zpopmin", "z"), "zpopmax": ("zpopmax", "z"), "bzpopmin": ("zpopmin", "z"),
    "bzpopmax": ("zpopmax", "z"), "zremrangebyscore": ("zremrangebyscore", "z"),
    "zremrangebyrank": ("zremrangebyrank", "z"), "zremrangebylex": ("zremrangebylex", "z"),
    "zunionstore": ("zunionstore", "z"), "zinterstore": ("zinterstore", "z"),
    "zdiffstore": ("zdiffstore", "z"), "zrangestore": ("zrangestore", "z"),
}  # fmt: skip
# Commands that move an element from one key to another: (source event, target event);
# LMOVE's and BLMOVE's depend on their LEFT/RIGHT arguments (see ``_hint``).
_MOVES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "rpoplpush": (("rpop", "l"), ("lpush", "l")),
    "brpoplpush": (("rpop", "l"), ("lpush", "l")),
    "lmove": (("rpop", "l"), ("lpush", "l")),
    "blmove": (("rpop", "l"), ("lpush", "l")),
    "smove": (("srem", "s"), ("sadd", "s")),
}
# Classes whose events remove elements: when such a command empties its key, Redis sends
# the command's event and then "del".
_ELEMENT_CLASSES = frozenset("lshz")
_TYPE_CLASS = {"string": "$", "hash": "h", "list": "l", "set": "s", "zset": "z"}

Event = tuple[int, bytes, bytes, str]  # database, key, event, class
Events = tuple[tuple[str, str], ...]  # (event, class), in order
Hint = dict["Key", Events]  # what each key a command wrote notifies
_TTL_OPTIONS = frozenset({b"EX", b"PX", b"EXAT", b"PXAT"})


def _events_of(name: str, args: list[bytes]) -> tuple[tuple[str, str], ...]:
    """What a write command notifies, in order: SET EX also says "expire", as in Redis."""
    if name in ("setex", "psetex"):
        return (("set", "$"), ("expire", "g"))
    options = {a.upper() for a in args[3:]} if name in ("set", "getex") else set()
    if name == "set":
        return (("set", "$"), ("expire", "g")) if options & _TTL_OPTIONS else (("set", "$"),)
    if name == "getex":
        if b"PERSIST" in options:
            return (("persist", "g"),)
        return (("expire", "g"),) if options & _TTL_OPTIONS else ()
    event = EVENTS.get(name)
    return (event,) if event is not None else ()


def _hint(name: str, keys: list[Key], args: list[bytes]) -> Hint:
    """Each key's events. A move notifies its source and its destination differently, as
    Redis does (LMOVE: "lpop"/"rpop" on the source, "lpush"/"rpush" on the destination);
    one key both source and destination gets both, in that order."""
    if name in _MOVES and len(keys) >= 2:
        if name in ("lmove", "blmove") and len(args) >= 5:
            source = ("lpop" if args[3].upper() == b"LEFT" else "rpop", "l")
            target = ("lpush" if args[4].upper() == b"LEFT" else "rpush", "l")
        else:
            source, target = _MOVES[name]
        hint: Hint = {keys[0]: (source,)}
        hint[keys[1]] = (*hint.get(keys[1], ()), target)
        return hint
    events = _events_of(name, args)
    return dict.fromkeys(keys, events) if events else {}


class Notifier:
    """The keyspace-notification tail of one server process."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.events: str = ""  # the setting, as CONFIG GET shows it
        self.hinting = False  # on: write plans note their events (one test per write)
        self.lost = 0
        self.sent = 0
        self._classes = ""
        self._keyspace = self._keyevent = False
        self._hints: dict[int, Hint] = {}
        self._hints_lock = threading.Lock()
        self._position = 0
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    # configuration ---------------------------------------------------------------------

    def configure(self, events: str) -> None:
        """Apply a ``notify-keyspace-events`` value (``parse_events`` checked it)."""
        self.events = parse_events(events)
        expanded = self.events.replace("A", "g$lshzxetd")
        self._keyspace = "K" in expanded
        self._keyevent = "E" in expanded
        self._classes = "".join(c for c in expanded if c not in "KE")
        on = (self._keyspace or self._keyevent) and bool(self._classes)
        self.hinting = on
        if on and self._task is None:
            self._position = self.server.db.last_sequence()
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._tail())
        elif not on and self._task is not None:
            self._task.cancel()
            self._task = None
            with self._hints_lock:
                self._hints.clear()

    def rebase(self) -> None:
        """The database was replaced (``--testing`` reset): start from its end."""
        self._position = self.server.db.last_sequence()
        with self._hints_lock:
            self._hints.clear()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def poke(self) -> None:
        """This process committed a write: look at the log now rather than at the next poll."""
        if self._wake is not None:
            self._wake.set()

    # the write side --------------------------------------------------------------------

    def hinted(self, cmd: Command, args: list[bytes], plan: WriteFn) -> WriteFn:
        """``plan``, noting which event each change it logs stands for."""
        if cmd.first_key <= 0:
            return plan
        hint = _hint(cmd.name, _command_keys(cmd, args), args)
        if not hint:
            return plan

        def run(txn: WriteTxn) -> Any:
            first = txn.next_sequence()
            result = plan(txn)
            last = txn.next_sequence()
            if last > first:
                self._note(first, last, hint)
            return result

        return run

    def _note(self, first: int, last: int, hint: Hint) -> None:
        # Noted before the commit, so the tail (which reads only committed changes) finds
        # the note. A plan run again after another write of its batch failed notes again.
        with self._hints_lock:
            hints = self._hints
            for sequence in range(first, last):
                hints[sequence] = hint
            while len(hints) > _MAX_HINTS:
                del hints[next(iter(hints))]

    # the tail --------------------------------------------------------------------------

    async def _tail(self) -> None:
        server = self.server
        wake = self._wake
        assert wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), POLL_SECONDS)
            wake.clear()
            try:
                if server.pubsub.idle:
                    self._skip_ahead()
                    continue
                read = functools.partial(self._read, not set("$lshz") <= set(self._classes))
                events, more = await server.in_thread(read)
            except EngramError as e:
                log.warning("keyspace notifications paused: %s", e)
                await asyncio.sleep(1.0)
                continue
            for database, key, event, cls in events:
                self._publish(database, key, event, cls)
            if more:
                wake.set()

    def _skip_ahead(self) -> None:
        self._position = self.server.db.last_sequence()
        with self._hints_lock:
            self._hints.clear()

    def _read(self, needs_type: bool) -> tuple[list[Event], bool]:
        """The events of the next changes, and whether more may follow (on a worker
        thread; one at a time)."""
        db = self.server.db
        try:
            changes = db.changes(self._position, limit=BATCH)
        except ChangeLogTruncated as e:
            self.lost += max(0, e.first_sequence - 1 - self._position)
            self._position = max(self._position, e.first_sequence - 1)
            changes = db.changes(self._position, limit=BATCH)
        if not changes:
            return [], False
        self._position = changes[-1].sequence
        with self._hints_lock:
            hints = [self._hints.pop(c.sequence, None) for c in changes]
        out: list[Event] = []
        for change, hint in zip(changes, hints):
            database = self._database(change.set_name)
            if database is not None:
                out.extend(self._events(database, change, hint, needs_type))
        return out, len(changes) == BATCH

    def _database(self, set_name: str) -> int | None:
        return redis_database(self.server.config.default_set, set_name)

    def _events(
        self, database: int, change: Change, hint: Hint | None, needs_type: bool
    ) -> list[Event]:
        key = key_bytes(change.key)
        events: Events = () if hint is None else hint.get(change.key, ())
        if change.kind == "expire":
            return [(database, key, b"expired", "x")]
        if change.kind == "delete":
            # A pop that empties a list says so, then "del"; a DEL, or an EXPIRE in the
            # past, says "del" alone.
            out = [(database, key, n.encode(), c) for n, c in events if c in _ELEMENT_CLASSES]
            return [*out, (database, key, b"del", "g")]
        if events:
            return [(database, key, n.encode(), c) for n, c in events]
        cls = "$"
        if needs_type:
            record = self.server.db.records(change.set_name).get(change.key)
            if record is None:
                return []  # already gone: its delete or expiry follows in the log
            cls = _TYPE_CLASS.get(kind_of(record.bins), "$")
        return [(database, key, b"set", cls)]

    def _publish(self, database: int, key: bytes, event: bytes, cls: str) -> None:
        if cls not in self._classes:
            return
        hub = self.server.pubsub
        if self._keyspace:
            self.sent += 1
            hub.publish(b"__keyspace@%d__:%s" % (database, key), event)
        if self._keyevent:
            self.sent += 1
            hub.publish(b"__keyevent@%d__:%s" % (database, event), key)


def redis_database(default_set: str, set_name: str) -> int | None:
    """The Redis database (0-15) a record set holds: ``default_set`` is 0 and
    ``<default_set>.N`` is N; None for a set Redis commands do not address."""
    if set_name == default_set:
        return 0
    head, dot, index = set_name.rpartition(".")
    if dot and head == default_set and index.isdigit() and index[0] != "0":
        number = int(index)
        return number if number < DATABASES else None
    return None


def _command_keys(cmd: Command, args: list[bytes]) -> list[Key]:
    if cmd.name == "sort":
        # SORT writes only its STORE destination (the key after the last STORE).
        stores = [i for i, arg in enumerate(args[2:-1], start=2) if arg.upper() == b"STORE"]
        return [key_of(args[stores[-1] + 1])] if stores else []
    return [key_of(raw) for raw in cmd.key_args(args)]
