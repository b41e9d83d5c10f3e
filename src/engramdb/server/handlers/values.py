"""How Redis values live in records of the default set.

- A Redis **string** is a record whose only bin is ``$string`` (bytes).
- A Redis **list** is a record whose only bin is ``$list`` (a list of bytes).
- Any other record is a Redis **hash** whose fields are its bins; so a record written with
  the Python API (``records("default").put("u1", {"name": "Ada"})``) reads as a hash
  (``HGET u1 name``), and numbers, text and other values are shown the way Redis would
  print them.

Redis keys are bytes; a key that is valid UTF-8 is the str key of the record (so the
Python API and Redis clients address the same record), otherwise the bytes key. Hash field
names must be valid bin names (UTF-8 text of at most 64 characters).
"""

from __future__ import annotations

import json
from typing import Any

from engramdb.records.keys import Key
from engramdb.server.commands import RedisError, Reply

__all__ = [
    "LIST_BIN",
    "STRING_BIN",
    "WRONGTYPE",
    "as_bytes",
    "field_name",
    "key_bytes",
    "key_of",
    "kind_of",
    "parse_float",
    "parse_int",
]

STRING_BIN = "$string"
LIST_BIN = "$list"
WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
NOT_INT = "ERR value is not an integer or out of range"
NOT_FLOAT = "ERR value is not a valid float"


def key_of(raw: bytes) -> Key:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def key_bytes(key: Key) -> bytes:
    if type(key) is str:
        return key.encode("utf-8", "surrogatepass")
    if type(key) is bytes:
        return key
    return str(key).encode()


def kind_of(bins: dict[str, Any] | None) -> str:
    """``string``, ``list``, ``hash`` or ``none``."""
    if bins is None:
        return "none"
    if len(bins) == 1:
        if STRING_BIN in bins:
            return "string"
        if LIST_BIN in bins:
            return "list"
    return "hash"


def wrongtype(in_plan: bool = False) -> Exception:
    return RedisError(WRONGTYPE) if in_plan else Reply(WRONGTYPE)


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
    try:
        return json.dumps(
            value, default=lambda v: v.tolist() if hasattr(v, "tolist") else repr(v)
        ).encode()
    except (TypeError, ValueError):
        return repr(value).encode()


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
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        name = ""
    if not name or len(name) > 64:
        text = "ERR hash field names must be 1 to 64 characters of UTF-8 text"
        raise RedisError(text) if in_plan else Reply(text)
    return name


def parse_int(raw: bytes | Any, in_plan: bool = False) -> int:
    """A Redis integer argument or stored value (strict: no spaces, no ``+``, 64-bit)."""
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
        if not data or data != data.strip():
            raise ValueError
        value = float(data)
    except ValueError:
        raise RedisError(NOT_FLOAT) if in_plan else Reply(NOT_FLOAT) from None
    if value != value:
        raise RedisError(NOT_FLOAT) if in_plan else Reply(NOT_FLOAT)
    return value
