"""Keys and set names as ordered bytes.

A record key is ``str``, ``bytes`` or ``int``; the three never collide (``1``, ``"1"`` and
``b"1"`` are different records). The encoding keeps a useful order for scans: ints sort
numerically, then bytes, then strings, each lexicographically by their bytes.

An engine addresses a record by its *record key* ``rk = set_name + NUL + encoded key``. Set
names therefore may not contain NUL; everything after the first NUL is the encoded key.
"""

from __future__ import annotations

import struct

from engramdb.errors import InvalidArgument, RecordTooBig
from engramdb.records.limits import Limits

__all__ = [
    "RESERVED_PREFIXES",
    "Key",
    "decode_key",
    "encode_key",
    "is_reserved",
    "key_prefix",
    "set_prefix",
    "split_rk",
]

Key = str | bytes | int

_INT = 0x01
_BYTES = 0x02
_STR = 0x03
_INT_BIAS = 1 << 63
_U64 = struct.Struct(">Q")
_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 63) - 1


def encode_key(key: Key, limits: Limits) -> bytes:
    """Encode ``key`` to its ordered byte form, enforcing the key size limit."""
    if type(key) is str:
        raw = b"\x03" + key.encode("utf-8", "surrogatepass")
    elif type(key) is bytes:
        raw = b"\x02" + key
    elif type(key) is int:
        if not _INT_MIN <= key <= _INT_MAX:
            raise InvalidArgument(f"int key {key} is outside the signed 64-bit range")
        return b"\x01" + _U64.pack(key + _INT_BIAS)
    else:
        raise InvalidArgument(f"a key must be str, bytes or int, not {type(key).__name__}")
    if len(raw) - 1 > limits.max_key_bytes:
        raise RecordTooBig(f"key is {len(raw) - 1} bytes; the limit is {limits.max_key_bytes}")
    return raw


def decode_key(raw: bytes) -> Key:
    tag = raw[0]
    if tag == _STR:
        return raw[1:].decode("utf-8", "surrogatepass")
    if tag == _BYTES:
        return bytes(raw[1:])
    if tag == _INT:
        value: int = _U64.unpack_from(raw, 1)[0]
        return value - _INT_BIAS
    raise InvalidArgument(f"corrupt key tag {tag:#x}")


def key_prefix(prefix: str | bytes) -> bytes:
    """The encoded prefix shared by every key that starts with ``prefix``."""
    if isinstance(prefix, str):
        return b"\x03" + prefix.encode("utf-8", "surrogatepass")
    if isinstance(prefix, bytes):
        return b"\x02" + prefix
    raise InvalidArgument(f"a scan prefix must be str or bytes, not {type(prefix).__name__}")


# Set names the roles keep their own records under (sessions, cache, memory, the collection
# and feature registries, vector items ``vec.<name>``, online features ``fv.<view>``). The
# generic record API refuses them, embedded and remote, so a client cannot forge a role's
# definitions or items: roles reach them only through ``Database._internal_records``.
RESERVED_PREFIXES = ("_", "vec.", "fv.")


def is_reserved(set_name: str) -> bool:
    """Whether ``set_name`` belongs to a role (see ``RESERVED_PREFIXES``)."""
    return set_name.startswith(RESERVED_PREFIXES)


def set_prefix(set_name: str, limits: Limits) -> bytes:
    """Validate ``set_name`` and return the record-key prefix of its records."""
    if not isinstance(set_name, str) or not set_name:
        raise InvalidArgument("a set name must be a non-empty str")
    if len(set_name) > limits.max_set_name:
        raise InvalidArgument(
            f"set name is {len(set_name)} characters; the limit is {limits.max_set_name}"
        )
    if "\x00" in set_name:
        raise InvalidArgument("a set name may not contain NUL")
    try:
        return set_name.encode("utf-8") + b"\x00"
    except UnicodeEncodeError:
        raise InvalidArgument(f"set name {set_name!r} is not valid Unicode text") from None


def split_rk(rk: bytes) -> tuple[str, bytes]:
    """Split a record key into its set name and encoded key."""
    cut = rk.index(b"\x00")
    return rk[:cut].decode("utf-8"), rk[cut + 1 :]
