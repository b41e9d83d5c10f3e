"""How the error tree crosses the wire: one RESP error code per ``EngramError`` class.

A native call that fails replies ``-<CODE> <detail>``; ``Conflict`` and
``ChangeLogTruncated`` put their number first (``-CONFLICT 3 expected generation 1, ...``) so
the client can rebuild the same exception with the same attributes.

A request over the server's frame limit is refused by the parser, before any command runs,
with a Redis-style protocol error (``-ERR Protocol error: request too large: ...``, what
redis-py and redis-cli expect); that prefix maps to ``RequestTooLarge``.
"""

from __future__ import annotations

from engramdb.errors import (
    AuthError,
    ChangeLogTruncated,
    Conflict,
    EngramError,
    InvalidArgument,
    NotFound,
    Overloaded,
    ProtocolError,
    RecordTooBig,
    RequestTooLarge,
    StorageError,
    Timeout,
    Unavailable,
)

__all__ = ["TOO_LARGE_PREFIX", "error_from_reply", "error_reply_text"]

TOO_LARGE_PREFIX = "ERR Protocol error: request too large"

# Most specific first: the first matching class wins.
_CODES: tuple[tuple[type[EngramError], str], ...] = (
    (Conflict, "CONFLICT"),
    (ChangeLogTruncated, "TRUNCATED"),
    (RequestTooLarge, "TOOLARGE"),
    (RecordTooBig, "TOOBIG"),
    (InvalidArgument, "INVALID"),
    (NotFound, "NOTFOUND"),
    (Overloaded, "BUSY"),
    (Timeout, "TIMEOUT"),
    (Unavailable, "UNAVAILABLE"),
    (AuthError, "NOAUTH"),
    (ProtocolError, "PROTOCOL"),
    (StorageError, "STORAGE"),
    (EngramError, "ERR"),
)

_BY_CODE: dict[str, type[EngramError]] = {
    "CONFLICT": Conflict,
    "TRUNCATED": ChangeLogTruncated,
    "TOOLARGE": RequestTooLarge,
    "TOOBIG": RecordTooBig,
    "INVALID": InvalidArgument,
    "NOTFOUND": NotFound,
    "BUSY": Overloaded,
    "TIMEOUT": Timeout,
    "UNAVAILABLE": Unavailable,
    "LOADING": Unavailable,
    "NOAUTH": AuthError,
    "WRONGPASS": AuthError,
    "PROTOCOL": ProtocolError,
    "STORAGE": StorageError,
}


def error_reply_text(error: EngramError) -> str:
    """The RESP error text (without the leading ``-``) for ``error``."""
    message = str(error).replace("\r", " ").replace("\n", " ")
    for cls, code in _CODES:
        if isinstance(error, cls):
            if isinstance(error, Conflict):
                return f"{code} {error.generation} {message}"
            if isinstance(error, ChangeLogTruncated):
                return f"{code} {error.first_sequence} {message}"
            return f"{code} {message}"
    raise AssertionError("unreachable: EngramError matches the last row")


def error_from_reply(text: str) -> EngramError:
    """Rebuild the exception a server error reply stands for."""
    if text.startswith(TOO_LARGE_PREFIX):
        return RequestTooLarge(text.partition(": ")[2])
    code, _, rest = text.partition(" ")
    if code == "CONFLICT":
        number, _, message = rest.partition(" ")
        return Conflict(message, int(number) if number.isdigit() else 0)
    if code == "TRUNCATED":
        number, _, message = rest.partition(" ")
        return ChangeLogTruncated(message, int(number) if number.isdigit() else 0)
    cls = _BY_CODE.get(code)
    if cls is None:
        return EngramError(text)
    return cls(rest)
