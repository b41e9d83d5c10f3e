"""Unit tests of ``apply_ops``: the pure semantics of ``operate``, without storage."""

from __future__ import annotations

import copy
import math
from typing import Any

import msgspec
import pytest

from engramdb import InvalidArgument, NotFound, ops
from engramdb.records.codec import check_bins
from engramdb.records.limits import DEFAULT_LIMITS, Limits
from engramdb.records.ops import Applied, Op, Read, apply_ops

INT_MAX = (1 << 63) - 1
INT_MIN = -(1 << 63)


def run(bins: dict[str, Any] | None, *op_list: Op, limits: Limits = DEFAULT_LIMITS) -> Applied:
    return apply_ops(bins, list(op_list), limits)


# --- read -------------------------------------------------------------------------------------


def test_read_all_and_named_bins() -> None:
    applied = run({"a": 1, "b": "x"}, ops.read(), ops.read("a", "missing"))
    assert applied.results == [{"a": 1, "b": "x"}, {"a": 1, "missing": None}]
    assert not applied.wrote
    assert applied.bins == {"a": 1, "b": "x"}


def test_read_sees_earlier_writes_in_the_same_call() -> None:
    applied = run(
        {"n": 1},
        ops.incr("n", 2),
        ops.write("s", "new"),
        ops.list_append("l", 1),
        ops.map_put("m", "k", "v"),
        ops.read(),
    )
    assert applied.results[-1] == {"n": 3, "s": "new", "l": [1], "m": {"k": "v"}}


def test_read_keeps_its_value_after_later_writes() -> None:
    applied = run(
        {"l": [1, 2], "m": {"a": 1}, "n": 5},
        ops.read(),
        ops.read("l", "m"),
        ops.list_append("l", 3),
        ops.list_trim("l", 1),
        ops.map_put("m", "b", 2),
        ops.map_remove("m", "a"),
        ops.incr("n"),
        ops.delete_bin("n"),
        ops.read(),
    )
    assert applied.results[0] == {"l": [1, 2], "m": {"a": 1}, "n": 5}
    assert applied.results[1] == {"l": [1, 2], "m": {"a": 1}}
    assert applied.results[-1] == {"l": [2, 3], "m": {"b": 2}}
    assert applied.bins == {"l": [2, 3], "m": {"b": 2}}


def test_reads_only_on_a_missing_record_leave_it_missing() -> None:
    applied = run(None, ops.read("a"), ops.read())
    assert applied.results == [{"a": None}, {}]
    assert applied.bins is None
    assert not applied.wrote


# --- write / delete_bin ---------------------------------------------------------------------------


def test_write_and_delete_bin() -> None:
    applied = run({"a": 1, "b": 2}, ops.write("a", [1]), ops.delete_bin("b"), ops.delete_bin("z"))
    assert applied.results == [None, None, None]
    assert applied.bins == {"a": [1]}
    assert applied.wrote


def test_write_to_a_missing_record_creates_it() -> None:
    applied = run(None, ops.write("a", 1))
    assert applied.bins == {"a": 1}
    assert applied.wrote


# --- incr -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "by", "expected"),
    [
        (None, 1, 1),
        (None, 2.5, 2.5),
        (10, -3, 7),
        (10, 0.5, 10.5),
        (1.5, 2, 3.5),
        (1.5, -1.5, 0.0),
        (INT_MAX - 1, 1, INT_MAX),
        (INT_MIN + 1, -1, INT_MIN),
    ],
)
def test_incr(start: int | float | None, by: int | float, expected: int | float) -> None:
    bins = {} if start is None else {"n": start}
    applied = run(bins, ops.incr("n", by))
    assert applied.results == [expected]
    assert applied.bins["n"] == expected
    assert type(applied.bins["n"]) is type(expected)


def test_incr_defaults_to_one_and_repeats() -> None:
    applied = run(None, ops.incr("n"), ops.incr("n"), ops.incr("n", 10))
    assert applied.results == [1, 2, 12]
    assert applied.bins == {"n": 12}


@pytest.mark.parametrize(
    ("start", "by"),
    [(INT_MAX, 1), (INT_MIN, -1), (None, INT_MAX + 1), ((1 << 64) - 1, 0), (0, 1 << 64)],
    ids=["max+1", "min-1", "by too big", "u64 bin", "by 2**64"],
)
def test_incr_overflow_is_rejected(start: int | None, by: int) -> None:
    bins = {} if start is None else {"n": start}
    with pytest.raises(InvalidArgument):
        run(bins, ops.incr("n", by))


