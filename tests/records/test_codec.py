"""Property tests of the record codec, the key encoding and the latency histogram buckets."""

from __future__ import annotations

import datetime
import itertools
import math
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from engramdb import InvalidArgument, Limits, RecordTooBig
from engramdb.observability.metrics import bucket_index, bucket_upper_ns
from engramdb.records.codec import (
    HEADER,
    HEADER_SIZE,
    check_bin_name,
    check_bins,
    decode_bins,
    encode_body,
    encode_value,
    with_header,
)
from engramdb.records.keys import Key, decode_key, encode_key
from engramdb.records.limits import DEFAULT_LIMITS

INT_MIN = -(1 << 63)
INT_MAX = (1 << 63) - 1
UINT_MAX = (1 << 64) - 1

# --- strategies -------------------------------------------------------------------------------

storable_ints = st.integers(INT_MIN, UINT_MAX)
map_keys = st.one_of(st.text(max_size=8), storable_ints, st.binary(max_size=8))
vectors = st.one_of(
    *(
        hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=1, max_side=16))
        for dtype in (np.float32, np.float64, np.int64)
    )
)
# Aware datetimes, in fixed-offset timezones, that stay within years 1-9999 in UTC.
aware_datetimes = st.datetimes(
    min_value=datetime.datetime(1, 1, 2), max_value=datetime.datetime(9999, 12, 30)
).flatmap(
    lambda naive: st.integers(-23 * 60, 23 * 60).map(
        lambda minutes: naive.replace(tzinfo=datetime.timezone(datetime.timedelta(minutes=minutes)))
    )
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    storable_ints,
    st.floats(),  # includes nan, inf and -0.0
    st.text(max_size=16),
    st.binary(max_size=16),
    vectors,
    aware_datetimes,
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(map_keys, children, max_size=4),
    ),
    max_leaves=24,
)
bin_names = st.text(min_size=1, max_size=DEFAULT_LIMITS.max_bin_name)
bin_maps = st.dictionaries(bin_names, values, max_size=6)


def depth(value: object) -> int:
    """Nesting depth of containers, as the codec counts it (a scalar is 0)."""
    if isinstance(value, list | tuple):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def same(expected: object, actual: object) -> bool:
    """Deep equality after a round trip: nan equals nan, tuples come back as lists, types and
    numpy dtypes must match exactly (so ``True`` is not ``1`` and ``-0.0`` is not ``0.0``)."""
    if isinstance(expected, np.ndarray):
        return (
            isinstance(actual, np.ndarray)
            and actual.dtype == expected.dtype
            and actual.shape == expected.shape
            and bool(np.array_equal(expected, actual, equal_nan=expected.dtype.kind == "f"))
        )
    if isinstance(expected, tuple):
        expected = list(expected)
    if type(expected) is not type(actual):
        return False
    if isinstance(expected, float):
        assert isinstance(actual, float)
        if math.isnan(expected):
            return math.isnan(actual)
        return struct.pack("<d", expected) == struct.pack("<d", actual)
    if isinstance(expected, list):
        assert isinstance(actual, list)
        return len(expected) == len(actual) and all(
            same(e, a) for e, a in zip(expected, actual, strict=True)
        )
    if isinstance(expected, dict):
        assert isinstance(actual, dict)
        if {(type(k), k) for k in expected} != {(type(k), k) for k in actual}:
            return False
        return all(same(v, actual[k]) for k, v in expected.items())
    return expected == actual


def round_trip(
    bins: dict[str, Any], generation: int = 1, expires: int = 0, updated: int = 0
) -> Any:
    checked = check_bins(bins, DEFAULT_LIMITS)
    raw = with_header(encode_body(checked, DEFAULT_LIMITS), generation, expires, updated)
    return decode_bins(raw)


# --- values round-trip ------------------------------------------------------------------------


@given(bin_maps)
def test_storable_bins_round_trip(bins: dict[str, Any]) -> None:
    assume(all(depth(v) <= 32 for v in bins.values()))
    assert same(bins, round_trip(bins))


