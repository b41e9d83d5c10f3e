"""The filter language's two evaluators: ``matches`` (one item) and ``mask`` (numpy over the
index's columns) must agree on every metadata and every filter; and the language's rules
(lists, ``$contains``, ``$exists``, ``$prefix``, dotted paths, datetimes) hold in both."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engramdb import InvalidArgument
from engramdb.index.filters import MAX_FILTER_DEPTH, Columns, Filter, compile_filter

UTC = dt.UTC
EXACT = 1 << 53

# --- strategies: small pools, so filters and metadata meet often ------------------------------

T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)
PARIS = dt.timezone(dt.timedelta(hours=2))
names = st.sampled_from(["a", "b", "a.b", "a.b.c", "b.a"])
keys = st.sampled_from(["a", "b", "a.b", "c"])
strs = st.sampled_from(["", "x", "xy", "doc/1", "é"])
# Few values, so that filters and metadata meet often; the ints and floats straddle the
# float64 precision limit, and the datetimes name one instant in two timezones.
comparable = st.sampled_from(
    [
        "x", "xy", "doc/1", "", 0, 1, -1, EXACT, EXACT + 1, (1 << 64) - 1, 1.0, 0.5,
        float(EXACT), float(EXACT + 2), True, False, T0, T0.astimezone(PARIS),
        T0 + dt.timedelta(minutes=1),
    ]
)  # fmt: skip
stored_scalars = st.one_of(
    comparable,
    st.sampled_from([None, float("nan"), float("-inf"), b"x", -0.0]),
    st.just(np.arange(3, dtype=np.float32)),
)
stored = st.recursive(
    stored_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.fixed_dictionaries({}, optional={"a": children, "b": children, "c": children}),
    ),
    max_leaves=6,
)
metadata = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={"a": stored, "b": stored, "a.b": stored, "c": stored}),
)


def conditions() -> st.SearchStrategy[Any]:
    ordered = comparable.filter(lambda v: type(v) is not bool)
    return st.one_of(
        comparable,  # plain equality
        st.fixed_dictionaries({"$eq": comparable}),
        st.fixed_dictionaries({"$ne": comparable}),
        st.fixed_dictionaries({"$in": st.lists(comparable, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"$nin": st.lists(comparable, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"$contains": comparable}),
        st.fixed_dictionaries({"$exists": st.booleans()}),
        st.fixed_dictionaries({"$prefix": strs}),
        st.dictionaries(
            st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), ordered, min_size=1, max_size=2
        ),
    )


filters = st.recursive(
    st.dictionaries(names, conditions(), min_size=1, max_size=2),
    lambda children: st.one_of(
        st.fixed_dictionaries({"$and": st.lists(children, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"$or": st.lists(children, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"$not": children}),
    ),
    max_leaves=6,
)


def column_store(items: list[dict[str, Any] | None]) -> Columns:
    columns = Columns()
    for label, meta in enumerate(items):
        columns.set(label, meta)
    return columns


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(metadata, min_size=1, max_size=12),
    st.lists(st.tuples(st.integers(0, 11), metadata), max_size=6),
    st.sets(st.integers(0, 11), max_size=3),
    filters,
    st.integers(0, 3),
)
def test_matches_and_mask_agree(
    items: list[dict[str, Any] | None],
    updates: list[tuple[int, dict[str, Any] | None]],
    cleared: set[int],
    spec: dict[str, Any],
    extra: int,
) -> None:
    # Updates and clears exercise the postings' and columns' removals, as index updates do.
    columns = column_store(items)
    current = list(items)
    for label, meta in updates:
        if label < len(current):
            columns.set(label, meta)
            current[label] = meta
    for label in cleared:
        if label < len(current):
            columns.clear(label)
            current[label] = None
    compiled = compile_filter(spec)
    assert compiled is not None
    n = len(current) + extra  # labels past the last one the columns saw hold nothing
    expected = [compiled.matches(m or {}) for m in current] + [compiled.matches({})] * extra
    assert compiled.mask(columns, n).tolist() == expected


NEAR_LIMITS = st.sampled_from(
    [
        EXACT - 1, EXACT, EXACT + 1, EXACT + 2, float(EXACT), float(EXACT + 2), -EXACT - 1,
        -float(EXACT), (1 << 64) - 1, (1 << 64) - 2, float(1 << 64), (1 << 63) - 1,
        -(1 << 63), float(-(1 << 63)),
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(NEAR_LIMITS, st.lists(NEAR_LIMITS, max_size=2)), min_size=1, max_size=8),
    st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$contains"]),
    NEAR_LIMITS,
)
def test_numbers_beyond_float_precision_agree(values: list[Any], op: str, bound: Any) -> None:
    # float64 rounds these ints together: the evaluators must still compare them exactly.
    items = [{"n": v} for v in values]
    spec = {"n": {op: [bound] if op == "$in" else bound}}
    compiled = compile_filter(spec)
    assert compiled is not None
    expected = [compiled.matches(m) for m in items]
    assert compiled.mask(column_store(list(items)), len(items)).tolist() == expected


# --- the rules, one by one ---------------------------------------------------------------------


def check(spec: dict[str, Any], items: list[dict[str, Any]], expected: list[bool]) -> None:
    """Both evaluators give ``expected`` over ``items``."""
    compiled = compile_filter(spec)
    assert isinstance(compiled, Filter)
    assert [compiled.matches(m) for m in items] == expected
    assert compiled.mask(column_store(list(items)), len(items)).tolist() == expected


TAGGED = [
    {"tags": ["a", "b"]},
    {"tags": ["c"]},
    {"tags": "a"},
    {"tags": []},
    {},
    {"tags": [1, 2.0]},
]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"tags": "a"}, [True, False, True, False, False, False]),
        ({"tags": {"$eq": 2}}, [False, False, False, False, False, True]),
        ({"tags": {"$in": ["b", "c"]}}, [True, True, False, False, False, False]),
        ({"tags": {"$in": ["z", 1]}}, [False, False, False, False, False, True]),
        ({"tags": {"$ne": "a"}}, [False, True, False, True, True, True]),
        ({"tags": {"$nin": ["a", "c"]}}, [False, False, False, True, True, True]),
        ({"tags": {"$contains": "a"}}, [True, False, False, False, False, False]),
        ({"tags": {"$contains": 1.0}}, [False, False, False, False, False, True]),
        ({"tags": {"$gt": 1.5}}, [False, False, False, False, False, True]),
        ({"tags": {"$gte": "b"}}, [True, True, False, False, False, False]),
        ({"tags": {"$prefix": "a"}}, [True, False, True, False, False, False]),
    ],
)
def test_list_valued_metadata_matches_by_any_element(spec: Any, expected: list[bool]) -> None:
    check(spec, TAGGED, expected)


def test_contains_is_list_membership_never_a_substring() -> None:
    check({"title": {"$contains": "ai"}}, [{"title": "ai"}, {"title": "paint"}], [False, False])


def test_exists_tells_a_missing_field_from_any_value_even_none() -> None:
    items = [{"source": None}, {"source": "x"}, {}, {"other": 1}]
    check({"source": {"$exists": True}}, items, [True, True, False, False])
    check({"source": {"$exists": False}}, items, [False, False, True, True])


def test_prefix_matches_strs_that_start_with_it() -> None:
    items = [{"p": "docs/a"}, {"p": "docs"}, {"p": "src/docs/a"}, {"p": 5}, {"p": "docs/"}]
    check({"p": {"$prefix": "docs/"}}, items, [True, False, False, False, True])
    check({"p": {"$prefix": ""}}, items, [True, True, True, False, True])


def test_dotted_paths_read_nested_maps_first_then_literal_keys() -> None:
    items = [
        {"author": {"name": "ada"}},
        {"author.name": "ada"},  # no nested path: the literal key
        {"author": {"name": "bob"}, "author.name": "ada"},  # the nested path wins
        {"author": "ada"},
        {"author": {"name": {"first": "ada"}}},
        {"author": [{"name": "ada"}]},  # paths go through maps, not lists
    ]
    check({"author.name": "ada"}, items, [True, True, False, False, False, False])
    check({"author.name.first": "ada"}, items, [False, False, False, False, True, False])
    check({"author.name": {"$exists": True}}, items, [True, True, True, False, True, False])


def test_kinds_never_mix() -> None:
    items = [{"v": 1}, {"v": 1.0}, {"v": True}, {"v": "1"}, {"v": [True]}]
    check({"v": 1}, items, [True, True, False, False, False])
    check({"v": True}, items, [False, False, True, False, True])
    check({"v": {"$gte": 1}}, items, [True, True, False, False, False])


def test_ints_beyond_float_precision_compare_exactly() -> None:
    items = [{"n": EXACT + 1}, {"n": EXACT}, {"n": float(EXACT)}, {"n": (1 << 64) - 1}]
    check({"n": EXACT + 1}, items, [True, False, False, False])
    check({"n": EXACT}, items, [False, True, True, False])
    check({"n": {"$gt": EXACT}}, items, [True, False, False, True])
    check({"n": {"$lt": EXACT + 1}}, items, [False, True, True, False])
    check({"n": {"$gte": (1 << 64) - 2}}, items, [False, False, False, True])


def test_datetimes_compare_as_instants_in_any_timezone() -> None:
    noon = dt.datetime(2024, 5, 1, 12, tzinfo=UTC)
    paris = dt.timezone(dt.timedelta(hours=2))
    items = [{"t": noon}, {"t": noon + dt.timedelta(hours=1)}, {"t": "2024-05-01"}, {"t": 0}]
    check({"t": noon.astimezone(paris)}, items, [True, False, False, False])
    check({"t": {"$gt": noon}}, items, [False, True, False, False])
    check({"t": {"$lte": noon.astimezone(paris)}}, items, [True, False, False, False])
    check({"t": {"$in": [noon, "2024-05-01"]}}, items, [True, False, True, False])


@pytest.mark.parametrize(
    "spec",
    [
        {"t": dt.datetime(2024, 1, 1)},  # naive: no instant
        {"t": {"$gt": dt.datetime(2024, 1, 1)}},
        {"t": {"$in": [dt.datetime(2024, 1, 1)]}},
        {"tags": {"$contains": ["a"]}},
        {"tags": {"$contains": None}},
        {"f": {"$exists": 1}},
        {"f": {"$exists": "yes"}},
        {"p": {"$prefix": 1}},
        {"p": {"$prefix": ["a"]}},
        {"n": 1 << 64},  # beyond any stored int
        {"n": {"$gt": True}},
        {"$and": [{"a": 1}, "b"]},
        {"a": {"$regex": "x"}},
    ],
    ids=repr,
)
def test_bad_filters_are_invalid_arguments(spec: Any) -> None:
    with pytest.raises(InvalidArgument):
        compile_filter(spec)


def test_the_depth_limit_still_holds() -> None:
    spec: dict[str, Any] = {"a": 1}
    for _ in range(MAX_FILTER_DEPTH - 1):
        spec = {"$not": spec}
    compile_filter(spec)
    with pytest.raises(InvalidArgument):
        compile_filter({"$not": spec})


def test_a_path_nobody_holds_any_more_is_forgotten() -> None:
    columns = Columns()
    for label in range(100):
        columns.set(label, {f"unique{label}": label, "shared": "x"})
    for label in range(100):
        columns.set(label, {"shared": "y"})
    assert set(columns.fields) == {"shared"}
    assert set(columns.fields["shared"].postings) == {"y"}


def test_a_str_prefix_and_ranges_use_each_distinct_value_once() -> None:
    columns = column_store([{"p": f"doc/{i % 7}"} for i in range(1000)])
    compiled = compile_filter({"p": {"$prefix": "doc/3"}})
    assert compiled is not None
    assert np.flatnonzero(compiled.mask(columns, 1000)).tolist() == list(range(3, 1000, 7))
    ranged = compile_filter({"p": {"$gte": "doc/5"}})
    assert ranged is not None
    assert int(np.count_nonzero(ranged.mask(columns, 1000))) == len(
        [i for i in range(1000) if i % 7 >= 5]
    )
