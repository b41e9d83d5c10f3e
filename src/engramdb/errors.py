"""The engramdb error tree.

One root, grouped by what the caller should do about it:

- ``NotFound``: the thing is not there; create it or stop asking.
- ``Conflict``: a write condition failed; re-read (``generation`` says what is stored) and retry.
- ``InvalidArgument`` / ``RecordTooBig`` / ``RequestTooLarge``: the request is wrong; retrying
  will not help (split a too-large batch).
- ``Timeout`` / ``Overloaded`` / ``Unavailable``: try again later (a write that timed out may
  or may not have been applied; the message says so).
- ``AuthError``, ``ProtocolError``: the connection is misconfigured or the peer misbehaved.
- ``StorageError``: the store itself failed (full, closed, fsync failed, used after fork).
- ``ChangeLogTruncated``: a change-log reader fell behind retention; rebuild from a scan.

Library and socket errors are translated into these at the boundary; callers never need to
catch ``lmdb.Error`` or ``OSError`` from engramdb.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ChangeLogTruncated",
    "Conflict",
    "EngramError",
    "InvalidArgument",
    "NotFound",
    "Overloaded",
    "ProtocolError",
    "RecordTooBig",
    "RequestTooLarge",
    "StorageError",
    "Timeout",
    "Unavailable",
]


class EngramError(Exception):
    """Root of every error engramdb raises on purpose."""


class NotFound(EngramError):
    """The record, collection or object does not exist (or has expired)."""


class Conflict(EngramError):
    """A write condition (``expect_generation``, ``create_only``, ``update_only``) failed.

    ``generation`` is the record's current generation, 0 when it does not exist.
    """

    def __init__(self, message: str, generation: int) -> None:
        super().__init__(message)
        self.generation = generation

    def __reduce__(self) -> tuple[type[Conflict], tuple[str, int]]:
        return (type(self), (str(self), self.generation))


class InvalidArgument(EngramError):
    """The request is malformed: bad key, bin, value, option or operation."""


class RecordTooBig(InvalidArgument):
    """The encoded record (or key) exceeds the configured limit."""


class RequestTooLarge(InvalidArgument):
    """The request is larger than the server accepts in one frame (``--max-frame``).

    Nothing of it was applied. Split the batch into smaller calls, or start the server with
    a larger ``--max-frame``.
    """


class Timeout(EngramError):
    """The operation did not complete in time. For writes the outcome is unknown."""


class Overloaded(EngramError):
    """The server shed this request to protect its latency; retry later with backoff."""


class Unavailable(EngramError):
    """The server cannot be reached or is shutting down."""


class AuthError(EngramError):
    """Authentication is required or failed."""


class ProtocolError(EngramError):
    """The peer sent bytes that do not follow the protocol."""


class StorageError(EngramError):
    """The storage engine failed, is closed, is full, or is unusable in this process."""


class ChangeLogTruncated(EngramError):
    """The requested change-log position is older than what retention kept.

    ``first_sequence`` is the oldest sequence still available; a consumer should rebuild
    its derived state from a scan and continue from ``db.last_sequence()``.
    """

    def __init__(self, message: str, first_sequence: int) -> None:
        super().__init__(message)
        self.first_sequence = first_sequence

    def __reduce__(self) -> tuple[type[ChangeLogTruncated], tuple[str, int]]:
        return (type(self), (str(self), self.first_sequence))
