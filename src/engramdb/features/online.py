"""The online store: the latest value of every feature of every entity, one record per
(view, entity), so an entity's features of a view are one point read.

A row replaces the stored one only when it is newer: a later ``event_timestamp``, then a
later ``created_timestamp``, then a later ingest. The comparison runs inside the write
transaction, so an old event arriving late can never overwrite a newer value, whatever the
order ingests commit in.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from engramdb.errors import InvalidArgument
from engramdb.features.model import OnlineResponse
from engramdb.features.names import check_name
from engramdb.records.model import Record
from engramdb.records.writes import Current, Outcome
from engramdb.writeplan import TransformStep

if TYPE_CHECKING:
    from engramdb.store import Store

__all__ = ["MISSING", "OUTSIDE_TTL", "PRESENT", "OnlineResponse", "OnlineStore", "entity_key"]

PRESENT, MISSING, OUTSIDE_TTL = "PRESENT", "NOT_FOUND", "OUTSIDE_MAX_AGE"
TS, CREATED, INGEST = "__ts", "__created", "__ingest"
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def entity_key(values: Sequence[Any]) -> Any:
    """The record key of an entity: its join key value, or a packed tuple of several."""
    if len(values) == 1:
        value = values[0]
        if type(value) in (int, str):
            return value
        raise InvalidArgument(f"join key values are int or str, not {type(value).__name__}")
    for value in values:
        if type(value) not in (int, str):
            raise InvalidArgument(f"join key values are int or str, not {type(value).__name__}")
    return msgspec.msgpack.encode(list(values))


def micros_to_datetime(value: int) -> datetime.datetime:
    return _EPOCH + datetime.timedelta(microseconds=value)


class OnlineStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def set_of(view: str) -> str:
        return f"fv.{check_name(view, 'feature view')}"

    def write(self, view: str, rows: Iterable[tuple[Any, dict[str, Any]]]) -> int:
        """Store each ``(entity key, bins)`` unless what is stored is newer. Returns how many
        were written. ``bins`` carry ``__ts``, ``__created`` and ``__ingest``."""
        step = self.step(view, rows)
        if step is None:
            return 0
        return sum(self.store.write([step])[0])

    def step(self, view: str, rows: Iterable[tuple[Any, dict[str, Any]]]) -> TransformStep | None:
        """``write`` as a step, to commit with others in one transaction (an ingest's online
        rows and its offline manifest record). Each result is 1 if written, else 0."""
        items = [(key, _newer(bins)) for key, bins in rows]
        if not items:
            return None
        return self.store.step(self.store.records(self.set_of(view)), items)

    def fetch(self, requests: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Record | None]]:
        """The records of each ``(view, entity keys)`` request, all read in one snapshot
        (one LMDB read transaction for every view of a feature service)."""
        store = self.store
        return store.read([(store.records(self.set_of(view)), keys) for view, keys in requests])

    @staticmethod
    def columns(
        records: Sequence[Record | None],
        features: Sequence[str],
        ttl: float | None,
        timestamps: dict[str, bool],
        now: float,
    ) -> tuple[list[list[Any]], list[list[str]]]:
        """Per feature: the values in ``records`` (one per entity row) and their statuses.

        Column by column, with a path of its own for the single entity row of an inference
        request (1 x 200 features is ~200 list builds; a row-major loop with appends per
        value took three times as long).
        """
        oldest = None if ttl is None else int((now - ttl) * 1_000_000)
        rows: list[dict[str, Any] | None] = []
        row_states: list[str] = []
        for record in records:
            if record is None:
                rows.append(None)
                row_states.append(MISSING)
            elif oldest is not None and record.bins[TS] < oldest:
                rows.append(None)
                row_states.append(OUTSIDE_TTL)
            else:
                rows.append(record.bins)
                row_states.append(PRESENT)
        values: list[list[Any]]
        statuses: list[list[str]]
        if len(rows) == 1:
            bins, state = rows[0], row_states[0]
            if bins is None:
                values = [[None] for _ in features]
                statuses = [[state] for _ in features]
            else:
                got = [bins.get(name) for name in features]
                values = [[value] for value in got]
                statuses = [[MISSING] if value is None else [PRESENT] for value in got]
        else:
            values, statuses = [], []
            for name in features:
                column = [None if bins is None else bins.get(name) for bins in rows]
                values.append(column)
                statuses.append(
                    [
                        state if state is not PRESENT else PRESENT if value is not None else MISSING
                        for value, state in zip(column, row_states)
                    ]
                )
        for i, name in enumerate(features if timestamps else ()):
            if timestamps.get(name):
                values[i] = [None if v is None else micros_to_datetime(v) for v in values[i]]
        return values, statuses


def _newer(bins: dict[str, Any]) -> Any:
    order = (bins[TS], bins[CREATED], bins[INGEST])

    def write(current: Current, now: int) -> Outcome:
        if current.bins is not None:
            stored = (current.bins[TS], current.bins[CREATED], current.bins[INGEST])
            if stored >= order:
                return Outcome(0)  # what is stored is as new or newer: keep it
        return Outcome(1, bins, 0)

    return write
