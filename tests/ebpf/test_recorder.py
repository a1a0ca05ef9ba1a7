"""The eBPF recorder's own process: started early, before Capsule knows its root; never left behind.

Real `capsule run --tracer ebpf` (root, BTF, tracefs, the recorder built); elsewhere the tests skip, saying why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.ebpf.available import needs_ebpf

CAPSULE = [sys.executable, "-m", "capsule"]
pytestmark = [pytest.mark.ebpf, needs_ebpf]


def recorders_since(t0: float) -> list[psutil.Process]:
    """The recorder processes started after `t0` that are still alive (not zombies)."""
    found = []
    for proc in psutil.process_iter(["name", "create_time", "status"]):
        info = proc.info
        if (
            (info["name"] or "").startswith("capsule-ebpf-re")
            and info["create_time"] >= t0 - 0.01
            and info["status"] != psutil.STATUS_ZOMBIE
        ):
            found.append(proc)
    return found


def no_recorder_left(t0: float, patience_s: float = 20.0) -> list[psutil.Process]:
    """Wait until every recorder started since `t0` is gone (a stopped one takes a moment to detach
    its programs in the kernel); what is still alive after `patience_s`."""
    deadline = time.monotonic() + patience_s
    while (left := recorders_since(t0)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def run(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CAPSULE_HOME=str(tmp_path / "h"))
    return subprocess.run(
        [*CAPSULE, "run", "--tracer", "ebpf", "--", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_command_not_found_leaves_no_recorder(tmp_path: Path) -> None:
    """The recorder starts before Capsule resolves the command; a command that does not exist (the
    session says so, exit 127) stops it again."""
    t0 = time.time()
    done = run(tmp_path, "no-such-command-capsule")
    assert done.returncode == 127, done.stderr
    assert "command not found" in done.stderr
    assert no_recorder_left(t0) == []


def test_the_recorder_follows_the_root_it_is_given(tmp_path: Path) -> None:
    """Started with `-`, the recorder opens the trace it is told, after Capsule's header, and the
    root is the stub that becomes the command: its exec is the trace's first."""
    t0 = time.time()
    done = run(tmp_path, "sh", "-c", "exit 4")
    assert done.returncode == 4, done.stderr
    (run_dir,) = (tmp_path / "h" / "runs").iterdir()
    lines = [json.loads(ln) for ln in (run_dir / "trace.ebpf").read_text().splitlines()]
    assert lines[0]["type"] == "capsule"
    root = lines[0]["root"]
    data = [ln["data"] for ln in lines if ln.get("type") == "printf"]
    first_exec = next(d for d in data if d.startswith("E "))
    assert first_exec.split()[2:4] == [str(root), str(root)]
    assert first_exec.rstrip("\n").endswith("/sh")
    header = json.loads((run_dir / "events.jsonl").read_text().splitlines()[0])
    assert header["tracer"].endswith("capsule-ebpf-recorder")
    assert header["tracer_flags"][-1] == "process"
    assert no_recorder_left(t0) == []
