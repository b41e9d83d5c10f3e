"""Where the audit writes on a target, and how it leaves the target as it found it.

A user's database is not a scratch pad. The policy:

- **Its own namespace.** A run writes only under a fresh name, ``engramdb-audit-<run>``: the
  set of that name on an engramdb target (a path or ``engramdb://``), the keys
  ``engramdb-audit-<run>:*`` on a Redis target. Nothing outside it is written or deleted;
  a Redis database is never flushed.
- **Consent for a target that holds data.** A target that already holds records (in any
  set; on Redis, any key of the database index) is refused unless writes are allowed
  (``--allow-writes``). The user's records are then left exactly as they were.
- **Everything removed at the end**, after a failure or Ctrl-C too (best effort): every
  record or key of the namespace is deleted, and what was removed — or what is left, where,
  and why — is reported.
- **What cannot be undone is said up front.** On an engramdb target each write and each
  removal appends an entry to the change log, which is append-only (only retention drops old
  entries); the report counts the audit's. A database directory the audit created itself is
  removed whole, change log included.
- A ``--managed`` target is the audit's own server on a temporary directory, deleted at the
  end: nothing of the user's is touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from engramdb.audit.targets import is_postgres_url
from engramdb.errors import (
    AuthError,
    ChangeLogTruncated,
    EngramError,
    InvalidArgument,
    Unavailable,
)

__all__ = [
    "NAMESPACE_PREFIX",
    "Cleanup",
    "Scratch",
    "claim",
    "managed_scratch",
    "new_namespace",
    "shown",
]

NAMESPACE_PREFIX = "engramdb-audit-"
_DELETERS = 16  # concurrent deletes: they share group commits instead of an fsync each
_PAGE = 1000


def new_namespace() -> str:
    """A fresh namespace for one run: ``engramdb-audit-<date>-<time>-<random>``."""
    return f"{NAMESPACE_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def shown(spec: str) -> str:
    """``spec`` fit to print: a password in a URL is masked."""
    return re.sub(r"//[^@/]*@", "//***@", spec)


@dataclass(frozen=True)
class Cleanup:
    """What the end of a run removed, and what it could not."""

    namespace: str
    removed: int  # records or keys of the namespace deleted
    left: int | None  # of the namespace, still there afterwards (None: could not check)
    changelog_entries: int | None = None  # appended by the run (engramdb targets)
    removed_directory: str | None = None  # a directory the audit created, removed whole
    error: str | None = None
    lines: tuple[str, ...] = ()  # for people

    @property
    def complete(self) -> bool:
        return self.error is None and self.left == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lines": list(self.lines), "complete": self.complete}


class Scratch:
    """The audit's footprint on one target: what it will write (``plan``), and its removal
    (``clean``). Made by ``claim`` (or ``managed_scratch``)."""

    def __init__(self, namespace: str, plan: list[str]) -> None:
        self.namespace = namespace
        self.plan = plan

    def clean(self) -> Cleanup:
        raise NotImplementedError


def _refuse(where: str, holds: str, writes: str) -> InvalidArgument:
    return InvalidArgument(
        f"{where} already holds data ({holds}). The audit would write {writes}. Pass "
        "--allow-writes to accept that, or audit an empty target, or use --managed (the "
        "audit's own server on a temporary directory)."
    )


class _EngramScratch(Scratch):
    """An engramdb target: an embedded path or an ``engramdb://`` server."""

    def __init__(
        self, spec: str, namespace: str, *, allow_writes: bool, durability: str = "sync"
    ) -> None:
        self.spec = spec
        self.embedded = "://" not in spec
        self.postgres = is_postgres_url(spec)
        self.durability = durability
        self.path = os.path.abspath(spec) if self.embedded else None
        # A database the audit creates is the audit's to remove, whole: a path that did not
        # exist, or an empty directory (then only what appears in it is removed).
        self.created: str | None = None
        if self.path is not None and not os.path.exists(self.path):
            self.created = "path"
        elif self.path is not None and os.path.isdir(self.path):
            entries = os.listdir(self.path)
            if not entries:
                self.created = "contents"
            elif "data.mdb" not in entries:  # LMDB's file: never litter a directory of yours
                raise InvalidArgument(
                    f"{self.path} is a directory that holds no engramdb database; audit a new "
                    "or empty path, or an existing database"
                )
        where = (
            self.path
            if self.path is not None
            else f"the PostgreSQL database at {shown(spec)}"
            if self.postgres
            else f"the server at {shown(spec)}"
        )
        self.where = where
        with self._open() as db:
            sets = db.sets()
            if sets and not allow_writes:
                raise _refuse(
                    where,
                    _describe_sets(db, sets),
                    f"test records into it (set '{namespace}', removed at the end; the change "
                    "log keeps an entry for each write and removal)",
                )
            if namespace in sets:  # a name from the clock and 24 random bits: never, but...
                raise InvalidArgument(f"set {namespace!r} already exists in {where}")
            self.start_sequence = int(db.last_sequence())
        if self.created == "path":
            plan = [
                f"The audit creates the database {where}, writes its test records there "
                f"(set '{namespace}') and removes {where} at the end.",
            ]
        elif self.created == "contents":
            plan = [
                f"The audit creates a database in the empty directory {where}, writes its test "
                f"records there (set '{namespace}') and empties {where} again at the end.",
            ]
        else:
            yours = f" (your {_describe_sets_short(sets)}: left untouched)" if sets else ""
            plan = [
                f"The audit writes test records into set '{namespace}' of {where}{yours} "
                "and deletes them at the end, also after a failure or Ctrl-C.",
                "Each of those writes and deletions appends an entry to the database's change "
                "log, which cannot be removed (only its retention drops old entries).",
            ]
        super().__init__(namespace, plan)

    @contextlib.contextmanager
    def _open(self) -> Iterator[Any]:
        import engramdb

        db: Any = (
            engramdb.open(self.path, durability=self.durability)  # type: ignore[arg-type]
            if self.path is not None
            else engramdb.open(self.spec, durability=self.durability)  # type: ignore[arg-type]
            if self.postgres
            else engramdb.connect(self.spec, pool_size=_DELETERS)
        )
        try:
            yield db
        finally:
            db.close()

    def clean(self) -> Cleanup:
        removed = 0
        left: int | None = None
        entries: int | None = None
        removed_directory: str | None = None
        errors: list[str] = []
        try:
            with self._open() as db:
                records = db.records(self.namespace)
                # A database the audit created and nobody else wrote to goes whole: no
                # deletions to log, no change log left behind.
                whole = self.created is not None and set(db.sets()) <= {self.namespace}
                if whole:
                    left = int(records.count())
                else:
                    removed, failed = _delete_set(records)
                    if failed:
                        errors.append(f"{failed} deletions failed")
                    left = int(records.count())
                    entries = _changelog_entries(db, self.namespace, self.start_sequence)
            if whole:
                removed_directory = self._remove_created()
                removed, left = left or 0, 0
        except (EngramError, OSError) as e:
            errors.append(f"{type(e).__name__}: {e}")
        except KeyboardInterrupt:
            errors.append("interrupted")
        return self._report(removed, left, entries, removed_directory, "; ".join(errors) or None)

    def _remove_created(self) -> str:
        assert self.path is not None
        if self.created == "path":
            shutil.rmtree(self.path)
        else:  # the directory was empty before the run: what is in it now is the audit's
            for name in os.listdir(self.path):
                entry = os.path.join(self.path, name)
                if os.path.isdir(entry) and not os.path.islink(entry):
                    shutil.rmtree(entry)
                else:
                    os.remove(entry)
        return self.path

    def _report(
        self,
        removed: int,
        left: int | None,
        entries: int | None,
        removed_directory: str | None,
        error: str | None,
    ) -> Cleanup:
        ns = self.namespace
        lines = [f"Removed {removed:,} records of set '{ns}' (the audit's own) from {self.where}."]
        if removed_directory is not None:
            what = "it" if self.created == "path" else "the database it created in it"
            lines.append(
                f"The audit created {removed_directory}; {what} is now removed, "
                "change log included."
            )
        elif entries is not None:
            lines.append(
                f"The change log keeps the audit's {entries:,} entries (its writes and their "
                "removals): a change log is append-only; your records are untouched."
            )
        if error is not None or left != 0:
            still = "an unknown number of" if left is None else f"{left:,}"
            lines.append(
                f"Cleanup incomplete ({error or 'records remain'}): {still} records are left "
                f"in set '{ns}' of {self.where}. Everything in that set is the audit's: delete "
                "its records to remove them."
            )
        return Cleanup(ns, removed, left, entries, removed_directory, error, tuple(lines))


