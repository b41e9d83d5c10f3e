"""The examples of README.md's "Use it from LangGraph, LangChain, LlamaIndex and Feast"."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent.parent / "README.md"
SECTION = "## Use it from LangGraph, LangChain, LlamaIndex and Feast"


def examples() -> list[tuple[str, str]]:
    """The section's code blocks, in order, as (language, code)."""
    text = README.read_text()
    start = text.index(SECTION)
    section = text[start : text.index("\n## ", start + len(SECTION))]
    return re.findall(r"```(\w+)\n(.*?)```", section, re.S)
