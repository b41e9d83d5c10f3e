"""The CLI: every command has help, and commands map errors to clean messages.

Every failure a user can cause (a busy port, a bad or foreign path, a target that does not
answer) is one line on stderr naming what to change, a non-zero exit and no traceback:
checked on the real CLI, run as a subprocess the way a user runs it."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import click
import lmdb
import pytest
from click.testing import CliRunner

import engramdb
from engramdb.audit.report import SECTION_TITLES, timeline_figure
from engramdb.cli import main
from tests.server_faults.conftest import ServeFactory, serve

__all__ = ["serve"]  # the fixture, imported to be used here


def all_commands(group: click.Group) -> list[tuple[str, click.Command]]:
    return sorted(group.commands.items())


@pytest.mark.parametrize(("name", "command"), all_commands(main))
def test_every_command_has_help_text(name: str, command: click.Command) -> None:
    assert command.help, f"engramdb {name} has no help text"
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_version() -> None:
    result = CliRunner().invoke(main, ["version"])
    assert result.exit_code == 0
    assert result.output.strip() == engramdb.__version__


def test_stats_shows_sets_and_counts(tmp_path: Path) -> None:
    with engramdb.open(tmp_path / "db", sweep_interval=None) as db:
        for i in range(3):
            db.records("users").put(i, {})
        db.records("items").put("x", {})
    result = CliRunner().invoke(main, ["stats", str(tmp_path / "db"), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["sets"] == {"items": 1, "users": 3}
    assert figures["engine"]["records_stored"] == 4
    table = CliRunner().invoke(main, ["stats", str(tmp_path / "db")])
    assert table.exit_code == 0
    assert "users" in table.output
    assert "records stored" in table.output


def test_stats_count_the_sets_roles_reserve_too(tmp_path: Path) -> None:
    with engramdb.open(tmp_path / "db", sweep_interval=None) as db:
        db.vectors.create_collection("docs", 3)
        db.sessions.create("chat-1")
    result = CliRunner().invoke(main, ["stats", str(tmp_path / "db"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["sets"] == {"_collections": 1, "_sessions": 1}


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``engramdb ARGS`` as a user runs it: a subprocess, stdout not a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "engramdb.cli", *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def one_line_error(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The failure's stderr, checked to be one line (no traceback) and to say ``expected``."""
    assert done.returncode != 0, done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_second_serve_on_a_busy_port_names_the_port_and_the_flag(
    serve: ServeFactory, tmp_path: Path
) -> None:
    first = serve()
    second = cli("serve", "--data", "other", "--port", str(first.port), "--metrics-port", "0",
                 cwd=tmp_path)  # fmt: skip
    line = one_line_error(second, f"port {first.port}", "already in use", "--port")
    assert line.startswith("error: ")
    assert first.alive()


@pytest.mark.parametrize("flag", ["--port", "--metrics-port"])
def test_a_busy_port_leaves_no_data_directory_behind(
    serve: ServeFactory, tmp_path: Path, flag: str
) -> None:
    first = serve()
    ports = {"--port": str(free_port()), "--metrics-port": str(free_port())}
    ports[flag] = str(first.port)
    second = cli("serve", "--port", ports["--port"], "--metrics-port", ports["--metrics-port"],
                 cwd=tmp_path)  # fmt: skip
    one_line_error(second, "already in use", flag)
    assert not (tmp_path / "engramdb-data").exists()


def test_a_busy_metrics_port_names_the_metrics_flag(serve: ServeFactory, tmp_path: Path) -> None:
    first = serve()
    port = str(free_port())
    second = cli("serve", "--data", "other", "--port", port, "--metrics-port", str(first.port),
                 cwd=tmp_path)  # fmt: skip
    one_line_error(second, f"metrics port {first.port}", "already in use", "--metrics-port")
    # The database it had opened is closed again: a fresh server starts on that directory.
    third = serve(name="other")
    assert third.alive()


@pytest.mark.parametrize(
    ("setup", "data", "expected"),
    [
        ("file", "afile", "is a file"),
        ("file", "afile/db", "Not a directory"),
        ("foreign", "mine", "holds other files (notes.txt) and no engramdb database"),
        ("", "/sys/engramdb-test", "Operation not permitted"),
    ],
    ids=["a-file", "under-a-file", "a-foreign-directory", "not-permitted"],
)
def test_serve_on_a_path_it_cannot_use_is_one_line(
    tmp_path: Path, setup: str, data: str, expected: str
) -> None:
    if setup == "file":
        (tmp_path / "afile").write_text("not a database")
    elif setup == "foreign":
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "notes.txt").write_text("the user's own")
    done = cli("serve", "--data", data, "--port", str(free_port()), "--metrics-port", "0",
               cwd=tmp_path, timeout=60)  # fmt: skip
    one_line_error(done, expected)
    if setup == "foreign":
        assert sorted(os.listdir(tmp_path / "mine")) == ["notes.txt"]  # nothing scattered


