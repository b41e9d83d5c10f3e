"""``EngramSaver`` under real LangGraph graphs, on every face: state, history, interrupts
resumed in a new process, values bigger than a record, blob reclamation, delta channels."""

from __future__ import annotations

import inspect
import operator
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph.graph")

from langgraph.channels.delta import DeltaChannel
from langgraph.graph import END, START, StateGraph

import engramdb
from engramdb.integrations.langgraph import EngramSaver

STEPS = 10


class Chat(TypedDict):
    messages: Annotated[list[str], operator.add]
    step: int


def _chat_graph(saver: EngramSaver, steps: int = STEPS) -> Any:
    builder = StateGraph(Chat)

    def speak(state: Chat) -> dict[str, Any]:
        return {"messages": [f"message {state['step']}"], "step": state["step"] + 1}

    def route(state: Chat) -> str:
        return END if state["step"] >= steps else "speak"

    builder.add_node("speak", speak)
    builder.add_edge(START, "speak")
    builder.add_conditional_edges("speak", route)
    return builder.compile(checkpointer=saver)


async def _count(db: Any, set_name: str) -> int:
    """Records in a set, on any face."""
    found = db.records(set_name).count()
    return int(await found if inspect.isawaitable(found) else found)


async def test_graph_state_and_history(open_face: Callable[..., Any]) -> None:
    db = open_face()
    with EngramSaver(db) as saver:
        graph = _chat_graph(saver)
        config = {"configurable": {"thread_id": "t1"}}
        result = await graph.ainvoke({"messages": [], "step": 0}, config)
        assert result["messages"] == [f"message {i}" for i in range(STEPS)]
        state = await graph.aget_state(config)
        assert state.values == result
        history = [s async for s in graph.aget_state_history(config)]
        assert len(history) == STEPS + 2  # the input, and one per step
        assert [len(s.values.get("messages", [])) for s in history][:3] == [10, 9, 8]
        # The same thread through the sync API of the same saver.
        assert graph.get_state(config).values == result
        again = graph.invoke({"messages": ["more"], "step": 0}, config)
        assert again["messages"][: STEPS + 1] == [*result["messages"], "more"]


async def test_list_pages_through_a_long_thread(open_face: Callable[..., Any]) -> None:
    db = open_face()
    with EngramSaver(db) as saver:
        graph = _chat_graph(saver, steps=150)  # more checkpoints than one listing page
        config = {"configurable": {"thread_id": "long"}}
        run = {**config, "recursion_limit": 500}
        await graph.ainvoke({"messages": [], "step": 0}, run)
        listed = [t async for t in saver.alist(config)]
        assert len(listed) == 152
        ids = [t.checkpoint["id"] for t in listed]
        assert ids == sorted(ids, reverse=True)
        assert [t.checkpoint["id"] for t in saver.list(config, limit=3)] == ids[:3]
        before = {"configurable": {"thread_id": "long", "checkpoint_id": ids[100]}}
        assert [t.checkpoint["id"] for t in saver.list(config, before=before, limit=2)] == ids[
            101:103
        ]
        steps = [t.metadata["step"] for t in saver.list(config, filter={"source": "loop"})]
        assert steps == list(range(150, -1, -1))  # input is step -1


INTERRUPTED = textwrap.dedent(
    """
    import sys
    from typing import TypedDict

    import engramdb
    from langgraph.graph import START, StateGraph
    from langgraph.types import Command, interrupt

    from engramdb.integrations.langgraph import EngramSaver


    class State(TypedDict):
        draft: str
        approved: str


    def write(state: State) -> dict:
        return {"draft": "the draft"}


    def review(state: State) -> dict:
        answer = interrupt({"please review": state["draft"]})
        return {"approved": answer}


    builder = StateGraph(State)
    builder.add_node("write", write)
    builder.add_node("review", review)
    builder.add_edge(START, "write")
    builder.add_edge("write", "review")
    db = engramdb.open(sys.argv[1])
    graph = builder.compile(checkpointer=EngramSaver(db))
    config = {"configurable": {"thread_id": "review-1"}}
    if sys.argv[2] == "start":
        out = graph.invoke({"draft": "", "approved": ""}, config)
        print("INTERRUPT", out["__interrupt__"][0].value)
    else:
        out = graph.invoke(Command(resume="yes, ship it"), config)
        print("DONE", out)
    db.close()
    """
)


