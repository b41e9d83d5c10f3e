"""``db.sessions``: agent session state that never loses an update or serves a stale read.

A session is a record of ``_sessions`` (its state, events, user, metadata and TTL); its
checkpoints are records of ``_session_checkpoints`` keyed ``id NUL uid NUL step`` and an
index of sessions by user lives in ``_sessions_by_user``. ``uid`` is new for every life of a
session id, so checkpoints and index entries of an expired or deleted session can never be
mistaken for a new one's: reads check the session they belong to, which makes them vanish
the moment it expires, and the sweeper removes them from storage afterwards.

- ``update(id, fn)`` is optimistic: read, apply ``fn`` outside any lock (it may call a
  model), write back with ``expect_generation``; on a conflict, back off (full jitter) and
  retry. An update either lands exactly once or raises ``Conflict`` after the retry budget.
- ``append`` adds an event in one atomic write (trimming the oldest past ``max_events``).
- Sliding TTL: a session created with ``ttl`` expires ``ttl`` seconds after its last access.
  Writes always extend it; reads extend it once ``refresh_after`` of the TTL has passed since
  the last extension (so most reads stay reads).
"""

from __future__ import annotations

import builtins
import contextlib
import secrets
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from engramdb.errors import Conflict, InvalidArgument, NotFound
from engramdb.records.codec import check_value
from engramdb.records.model import Record
from engramdb.records.writes import KEEP, Current, Outcome, check_ttl, expiry_ms
from engramdb.remote import DEFAULT_CAP, remote
from engramdb.sessions.model import Checkpoint, Session, SessionPage, cas_update

if TYPE_CHECKING:
    from engramdb.recordset import RecordSet
    from engramdb.store import Store

__all__ = ["SessionStore", "from_snapshot", "snapshot_read"]

SESSIONS = "_sessions"
CHECKPOINTS = "_session_checkpoints"
BY_USER = "_sessions_by_user"
_STEP_DIGITS = 20


def _check_id(value: object, what: str) -> str:
    if type(value) is not str or not value or len(value) > 256 or "\x00" in value:
        raise InvalidArgument(
            f"{what} must be a non-empty str of at most 256 characters without NUL"
        )
    return value


def _session(record: Record) -> Session:
    b = record.bins
    return Session(
        id=record.key,  # type: ignore[arg-type]
        state=b.get("state"),
        user_id=b.get("user_id"),
        metadata=b.get("metadata") or {},
        events=b.get("events") or [],
        generation=record.generation,
        created_at=b.get("created_at", record.updated_at),
        updated_at=record.updated_at,
        expires_at=record.expires_at,
        ttl=b.get("ttl"),
    )


