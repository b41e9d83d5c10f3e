"""Pure write rules: conditions, TTL arithmetic and what a stored header means at a time.

Time is an argument everywhere here (milliseconds since the epoch); nothing reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from engramdb.errors import Conflict, InvalidArgument
from engramdb.records.codec import HEADER, decode_bins
from engramdb.records.keys import Key
from engramdb.records.model import Record

__all__ = [
    "KEEP",
    "Conditions",
    "Current",
    "Outcome",
    "Stored",
    "TransformFn",
    "check_ttl",
    "expiry_ms",
    "make_conditions",
    "record_from",
]


class Conditions:
    """Write conditions; ``check`` raises ``Conflict`` carrying the current generation."""

    __slots__ = ("create_only", "expect_generation", "update_only")

    def __init__(self, expect_generation: int | None, create_only: bool, update_only: bool) -> None:
        self.expect_generation = expect_generation
        self.create_only = create_only
        self.update_only = update_only

    def check(self, generation: int) -> None:
        if self.expect_generation is not None and generation != self.expect_generation:
            raise Conflict(
                f"expected generation {self.expect_generation}, record is at {generation}",
                generation,
            )
        if self.create_only and generation:
            raise Conflict("create_only: the record already exists", generation)
        if self.update_only and not generation:
            raise Conflict("update_only: the record does not exist", generation)


def make_conditions(
    expect_generation: int | None, create_only: bool, update_only: bool
) -> Conditions | None:
    """Validate the condition arguments; None when there is nothing to check."""
    if expect_generation is None and not create_only and not update_only:
        return None
    if expect_generation is not None and (
        type(expect_generation) is not int or expect_generation < 0
    ):
        raise InvalidArgument(
            f"expect_generation must be a non-negative int, not {expect_generation!r}"
        )
    if create_only and update_only:
        raise InvalidArgument("create_only and update_only cannot both be set")
    return Conditions(expect_generation, bool(create_only), bool(update_only))


# Expiry times are stored as signed 64-bit ms; capped well inside that (year 10000) so every
# clock and datetime conversion downstream stays valid.
_MAX_EXPIRY_MS = 253_402_300_799_000


def expiry_ms(ttl: float | None, now_ms: int) -> int:
    """Absolute expiry in ms for a TTL in seconds; 0 means never."""
    if ttl is None:
        return 0
    if (type(ttl) is not int and type(ttl) is not float) or not 0 < ttl < math.inf:
        raise InvalidArgument(f"ttl must be a positive number of seconds or None, not {ttl!r}")
    expires = now_ms + max(1, math.ceil(ttl * 1000))
    if expires > _MAX_EXPIRY_MS:
        raise InvalidArgument(f"ttl {ttl!r} is too large: expiry must fall before the year 10000")
    return expires


def check_ttl(ttl: float | None) -> None:
    expiry_ms(ttl, 0)


class Stored:
    """What a stored value means at ``now_ms``.

    ``generation`` is 0 when the record is absent or expired. ``prev_expires_ms`` is what the
    engine needs to replace or remove the stored entry: None when nothing is stored, else its
    expiry (0 = never), even when that entry has expired and is only awaiting the sweeper.
    """

    __slots__ = ("expires_ms", "generation", "prev_expires_ms", "raw", "stored_generation")

    def __init__(self, raw: bytes | None, now_ms: int) -> None:
        self.raw = raw
        if raw is None:
            self.generation = 0
            self.expires_ms = 0
            self.prev_expires_ms: int | None = None
            self.stored_generation = 0
            return
        _, generation, expires_ms, _ = HEADER.unpack_from(raw)
        self.stored_generation = generation
        self.prev_expires_ms = expires_ms
        if expires_ms and expires_ms <= now_ms:
            self.generation = 0
            self.expires_ms = 0
            self.raw = None
        else:
            self.generation = generation
            self.expires_ms = expires_ms

    @property
    def exists(self) -> bool:
        return self.generation > 0

    def bins(self) -> dict[str, Any] | None:
        return decode_bins(self.raw) if self.raw is not None else None


class _Keep:
    """Leave this part of the record as it is."""

    _instance: _Keep | None = None

    def __new__(cls) -> _Keep:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()


class Current(NamedTuple):
    """A record as a transform sees it: ``bins`` is None when it is absent or expired.

    A *raw* transform (``RecordSet._plan_transform(raw=True)``) is not given decoded bins:
    ``bins`` is always None and ``body`` is a view of the stored msgpack map of bins (None
    when the record is absent or expired), so a transform that edits a large record can work
    on its bytes instead of decoding and re-encoding every value.
    """

    bins: dict[str, Any] | None
    generation: int
    expires_ms: int
    body: memoryview | None = None


class Outcome:
    """What a transform decided: the caller's ``result``; ``bins`` to store (a dict), None to
    delete the record, or ``KEEP``; ``expires_ms`` as an absolute time in ms (0 = never) or
    ``KEEP``. Nothing is written when both are ``KEEP``.

    Internal transforms (not the public ``transform``, which validates bins) may give
    ``bins`` as ``bytes``: an already encoded msgpack map of bins, stored as it is after the
    record size check. Its author vouches that it decodes to valid bins."""

    __slots__ = ("bins", "expires_ms", "result")

    def __init__(
        self,
        result: Any = None,
        bins: dict[str, Any] | bytes | _Keep | None = KEEP,
        expires_ms: int | _Keep = KEEP,
    ) -> None:
        self.result = result
        self.bins = bins
        self.expires_ms = expires_ms


TransformFn = Callable[[Current, int], Outcome]


def record_from(key: Key, raw: bytes, now_ms: int) -> Record | None:
    """Decode a stored value into a ``Record``, or None when it has expired at ``now_ms``."""
    _, generation, expires_ms, updated_ms = HEADER.unpack_from(raw)
    if expires_ms and expires_ms <= now_ms:
        return None
    return Record(
        key,
        decode_bins(raw),
        generation,
        expires_ms / 1000 if expires_ms else None,
        updated_ms / 1000,
    )
