"""The CLI: every command has help, and commands map errors to clean messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import engramdb
from engramdb.cli import main


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


def test_stats_of_a_missing_directory_is_a_clean_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["stats", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "no database directory" in result.output


def test_console_script_is_installed() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "engramdb.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "engramdb" in out.stdout