class SessionStore:
    """Sessions of one database. ``db.sessions``.

    Args:
        slide_on_read: whether ``get`` extends a session's TTL.
        refresh_after: share of the TTL that must pass before a read extends it again.
        checkpoint_retention: checkpoints kept per session (older ones are pruned).
    """

    def __init__(
        self,
        store: Store,
        *,
        slide_on_read: bool = True,
        refresh_after: float = 0.1,
        checkpoint_retention: int = 20,
    ) -> None:
        self.store = store
        self.slide_on_read = slide_on_read
        self.refresh_after = refresh_after
        self.checkpoint_retention = checkpoint_retention
        self._sessions = store.records(SESSIONS)
        self._checkpoints = store.records(CHECKPOINTS)
        self._by_user = store.records(BY_USER)
        self._swept = 0
        self._sweep_lock = threading.Lock()

    # sessions ----------------------------------------------------------------------------

    @remote("slow", writes=True)
    def create(
        self,
        session_id: str,
        state: Any = None,
        *,
        user_id: str | None = None,
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Session:
        """Create a session; ``Conflict`` if one with this id is alive."""
        _check_id(session_id, "session_id")
        if user_id is not None:
            _check_id(user_id, "user_id")
        check_ttl(ttl)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidArgument("metadata must be a mapping")
        bins = {
            "state": state,
            "user_id": user_id,
            "metadata": dict(metadata or {}),
            "events": [],
            "ttl": float(ttl) if ttl is not None else None,
            "uid": secrets.token_hex(8),
            "created_at": self.store.now(),
        }
        check_value(bins, self.store.limits, "session")

        def make(current: Current, now: int) -> Outcome:
            if current.bins is not None:
                raise Conflict(f"session {session_id!r} exists", current.generation)
            return Outcome(None, bins, expiry_ms(ttl, now))

        step = self.store.step
        steps = [step(self._sessions, [(session_id, make)])]
        leftovers = self._checkpoint_keys(session_id, None)  # of an earlier, ended life
        if leftovers:
            steps.append(step(self._checkpoints, [(key, _delete) for key in leftovers]))
        if user_id is not None:
            entry = (_user_key(user_id, session_id), _put({"uid": bins["uid"]}))
            steps.append(step(self._by_user, [entry]))
        self.store.write(steps)
        found = self._sessions.get(session_id)
        assert found is not None
        return _session(found)

    @remote("slow")
    def get(self, session_id: str) -> Session | None:
        """The session, or None when it does not exist or has expired. Extends a sliding TTL."""
        _check_id(session_id, "session_id")
        record = self._sessions.get(session_id)
        if record is None:
            return None
        ttl = record.bins.get("ttl")
        if self.slide_on_read and ttl and record.expires_at is not None:
            remaining = record.expires_at - self.store.now()
            if remaining < ttl * (1 - self.refresh_after):
                # Written or gone meanwhile: that write extended (or ended) it.
                with contextlib.suppress(Conflict, NotFound):
                    self._sessions.touch(session_id, ttl, expect_generation=record.generation)
                record = self._sessions.get(session_id)
                if record is None:
                    return None
        return _session(record)

    @remote("slow", writes=True)
    def delete(self, session_id: str) -> bool:
        """Delete the session with its checkpoints and index entry."""
        _check_id(session_id, "session_id")
        record = self._sessions.get(session_id)
        if record is None:
            return False
        removals = self._checkpoint_keys(session_id, None)
        step = self.store.step
        steps = [step(self._sessions, [(session_id, _delete_if(record.bins["uid"]))])]
        if removals:
            steps.append(step(self._checkpoints, [(key, _delete) for key in removals]))
        user = record.bins.get("user_id")
        if user is not None:
            steps.append(step(self._by_user, [(_user_key(user, session_id), _delete)]))
        return bool(self.store.write(steps)[0][0])

    @remote("slow", caps={"limit": DEFAULT_CAP})
    def list(
        self, user_id: str | None = None, *, cursor: str | None = None, limit: int = 100
    ) -> SessionPage:
        """Live sessions (of ``user_id`` when given), in id order, a page at a time."""
        if user_id is None:
            page = self._sessions.scan(cursor=cursor, limit=limit)
            return SessionPage([_session(r) for r in page.records], page.cursor)
        _check_id(user_id, "user_id")
        entries = self._by_user.scan(f"{user_id}\x00", cursor=cursor, limit=limit)
        ids = [str(r.key).split("\x00", 1)[1] for r in entries.records]
        found = self._sessions.get_many(ids)
        sessions: builtins.list[Session] = []
        stale: builtins.list[Any] = []
        for record, entry in zip(found, entries.records):
            if record is not None and record.bins.get("uid") == entry.bins.get("uid"):
                sessions.append(_session(record))
            else:
                stale.append(entry.key)  # its session ended: tidy the index on the way
        if stale:
            self._by_user.transform_many([(key, _delete_unless_renewed) for key in stale])
        return SessionPage(sessions, entries.cursor)

    # state changes -----------------------------------------------------------------------

    def update(
        self,
        session_id: str,
        fn: Callable[[Any], Any],
        *,
        max_retries: int = 100,
    ) -> Any:
        """Replace the state with ``fn(state)`` without losing concurrent updates.

        ``fn`` runs outside any lock and may run more than once (keep it free of side
        effects). Returns the new state; ``NotFound`` if the session is gone, ``Conflict``
        only after ``max_retries`` retries.
        """
        _check_id(session_id, "session_id")

        def read() -> tuple[Any, int]:
            record = self._sessions.get(session_id)
            if record is None:
                raise NotFound(f"no session {session_id!r}")
            return record.bins.get("state"), record.generation

        def write(state: Any, generation: int) -> Any:
            return self.replace(session_id, state, expect_generation=generation)

        return cas_update(read, write, fn, max_retries=max_retries)

    @remote("slow", writes=True)
    def replace(self, session_id: str, state: Any, *, expect_generation: int | None = None) -> int:
        """Set the state (compare-and-set with ``expect_generation``); extends a sliding TTL.
        Returns the new generation."""
        _check_id(session_id, "session_id")
        check_value(state, self.store.limits, "state")

        def write(current: Current, now: int) -> Outcome:
            if current.bins is None:
                raise NotFound(f"no session {session_id!r}")
            if expect_generation is not None and current.generation != expect_generation:
                raise Conflict(
                    f"session {session_id!r} is at generation {current.generation}",
                    current.generation,
                )
            bins = {**current.bins, "state": state}
            return Outcome(None, bins, _slide(current, now))

        [[generation]] = self.store.write(
            [self.store.step(self._sessions, [(session_id, write)], result="generation")]
        )
        return int(generation)

    @remote("slow", writes=True)
    def append(self, session_id: str, event: Any, *, max_events: int | None = None) -> int:
        """Append ``event`` to the session's events (dropping the oldest beyond
        ``max_events``) in one atomic write. Returns the number of events."""
        _check_id(session_id, "session_id")
        check_value(event, self.store.limits, "event", 1)
        if max_events is not None and (type(max_events) is not int or max_events < 1):
            raise InvalidArgument("max_events must be a positive int")

        def add(current: Current, now: int) -> Outcome:
            if current.bins is None:
                raise NotFound(f"no session {session_id!r}")
            events = [*(current.bins.get("events") or []), event]
            if max_events is not None and len(events) > max_events:
                events = events[len(events) - max_events :]
            return Outcome(len(events), {**current.bins, "events": events}, _slide(current, now))

        [[count]] = self.store.write([self.store.step(self._sessions, [(session_id, add)])])
        return int(count)

    # checkpoints -------------------------------------------------------------------------

    @remote("slow", writes=True)
    def checkpoint(
        self, session_id: str, step: int, state: Any, *, parent: int | None = None
    ) -> Checkpoint:
        """Save ``state`` as checkpoint ``step`` (replacing one with the same step) and prune
        all but the newest ``checkpoint_retention``, atomically with the session's TTL."""
        _check_id(session_id, "session_id")
        if type(step) is not int or step < 0 or step >= 10**_STEP_DIGITS:
            raise InvalidArgument("step must be a non-negative int")
        if parent is not None and (type(parent) is not int or parent < 0):
            raise InvalidArgument("parent must be a non-negative int or None")
        check_value(state, self.store.limits, "state")
        record = self._sessions.get(session_id)
        if record is None:
            raise NotFound(f"no session {session_id!r}")
        uid = record.bins["uid"]
        key = _checkpoint_key(session_id, uid, step)
        existing = self._checkpoint_keys(session_id, uid)
        keep = sorted({*existing, key})[-self.checkpoint_retention :]
        prune = [k for k in existing if k not in keep]
        created = self.store.now()
        bins = {"step": step, "state": state, "parent": parent, "created_at": created}

        def still_alive(current: Current, now: int) -> Outcome:
            if current.bins is None or current.bins.get("uid") != uid:
                raise NotFound(f"no session {session_id!r}")
            expires = _slide(current, now)
            return Outcome(None, KEEP, expires) if expires is not KEEP else Outcome(None)

        items = [(key, _put(bins)), *[(k, _delete) for k in prune]]
        plan = self.store.step
        self.store.write(
            [plan(self._sessions, [(session_id, still_alive)]), plan(self._checkpoints, items)]
        )
        return Checkpoint(session_id, step, state, parent, created)

    @remote("read")
    def checkpoints(self, session_id: str) -> builtins.list[Checkpoint]:
        """The session's checkpoints, newest (highest step) first."""
        uid = self._live_uid(session_id)
        if uid is None:
            return []
        prefix = f"{session_id}\x00{uid}\x00"
        found = list(self._checkpoints.iterate(prefix))
        return [_checkpoint(session_id, r) for r in reversed(found)]

    @remote("read")
    def get_checkpoint(self, session_id: str, step: int) -> Checkpoint | None:
        """Checkpoint ``step`` of the session, or None (no such step, or the session ended)."""
        uid = self._live_uid(session_id)
        if uid is None or type(step) is not int or step < 0:
            return None
        record = self._checkpoints.get(_checkpoint_key(session_id, uid, step))
        return None if record is None else _checkpoint(session_id, record)

    # housekeeping ------------------------------------------------------------------------

    def _sweep(self) -> int:
        """Remove checkpoints and index entries of sessions that expired or were deleted
        (reads already ignore them). Driven by the change log; returns records removed."""
        with self._sweep_lock:
            last = self.store.last_sequence()
            if last <= self._swept:
                return 0
            ended: set[str] = set()
            position = max(self._swept, self.store.first_sequence() - 1)
            while position < last:
                changes = self.store.changes(position, limit=5000)
                if not changes:
                    break
                for c in changes:
                    if c.set_name == SESSIONS and c.kind in ("delete", "expire"):
                        ended.add(str(c.key))
                position = changes[-1].sequence
            self._swept = position
            removed = 0
            for session_id in ended:
                live = self._live_uid(session_id)
                stale = [
                    k for k in self._checkpoint_keys(session_id, None) if k.split("\x00")[1] != live
                ]
                if stale:
                    self._checkpoints.transform_many([(k, _delete) for k in stale])
                    removed += len(stale)
            return removed

    def _live_uid(self, session_id: str) -> str | None:
        _check_id(session_id, "session_id")
        record = self._sessions.get(session_id)
        return None if record is None else record.bins.get("uid")

    def _checkpoint_keys(self, session_id: str, uid: str | None) -> builtins.list[str]:
        prefix = f"{session_id}\x00" if uid is None else f"{session_id}\x00{uid}\x00"
        return [str(r.key) for r in self._checkpoints.iterate(prefix)]

    def _close(self) -> None:
        pass

    def _stats(self) -> dict[str, Any]:
        return {"sessions": self._sessions.count(), "checkpoints": self._checkpoints.count()}


# reads in a caller's snapshot (``db.context``) ----------------------------------------


def snapshot_read(sessions: SessionStore, session_id: str) -> tuple[RecordSet, str]:
    """Where ``sessions`` keeps session ``session_id``, for a caller that reads it in one
    snapshot with other records (``Store.read``: ``db.context``); ``from_snapshot`` makes
    the session of what it read."""
    return sessions._sessions, _check_id(session_id, "session_id")


def from_snapshot(sessions: SessionStore, record: Record | None) -> Session | None:
    """The session a ``snapshot_read`` record holds (None: none, or expired). Extends a
    sliding TTL as ``get`` does; the extension's generation and expiry are reported,
    state and events stay as the snapshot saw them (an extension changes neither)."""
    if record is None:
        return None
    session = _session(record)
    ttl = record.bins.get("ttl")
    if sessions.slide_on_read and ttl and record.expires_at is not None:
        now = sessions.store.now()
        if record.expires_at - now < ttl * (1 - sessions.refresh_after):
            try:
                generation = sessions._sessions.touch(
                    session.id, ttl, expect_generation=record.generation
                )
            except (Conflict, NotFound):
                return session  # written or gone meanwhile: as the snapshot saw it
            return msgspec.structs.replace(
                session,
                generation=generation,
                expires_at=expiry_ms(ttl, sessions.store.now_ms()) / 1000,
            )
    return session


def _slide(current: Current, now: int) -> Any:
    ttl = current.bins.get("ttl") if current.bins is not None else None
    return expiry_ms(ttl, now) if ttl else KEEP


def _checkpoint_key(session_id: str, uid: str, step: int) -> str:
    return f"{session_id}\x00{uid}\x00{step:0{_STEP_DIGITS}d}"


def _user_key(user_id: str, session_id: str) -> str:
    return f"{user_id}\x00{session_id}"


def _checkpoint(session_id: str, record: Record) -> Checkpoint:
    b = record.bins
    return Checkpoint(session_id, b["step"], b.get("state"), b.get("parent"), b["created_at"])


def _put(bins: dict[str, Any]) -> Callable[[Current, int], Outcome]:
    return lambda current, now: Outcome(None, bins, 0)


def _delete(current: Current, now: int) -> Outcome:
    return Outcome(current.bins is not None, None)


def _delete_unless_renewed(current: Current, now: int) -> Outcome:
    # Deleting a stale index entry only; a new life of the session rewrites it with a new
    # uid, which a concurrent create would have done after our read: leave that one.
    return Outcome(None, None)


def _delete_if(uid: str) -> Callable[[Current, int], Outcome]:
    def remove(current: Current, now: int) -> Outcome:
        if current.bins is None or current.bins.get("uid") != uid:
            return Outcome(False)
        return Outcome(True, None)

    return remove
