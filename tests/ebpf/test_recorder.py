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


def test_a_stub_whose_gate_closes_with_no_byte_runs_nothing(tmp_path: Path) -> None:
    """The recorder lets the stub go with one byte; a gate that closes without it (the recorder died,
    or Capsule gave up) makes the stub exit 1: the command never runs untraced."""
    from capsule.stages.ebpf_recorder import find_ebpf, gated

    marker = tmp_path / "ran"
    gate = gated(find_ebpf(), "/usr/bin/touch", ["touch", str(marker)])
    stub = subprocess.Popen(gate.argv, pass_fds=(gate.gate_r,), stderr=subprocess.PIPE, text=True)
    gate.spawned()
    gate.abandon()
    _, err = stub.communicate(timeout=30)
    assert stub.returncode == 1
    assert "recorder ended before the command started" in err
    assert not marker.exists()
    released = gated(find_ebpf(), "/usr/bin/touch", ["touch", str(marker)])
    stub = subprocess.Popen(released.argv, pass_fds=(released.gate_r,))
    released.spawned()
    released.release()
    assert stub.wait(timeout=30) == 0
    assert marker.exists()


def test_the_programs_load_with_the_kernel_btf_or_the_kernels_own_and_not_without_its_types(
    tmp_path: Path,
) -> None:
    """With the minimal BTF made for this kernel, or with none (libbpf reads the kernel's); a BTF that
    lacks the kernel's types fails the load in one line, never reads at a wrong offset."""
    import struct

    import attrs

    from capsule.stages.ebpf_recorder import find_ebpf, probe_ebpf

    tracer = find_ebpf()
    assert tracer.btf
    assert probe_ebpf(tracer) is None
    assert probe_ebpf(attrs.evolve(tracer, btf="")) is None
    empty = tmp_path / "empty.btf"  # a valid BTF with no types: header, then one empty string
    empty.write_bytes(struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 0, 0, 1) + b"\0")
    said = probe_ebpf(attrs.evolve(tracer, btf=str(empty)))
    assert said is not None
    assert said.startswith("capsule-ebpf-recorder: load the programs: ")