def test_interrupt_resumes_in_a_new_process(tmp_path: Path) -> None:
    script = tmp_path / "review.py"
    script.write_text(INTERRUPTED)
    data = str(tmp_path / "db")

    def run(step: str) -> str:
        done = subprocess.run(
            [sys.executable, str(script), data, step],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "INTERRUPT {'please review': 'the draft'}" in run("start")
    assert "DONE {'draft': 'the draft', 'approved': 'yes, ship it'}" in run("resume")


async def test_values_bigger_than_a_record(open_face: Callable[..., Any]) -> None:
    """A 3 MiB channel value (records hold 1 MiB; a server request 2 MiB) round-trips,
    and its chunks go when its thread does."""
    db = open_face()
    big = "x" * (3 << 20)
    with EngramSaver(db) as saver:
        builder = StateGraph(Chat)
        builder.add_node("speak", lambda s: {"messages": [big], "step": 1})
        builder.add_edge(START, "speak")
        graph = builder.compile(checkpointer=saver)
        config = {"configurable": {"thread_id": "big"}}
        await graph.ainvoke({"messages": [], "step": 0}, config)
        state = await graph.aget_state(config)
        assert state.values["messages"] == [big]
        await saver.aput_writes(state.config, [("messages", [big])], "task-1")
        (tup,) = [t async for t in saver.alist(config, limit=1)]
        assert tup.pending_writes == [("task-1", "messages", [big])]
        assert await _count(db, saver.sets.chunks) >= 4
        await saver.acopy_thread("big", "big-copy")
        copied = await graph.aget_state({"configurable": {"thread_id": "big-copy"}})
        assert copied.values["messages"] == [big]
        await saver.adelete_thread("big")
        await saver.adelete_thread("big-copy")
        for set_name in (saver.sets.chunks, saver.sets.blobs, saver.sets.checkpoints):
            assert await _count(db, set_name) == 0


def _referenced(saver: EngramSaver, thread: str) -> set[tuple[str, str]]:
    return {
        (channel, str(version))
        for tup in saver.list({"configurable": {"thread_id": thread}})
        for channel, version in tup.checkpoint["channel_versions"].items()
    }


async def test_prune_and_delete_for_runs_reclaim_blobs(open_face: Callable[..., Any]) -> None:
    db = open_face()
    with EngramSaver(db) as saver:
        graph = _chat_graph(saver)
        for thread in ("a", "b"):
            # As LangGraph's server does: the run id rides in the config, into the metadata.
            config = {"configurable": {"thread_id": thread, "run_id": str(uuid.uuid4())}}
            await graph.ainvoke({"messages": [], "step": 0}, config)
        blobs_before = await _count(db, saver.sets.blobs)
        await saver.aprune(["a"], strategy="keep_latest")
        kept = [t async for t in saver.alist({"configurable": {"thread_id": "a"}})]
        assert len(kept) == 1
        state = await graph.aget_state({"configurable": {"thread_id": "a"}})
        assert state.values["messages"] == [f"message {i}" for i in range(STEPS)]
        # Only the blobs the kept checkpoint (and thread b) refer to remain.
        assert await _count(db, saver.sets.blobs) == len(_referenced(saver, "a")) + len(
            _referenced(saver, "b")
        )
        assert await _count(db, saver.sets.blobs) < blobs_before
        run_id = kept[0].metadata["run_id"]
        await saver.adelete_for_runs([run_id])
        assert [t async for t in saver.alist({"configurable": {"thread_id": "a"}})] == []
        assert await _count(db, saver.sets.blobs) == len(_referenced(saver, "b"))
        assert await _count(db, saver.sets.runs) == STEPS + 2  # thread b's checkpoints


def _fold(state: Sequence[str], writes: Sequence[Sequence[str]]) -> list[str]:
    out = list(state)
    for write in writes:
        out.extend(write)
    return out


class DeltaChat(TypedDict):
    messages: Annotated[list[str], DeltaChannel(_fold, snapshot_frequency=4)]
    step: int


async def test_prune_keeps_what_delta_channels_replay(open_face: Callable[..., Any]) -> None:
    """A delta channel stores a snapshot every few steps and replays the writes since:
    keep_latest keeps the ancestors back to the last snapshot, so the state survives."""
    db = open_face()
    with EngramSaver(db) as saver:
        builder = StateGraph(DeltaChat)

        def speak(state: DeltaChat) -> dict[str, Any]:
            return {"messages": [f"message {state['step']}"], "step": state["step"] + 1}

        builder.add_node("speak", speak)
        builder.add_edge(START, "speak")
        builder.add_conditional_edges("speak", lambda s: END if s["step"] >= 6 else "speak")
        graph = builder.compile(checkpointer=saver)
        config = {"configurable": {"thread_id": "delta"}}
        await graph.ainvoke({"messages": [], "step": 0}, config)
        before = (await graph.aget_state(config)).values
        assert before["messages"] == [f"message {i}" for i in range(6)]
        await saver.aprune(["delta"])
        assert (await graph.aget_state(config)).values == before
        remaining = [t async for t in saver.alist(config)]
        assert 1 < len(remaining) < 8


def test_nul_in_a_thread_id_is_refused(tmp_path: Path) -> None:
    with (
        engramdb.open(tmp_path / "db") as db,
        EngramSaver(db) as saver,
        pytest.raises(engramdb.InvalidArgument, match="NUL"),
    ):
        saver.get_tuple({"configurable": {"thread_id": "a\0b"}})


def test_refuses_what_is_not_a_database() -> None:
    with pytest.raises(engramdb.InvalidArgument, match="engramdb database"):
        EngramSaver(object())