@given(aware_datetimes)
def test_an_aware_datetime_reads_back_as_the_same_instant_in_utc(at: datetime.datetime) -> None:
    (back,) = round_trip({"at": at}).values()
    assert back == at
    assert back.tzinfo is datetime.UTC
    assert back.isoformat().endswith("+00:00")


@given(
    bin_maps,
    st.integers(0, UINT_MAX),
    st.integers(INT_MIN, INT_MAX),
    st.integers(INT_MIN, INT_MAX),
)
def test_header_round_trips_and_body_follows_it(
    bins: dict[str, Any], generation: int, expires: int, updated: int
) -> None:
    assume(all(depth(v) <= 32 for v in bins.values()))
    body = encode_body(check_bins(bins, DEFAULT_LIMITS), DEFAULT_LIMITS)
    raw = with_header(body, generation, expires, updated)
    assert len(raw) == HEADER_SIZE + len(body)
    assert HEADER.unpack_from(raw) == (1, generation, expires, updated)
    assert same(bins, decode_bins(raw))
    assert same(bins, decode_bins(memoryview(raw)))


def test_header_is_25_bytes() -> None:
    assert HEADER_SIZE == 25


@given(st.integers(INT_MIN, UINT_MAX))
def test_every_64_bit_int_round_trips(n: int) -> None:
    assert same({"n": n}, round_trip({"n": n}))


def test_int_range_boundaries_are_storable() -> None:
    bins = {"lo": INT_MIN, "hi": UINT_MAX, "i64": INT_MAX, "zero": 0}
    assert same(bins, round_trip(bins))


def test_special_floats_round_trip_exactly() -> None:
    bins = {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "nzero": -0.0, "tiny": 5e-324}
    out = round_trip(bins)
    assert same(bins, out)
    assert math.copysign(1.0, out["nzero"]) == -1.0


def test_tuples_come_back_as_lists() -> None:
    out = round_trip({"t": (1, (2, "x"), [b"y"])})
    assert out == {"t": [1, [2, "x"], [b"y"]]}
    assert type(out["t"]) is list
    assert type(out["t"][1]) is list


def test_map_keys_keep_their_types() -> None:
    out = round_trip({"m": {"1": "s", 1: "i", b"1": "b", -5: None, UINT_MAX: True}})
    assert out["m"] == {"1": "s", 1: "i", b"1": "b", -5: None, UINT_MAX: True}
    assert {type(k) for k in out["m"]} == {str, int, bytes}


@given(
    st.sampled_from([np.float32, np.float64, np.int64, np.int8, np.uint64, np.float16, np.bool_])
)
def test_numpy_arrays_keep_their_dtype(dtype: type[np.generic]) -> None:
    array = np.arange(5).astype(dtype)
    out = round_trip({"v": array, "nested": [array, {"x": array}]})
    for got in (out["v"], out["nested"][0], out["nested"][1]["x"]):
        assert isinstance(got, np.ndarray)
        assert got.dtype == np.dtype(dtype)
        assert np.array_equal(got, array)
        assert got.flags.writeable  # a copy, not a view of the decode buffer


def test_numpy_array_views_and_empty_arrays_round_trip() -> None:
    strided = np.arange(10, dtype=np.float32)[::3]
    empty = np.array([], dtype=np.float64)
    out = round_trip({"strided": strided, "empty": empty})
    assert same(strided, out["strided"])
    assert same(empty, out["empty"])


@given(
    st.one_of(
        st.floats(width=32).map(np.float32),
        st.floats().map(np.float64),
        st.integers(INT_MIN, INT_MAX).map(np.int64),
        st.integers(0, UINT_MAX).map(np.uint64),
        st.booleans().map(np.bool_),
    )
)
def test_numpy_scalars_are_stored_as_the_python_number(scalar: np.generic) -> None:
    out = round_trip({"x": scalar})["x"]
    expected = scalar.item()
    assert type(out) is type(expected)
    assert same(expected, out)


