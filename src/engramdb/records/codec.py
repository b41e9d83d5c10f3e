"""The stored form of a record, and the values a bin may hold.

Stored record = 25-byte header + msgpack map of bins::

    u8 format (1) | u64 generation | i64 expires_at_ms (0 = never) | i64 updated_at_ms

The fixed header lets scans, counts and the sweeper judge expiry without decoding bins.

Bin values are what msgpack carries, checked up front so nothing unencodable is half-written:
None, bool, int (signed or unsigned 64-bit), float, str, bytes, list/tuple (read back as
list), dict with str/int/bytes keys, numpy arrays (1-D, numeric; the vector type) and
timezone-aware ``datetime.datetime`` values. numpy scalars are stored as the Python number
they equal. A datetime is stored as an instant (msgpack's timestamp extension, to the
microsecond) and read back as the same instant in UTC; a naive one is refused, since it
names no instant (msgspec would silently store it as text). Anything else is
``InvalidArgument``.
numpy is imported only when a numpy value is first seen, so the core stays light to import.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from engramdb.errors import InvalidArgument, RecordTooBig
from engramdb.records.limits import Limits

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "check_bin_name",
    "check_bins",
    "check_value",
    "decode_bins",
    "decode_own",
    "decode_value",
    "encode_body",
    "encode_value",
    "with_header",
]

FORMAT = 1
HEADER = struct.Struct("<BQqq")
HEADER_SIZE = HEADER.size

_EXT_NDARRAY = 1
_INT_MIN = -(1 << 63)
_UINT_MAX = (1 << 64) - 1
_MAX_DEPTH = 32
_SIMPLE = frozenset({type(None), bool, float, str, bytes})
_MAP_KEYS = frozenset({str, int, bytes})


def _enc_hook(obj: Any) -> Any:
    module = type(obj).__module__
    if module == "numpy":
        import numpy as np

        if isinstance(obj, np.ndarray):
            le = obj.astype(obj.dtype.newbyteorder("<"), copy=False)
            tag = le.dtype.str.encode("ascii")
            return msgspec.msgpack.Ext(_EXT_NDARRAY, bytes([len(tag)]) + tag + le.tobytes())
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return float(obj)
    raise TypeError(f"cannot store a value of type {type(obj).__name__}")


def _ext_hook(code: int, data: memoryview) -> Any:
    # Bytes from the network arrive here: every malformed array is an InvalidArgument.
    if code != _EXT_NDARRAY:
        raise InvalidArgument(f"unknown msgpack extension {code}")
    import numpy as np

    try:
        n = data[0]
        dtype = np.dtype(bytes(data[1 : 1 + n]).decode("ascii"))
    except (IndexError, UnicodeDecodeError, TypeError, ValueError) as e:
        raise InvalidArgument(f"malformed array: bad dtype ({e})") from None
    body = data[1 + n :]
    if dtype.kind not in "fiub" or dtype.hasobject or dtype.itemsize == 0:
        raise InvalidArgument(f"malformed array: arrays must be numeric, not {dtype}")
    if len(body) % dtype.itemsize:
        raise InvalidArgument(
            f"malformed array: {len(body)} bytes is not a whole number of {dtype} elements"
        )
    return np.frombuffer(body, dtype=dtype).copy()


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(ext_hook=_ext_hook)
# For bytes this process encoded itself with ``encode_value`` (a value it keeps packed in
# memory): no error translation to pay per call, as they cannot be malformed.
decode_own: Callable[[bytes], Any] = _decoder.decode


def check_bin_name(name: object, limits: Limits) -> str:
    if type(name) is not str:
        raise InvalidArgument(f"a bin name must be str, not {type(name).__name__}")
    if not name or len(name) > limits.max_bin_name:
        raise InvalidArgument(f"bin name {name!r} must be 1 to {limits.max_bin_name} characters")
    return name


def check_bins(bins: object, limits: Limits) -> Mapping[str, Any]:
    """Validate a whole bin map (names and values) without copying it."""
    if not isinstance(bins, Mapping):
        raise InvalidArgument(f"bins must be a mapping of name to value, not {type(bins).__name__}")
    longest = limits.max_bin_name
    for name, value in bins.items():
        if type(name) is not str or not 0 < len(name) <= longest:
            check_bin_name(name, limits)  # raises the precise error
        if type(value) not in _SIMPLE:
            check_value(value, limits, name)
    return bins


def _instant_problem(value: datetime.datetime) -> str | None:
    """Why ``value`` cannot be stored as an instant, or None when it can."""
    try:
        if value.utcoffset() is None:
            return (
                "is a naive datetime, which names no instant; attach a timezone (e.g. "
                "datetime.now(timezone.utc) or dt.replace(tzinfo=...))"
            )
        value.astimezone(datetime.UTC)
    except OverflowError:
        return "is outside the years 1 to 9999 in UTC"
    except (TypeError, ValueError) as e:  # a tzinfo answering nonsense names no instant
        return f"has an unusable timezone ({e})"
    return None


def _plain(value: object, depth: int) -> bool:
    """Whether ``value`` is made only of plain storable types (no numpy, no errors):
    the common case, checked without building any error text."""
    kind = type(value)
    if kind in _SIMPLE:
        return True
    if kind is int:
        return _INT_MIN <= value <= _UINT_MAX  # type: ignore[operator]
    if kind is datetime.datetime:
        return _instant_problem(value) is None  # type: ignore[arg-type]
    if depth >= _MAX_DEPTH:
        return False
    if kind is list or kind is tuple:
        return all(type(v) in _SIMPLE or _plain(v, depth + 1) for v in value)  # type: ignore[attr-defined]
    if kind is dict:
        return all(
            type(k) in _MAP_KEYS and (type(v) in _SIMPLE or _plain(v, depth + 1))
            for k, v in value.items()  # type: ignore[attr-defined]
        )
    return False


def check_value(value: object, limits: Limits, where: str, depth: int = 0) -> None:
    """Raise ``InvalidArgument`` unless ``value`` can be stored and read back faithfully."""
    if _plain(value, depth):
        return  # a fast pass first; the walk below only runs to find and name a problem
    _check_value(value, limits, where, depth)


def _check_value(value: object, limits: Limits, where: str, depth: int = 0) -> None:
    kind = type(value)
    if kind in _SIMPLE:
        return
    if kind is int:
        if not _INT_MIN <= value <= _UINT_MAX:  # type: ignore[operator]
            raise InvalidArgument(f"{where}: int {value} does not fit in 64 bits")
        return
    if kind is datetime.datetime:
        problem = _instant_problem(value)  # type: ignore[arg-type]
        if problem is not None:
            raise InvalidArgument(f"{where}: {value!r} {problem}")
        return
    if depth >= _MAX_DEPTH:
        raise InvalidArgument(f"{where}: values nest deeper than {_MAX_DEPTH} levels")
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if type(item) not in _SIMPLE:
                _check_value(item, limits, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if type(k) not in _MAP_KEYS:
                raise InvalidArgument(
                    f"{where}: map keys must be str, int or bytes, not {type(k).__name__}"
                )
            if type(item) not in _SIMPLE:
                _check_value(item, limits, f"{where}[{k!r}]", depth + 1)
        return
    if kind.__module__ == "numpy":
        _check_numpy(value, limits, where)
        return
    raise InvalidArgument(
        f"{where}: cannot store a value of type {kind.__name__} "
        "(use None, bool, int, float, str, bytes, list, dict, an aware datetime or a numpy "
        "array)"
    )


def _check_numpy(value: object, limits: Limits, where: str) -> None:
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise InvalidArgument(f"{where}: numpy arrays must be 1-D, got shape {value.shape}")
        if value.dtype.kind not in "fiub":
            raise InvalidArgument(f"{where}: numpy arrays must be numeric, not {value.dtype}")
        if value.shape[0] > limits.max_vector_dim:
            raise InvalidArgument(
                f"{where}: array has {value.shape[0]} elements; the limit is "
                f"{limits.max_vector_dim}"
            )
        return
    if isinstance(value, np.bool_ | np.integer | np.floating):
        if isinstance(value, np.integer) and not _INT_MIN <= int(value) <= _UINT_MAX:
            raise InvalidArgument(f"{where}: int {value} does not fit in 64 bits")
        return
    raise InvalidArgument(f"{where}: cannot store a value of type numpy.{type(value).__name__}")


def encode_value(value: Any) -> bytes:
    return _encoder.encode(value)


def decode_value(data: bytes | memoryview) -> Any:
    """Decode msgpack from outside (a request payload); malformed input is ``InvalidArgument``."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as e:
        raise InvalidArgument(f"not valid msgpack: {e}") from None
    except RecursionError:
        raise InvalidArgument("msgpack nests too deeply") from None


def encode_body(bins: Mapping[str, Any], limits: Limits) -> bytes:
    """Encode already validated bins, enforcing the record size limit."""
    try:
        body = _encoder.encode(bins)
    except (UnicodeEncodeError, OverflowError) as e:
        # What the type walk does not look at: lone surrogates in text (bin names, values,
        # map keys) and ints beyond 64 bits used as map keys.
        raise InvalidArgument(f"cannot store this value: {e}") from None
    size = HEADER_SIZE + len(body)
    if size > limits.max_record_bytes:
        raise RecordTooBig(
            f"record encodes to {size} bytes; the limit is {limits.max_record_bytes}"
        )
    return body


def with_header(body: bytes, generation: int, expires_at_ms: int, updated_at_ms: int) -> bytes:
    return HEADER.pack(FORMAT, generation, expires_at_ms, updated_at_ms) + body


def decode_bins(raw: bytes | memoryview) -> dict[str, Any]:
    # Slicing copies, but for small records a copy is cheaper than building a memoryview.
    body = raw[HEADER_SIZE:] if len(raw) < 4096 else memoryview(raw)[HEADER_SIZE:]
    bins: dict[str, Any] = _decoder.decode(body)
    return bins
