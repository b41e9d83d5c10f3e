"""LangGraph's checkpointer conformance suite (``langgraph-checkpoint-conformance``), every
capability, on every face; once through the async methods and once through the sync ones.

Each of the suite's test functions is one test here, so the pass/fail counts are
pytest's. ``test_validate_reports_full_conformance`` runs the suite's own runner, which
also checks that every capability (base and extended) is detected as implemented.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("langgraph.checkpoint.conformance")

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.checkpoint.conformance.spec import (
    test_copy_thread,
    test_delete_for_runs,
    test_delete_thread,
    test_get_tuple,
    test_list,
    test_prune,
    test_put,
    test_put_writes,
)

from engramdb.integrations.langgraph import EngramSaver

SPEC: dict[str, list[Callable[..., Any]]] = {
    "put": test_put.ALL_PUT_TESTS,
    "put_writes": test_put_writes.ALL_PUT_WRITES_TESTS,
    "get_tuple": test_get_tuple.ALL_GET_TUPLE_TESTS,
    "list": test_list.ALL_LIST_TESTS,
    "delete_thread": test_delete_thread.ALL_DELETE_THREAD_TESTS,
    "delete_for_runs": test_delete_for_runs.ALL_DELETE_FOR_RUNS_TESTS,
    "copy_thread": test_copy_thread.ALL_COPY_THREAD_TESTS,
    "prune": test_prune.ALL_PRUNE_TESTS,
}
CASES = [
    pytest.param(case, id=f"{capability}:{case.__name__.removeprefix('test_')}")
    for capability, cases in SPEC.items()
    for case in cases
]


class SyncDriven(EngramSaver):
    """The saver with its async methods answered by its sync ones, so the suite (which
    awaits) exercises the sync API on the same face."""

    async def aget_tuple(self, config: Any) -> Any:
        return self.get_tuple(config)

    async def alist(self, config: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        for item in self.list(config, **kwargs):
            yield item

    async def aput(self, *args: Any) -> Any:
        return self.put(*args)

    async def aput_writes(self, *args: Any, **kwargs: Any) -> None:
        self.put_writes(*args, **kwargs)

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)

    async def adelete_for_runs(self, run_ids: Any) -> None:
        self.delete_for_runs(run_ids)

    async def acopy_thread(self, source: str, target: str) -> None:
        self.copy_thread(source, target)

    async def aprune(self, thread_ids: Any, *, strategy: str = "keep_latest") -> None:
        self.prune(thread_ids, strategy=strategy)


def test_suite_is_whole() -> None:
    assert set(SPEC) == {c.value for c in ALL_CAPABILITIES}
    assert len(CASES) == 81


@pytest.mark.parametrize("case", CASES)
async def test_async_api(open_face: Callable[..., Any], case: Callable[..., Any]) -> None:
    saver = EngramSaver(open_face())
    try:
        await case(saver)
    finally:
        saver.close()


@pytest.mark.parametrize("case", CASES)
async def test_sync_api(open_face: Callable[..., Any], case: Callable[..., Any]) -> None:
    saver = SyncDriven(open_face())
    try:
        await case(saver)
    finally:
        saver.close()


async def test_validate_reports_full_conformance(open_face: Callable[..., Any]) -> None:
    @checkpointer_test(name="EngramSaver")
    async def factory() -> Any:
        saver = EngramSaver(open_face())
        yield saver
        saver.close()

    report = await validate(factory)
    failures = {cap: r.failures for cap, r in report.results.items() if r.failures}
    assert failures == {}
    assert {cap for cap, r in report.results.items() if r.detected} == {
        c.value for c in ALL_CAPABILITIES
    }
    assert report.conformance_level() == "FULL"
