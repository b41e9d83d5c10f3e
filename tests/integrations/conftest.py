"""Fixtures of the integration suites: every face of the API an adapter can be given.

``FACES``: ``lmdb`` (``engramdb.open`` on LMDB under ``tmp_path``), ``aio`` (an
``engramdb.aio`` embedded database over it), ``server`` (``engramdb.connect`` to a real
``engramdb serve`` subprocess, the session's ``engram_server``, reset for each test) and
``server-aio`` (``engramdb.aio`` client of that server). A face is built without awaiting
anything, so one database serves a test's sync and async calls alike, and is closed on the
loop the test ran on.

Framework suites that write ``async def`` tests without a marker (langchain-tests) get
``pytest.mark.asyncio`` here, for the files of this directory only.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

pytest_asyncio = pytest.importorskip("pytest_asyncio")

import engramdb  # noqa: E402
import engramdb.aio  # noqa: E402
from tests.conftest import (  # noqa: E402
    CLOCK_START,
    ServerProcess,
    run_last_in_directory,
    start_with_directory,
)

if TYPE_CHECKING:
    from tests.integrations.test_feast import CasesRun

FACES = ["lmdb", "aio", "server", "server-aio"]
HERE = Path(__file__).parent
FEAST_TESTS = HERE / "test_feast.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Feast's cases run in another interpreter, started with this directory's first test
    # (feast_cases below): Feast's tests go after the directory's others, which run
    # meanwhile.
    run_last_in_directory(items, FEAST_TESTS)


@pytest.fixture(scope="session")
def feast_cases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CasesRun]:
    """The one run of ``feast_cases.py`` in an interpreter that has Feast (``test_feast.py``)."""
    from tests.integrations.test_feast import CasesRun

    run = CasesRun(tmp_path_factory.mktemp("feast"))
    yield run
    run.stop()


@pytest.fixture(scope="session", autouse=True)
def _start_feast_cases_early(request: pytest.FixtureRequest) -> None:
    start_with_directory(request, FEAST_TESTS, "feast_cases")


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    # Before the item exists: pytest-asyncio decides what an item is when it is made.
    if (
        name.startswith("test")
        and inspect.iscoroutinefunction(obj)
        and HERE in Path(str(collector.path)).parents
    ):
        pytest.mark.asyncio(obj)


def _open_db(face: str, path: Path, server: ServerProcess | None, **options: Any) -> Any:
    if face in ("lmdb", "aio"):
        options.setdefault("durability", "none")
        options.setdefault("sweep_interval", None)
        inner = engramdb.open(path, **options)
        return inner if face == "lmdb" else engramdb.aio.AsyncDatabase(inner)
    assert server is not None
    limits = options.pop("limits", None)
    reset: dict[str, Any] = {"clock_start": CLOCK_START}
    if limits is not None:
        reset["limits"] = dataclasses.asdict(limits)
    server.reset(**reset)
    # The asyncio client connects lazily, on the loop of the test that uses it.
    return (
        engramdb.connect(server.url) if face == "server" else engramdb.aio.AsyncClient(server.url)
    )


@pytest.fixture(params=FACES)
def face(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture
async def open_face(
    face: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Any]]:
    """Opens fresh databases of the face under test (``open_face(**options)``, options as
    ``engramdb.open``); closes them afterwards, on the loop the test ran on."""
    opened: list[Any] = []

    def _open(**options: Any) -> Any:
        server = request.getfixturevalue("engram_server") if face.startswith("server") else None
        db = _open_db(face, tmp_path / f"db{len(opened)}", server, **options)
        opened.append(db)
        return db

    yield _open
    for db in opened:
        closed = db.close()
        if inspect.isawaitable(closed):
            await closed
