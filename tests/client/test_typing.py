"""The faces are typed as users call them: ``mypy --strict`` on ``typed_usage.py``.

``await db.sessions.get()`` on the asyncio client once failed ``mypy --strict``; the
generated methods carry the embedded result types, awaited on asyncio faces.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

USAGE = Path(__file__).with_name("typed_usage.py")
EXPECTED = [
    "engramdb.sessions.model.Session | None",
    "engramdb.records.model.Record | None",
    "engramdb.client._generated.AsyncCollection",
    "list[engramdb.vectors.model.Hit]",
    "Any",
    "engramdb.records.model.ScanPage",
    "engramdb.records.model.Record | None",
    "list[engramdb.memory.model.MemoryHit]",
]


def test_the_faces_type_check_strictly_with_the_embedded_result_types() -> None:
    if shutil.which("mypy") is None and not _has_module("mypy"):
        pytest.skip("mypy is not installed (it is in the dev extra)")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(USAGE)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    revealed = re.findall(r'Revealed type is "(.*)"', done.stdout)
    assert revealed == EXPECTED, done.stdout
    assert "error:" not in done.stdout, done.stdout


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
