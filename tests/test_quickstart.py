"""./quickstart's system-package step: installs as root, and otherwise prints the one apt-get line.

The whole quick start (fresh clone, Debian's own python3, `env -i`) is run by CI itself: `.ci/run` is
`./quickstart test`. These check the branches CI as root never takes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "quickstart"


def _as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv (util-linux) to run as another user")
    # The script comes on stdin (`sh -s`): the clone's directory may not be readable by that user.
    return subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-s", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        input=SCRIPT.read_text(),
        cwd="/",
    )


def test_not_root_prints_the_one_apt_get_line() -> None:
    """Missing commands are named by their packages in one `sudo apt-get install` line, exit 1."""
    done = _as_nobody("packages", "no-such-cmd-a:pkg-a", "sh:dash", "no-such-cmd-b:pkg-b")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].strip() == "sudo apt-get install -y pkg-a pkg-b"
    assert len(lines) == 2


def test_nothing_missing_is_silent() -> None:
    """When every command is there, nothing is installed or printed."""
    done = _as_nobody("packages", "sh:dash", "env:coreutils")
    assert done.returncode == 0
    assert done.stderr == ""


def test_usage() -> None:
    """An unknown task is a usage line, exit 2."""
    done = subprocess.run(["sh", str(SCRIPT), "deploy"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == "usage: ./quickstart demo|test\n"