def test_vector_dimension_limit() -> None:
    limit = DEFAULT_LIMITS.max_vector_dim
    check_bins({"v": np.zeros(limit, dtype=np.float32)}, DEFAULT_LIMITS)
    with pytest.raises(InvalidArgument):
        check_bins({"v": np.zeros(limit + 1, dtype=np.float32)}, DEFAULT_LIMITS)
    small = Limits(max_vector_dim=3)
    check_bins({"v": [np.zeros(3)]}, small)
    with pytest.raises(InvalidArgument):
        check_bins({"v": [np.zeros(4)]}, small)


# --- unstorable values -------------------------------------------------------------------------


def nested(levels: int) -> list[Any]:
    """A list holding a list holding ... ``levels`` lists in all."""
    outer: list[Any] = []
    inner = outer
    for _ in range(levels - 1):
        child: list[Any] = []
        inner.append(child)
        inner = child
    return outer


UNSTORABLE: dict[str, Any] = {
    "set": {1, 2},
    "frozenset": frozenset({1}),
    "object": object(),
    "naive datetime": datetime.datetime(2024, 1, 1),
    "datetime past year 9999 in UTC": datetime.datetime(
        9999, 12, 31, 23, tzinfo=datetime.timezone(datetime.timedelta(hours=-5))
    ),
    "datetime subclass": type("Stamp", (datetime.datetime,), {})(2024, 1, 1, tzinfo=datetime.UTC),
    "date": datetime.date(2024, 1, 1),
    "complex": 1 + 2j,
    "int 2**64": 1 << 64,
    "int below -2**63": INT_MIN - 1,
    "bytearray": bytearray(b"x"),
    "memoryview": memoryview(b"x"),
    "numpy 2-D": np.zeros((2, 2), dtype=np.float32),
    "numpy 0-D array": np.array(1.0),
    "numpy object array": np.array([object(), 1], dtype=object),
    "numpy str array": np.array(["a", "b"]),
    "numpy complex array": np.array([1j]),
    "numpy datetime64": np.datetime64("2024-01-01"),
    "numpy str_": np.str_("x"),
    "numpy datetime64 array": np.array([1], dtype="datetime64[s]"),
    "dict with tuple key": {(1, 2): 1},
    "dict with float key": {1.5: 1},
    "dict with bool key": {True: 1},
    "dict with None key": {None: 1},
    "nested 33 deep": nested(33),
    "str subclass": type("Name", (str,), {})("x"),
    "function": len,
}


@pytest.mark.parametrize("value", UNSTORABLE.values(), ids=UNSTORABLE.keys())
@pytest.mark.parametrize(
    "wrap",
    [
        lambda v: v,
        lambda v: [v],
        lambda v: (1, v),
        lambda v: {"k": v},
        lambda v: [1, {"a": [None, v]}],
    ],
    ids=["bare", "in list", "in tuple", "in map", "deep"],
)
def test_unstorable_values_are_rejected(value: Any, wrap: Any) -> None:
    with pytest.raises(InvalidArgument):
        check_bins({"b": wrap(value)}, DEFAULT_LIMITS)


def test_nesting_limit_is_32_containers() -> None:
    check_bins({"b": nested(32)}, DEFAULT_LIMITS)
    assert round_trip({"b": nested(32)}) == {"b": nested(32)}
    with pytest.raises(InvalidArgument):
        check_bins({"b": nested(33)}, DEFAULT_LIMITS)
    with pytest.raises(InvalidArgument):
        check_bins({"b": {"x": nested(32)}}, DEFAULT_LIMITS)


@given(bin_maps, st.sampled_from(list(UNSTORABLE.values())), st.data())
def test_an_unstorable_leaf_anywhere_is_rejected(
    bins: dict[str, Any], bad: Any, data: st.DataObject
) -> None:
    assume(all(depth(v) <= 30 for v in bins.values()))
    # Walk a random path into the bins and plant the bad value there.
    container: Any = bins
    key: Any = data.draw(bin_names, label="bin")
    while True:
        child = container.get(key) if isinstance(container, dict) else container[key]
        if isinstance(child, list) and child and data.draw(st.booleans(), label="descend"):
            container, key = child, data.draw(st.integers(0, len(child) - 1), label="index")
        elif isinstance(child, dict) and child and data.draw(st.booleans(), label="descend"):
            container, key = child, data.draw(st.sampled_from(list(child)), label="key")
        else:
            break
    container[key] = bad
    with pytest.raises(InvalidArgument):
        check_bins(bins, DEFAULT_LIMITS)