@pytest.mark.parametrize("by", [True, False, "1", None, [1], 1j], ids=repr)
def test_incr_by_must_be_int_or_float(by: Any) -> None:
    with pytest.raises(InvalidArgument):
        run({"n": 1}, ops.incr("n", by))


@pytest.mark.parametrize("held", [True, "1", b"1", [1], {"a": 1}], ids=repr)
def test_incr_on_a_non_number_is_rejected(held: Any) -> None:
    bins = {"n": held}
    with pytest.raises(InvalidArgument):
        run(bins, ops.incr("n"))
    assert bins == {"n": held}


def test_incr_float_may_reach_infinity() -> None:
    applied = run({"n": 1e308}, ops.incr("n", 1e308))
    assert applied.results == [math.inf]


# --- lists -----------------------------------------------------------------------------------


def test_list_append_creates_and_grows() -> None:
    applied = run(None, ops.list_append("l", "a"), ops.list_append("l", ["b"]))
    assert applied.results == [1, 2]
    assert applied.bins == {"l": ["a", ["b"]]}


def test_list_append_max_len_drops_the_oldest() -> None:
    applied = run(
        {"l": [1, 2, 3, 4]},
        ops.list_append("l", 5, max_len=3),
        ops.list_append("l", 6, max_len=3),
        ops.list_append("l", 7, max_len=1),
        ops.list_append("l", 8, max_len=5),
    )
    assert applied.results == [3, 3, 1, 2]
    assert applied.bins == {"l": [7, 8]}


def test_list_append_max_len_above_length_keeps_everything() -> None:
    applied = run({"l": [1]}, ops.list_append("l", 2, max_len=10))
    assert applied.results == [2]
    assert applied.bins == {"l": [1, 2]}


@pytest.mark.parametrize("max_len", [0, -1, 1.0, True, "3"], ids=repr)
def test_list_append_max_len_must_be_a_positive_int(max_len: Any) -> None:
    with pytest.raises(InvalidArgument):
        run({"l": [1]}, ops.list_append("l", 2, max_len=max_len))


SLICES = [
    (0, None),
    (1, None),
    (-2, None),
    (0, 2),
    (1, -1),
    (-3, -1),
    (3, 1),
    (10, None),
    (-10, 2),
    (0, 0),
    (2, 100),
]


@pytest.mark.parametrize(("start", "stop"), SLICES)
def test_list_trim_follows_python_slices(start: int, stop: int | None) -> None:
    items = [0, 1, 2, 3, 4]
    applied = run({"l": list(items)}, ops.list_trim("l", start, stop))
    assert applied.bins["l"] == items[start:stop]
    assert applied.results == [len(items[start:stop])]
    assert applied.wrote


def test_list_trim_of_a_missing_bin_is_zero_and_writes_nothing() -> None:
    applied = run({"a": 1}, ops.list_trim("l", 0, 1))
    assert applied.results == [0]
    assert applied.bins == {"a": 1}
    assert not applied.wrote


@pytest.mark.parametrize(("start", "stop"), [(1.0, None), ("0", None), (0, 1.5), (True, None)])
def test_list_trim_bounds_must_be_ints(start: Any, stop: Any) -> None:
    with pytest.raises(InvalidArgument):
        run({"l": [1, 2]}, ops.list_trim("l", start, stop))


# --- maps ----------------------------------------------------------------------------------------


def test_map_put_and_remove() -> None:
    applied = run(
        None,
        ops.map_put("m", "a", 1),
        ops.map_put("m", 2, [2]),
        ops.map_put("m", b"c", None),
        ops.map_put("m", "a", 10),
        ops.map_remove("m", 2),
        ops.map_remove("m", "zz"),
        ops.map_remove("other", "a"),
    )
    assert applied.results == [1, 2, 3, 3, [2], None, None]
    assert applied.bins == {"m": {"a": 10, b"c": None}}


def test_map_keys_of_different_types_are_distinct() -> None:
    applied = run(None, ops.map_put("m", 1, "i"), ops.map_put("m", "1", "s"))
    assert applied.results == [1, 2]
    assert applied.bins == {"m": {1: "i", "1": "s"}}


