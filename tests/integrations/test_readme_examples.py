"""README's LangGraph, LangChain and LlamaIndex examples run as written and print what they
say (the Feast one runs among the Feast cases, in an interpreter that has Feast)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import engramdb
from tests.integrations.readme import examples

EXPECTED = {
    "LangGraph": "['hi', 'echo: hi', 'again', 'echo: again']\n",
    "LangChain": "['n2']\n['n1']\nwing flutter at transonic speed\n",
    "LlamaIndex": "Wing flutter at transonic speed.\n",
}


@pytest.mark.parametrize("framework", list(EXPECTED))
def test_readme_example_runs_as_written(framework: str, tmp_path: Path) -> None:
    pytest.importorskip({"LangGraph": "langgraph", "LangChain": "langchain_core",
                         "LlamaIndex": "llama_index.core"}[framework])  # fmt: skip
    code = examples()[list(EXPECTED).index(framework)][1]
    assert f"engramdb.integrations.{framework.lower().replace('llamaindex', 'llama_index')}" in code
    source = str(Path(engramdb.__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], cwd=tmp_path, capture_output=True,
        text=True, timeout=120, env={**os.environ, "PYTHONPATH": source},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == EXPECTED[framework]
