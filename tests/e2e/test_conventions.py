"""Command-line conventions: --version, one-line usage errors, whole lines in pipes, literal help text,
one command layout with hidden old spellings, and the user's command as env and agents sessions' argv."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

from capsule import __version__
from tests.conftest import CapsuleRunner

pytestmark = pytest.mark.strace


def test_version(capsule: CapsuleRunner) -> None:
    """`capsule --version` prints the version and exits 0."""
    done = capsule("--version")
    assert done.returncode == 0
    assert done.stdout == f"capsule {__version__}\n"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["lss"], "No such command 'lss'. Did you mean 'ls'? (see `capsule --help`)"),
        (["ls", "--limit", "x"], "'x' is not a valid int"),
        (["ls", "--bogus"], "No such option: --bogus (see `capsule ls --help`)"),
        (["report", "a", "b"], "unexpected extra argument"),
        (["env", "nope"], "No such command 'nope'. (see `capsule env --help`)"),
        (["agents", "run"], "Missing argument 'PLAN_FILE'"),
        (["agents", "kill", "--all", "--grace", "soon"], "--grace': not a duration: 'soon'"),
        (["prune", "--older-than", "3 days"], "--older-than: not a duration: '3 days'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(capsule: CapsuleRunner, args: list[str], says: str) -> None:
    """A typo or a bad value: one `capsule: error:` line, exit 2, no rich box and no usage block."""
    done = capsule(*args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("capsule: error: ")
    assert says.lower() in lines[0].lower(), lines[0]
    assert "╭" not in done.stderr
    assert "Usage:" not in done.stderr


def test_help_renders_literally(capsule: CapsuleRunner) -> None:
    """Help text is not rich markup: `[run]` stays, and there are no boxes."""
    done = capsule("agents", "run", "--help")
    assert done.returncode == 0
    assert "(overrides [run])" in done.stdout
    assert "╭" not in done.stdout
    top = capsule("--help").stdout
    assert "--install-completion" in top
    assert "--show-completion" in top
    assert "--version" in top


def test_completion_script(capsule: CapsuleRunner) -> None:
    """typer's completion: `--show-completion bash` prints a script for `capsule`."""
    done = capsule("--show-completion", "bash", env={"SHELL": "/bin/bash"})
    assert done.returncode == 0, done.stderr
    assert "_capsule_completion" in done.stdout


def test_piped_output_is_not_cut_at_80_columns(capsule: CapsuleRunner) -> None:
    """`capsule ls | cat` shows the whole command, date and status on one line."""
    long_arg = "x" * 150
    assert capsule("run", "--", "echo", long_arg).returncode == 0
    done = capsule("ls", env={"COLUMNS": ""})
    assert done.returncode == 0
    (row,) = [line for line in done.stdout.splitlines() if long_arg in line]
    assert f"echo {long_arg}" in row
    assert "complete" in row


def test_environment_commands_live_under_env(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """`env ps|logs|start|stop|restart|kill-all` exist; the old top-level spellings work but are hidden."""
    top = capsule("--help").stdout
    commands = top.split("Commands:")[1]
    for name in ("ps", "logs", "start", "stop", "restart", "kill-all"):
        assert f"\n  {name} " not in commands, name
        assert capsule("env", name, "--help").returncode == 0, name
        assert capsule(name, "--help").returncode == 0, name
    assert orjson.loads(capsule("env", "ps", "--json").stdout) == {"processes": []}
    assert orjson.loads(capsule("ps", "--json").stdout) == {"processes": []}


def _headers(home: Path) -> list[dict]:
    out = []
    for run in sorted((home / "runs").iterdir()):
        first = (run / "events.jsonl").read_bytes().split(b"\n", 1)[0]
        out.append(orjson.loads(first))
    return out


def test_sessions_record_the_users_command(
    capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path
) -> None:
    """env and agents sessions carry `capsule env up …` / `capsule agents run …` as argv."""
    plan = tmp_path / "plan.toml"
    plan.write_text('[[task]]\nid = "a"\ncommand = ["true"]\n')
    assert capsule("agents", "run", str(plan)).returncode == 0
    project = tmp_path / "proj"
    project.mkdir()
    (project / "capsule.toml").write_text('[[process]]\nname = "a"\ncommand = "sleep 300"\n')
    try:
        assert capsule("env", "up", str(project)).returncode == 0
    finally:
        assert capsule("env", "down", str(project)).returncode == 0
    by_kind = {h["session_kind"]: h for h in _headers(capsule_home)}
    assert by_kind["agents"]["argv"] == ["capsule", "agents", "run", str(plan)]
    assert by_kind["env"]["argv"] == ["capsule", "env", "up", str(project)]
    listed = orjson.loads(capsule("ls", "--json").stdout)
    assert {tuple(r["argv"][:3]) for r in listed} >= {("capsule", "agents", "run"), ("capsule", "env", "up")}
    assert sys.executable not in str(listed)
