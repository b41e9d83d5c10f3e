"""Public value types of the record model."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from engramdb.records.keys import Key

__all__ = ["Change", "ChangeKind", "Record", "ScanPage"]

ChangeKind = Literal["put", "delete", "expire"]


class Record(msgspec.Struct, frozen=True):
    """One record: its key, bins and metadata.

    ``generation`` starts at 1 and grows by one on every write; ``expires_at`` and
    ``updated_at`` are seconds since the epoch (``expires_at`` is None when it never expires).
    ``record["bin"]`` reads a bin.
    """

    key: Key
    bins: dict[str, Any]
    generation: int
    expires_at: float | None
    updated_at: float

    def __getitem__(self, name: str) -> Any:
        return self.bins[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.bins.get(name, default)


class Change(msgspec.Struct, frozen=True):
    """One committed change, in the order the database applied it.

    ``kind`` is ``put`` (created or changed), ``delete`` or ``expire`` (removed by TTL).
    ``generation`` is the record's generation after a put, or the last one it had.
    """

    sequence: int
    set_name: str
    key: Key
    kind: ChangeKind
    generation: int
    at: float


class ScanPage(msgspec.Struct, frozen=True):
    """A page of a scan. Pass ``cursor`` back to continue; it is None on the last page."""

    records: list[Record]
    cursor: str | None
