"""The audit tests run ``engramdb audit`` against real ``engramdb serve`` processes too: the
server fault suite's ``serve`` fixture, shared.

The end-to-end audits (``test_end_to_end.py``, about 40 s side by side) start with this
directory's first test and their tests run after the directory's others, which run meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import run_last_in_directory, start_with_directory
from tests.server_faults.conftest import Served, serve

if TYPE_CHECKING:
    from tests.audit.test_end_to_end import Running

__all__ = ["Served", "serve"]

END_TO_END = Path(__file__).parent / "test_end_to_end.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    run_last_in_directory(items, END_TO_END)


@pytest.fixture(scope="session")
def end_to_end_audits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Running]]:
    """The end-to-end audits, started; ``finished`` in ``test_end_to_end.py`` waits for them."""
    from tests.audit.test_end_to_end import start_audits, stop_audits

    running = start_audits(tmp_path_factory)
    yield running
    stop_audits(running)


@pytest.fixture(scope="session", autouse=True)
def _start_end_to_end_audits_early(request: pytest.FixtureRequest) -> None:
    start_with_directory(request, END_TO_END, "end_to_end_audits")