def test_map_remove_of_a_missing_bin_writes_nothing() -> None:
    applied = run({"a": 1}, ops.map_remove("m", "k"))
    assert applied.results == [None]
    assert not applied.wrote
    assert applied.bins == {"a": 1}


@pytest.mark.parametrize("key", [1.5, None, (1,), True], ids=repr)
def test_map_put_key_must_be_str_int_or_bytes(key: Any) -> None:
    with pytest.raises(InvalidArgument):
        run({}, ops.map_put("m", key, 1))


# --- touch ---------------------------------------------------------------------------------------


def test_touch_records_the_ttl() -> None:
    applied = run({"a": 1}, ops.touch(5), ops.touch(2.5))
    assert applied.results == [None, None]
    assert applied.touched_ttl == 2.5
    assert applied.wrote
    assert applied.bins == {"a": 1}


def test_touch_on_a_missing_record_raises_not_found() -> None:
    with pytest.raises(NotFound):
        run(None, ops.touch(5))


def test_touch_after_a_write_that_creates_the_record_is_allowed() -> None:
    applied = run(None, ops.write("a", 1), ops.touch(5))
    assert applied.touched_ttl == 5.0
    assert applied.bins == {"a": 1}


@pytest.mark.parametrize("ttl", [0, -1, math.inf, math.nan, True, None, "5"], ids=repr)
def test_touch_ttl_must_be_positive_and_finite(ttl: Any) -> None:
    with pytest.raises(InvalidArgument):
        run({"a": 1}, ops.touch(ttl))


# --- bad requests leave the caller's bins untouched ---------------------------------------------


def original_bins() -> dict[str, Any]:
    return {"n": 1, "s": "text", "l": [1, 2], "m": {"k": [1]}, "f": 1.5, "b": True}


WRONG_TYPE: list[list[Op]] = [
    [ops.incr("s")],
    [ops.incr("l")],
    [ops.incr("b")],
    [ops.list_append("n", 1)],
    [ops.list_append("m", 1)],
    [ops.list_trim("s", 0)],
    [ops.list_trim("m", 0)],
    [ops.map_put("l", "k", 1)],
    [ops.map_put("s", "k", 1)],
    [ops.map_remove("n", "k")],
    [ops.map_remove("l", 0)],
]


@pytest.mark.parametrize("op_list", WRONG_TYPE, ids=lambda o: repr(o[0]))
def test_wrong_type_ops_raise_and_leave_bins_unchanged(op_list: list[Op]) -> None:
    bins = original_bins()
    before = copy.deepcopy(bins)
    # Earlier successful ops in the same call must not leak into the caller's bins either.
    with pytest.raises(InvalidArgument):
        run(
            bins,
            ops.incr("n"),
            ops.list_append("l", 3),
            ops.map_put("m", "k2", 2),
            ops.list_trim("l", 1),
            ops.map_remove("m", "k"),
            ops.write("new", 1),
            ops.delete_bin("f"),
            *op_list,
        )
    assert bins == before
    assert bins["l"] == [1, 2]
    assert bins["m"] == {"k": [1]}


BAD_ARGUMENTS: list[Op] = [
    ops.write("x", {1, 2}),
    ops.write("x", object()),
    ops.write("x", 1 << 64),
    ops.write("", 1),
    ops.write("x" * 65, 1),
    ops.list_append("l", {1}),
    ops.map_put("m", "k", object()),
    ops.delete_bin(""),
    ops.incr("n" * 65),
]


@pytest.mark.parametrize("bad", BAD_ARGUMENTS, ids=repr)
def test_bad_arguments_raise_and_leave_bins_unchanged(bad: Op) -> None:
    bins = original_bins()
    before = copy.deepcopy(bins)
    with pytest.raises(InvalidArgument):
        run(bins, ops.write("s", "changed"), ops.list_append("l", 3), bad)
    assert bins == before


class NotAnOp(msgspec.Struct, frozen=True):
    bin: str


@pytest.mark.parametrize(
    "bad",
    [NotAnOp("a"), "read", ("incr", "a"), {"op": "incr", "bin": "a"}, None],
    ids=["struct", "str", "tuple", "dict", "None"],
)
def test_unknown_op_objects_are_rejected(bad: Any) -> None:
    bins = {"a": 1}
    with pytest.raises(InvalidArgument):
        run(bins, ops.incr("a"), bad)
    assert bins == {"a": 1}


