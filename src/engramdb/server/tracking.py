"""Server-assisted client-side caching: ``CLIENT TRACKING`` and its invalidation messages.

A client that caches what it reads asks the server to tell it when a cached key changes.

Rules (Redis 7's, except where said):
- Default mode: the server remembers the keys each tracking client reads (the keys of its
  read-only commands, noted before the command runs), and when such a key changes it sends
  that client an invalidation for it and forgets it; reading the key again tracks it again.
  ``OPTIN``: only the command right after ``CLIENT CACHING yes`` is remembered; ``OPTOUT``:
  every command but the one right after ``CLIENT CACHING no``. ``BCAST``: nothing is
  remembered; every change to a key under one of the client's prefixes (any key, without
  ``PREFIX``) is sent. ``NOLOOP``: not for changes the client made itself.
- The source is the change log, as for keyspace notifications: a key changed by another
  worker, another process or the embedded API is invalidated too, and so is one that
  expired or was flushed. This process's own commits are read from the log right after they
  commit, before their replies are queued: once a write's reply is out, the invalidations it
  causes are queued on every tracking connection of this process, ahead of any later reply
  there. Changes made elsewhere are picked up within ``POLL_SECONDS``.
- Messages: the RESP3 push ``invalidate [key ...]`` on the tracking connection, or on its
  ``REDIRECT`` target: as a push if that target speaks RESP3, else as a message of the
  ``__redis__:invalidate`` channel while the target is subscribed (to anything, as Redis
  checks). A target that went away: RESP3 clients get ``tracking-redir-broken <id>``.
  FLUSHDB and FLUSHALL send every tracking client a null invalidation (drop everything), as
  does a gap in the log (changes trimmed before they were read): anything may have changed.
- Bounded: at most ``tracking-table-max-keys`` remembered keys (0: no bound); past it the
  oldest are invalidated and forgotten, as Redis does (it picks them at random). A name
  longer than any key can be (``Limits.max_key_bytes``) is not remembered. A client has at
  most ``MAX_PREFIXES`` BCAST prefixes; a change is matched against them by one dict lookup
  per distinct prefix length, not one test per prefix (Redis walks a radix tree).
- Keys are tracked by name in every database at once, as in Redis.
- The reads queued in a MULTI are remembered when EXEC runs, under the ``CLIENT CACHING``
  given before the MULTI (rueidis caches through ``CLIENT CACHING yes``, ``MULTI``, ``PTTL``,
  the read, ``EXEC``).
- Differences: the reads of a script are not remembered (Redis remembers them), so a client
  should not cache what a script read. Tracking is per worker process with ``--workers``: a
  ``REDIRECT`` target must be served by the same worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
from typing import TYPE_CHECKING, Any

from engramdb.errors import ChangeLogTruncated, EngramError
from engramdb.server.commands import COMMANDS
from engramdb.server.handlers.values import key_bytes
from engramdb.server.notify import redis_database

if TYPE_CHECKING:
    from engramdb.records.model import Change
    from engramdb.server.app import Server
    from engramdb.server.commands import Command
    from engramdb.server.connection import Connection
    from engramdb.storage.base import WriteFn, WriteTxn

__all__ = ["Tracker", "Tracking", "tracked_keys"]

log = logging.getLogger("engramdb.server")

POLL_SECONDS = 0.01
BATCH = 1024  # changes read per log read
MAX_KEYS = 1_000_000  # tracking-table-max-keys' default, as in Redis
MAX_PREFIXES = 10_000  # BCAST prefixes per client
_EXACT_CHECK = 64  # prefixes checked pairwise in Redis's order (its exact error); more: sorted
_MAX_WRITERS = 100_000  # NOLOOP notes (sequence -> client) not yet read back
Message = tuple[int, "list[bytes] | None"]  # (client id, keys; None: every key)
_INVALIDATE = b">2\r\n$10\r\ninvalidate\r\n"
_MESSAGE = b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n"
# Read commands whose keys follow a count (``ZUNION 2 a b``): the count's position.
_NUMKEYS = {"sintercard": 1, "zdiff": 1, "zinter": 1, "zintercard": 1, "zunion": 1}


class Tracking:
    """One connection's ``CLIENT TRACKING ON`` options."""

    __slots__ = ("bcast", "broken", "caching", "noloop", "optin", "optout", "prefixes",
                 "redirect")  # fmt: skip

    def __init__(
        self,
        redirect: int = 0,
        bcast: bool = False,
        prefixes: tuple[bytes, ...] = (),
        optin: bool = False,
        optout: bool = False,
        noloop: bool = False,
    ) -> None:
        self.redirect = redirect  # client id; 0: none
        self.bcast = bcast
        self.prefixes = prefixes
        self.optin = optin
        self.optout = optout
        self.noloop = noloop
        self.caching: bool | None = None  # CLIENT CACHING yes/no, for the next command
        self.broken = False  # the redirect target went away

    def flags(self) -> list[bytes]:
        """CLIENT TRACKINGINFO's flags."""
        names = [b"on"]
        for name, on in (
            (b"bcast", self.bcast),
            (b"optin", self.optin),
            (b"optout", self.optout),
            (b"caching-yes", self.caching is True),
            (b"caching-no", self.caching is False),
            (b"noloop", self.noloop),
            (b"broken_redirect", self.broken),
        ):
            if on:
                names.append(name)
        return names

    def remembers(self) -> bool:
        """Whether the command about to run has its keys remembered."""
        if self.bcast:
            return False
        if self.optin:
            return self.caching is True
        return not (self.optout and self.caching is False)