def _describe_sets(db: Any, sets: list[str]) -> str:
    try:
        records = int(db.stats()["engine"]["records_stored"])
        counted = f"{_plural(records, 'record')} in "
    except (EngramError, KeyError, TypeError, ValueError):
        counted = ""
    return f"{counted}{_describe_sets_short(sets)}"


def _describe_sets_short(sets: list[str]) -> str:
    names = ", ".join(repr(s) for s in sets[:5]) + (", ..." if len(sets) > 5 else "")
    return f"{_plural(len(sets), 'set')} ({names})"


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _delete_set(records: Any) -> tuple[int, int]:
    """Delete every record of ``records``, page by page; (deleted, failed)."""
    deleted = failed = 0

    def delete(key: Any) -> bool | None:
        try:
            return bool(records.delete(key))
        except EngramError:
            return None

    with ThreadPoolExecutor(_DELETERS) as pool:
        cursor: str | None = None
        while True:
            page = records.scan(cursor=cursor, limit=_PAGE)
            for outcome in pool.map(delete, [r.key for r in page.records]):
                if outcome is None:
                    failed += 1
                elif outcome:
                    deleted += 1
            cursor = page.cursor
            if cursor is None:
                return deleted, failed


def _changelog_entries(db: Any, namespace: str, since: int) -> int | None:
    """Change-log entries of ``namespace`` after sequence ``since`` (None: retention has
    already dropped some, so they cannot be counted)."""
    count = 0
    try:
        while True:
            changes = db.changes(since, limit=_PAGE)
            if not changes:
                return count
            count += sum(1 for c in changes if c.set_name == namespace)
            since = changes[-1].sequence
    except ChangeLogTruncated:
        return None