def foreign_lmdb(path: Path) -> None:
    """Another program's LMDB environment: a key in its main database."""
    env = lmdb.open(str(path))
    with env.begin(write=True) as txn:
        txn.put(b"their-key", b"their value")
    env.close()


@pytest.mark.parametrize("command", ["stats", "serve"])
def test_another_programs_lmdb_is_refused_in_one_line_and_left_alone(
    tmp_path: Path, command: str
) -> None:
    foreign_lmdb(tmp_path / "theirs")
    before = (tmp_path / "theirs" / "data.mdb").read_bytes()
    args = ["--data", "theirs", "--port", str(free_port()), "--metrics-port", "0"]
    done = cli(command, *(args if command == "serve" else ["theirs"]), cwd=tmp_path, timeout=60)
    one_line_error(done, "holds an LMDB database that is not engramdb's", "their-key")
    assert (tmp_path / "theirs" / "data.mdb").read_bytes() == before


@pytest.mark.parametrize("command", ["stats", "serve"])
def test_a_locked_database_is_one_line_not_a_hang(tmp_path: Path, command: str) -> None:
    with engramdb.open(tmp_path / "db", sweep_interval=None) as db:
        db.records("users").put("u1", {})
    # What LMDB's open waits for: another process holding lock.mdb exclusively (this test
    # process; the CLI is another one).
    with (tmp_path / "db" / "lock.mdb").open("r+") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX)
        args = ["--data", "db", "--port", str(free_port()), "--metrics-port", "0"]
        done = cli(command, *(args if command == "serve" else ["db"]), cwd=tmp_path, timeout=60)
    one_line_error(done, "db is locked", "lock.mdb")


def test_stats_defaults_to_the_directory_serve_uses(tmp_path: Path) -> None:
    with engramdb.open(tmp_path / "engramdb-data", sweep_interval=None) as db:
        db.records("users").put("u1", {})
    done = cli("stats", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sets"] == {"users": 1}


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("", "no database at ./engramdb-data"),
        ("nope", "no database at nope"),
        ("foreign", "holds no engramdb database"),
    ],
)
def test_stats_of_no_database_is_one_line_and_creates_nothing(
    tmp_path: Path, target: str, expected: str
) -> None:
    (tmp_path / "foreign").mkdir()
    done = cli("stats", *([target] if target else []), cwd=tmp_path)
    one_line_error(done, expected)
    assert sorted(os.listdir(tmp_path)) == ["foreign"]
    assert os.listdir(tmp_path / "foreign") == []


def test_stats_of_a_directory_a_server_is_serving(serve: ServeFactory, tmp_path: Path) -> None:
    server = serve()
    with engramdb.connect(server.url) as db:
        db.records("users").put("u1", {})
    done = cli("stats", "--json", str(server.data), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sets"] == {"users": 1}


def test_stats_over_the_network(serve: ServeFactory, tmp_path: Path) -> None:
    server = serve()
    with engramdb.connect(server.url) as db:
        db.records("users").put("u1", {})
    done = cli("stats", server.url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "records stored" in done.stdout
    assert "users" in done.stdout


@pytest.mark.parametrize(
    "command",
    [("stats", "engramdb://127.0.0.1:{port}"), ("audit", "engramdb://127.0.0.1:{port}"),
     ("audit", "redis://127.0.0.1:{port}")],
    ids=["stats-engramdb", "audit-engramdb", "audit-redis"],
)  # fmt: skip
def test_a_target_that_does_not_answer_is_one_line(
    tmp_path: Path, command: tuple[str, str]
) -> None:
    name, target = command
    done = cli(name, target.format(port=free_port()), cwd=tmp_path)
    one_line_error(done, "Unavailable", "127.0.0.1")


def test_the_audit_of_the_default_path_prints_progress_and_its_sections_in_order(
    tmp_path: Path,
) -> None:
    done = cli(  # no TARGET: ./engramdb-data, as for serve and stats
        "audit", "--rate", "100", "--duration", "1", "--workers", "1",
        "--sections", "observability,consistency,latency", "--report", str(tmp_path / "report"),
        cwd=tmp_path, timeout=180,
    )  # fmt: skip
    assert done.returncode in (0, 3), done.stdout + done.stderr  # PASS or FAIL, not a crash
    out = done.stdout
    assert "] tail latency at 100 req/s" in out  # plain progress lines, with the time
    assert "] consistency:" in out
    titles = [SECTION_TITLES[n] for n in ("latency", "consistency", "observability")]
    assert [out.index(title) for title in titles] == sorted(out.index(t) for t in titles)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["target"] == "./engramdb-data"
    assert not (tmp_path / "engramdb-data").exists()  # the audit created it, so removed it
    assert list(report["sections"]) == ["latency", "consistency", "observability"]
    page = (tmp_path / "report" / "report.html").read_text()
    assert [page.index(t) for t in titles] == sorted(page.index(t) for t in titles)
    figure = timeline_figure(report["sections"]["latency"]["timeline"])
    assert all(axis.get_xlim()[0] >= 0 for axis in figure.axes)


def test_console_script_is_installed() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "engramdb.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "engramdb" in out.stdout
