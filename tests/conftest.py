"""Shared fixtures: an isolated $CAPSULE_HOME, a way to run the real `capsule` command, a fake `sudo`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

CapsuleRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def capsule_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh $CAPSULE_HOME for this test, for in-process and subprocess calls alike."""
    home = tmp_path / "capsule-home"
    monkeypatch.setenv("CAPSULE_HOME", str(home))
    return home


@pytest.fixture
def capsule(capsule_home: Path) -> CapsuleRunner:
    """Run the real `capsule` CLI in a subprocess; returns the completed process (text mode)."""

    def run(*args: str, input: str | None = None, timeout: float = 120, **kwargs: object):
        env = {**os.environ, "CAPSULE_HOME": str(capsule_home), "NO_COLOR": "1", "COLUMNS": "120"}
        env.update(kwargs.pop("env", {}))  # type: ignore[call-overload]
        return subprocess.run(
            [sys.executable, "-m", "capsule", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=None if input is not None else subprocess.DEVNULL,
            **kwargs,
        )

    return run


def report_json(capsule: CapsuleRunner, session: str = "latest") -> dict:
    done = capsule("report", session, "--json")
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one `capsule: error: …` line a failed command printed (and nothing else, no traceback)."""
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("capsule: error: ")
    return lines[0]


@pytest.fixture
def fake_sudo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `sudo` first on PATH that leaves a marker if it ever runs; returns the marker's path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "sudo-ran"
    (bin_dir / "sudo").write_text(f"#!/bin/sh\necho ran >> {marker}\n")
    (bin_dir / "sudo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return marker
