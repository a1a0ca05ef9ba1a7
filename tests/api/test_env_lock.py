"""Starting an environment holds a per-config lock: concurrent `env up` of one config start one environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import CapsuleRunner

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path, capsule: CapsuleRunner) -> Iterator[Path]:
    """A one-process project; whatever it started is brought down afterwards."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "capsule.toml").write_text(
        '[project]\nname = "one"\n\n[[process]]\nname = "sleeper"\ncommand = "sleep 600"\n'
    )
    yield root
    capsule("kill-all", timeout=60)


def test_concurrent_env_up_starts_one_environment(
    project: Path, capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """Four `capsule env up` at once: all succeed and report the same environment; one exists, one sleeper."""
    env = {**os.environ, "CAPSULE_HOME": str(capsule_home), "NO_COLOR": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "capsule", "env", "up", str(project), "--json"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err.decode() for _out, err in outputs]
    reported = [orjson.loads(out) for out, _err in outputs]
    assert len({r["session"] for r in reported}) == 1
    assert len({r["processes"][0]["pid"] for r in reported}) == 1
    listed = orjson.loads(capsule("env", "ls", "--json").stdout)["environments"]
    assert [e["state"] for e in listed] == ["up"]
    assert capsule("env", "down", str(project)).returncode == 0
