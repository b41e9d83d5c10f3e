"""How Redis values live in records of the default set.

- A Redis **string** is a record whose only bin is ``$string`` (bytes).
- A Redis **list**, **hash**, **set** or **sorted set** written through Redis is a header
  record plus one entry per element (``server/structures.py``); the header reads through
  the engramdb API as ``{"$type": ..., "$len": ..., "$id": ..., "$head": ...}``.
- Any other record is a Redis **hash** whose fields are its bins; so a record written with
  the Python API (``records("default").put("u1", {"name": "Ada"})``) reads as a hash
  (``HGET u1 name``), and numbers, text and other values are shown the way Redis would
  print them (a datetime as ISO 8601 text, other structures as JSON). A record whose only
  bin is ``$list`` is a list stored whole by earlier versions (converted on its first
  write).

Redis keys are bytes; a key that is valid UTF-8 is the str key of the record (so the
Python API and Redis clients address the same record), otherwise the bytes key.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engramdb.records.codec import decode_bins
from engramdb.records.keys import Key
from engramdb.records.writes import Current, Outcome
from engramdb.server.commands import RedisError, Reply, Write
from engramdb.server.structures import STRUCTURE_BINS, WRONGTYPE, key_of, structure_kind

if TYPE_CHECKING:
    import numpy as np

    from engramdb.recordset import RecordSet
    from engramdb.server.connection import Connection

__all__ = [
    "LIST_BIN",
    "LLONG_MAX",
    "LLONG_MIN",
    "NOT_FLOAT",
    "NOT_INT",
    "RESERVED_FIELDS",
    "STRING_BIN",
    "STRUCTURE_BINS",
    "WRONGTYPE",
    "as_bytes",
    "error",
    "field_lookup",
    "field_name",
    "format_long_double",
    "hash_of",
    "key_bytes",
    "key_of",
    "kind_of",
    "list_of",
    "parse_float",
    "parse_int",
    "parse_long_double",
    "record_key",
    "string_in",
    "string_of",
    "transform",
    "wrongtype",
]

STRING_BIN = "$string"
LIST_BIN = "$list"
NOT_INT = "ERR value is not an integer or out of range"
NOT_FLOAT = "ERR value is not a valid float"
# Bin names a hash kept as a record may not take: a hash whose only field were one of the
# first two would read back as a string or a list, one with the others as a structure.
RESERVED_FIELDS = frozenset({STRING_BIN, LIST_BIN}) | STRUCTURE_BINS
LLONG_MAX = (1 << 63) - 1
LLONG_MIN = -(1 << 63)


def record_key(records: RecordSet, raw: bytes) -> bytes:
    """The record key of Redis key ``raw`` in ``records`` (``key_of``'s key, encoded)."""
    if raw.isascii():
        return records._rk_of_text(raw)
    return records._rk(key_of(raw))


def string_in(raw: bytes | None, in_plan: bool = False) -> bytes | None:
    """The string value of a stored record value (``RecordSet._live``), as ``string_of``."""
    if raw is None:
        return None
    bins = decode_bins(raw)
    if len(bins) != 1 or STRING_BIN not in bins:
        raise wrongtype(in_plan)
    value = bins[STRING_BIN]
    return value if type(value) is bytes else as_bytes(value)


def key_bytes(key: Key) -> bytes:
    if type(key) is str:
        return key.encode("utf-8", "surrogatepass")
    if type(key) is bytes:
        return key
    return str(key).encode()


def kind_of(bins: dict[str, Any] | None) -> str:
    """``string``, ``list``, ``hash``, ``set``, ``zset`` or ``none``, from a record's bins."""
    if bins is None:
        return "none"
    size = len(bins)
    if size == 1:
        if STRING_BIN in bins:
            return "string"
        if LIST_BIN in bins:
            return "list"
    elif size == 4:
        return structure_kind(bins) or "hash"
    return "hash"


def wrongtype(in_plan: bool = False) -> Exception:
    return RedisError(WRONGTYPE) if in_plan else Reply(WRONGTYPE)


def error(text: str, in_plan: bool) -> Exception:
    """A Redis error reply: a ``RedisError`` inside a write plan, a ``Reply`` outside."""
    return RedisError(text) if in_plan else Reply(text)


def string_of(bins: dict[str, Any] | None, in_plan: bool = False) -> bytes | None:
    """The string value of a record (None when absent); WRONGTYPE for other kinds."""
    if bins is None:
        return None
    if kind_of(bins) != "string":
        raise wrongtype(in_plan)
    return as_bytes(bins[STRING_BIN])


def hash_of(bins: dict[str, Any] | None, in_plan: bool = False) -> dict[str, Any]:
    """The fields of a hash record ({} when absent); WRONGTYPE for other kinds."""
    if bins is None:
        return {}
    if kind_of(bins) != "hash":
        raise wrongtype(in_plan)
    return bins


def list_of(bins: dict[str, Any] | None, in_plan: bool = False) -> list[Any]:
    """The items of a list record ([] when absent); WRONGTYPE for other kinds."""
    if bins is None:
        return []
    if kind_of(bins) != "list":
        raise wrongtype(in_plan)
    items = bins[LIST_BIN]
    return items if type(items) is list else [items]


def _same(value: Any) -> Any:
    return value


def transform(
    conn: Connection,
    key: Key | bytes,
    fn: Callable[[Current, int], Outcome],
    then: Callable[[Any], Any] = _same,
    *,
    raw: bool = False,
) -> Write:
    """A read-modify-write of one record, run inside the write transaction (``raw``: ``fn``
    gets the stored body undecoded, see ``Current``). ``key`` is a record key, or a Redis
    key as received (bytes), mapped by ``key_of``."""
    records = conn.records
    rk = record_key(records, key) if type(key) is bytes else records._rk(key)
    return Write(records._plan_one(rk, fn, raw=raw), then)


def as_bytes(value: Any) -> bytes:
    """A stored value as Redis shows it."""
    if type(value) is bytes:
        return value
    if type(value) is str:
        return value.encode("utf-8", "surrogatepass")
    if type(value) is bool:
        return b"1" if value else b"0"
    if type(value) is int:
        return b"%d" % value
    if type(value) is float:
        return format_float(value)
    if value is None:
        return b""
    if type(value) is datetime.datetime:
        return value.isoformat().encode()  # an instant, stored in UTC
    try:
        return json.dumps(value, default=_json_default).encode()
    except (TypeError, ValueError):
        return repr(value).encode()


def _json_default(value: Any) -> Any:
    if type(value) is datetime.datetime:
        return value.isoformat()
    return value.tolist() if hasattr(value, "tolist") else repr(value)


def format_float(value: float) -> bytes:
    """Redis' float formatting: shortest round-trip form, no trailing ``.0``."""
    if value != value:
        return b"nan"
    if value in (float("inf"), float("-inf")):
        return b"inf" if value > 0 else b"-inf"
    if value == int(value) and abs(value) < 1e17:
        return b"%d" % int(value)
    return repr(value).encode()


def field_name(raw: bytes, in_plan: bool = False) -> str:
    """A hash field to write: bins are named by 1 to 64 characters of UTF-8 text."""
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        name = ""
    if not name or len(name) > 64:
        raise error("ERR hash field names must be 1 to 64 characters of UTF-8 text", in_plan)
    if name in RESERVED_FIELDS:
        raise error(f"ERR hash field name {name} is reserved", in_plan)
    return name


def field_lookup(raw: bytes) -> str | None:
    """A hash field to read: None for a name no stored field can have."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def parse_numkeys(raw: bytes) -> int:
    """The ``numkeys`` of SINTERCARD, LMPOP, ZMPOP...: a positive count, Redis's error else."""
    try:
        numkeys = parse_int(raw)
    except Reply:
        numkeys = 0
    if numkeys <= 0:
        raise Reply("ERR numkeys should be greater than 0")
    return numkeys


def parse_int(raw: bytes | Any, in_plan: bool = False) -> int:
    """A Redis integer argument or stored value (strict: no spaces, no ``+``, 64-bit)."""
    if type(raw) is bytes and raw.isdigit() and len(raw) < 19 and (raw[0] != 48 or len(raw) == 1):
        return int(raw)  # the common case: a plain non-negative number that fits
    if type(raw) is int and type(raw) is not bool:
        value = raw
    else:
        data = as_bytes(raw)
        ok = (
            bool(data)
            and len(data) <= 20
            and (data.isdigit() or (data[:1] == b"-" and data[1:].isdigit()))
        )
        if ok and ((data[:1] == b"0" and len(data) > 1) or data[:2] == b"-0"):
            ok = False
        if not ok:
            raise RedisError(NOT_INT) if in_plan else Reply(NOT_INT)
        value = int(data)
    if not -(1 << 63) <= value < (1 << 63):
        raise RedisError(NOT_INT) if in_plan else Reply(NOT_INT)
    return value


def parse_float(raw: bytes | Any, in_plan: bool = False) -> float:
    if type(raw) is float:
        return raw
    if type(raw) is int:
        return float(raw)
    data = as_bytes(raw)
    try:
        if not data or data != data.strip() or b"_" in data:
            raise ValueError
        value = float(data)
    except ValueError:
        raise RedisError(NOT_FLOAT) if in_plan else Reply(NOT_FLOAT) from None
    if value != value:
        raise RedisError(NOT_FLOAT) if in_plan else Reply(NOT_FLOAT)
    return value


_MAX_LONG_DOUBLE_CHARS = 5 * 1024


def parse_long_double(raw: bytes | Any, text: str = NOT_FLOAT, in_plan: bool = False) -> Any:
    """A number as Redis' ``strtold`` reads it, as a numpy ``longdouble``.

    INCRBYFLOAT and HINCRBYFLOAT compute in C ``long double`` (80-bit on x86-64); doing
    the same is what makes ``0.1 + 0.2`` come out as ``0.3`` here as it does in Redis.
    """
    import numpy as np

    if type(raw) is float or type(raw) is int:
        return np.longdouble(raw)
    data = as_bytes(raw)
    if (
        not data
        or len(data) > _MAX_LONG_DOUBLE_CHARS
        or data != data.strip()
        or b"_" in data
        or b"\0" in data
    ):
        raise error(text, in_plan)
    try:
        with np.errstate(all="ignore"):
            value = np.longdouble(data.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise error(text, in_plan) from None
    if np.isnan(value):
        raise error(text, in_plan)
    lowered = data.lower()
    if np.isinf(value) and b"inf" not in lowered:
        raise error(text, in_plan)  # overflow: strtold reports ERANGE
    if value == 0:
        digits = lowered.lstrip(b"+-")
        if digits.startswith(b"0x"):
            mantissa = digits[2:].split(b"p", 1)[0]
        else:
            mantissa = digits.split(b"e", 1)[0]
        if any(c in b"123456789abcdef" for c in mantissa):
            raise error(text, in_plan)  # underflow to zero: ERANGE as well
    return value


def format_long_double(value: np.longdouble) -> bytes:
    """Redis' human form of a long double: ``%.17Lf`` without trailing zeros."""
    import numpy as np

    text = np.format_float_positional(value, precision=17, unique=False, fractional=True)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text == "-0":
        text = "0"
    return text.encode()