@pytest.mark.parametrize("empty", [[], ()], ids=["list", "tuple"])
def test_empty_op_list_is_rejected(empty: list[Op] | tuple[Op, ...]) -> None:
    with pytest.raises(InvalidArgument):
        apply_ops({"a": 1}, empty, DEFAULT_LIMITS)
    with pytest.raises(InvalidArgument):
        apply_ops(None, empty, DEFAULT_LIMITS)


def test_ops_must_be_a_list_or_tuple() -> None:
    with pytest.raises(InvalidArgument):
        apply_ops({"a": 1}, ops.incr("a"), DEFAULT_LIMITS)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        apply_ops({"a": 1}, iter([ops.incr("a")]), DEFAULT_LIMITS)  # type: ignore[arg-type]


def test_successful_ops_do_not_modify_the_callers_bins() -> None:
    bins = original_bins()
    before = copy.deepcopy(bins)
    applied = run(
        bins,
        ops.list_append("l", 3),
        ops.map_put("m", "k2", 1),
        ops.map_remove("m", "k"),
        ops.incr("n"),
        ops.delete_bin("s"),
    )
    assert bins == before
    assert applied.bins is not bins
    assert applied.bins["l"] == [1, 2, 3]


def test_bin_name_limit_is_the_configured_one() -> None:
    limits = Limits(max_bin_name=2)
    assert run(None, ops.write("ab", 1), limits=limits).bins == {"ab": 1}
    with pytest.raises(InvalidArgument):
        run(None, ops.write("abc", 1), limits=limits)


ALL_KINDS: list[Op] = [
    ops.read("a"),
    ops.write("a", [1, "x"]),
    ops.delete_bin("a"),
    ops.incr("n", 2.5),
    ops.list_append("l", 1, max_len=3),
    ops.list_trim("l", -2),
    ops.map_put("m", b"k", 1),
    ops.map_remove("m", 1),
    ops.touch(3),
]


def test_ops_encode_to_msgpack_tagged_with_their_name() -> None:
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(ALL_KINDS))
    assert [d["type"] for d in decoded] == [
        "read",
        "write",
        "delete_bin",
        "incr",
        "list_append",
        "list_trim",
        "map_put",
        "map_remove",
        "touch",
    ]
    assert decoded[4] == {"type": "list_append", "bin": "l", "value": 1, "max_len": 3}
    assert isinstance(ALL_KINDS[0], Read)


def test_ops_decode_from_msgpack() -> None:
    raw = msgspec.msgpack.encode(ALL_KINDS)
    decoded = msgspec.msgpack.decode(raw, type=list[Op])
    assert decoded == ALL_KINDS
    assert [type(op) for op in decoded] == [type(op) for op in ALL_KINDS]
    assert type(decoded[6].key) is bytes  # type: ignore[union-attr]
    assert type(decoded[7].key) is int  # type: ignore[union-attr]


def nested(levels: int) -> list[Any]:
    outer: list[Any] = []
    inner = outer
    for _ in range(levels - 1):
        child: list[Any] = []
        inner.append(child)
        inner = child
    return outer


@pytest.mark.parametrize("op_name", ["list_append", "map_put"])
def test_nesting_limit_applies_to_appended_elements(op_name: str) -> None:
    deep = nested(32)  # exactly the limit on its own
    op = ops.list_append("x", deep) if op_name == "list_append" else ops.map_put("x", "k", deep)
    try:
        applied = run(None, op)
    except InvalidArgument:
        return
    check_bins(applied.bins, DEFAULT_LIMITS)  # what was stored must itself be storable


@pytest.mark.parametrize("key", [[1], {"a": 1}], ids=["list", "dict"])
def test_map_remove_rejects_unhashable_keys(key: Any) -> None:
    with pytest.raises(InvalidArgument):
        run({"m": {"a": 1}}, ops.map_remove("m", key))


@pytest.mark.parametrize("key", [1.5, None, True, 1.0], ids=repr)
def test_map_remove_rejects_keys_that_are_not_str_int_or_bytes(key: Any) -> None:
    bins = {"m": {1: "one"}}
    with pytest.raises(InvalidArgument):
        run(bins, ops.map_remove("m", key))


@pytest.mark.parametrize("key", [1 << 64, INT_MIN - 1], ids=["2**64", "-2**63-1"])
def test_map_put_rejects_int_keys_beyond_64_bits(key: int) -> None:
    with pytest.raises(InvalidArgument):
        run({}, ops.map_put("m", key, 1))