class _RedisScratch(Scratch):
    """A Redis target (or engramdb's RESP side): keys ``<namespace>:*`` of one database."""

    def __init__(self, spec: str, namespace: str, *, allow_writes: bool) -> None:
        import redis

        self.spec = spec
        try:
            with self._open() as client:
                index = client.connection_pool.connection_kwargs.get("db", 0)
                self.where = f"database {index} of {shown(spec)}"
                keys = int(client.dbsize())
        except redis.AuthenticationError as e:
            raise AuthError(f"{shown(spec)} refused the audit: {e}") from e
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise Unavailable(f"cannot reach {shown(spec)}: {e}") from e
        if keys and not allow_writes:
            raise _refuse(
                self.where,
                _plural(keys, "key"),
                f"test keys '{namespace}:*' into it (removed at the end; never a flush)",
            )
        yours = f" (your {_plural(keys, 'key')}: left untouched)" if keys else ""
        plan = [
            f"The audit writes test keys '{namespace}:*' into {self.where}{yours} and deletes "
            "them at the end, also after a failure or Ctrl-C; it never flushes the database.",
            "Redis keeps no change log, but its AOF and any replicas see those writes.",
        ]
        super().__init__(namespace, plan)

    @contextlib.contextmanager
    def _open(self) -> Iterator[Any]:
        import redis

        client = redis.Redis.from_url(self.spec, socket_timeout=10, socket_connect_timeout=10)
        try:
            yield client
        finally:
            client.close()

    def _keys(self, client: Any) -> Iterator[bytes]:
        return client.scan_iter(match=f"{self.namespace}:*", count=_PAGE)  # type: ignore[no-any-return]

    def clean(self) -> Cleanup:
        removed = 0
        left: int | None = None
        error: str | None = None
        import redis

        try:
            with self._open() as client:
                batch: list[bytes] = []
                for key in self._keys(client):
                    batch.append(key)
                    if len(batch) == _PAGE:
                        removed += int(client.delete(*batch))
                        batch = []
                if batch:
                    removed += int(client.delete(*batch))
                left = sum(1 for _ in self._keys(client))
        except (redis.RedisError, OSError) as e:
            error = f"{type(e).__name__}: {e}"
        except KeyboardInterrupt:
            error = "interrupted"
        lines = [
            f"Removed {removed:,} keys '{self.namespace}:*' (the audit's own) from {self.where}."
        ]
        if error is not None or left != 0:
            still = "an unknown number of" if left is None else f"{left:,}"
            lines.append(
                f"Cleanup incomplete ({error or 'keys remain'}): {still} keys "
                f"'{self.namespace}:*' are left in {self.where}; all are the audit's "
                f"(redis-cli --scan --pattern '{self.namespace}:*' | xargs redis-cli del)."
            )
        return Cleanup(self.namespace, removed, left, None, None, error, tuple(lines))


class _ManagedScratch(Scratch):
    def __init__(self, namespace: str, kind: str, directory: str, stop: Callable[[], None]) -> None:
        self.directory = directory
        self._stop = stop
        super().__init__(
            namespace,
            [
                f"--managed: the audit starts its own {kind} server on the temporary directory "
                f"{directory} and deletes it at the end; nothing of yours is read or written.",
            ],
        )

    def clean(self) -> Cleanup:
        error: str | None = None
        try:
            self._stop()
        except (OSError, KeyboardInterrupt) as e:
            error = f"{type(e).__name__}: {e}"
        if os.path.exists(self.directory):
            error = error or "the directory is still there"
            lines = (f"Could not remove the managed server's directory {self.directory}.",)
            return Cleanup(self.namespace, 0, None, None, None, error, lines)
        lines = (f"Stopped the managed server and removed its directory {self.directory}.",)
        return Cleanup(self.namespace, 0, 0, None, self.directory, None, lines)


def claim(
    spec: str, namespace: str, *, allow_writes: bool = False, durability: str = "sync"
) -> Scratch:
    """Check that the audit may write on ``spec`` and say where it will; raises
    ``InvalidArgument`` for a target that holds data when ``allow_writes`` is false."""
    if spec.startswith("engramdb://") or "://" not in spec or is_postgres_url(spec):
        return _EngramScratch(spec, namespace, allow_writes=allow_writes, durability=durability)
    return _RedisScratch(spec, namespace, allow_writes=allow_writes)


def managed_scratch(namespace: str, kind: str, directory: str, stop: Callable[[], None]) -> Scratch:
    """The footprint of a ``--managed`` run: a server and its temporary directory, which
    ``clean`` stops and removes."""
    return _ManagedScratch(namespace, kind, directory, stop)
