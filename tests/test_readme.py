"""README.md's examples run as a newcomer pastes them: every block, in order, in one session.

The Python blocks run in one interpreter (a subprocess, warnings as errors) in a fresh
directory, as one would paste them into a REPL, while a real ``engramdb serve`` started here
serves ``./engramdb-data`` on a free port (the page's port, 7379, is rewritten to it). They run
twice: as written (embedded), and with ``engramdb.open("./engramdb-data")`` and
``engramdb.aio.open(...)`` turned into ``connect`` calls to that server, so the page holds for
both faces. Shell blocks are skipped unless marked ``<!-- readme-test: run -->``; a block
marked ``<!-- readme-test: skip (why) -->`` is skipped, and the reason is required.
Tracebacks point at README.md's own line numbers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from tests.server_faults.conftest import ServeFactory, serve

__all__ = ["serve"]  # the fixture, imported to be used here

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
MARKER = re.compile(r"<!--\s*readme-test:\s*(\w+)\s*(?:\((.+)\))?\s*-->$")
SESSION_WAIT = 240.0  # seconds; a bound on a hung session, never an expectation of speed
DATA = "./engramdb-data"

# Runs the blocks in one namespace; each block is compiled at its README.md line.
SESSION = """
import json, subprocess, sys
namespace = {"__name__": "__main__"}
with open(sys.argv[1]) as blocks:
    blocks = json.load(blocks)
for block in blocks:
    print(f"--- README.md:{block['line']} ({block['language']})", flush=True)
    if block["language"] == "python":
        source = "\\n" * (block["line"] - 1) + block["code"]
        exec(compile(source, "README.md", "exec"), namespace)
    else:
        subprocess.run(["bash", "-euo", "pipefail", "-c", block["code"]], check=True)
print("--- done", flush=True)
"""


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # README.md line of the block's first line of code
    marker: str | None
    reason: str | None


def readme_blocks() -> list[Block]:
    text = README.read_text()
    found: list[Block] = []
    for fence in FENCE.finditer(text):
        preceding = text[: fence.start()].rstrip("\n").rpartition("\n")[2]
        mark = MARKER.search(preceding)
        found.append(
            Block(
                language=fence.group(1),
                code=fence.group(2),
                line=text.count("\n", 0, fence.start()) + 2,
                marker=mark.group(1) if mark else None,
                reason=mark.group(2) if mark else None,
            )
        )
    return found


def to_run(blocks: list[Block]) -> list[Block]:
    return [
        b for b in blocks if b.marker != "skip" and (b.language == "python" or b.marker == "run")
    ]


def test_every_marker_is_known_and_every_skip_says_why() -> None:
    blocks = readme_blocks()
    assert sum(b.language == "python" for b in blocks) >= 10
    for block in blocks:
        assert block.marker in (None, "run", "skip"), block.line
        if block.marker == "skip":
            assert block.reason, f"README.md:{block.line}: a skipped block must say why"
        if block.marker == "run":
            assert block.language in ("bash", "sh"), block.line
    assert len(to_run(blocks)) >= 10


def for_server(code: str, url: str) -> str:
    """The same code against the server: the page's embedded opens become connects."""
    return code.replace(f'engramdb.open("{DATA}")', f'engramdb.connect("{url}")').replace(
        'engramdb.aio.open("./engramdb-async")', f'engramdb.aio.connect("{url}")'
    )


def for_shell(code: str) -> str:
    """Shell lines call this interpreter's CLI (the tree under test), not whatever
    ``engramdb`` is first on PATH."""
    cli = f"{sys.executable} -m engramdb.cli"
    return re.sub(r"^engramdb\b", cli, code, flags=re.M)


@pytest.mark.parametrize("face", ["embedded", "server"])
def test_readme_examples_run_in_order_as_written(
    face: str, serve: ServeFactory, tmp_path: Path
) -> None:
    server = serve(name=DATA.removeprefix("./"))  # serves tmp_path/engramdb-data
    url = f"engramdb://127.0.0.1:{server.port}"
    blocks = []
    for block in to_run(readme_blocks()):
        code = block.code.replace("7379", str(server.port))
        if face == "server":
            code = for_server(code, url)
        if block.language != "python":
            code = for_shell(code)
        blocks.append({**asdict(block), "code": code})
    if face == "server":  # the rewrite must have reached the session's opens
        connected = "".join(b["code"] for b in blocks)
        assert f'engramdb.open("{DATA}")' not in connected
        assert connected.count(f'engramdb.connect("{url}")') >= 1
        assert connected.count(f'engramdb.aio.connect("{url}")') == 1
    script = tmp_path / "readme-blocks.json"
    script.write_text(json.dumps(blocks))
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", SESSION, str(script)],
        cwd=tmp_path, capture_output=True, text=True, timeout=SESSION_WAIT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"},
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    ran = re.findall(r"^--- README\.md:(\d+)", done.stdout, re.M)
    assert [int(line) for line in ran] == [b["line"] for b in blocks]
    assert done.stdout.rstrip().endswith("--- done")
    assert server.alive()