def tracked_keys(cmd: Command, args: list[bytes]) -> list[bytes]:
    """The keys a read-only command reads (``args`` with the command name first)."""
    at = _NUMKEYS.get(cmd.name)
    if at is not None:
        try:
            count = int(args[at])
        except (ValueError, IndexError):
            return []
        return args[at + 1 : at + 1 + count] if count > 0 else []
    return cmd.key_args(args)


class Tracker:
    """The tracking table and invalidation tail of one server process."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.clients: dict[int, Connection] = {}  # tracking connections by id
        self.keys: dict[bytes, set[int]] = {}  # remembered key -> client ids (oldest first)
        self.prefixes: dict[bytes, set[int]] = {}  # BCAST prefix -> client ids
        self._lengths: dict[int, int] = {}  # BCAST prefix length -> prefixes that long
        self.max_keys: int = MAX_KEYS
        self.invalidations = 0  # messages sent
        self._writers: dict[int, int] = {}  # sequence -> id of a NOLOOP client that wrote it
        self._position = 0
        self._task: asyncio.Task[None] | None = None
        self._trim_scheduled = False
        # A local data directory (LMDB): reading the log is a memory read, done on the loop.
        self.local = not server.config.data.startswith(("postgresql://", "postgres://"))

    # clients ---------------------------------------------------------------------------

    def enable(self, conn: Connection, tracking: Tracking) -> None:
        if not self.clients:
            self._position = self.server.db.last_sequence()
            self._task = asyncio.get_running_loop().create_task(self._poll())
        self._drop_prefixes(conn)
        conn.tracking = tracking
        self.clients[conn.id] = conn
        if tracking.bcast:
            for prefix in tracking.prefixes or (b"",):
                ids = self.prefixes.get(prefix)
                if ids is None:
                    ids = self.prefixes[prefix] = set()
                    self._lengths[len(prefix)] = self._lengths.get(len(prefix), 0) + 1
                ids.add(conn.id)

    def disable(self, conn: Connection) -> None:
        if conn.tracking is None:
            return
        self._drop_prefixes(conn)
        conn.tracking = None
        self.clients.pop(conn.id, None)
        if not self.clients:
            self.close()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.keys.clear()
        self.prefixes.clear()
        self._lengths.clear()
        self._writers.clear()

    def rebase(self) -> None:
        """The database was replaced (``--testing`` reset): every cache is wrong."""
        self._position = self.server.db.last_sequence()
        self._flush_all()

    def _drop_prefixes(self, conn: Connection) -> None:
        tracking = conn.tracking
        if tracking is None or not tracking.bcast:
            return
        for prefix in tracking.prefixes or (b"",):
            ids = self.prefixes.get(prefix)
            if ids is not None:
                ids.discard(conn.id)
                if not ids:
                    del self.prefixes[prefix]
                    left = self._lengths.pop(len(prefix)) - 1
                    if left:
                        self._lengths[len(prefix)] = left

    def overlapping(self, prefixes: list[bytes], conn: Connection) -> str | None:
        """Redis's checks of a client's BCAST prefixes: at most ``MAX_PREFIXES``, none
        nesting another (or repeating it). The error, or None."""
        mine = conn.tracking.prefixes if conn.tracking is not None else ()
        if len(mine) + len(prefixes) > MAX_PREFIXES:
            return f"ERR a client tracks at most {MAX_PREFIXES} prefixes"
        if len(mine) + len(prefixes) <= _EXACT_CHECK:
            for i, prefix in enumerate(prefixes):  # Redis's order, for its exact message
                for other in mine:
                    if other.startswith(prefix) or prefix.startswith(other):
                        return _overlap(prefix, "an existing", other)
                for other in prefixes[i + 1 :]:
                    if other.startswith(prefix) or prefix.startswith(other):
                        return _overlap(prefix, "another provided", other)
            return None
        # Sorted, a prefix nesting another is right before one it nests: O(n log n).
        tagged = sorted([(p, False) for p in mine] + [(p, True) for p in prefixes])
        for (first, new_first), (second, new_second) in itertools.pairwise(tagged):
            if second.startswith(first):
                which = "another provided" if new_first and new_second else "an existing"
                return _overlap(second if new_second else first, which,
                                first if new_second else second)  # fmt: skip
        return None

    # reads and writes ------------------------------------------------------------------

    def remember(self, conn: Connection, cmd: Command, args: list[bytes]) -> None:
        """A tracking client is about to read: note its keys (before the read, so a change
        committed after the read is taken is always sent)."""
        keys = self.keys
        longest = conn.db.limits.max_key_bytes
        for key in tracked_keys(cmd, args):
            if len(key) > longest:
                continue  # no such key can exist, so none will change
            ids = keys.get(key)
            if ids is None:
                keys[key] = {conn.id}
            else:
                ids.add(conn.id)
        if self.max_keys and len(keys) > self.max_keys and not self._trim_scheduled:
            # After this command's reply is queued: an invalidation ahead of it would be
            # followed by the value, which the client would then cache, untracked.
            self._trim_scheduled = True
            asyncio.get_running_loop().call_soon(self._trim)

    def remember_queued(self, conn: Connection, queued: list[list[bytes]]) -> None:
        """EXEC is about to run the commands a MULTI queued: note its reads' keys."""
        for args in queued:
            cmd = COMMANDS.get(args[0]) or COMMANDS.get(args[0].upper())
            if cmd is not None and "readonly" in cmd.flags:
                self.remember(conn, cmd, args)

    def _trim(self) -> None:
        self._trim_scheduled = False
        if self.max_keys and len(self.keys) > self.max_keys:
            self._evict(len(self.keys) - self.max_keys)

    def resize(self, max_keys: int) -> None:
        """CONFIG SET tracking-table-max-keys: keys past the new bound go at once."""
        self.max_keys = max_keys
        if max_keys and len(self.keys) > max_keys:
            self._evict(len(self.keys) - max_keys)

    def _evict(self, count: int) -> None:
        messages: list[Message] = []
        for key in list(self.keys)[:count]:
            messages.extend((client, [key]) for client in self.keys.pop(key))
        self._send(messages)

    def noted(self, conn: Connection, plan: WriteFn) -> WriteFn:
        """``plan``, noting the changes it logs as ``conn``'s (NOLOOP)."""
        writers = self._writers

        def run(txn: WriteTxn) -> Any:
            first = txn.next_sequence()
            result = plan(txn)
            for sequence in range(first, txn.next_sequence()):
                writers[sequence] = conn.id
            while len(writers) > _MAX_WRITERS:
                del writers[next(iter(writers))]
            return result

        return run

    def flushed(self) -> None:
        """FLUSHDB or FLUSHALL ran: every tracking client drops everything."""
        if not self.clients:
            return
        self.after_commit()
        self._flush_all()

    def _flush_all(self) -> None:
        self.keys.clear()
        self._send([(client, None) for client in self.clients])

    # the tail --------------------------------------------------------------------------

    def after_commit(self) -> None:
        """This process committed: its invalidations go out before its replies. Not with a
        ``postgresql://`` database, where reading the log is a round trip the loop must not
        wait for: there the poll sends them, as for other processes' changes."""
        if self.local:
            self.catch_up()

    def catch_up(self, batches: int = 64) -> None:
        """Send the invalidations of every change committed since the last look, reading
        at most ``batches`` x ``BATCH`` changes on the loop (the poll goes on with the
        rest)."""
        for _ in range(batches):
            if not self._take(self._read(self._position)):
                return

    def _read(self, position: int) -> list[Change] | int:
        """The changes after ``position``, or where the log now starts when it was trimmed
        past ``position`` (on the loop, or on a worker thread: no other side effect)."""
        try:
            return self.server.db.changes(position, limit=BATCH)
        except ChangeLogTruncated as e:
            return e.first_sequence - 1
        except EngramError as e:
            log.warning("client tracking paused: %s", e)
            return []

    def _take(self, read: list[Change] | int) -> bool:
        """What ``_read`` gave, on the loop; True when more may follow."""
        if isinstance(read, int):
            # Changes were trimmed before they were read: any key may have changed.
            log.warning("client tracking missed changes (log trimmed): flushing caches")
            self._position = max(self._position, read)
            self._writers.clear()
            self._flush_all()
            return True
        return self._apply(read)

    def _apply(self, changes: list[Change]) -> bool:
        """Send the invalidations of ``changes`` (read from ``_position``); True when a
        whole batch came, so more may follow."""
        full = len(changes) == BATCH
        if not changes or changes[-1].sequence <= self._position:
            return False
        changes = [c for c in changes if c.sequence > self._position]
        default_set = self.server.config.default_set
        self._position = changes[-1].sequence
        # As Redis: a remembered key is one message per key and client, at once; BCAST
        # is one message per prefix and client, its keys sorted, after them.
        messages: list[Message] = []
        broadcast: dict[tuple[bytes, int], set[bytes]] = {}
        keys, prefixes, writers = self.keys, self.prefixes, self._writers
        lengths = self._lengths
        for change in changes:
            if redis_database(default_set, change.set_name) is None:
                continue
            key = key_bytes(change.key)
            writer = writers.pop(change.sequence, 0) if writers else 0
            ids = keys.pop(key, None)
            if ids:
                kept = None
                for client in ids:
                    if client != writer or not self._noloop(client):
                        messages.append((client, [key]))
                    conn = self.clients.get(client)
                    if conn is not None and conn.reads_pending():
                        # A read of its, off the loop, may have taken the key before
                        # this change or after: whatever it returns is cached after
                        # this message arrives, so the key stays tracked for it.
                        kept = kept or set()
                        kept.add(client)
                if kept:
                    keys[key] = kept
            for size in lengths:
                subscribers = prefixes.get(key[:size]) if size <= len(key) else None
                if subscribers:
                    prefix = key[:size]
                    for client in subscribers:
                        if client != writer or not self._noloop(client):
                            broadcast.setdefault((prefix, client), set()).add(key)
        for prefix_client in sorted(broadcast):
            messages.append((prefix_client[1], sorted(broadcast[prefix_client])))
        if messages:
            self._send(messages)
        return full

    def _noloop(self, client: int) -> bool:
        conn = self.clients.get(client)
        return conn is not None and conn.tracking is not None and conn.tracking.noloop

    async def _poll(self) -> None:
        """Changes made outside this process (other workers, other processes)."""
        local = self.local
        while True:
            await asyncio.sleep(POLL_SECONDS)
            with contextlib.suppress(Exception):  # logged in _read; never stop the tail
                if local:
                    self.catch_up(batches=4)  # a burst elsewhere never holds the loop long
                    continue
                for _ in range(4):  # a round trip: read on a thread, sent on the loop
                    read = await self.server.in_thread(
                        functools.partial(self._read, self._position)
                    )
                    if not self._take(read):
                        break

    def _send(self, messages: list[Message]) -> None:
        """Each (client, keys) as one invalidation: those keys, or None for everything.

        Queued behind any reply still pending on the connection, as Redis queues a client's
        own invalidations behind its reply: a value read before the change, arriving after
        the invalidation, would be cached and never invalidated (its key is forgotten)."""
        by_id: dict[int, Connection] | None = None
        for client, keys in messages:
            conn = self.clients.get(client)
            tracking = None if conn is None else conn.tracking
            if conn is None or tracking is None:
                continue  # stopped tracking since it read the key
            if keys is None:
                payload = b"_\r\n" if conn.resp3 else b"$-1\r\n"
            else:
                payload = b"*%d\r\n" % len(keys) + b"".join(
                    b"$%d\r\n%s\r\n" % (len(key), key) for key in keys
                )
            target = conn
            if tracking.redirect and tracking.redirect != conn.id:
                if by_id is None:
                    by_id = {c.id: c for c in self.server.connections}
                found = by_id.get(tracking.redirect)
                if found is None:  # gone (one closing drops the message itself)
                    if not tracking.broken:
                        tracking.broken = True
                        if conn.resp3:
                            conn.push(b">2\r\n$21\r\ntracking-redir-broken\r\n:%d\r\n"
                                      % tracking.redirect)  # fmt: skip
                    continue
                target = found
            if keys is None and target is not conn:
                payload = b"_\r\n" if target.resp3 else b"$-1\r\n"
            if target.resp3:
                self.invalidations += 1
                target.push(_INVALIDATE + payload)
            elif tracking.redirect and target.subscriptions is not None:
                self.invalidations += 1
                target.push(_MESSAGE + payload)
            # else RESP2 without a subscribed redirect target: there is no way to tell it

    # introspection ---------------------------------------------------------------------

    def items(self) -> int:
        """INFO's tracking_total_items: (key, client) pairs remembered."""
        return sum(len(ids) for ids in self.keys.values())


def _overlap(prefix: bytes, which: str, other: bytes) -> str:
    return (
        f"ERR Prefix '{prefix.decode(errors='replace')}' overlaps with {which} prefix "
        f"'{other.decode(errors='replace')}'. Prefixes for a single client must not overlap."
    )