@pytest.mark.parametrize(
    "bins", [[("a", 1)], None, "a", 1, {"a", "b"}], ids=["pairs", "None", "str", "int", "set"]
)
def test_bins_must_be_a_mapping(bins: Any) -> None:
    with pytest.raises(InvalidArgument):
        check_bins(bins, DEFAULT_LIMITS)


# --- sizes and bin names ------------------------------------------------------------------------


@given(bin_maps, st.integers(HEADER_SIZE, 600))
def test_record_size_limit_is_exact(bins: dict[str, Any], limit: int) -> None:
    assume(all(depth(v) <= 32 for v in bins.values()))
    limits = Limits(max_record_bytes=limit)
    size = HEADER_SIZE + len(encode_value(bins))
    if size <= limit:
        assert same(bins, decode_bins(with_header(encode_body(bins, limits), 1, 0, 0)))
    else:
        with pytest.raises(RecordTooBig):
            encode_body(bins, limits)


def test_record_too_big_at_one_byte_over() -> None:
    bins = {"b": b"x" * 100}
    size = HEADER_SIZE + len(encode_value(bins))
    encode_body(bins, Limits(max_record_bytes=size))
    with pytest.raises(RecordTooBig):
        encode_body(bins, Limits(max_record_bytes=size - 1))
    with pytest.raises(RecordTooBig):
        encode_body({"b": b"x" * (1 << 20)}, DEFAULT_LIMITS)
    assert issubclass(RecordTooBig, InvalidArgument)


@pytest.mark.parametrize(
    "name",
    ["", "x" * 65, 1, b"a", None, ("a",)],
    ids=["empty", "65", "int", "bytes", "None", "tuple"],
)
def test_bad_bin_names_are_rejected(name: Any) -> None:
    with pytest.raises(InvalidArgument):
        check_bin_name(name, DEFAULT_LIMITS)
    with pytest.raises(InvalidArgument):
        check_bins({name: 1}, DEFAULT_LIMITS)


@given(bin_names)
def test_bin_names_up_to_the_limit_are_accepted(name: str) -> None:
    assert check_bin_name(name, DEFAULT_LIMITS) == name
    assert round_trip({name: 1}) == {name: 1}


def test_bin_name_limit_is_configurable_and_counts_characters() -> None:
    limits = Limits(max_bin_name=3)
    assert check_bin_name("ééé", limits) == "ééé"  # 6 UTF-8 bytes, 3 characters
    with pytest.raises(InvalidArgument):
        check_bin_name("abcd", limits)


