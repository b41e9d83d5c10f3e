"""``Store``: what a role (sessions, cache, memory, vectors, features) may use of its database.

Roles are written against this narrow interface, never against ``Database`` privates: the
clock, record sets (their reserved ones included), a snapshot read across sets, atomic
writes made of transform steps over several sets, the change log, and the other roles they
build on. ``Database`` hands each role an implementation (``database.RoleStore``); an
engine that serves the same contract can hand the same roles its own.

A write is a list of ``Step``s (``writeplan.TransformStep``), each a read-modify-write of
some records of one set, made with ``step(records, [(key, fn), ...])``; ``write(steps)``
commits them in one transaction: every step's conditions and functions run first, and only
when all succeed is anything stored (see ``writeplan``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from engramdb.observability.metrics import Metrics
from engramdb.records.keys import Key
from engramdb.records.limits import Limits
from engramdb.records.model import Change, Record
from engramdb.records.writes import Conditions, TransformFn
from engramdb.writeplan import TransformStep

if TYPE_CHECKING:
    from engramdb.recordset import RecordSet
    from engramdb.vectors.store import VectorStore

__all__ = ["Step", "Store"]

Step = TransformStep


class Store(Protocol):
    """The database as a role sees it."""

    @property
    def limits(self) -> Limits:
        """The database's size limits (values a role stores are checked against them)."""

    def now(self) -> float:
        """The database clock, in seconds since the epoch (TTLs are judged by it)."""

    def now_ms(self) -> int:
        """The database clock in whole milliseconds (how expiry is stored)."""

    @property
    def cache_dir(self) -> str | None:
        """A directory for derived state kept only to save work (index snapshots), or None
        when the database keeps nothing on disk. Never the truth: it may vanish."""

    @property
    def data_dir(self) -> str | None:
        """The database's own directory, for state that must survive beside the records
        (the offline feature log's files); None when the database keeps nothing beside its
        records (the in-memory engine, a cluster engine): roles then keep such state in
        record sets, so every process or node sharing the engine sees it."""

    def sync(self) -> None:
        """Make every committed write durable now, whatever the database's durability."""

    @property
    def metrics(self) -> Metrics:
        """Where a role counts its calls (the database's golden signals)."""

    def sets(self) -> list[str]:
        """Names of the sets that hold records."""

    def records(self, set_name: str) -> RecordSet:
        """Any record set, the role's reserved ones included."""

    def read(
        self, requests: Sequence[tuple[RecordSet, Sequence[Key]]]
    ) -> list[list[Record | None]]:
        """The records of each ``(set, keys)`` request, all from one snapshot."""

    def step(
        self,
        records: RecordSet,
        items: Sequence[tuple[Key, TransformFn]],
        *,
        conditions: Conditions | None = None,
        result: str = "outcome",
        raw: bool = False,
    ) -> Step:
        """A read-modify-write of ``items`` of ``records``, to commit with ``write``.

        ``result="generation"`` makes each item's result its written generation."""

    def write(self, steps: Sequence[Step]) -> list[list[Any]]:
        """Commit ``steps`` as one atomic, durable write; each step's item results."""

    def changes(self, since: int, *, limit: int) -> list[Change]:
        """The change log after ``since`` (see ``Database.changes``)."""

    def first_sequence(self) -> int: ...

    def last_sequence(self) -> int: ...

    @property
    def vectors(self) -> VectorStore:
        """The embedding store, for roles built on collections (memory)."""
