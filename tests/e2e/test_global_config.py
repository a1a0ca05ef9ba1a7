"""`$CAPSULE_HOME/config.toml` has one parser (capsule.settings) for all its sections: a `[policy]` and an
`[export]` next to `[env]` leave `capsule env` working, `capsule run` takes the policy and ships to the
collector; an unknown key is one line naming the section and the key, for every command that reads it."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import CapsuleRunner

pytestmark = pytest.mark.strace


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released: connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_policy_and_export_sections_work_for_env_and_run(
    capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path, fake_sudo: Path
) -> None:
    capsule_home.mkdir(parents=True, exist_ok=True)
    port = _closed_port()
    (capsule_home / "config.toml").write_text(
        '[env]\nstop_timeout = "1s"\n'
        '[policy]\ndeny_commands = ["sudo *"]\n'
        f'[export]\nendpoint = "http://127.0.0.1:{port}"\nretries = 0\n'
    )
    project = tmp_path / "project"
    project.mkdir()
    (project / "capsule.toml").write_text('[[process]]\nname = "idle"\ncommand = "sleep 600"\n')
    try:
        up = capsule("env", "up", cwd=project)
        assert up.returncode == 0, up.stderr
        shown = capsule("env", "status", str(project), "--json")
        assert shown.returncode == 0, shown.stderr
        assert [p["name"] for p in orjson.loads(shown.stdout)["processes"]] == ["idle"]
        assert capsule("env", "config", str(project)).returncode == 0
    finally:
        assert capsule("env", "down", str(project)).returncode == 0
    run = capsule("run", "--", "bash", "-c", "x=sud; ${x}o id; echo rc=$?")
    assert "rc=126" in run.stdout, run.stderr  # config.toml's [policy] refused the exec
    assert not fake_sudo.exists()
    # config.toml's [export]: the collector is down, so each closed session waits in the queue: the
    # environment's (shipped by its supervisor once it ended, its warning in supervisor.log) and the run's
    assert "collector down: 2 session(s) queued" in run.stderr, run.stderr
    queued = {p.name for p in (capsule_home / "export-queue").iterdir()}
    assert queued == {p.name for p in (capsule_home / "runs").iterdir()}
    assert len(queued) == 2
    (env_session,) = [p for p in (capsule_home / "runs").iterdir() if p.name not in run.stderr]
    said = (env_session / "supervisor.log").read_text()
    assert f"cannot reach collector http://127.0.0.1:{port}/v1/traces" in said, said


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[policy]\ndeny_commands = ["sudo *"]\ncolour = "red"\n', "[policy]: unknown key 'colour'"),
        ('[export]\nendpoint = "http://x"\nurl = "y"\n', "export.url: unknown key"),
        ('[env]\nstop_timout = "1s"\n', "env.stop_timout: unknown key"),
        ("[colors]\nx = 1\n", "colors: unknown section"),
    ],
)
def test_an_unknown_key_is_one_line_for_env_and_run(
    capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path, text: str, says: str
) -> None:
    capsule_home.mkdir(parents=True, exist_ok=True)
    (capsule_home / "config.toml").write_text(text)
    (tmp_path / "capsule.toml").write_text('[[process]]\nname = "idle"\ncommand = "sleep 600"\n')
    for argv in (["env", "config", str(tmp_path)], ["run", "--", sys.executable, "-c", "pass"]):
        done = capsule(*argv)
        assert done.returncode == 4, (argv, done.stderr)
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("capsule: error: "), (argv, line)
        assert says in line, (argv, line)
        assert str(capsule_home / "config.toml") in line, line