@pytest.mark.parametrize(
    "bins",
    [{"v": "\ud800"}, {"\udc00": 1}, {"v": {"\ud800": 1}}, {"v": ["ok", "\udfff"]}],
    ids=["value", "bin name", "map key", "in list"],
)
def test_lone_surrogates_are_invalid_argument(bins: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        encode_body(check_bins(bins, DEFAULT_LIMITS), DEFAULT_LIMITS)


@pytest.mark.parametrize("key", [1 << 64, INT_MIN - 1], ids=["2**64", "-2**63-1"])
def test_out_of_range_int_map_keys_are_invalid_argument(key: int) -> None:
    with pytest.raises(InvalidArgument):
        encode_body(check_bins({"m": {key: 1}}, DEFAULT_LIMITS), DEFAULT_LIMITS)


# --- keys -----------------------------------------------------------------------------------


def key_text(max_size: int = 64) -> st.SearchStrategy[str]:
    # Keys are encoded with surrogatepass, so lone surrogates are valid keys too.
    return st.text(st.characters(exclude_categories=()), max_size=max_size)


keys: st.SearchStrategy[Key] = st.one_of(
    st.integers(INT_MIN, INT_MAX), st.binary(max_size=64), key_text()
)


def documented_order(key: Key) -> tuple[int, Any]:
    """ints numerically, then bytes, then str; bytes by bytes, str by code point (which is
    the order of their UTF-8 bytes)."""
    if isinstance(key, int):
        return (0, key)
    if isinstance(key, bytes):
        return (1, key)
    return (2, key)


@given(keys)
def test_keys_round_trip(key: Key) -> None:
    encoded = encode_key(key, DEFAULT_LIMITS)
    decoded = decode_key(encoded)
    assert type(decoded) is type(key)
    assert decoded == key


@given(st.lists(keys, unique_by=lambda k: (type(k).__name__, k), max_size=20))
def test_key_encoding_order_is_the_documented_order(key_list: list[Key]) -> None:
    encoded = {encode_key(k, DEFAULT_LIMITS): k for k in key_list}
    assert len(encoded) == len(key_list)  # distinct keys never collide
    by_bytes = [encoded[e] for e in sorted(encoded)]
    assert by_bytes == sorted(key_list, key=documented_order)


@given(st.integers(INT_MIN, INT_MAX), st.integers(INT_MIN, INT_MAX))
def test_int_keys_order_numerically(a: int, b: int) -> None:
    ea, eb = encode_key(a, DEFAULT_LIMITS), encode_key(b, DEFAULT_LIMITS)
    assert (ea < eb) == (a < b)
    assert (ea == eb) == (a == b)


def test_same_looking_keys_of_different_types_differ() -> None:
    encodings = {encode_key(k, DEFAULT_LIMITS) for k in (1, "1", b"1")}
    assert len(encodings) == 3
    assert encode_key(INT_MAX, DEFAULT_LIMITS) < encode_key(b"", DEFAULT_LIMITS)
    assert encode_key(b"\xff" * 10, DEFAULT_LIMITS) < encode_key("", DEFAULT_LIMITS)


@pytest.mark.parametrize(
    "key",
    [1.0, True, None, (1,), ["a"], INT_MAX + 1, INT_MIN - 1, bytearray(b"a")],
    ids=["float", "bool", "None", "tuple", "list", "int64 max+1", "int64 min-1", "bytearray"],
)
def test_bad_keys_are_rejected(key: Any) -> None:
    with pytest.raises(InvalidArgument):
        encode_key(key, DEFAULT_LIMITS)


def test_key_size_limit_counts_encoded_bytes() -> None:
    limit = DEFAULT_LIMITS.max_key_bytes
    for ok in ("x" * limit, b"x" * limit, "é" * (limit // 2)):
        assert decode_key(encode_key(ok, DEFAULT_LIMITS)) == ok
    for big in ("x" * (limit + 1), b"x" * (limit + 1), "é" * (limit // 2) + "x", "\ud800" * 342):
        with pytest.raises(RecordTooBig):
            encode_key(big, DEFAULT_LIMITS)
    with pytest.raises(RecordTooBig):
        encode_key("abcd", Limits(max_key_bytes=3))


def test_corrupt_key_tag_is_rejected() -> None:
    with pytest.raises(InvalidArgument):
        decode_key(b"\x09abc")


# --- latency histogram buckets --------------------------------------------------------------

latencies = st.integers(0, 1 << 64)


@given(latencies, latencies)
def test_bucket_index_is_monotonic(a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert bucket_index(lo) <= bucket_index(hi)


@given(latencies)
def test_bucket_bounds_contain_the_latency(ns: int) -> None:
    index = bucket_index(ns)
    assert 0 <= index < 64 * 16
    upper = bucket_upper_ns(index)
    assert upper >= ns
    if index > 0:
        assert bucket_upper_ns(index - 1) < ns  # ns is in this bucket, not an earlier one
    if ns >= 32:
        assert (upper - ns) / ns <= 1 / 16
    else:
        assert upper == ns  # exact below 32 ns


def test_bucket_uppers_are_strictly_increasing() -> None:
    uppers = [bucket_upper_ns(i) for i in range(64 * 16)]
    assert all(a < b for a, b in itertools.pairwise(uppers))
    assert all(bucket_index(u) == i for i, u in enumerate(uppers))
