"""Ctrl-C at a real terminal: the run is stopped by the person, not failed, in the summary and the report.

`capsule run` is started on a pseudo-terminal it has as its controlling terminal, in the foreground, as a
shell runs it; the test types Ctrl-C (the tty driver sends SIGINT to the foreground process group, with
si_code SI_KERNEL) once the command is running. Each test runs under both tracers: under eBPF too, the
recorder sees the terminal's signal delivered (or, to a process it kills at once, sent).
"""

from __future__ import annotations

import os
import pty
import select
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import psutil
import pytest

from tests.conftest import CapsuleRunner
from tests.ebpf.available import TRACERS

pytestmark = pytest.mark.strace

CTRL_C = b"\x03"


def running(name: str, under: int) -> bool:
    """A process called `name` runs below pid `under` (the command is where Ctrl-C is to find it)."""
    try:
        return any(child.name() == name for child in psutil.Process(under).children(recursive=True))
    except psutil.Error:
        return False


def run_on_a_terminal(
    argv: list[str], home: Path, ready: Callable[[int], bool], timeout: float = 60
) -> tuple[int, str]:
    """Run `capsule ARGV` on a new pty; type Ctrl-C once `ready(pid)`; (exit status, what it printed)."""
    pid, master = pty.fork()
    if pid == 0:  # the child: a session leader whose controlling terminal is the pty
        env = {**os.environ, "CAPSULE_HOME": str(home), "NO_COLOR": "1"}
        os.execve(sys.executable, [sys.executable, "-m", "capsule", *argv], env)  # noqa: S606 - the test's own argv, no shell wanted
    out = b""
    typed = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not typed and ready(pid):
                os.write(master, CTRL_C)
                typed = True
            readable, _, _ = select.select([master], [], [], 0.05)
            if readable:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every process on the terminal has closed it
                    break
                if not chunk:
                    break
                out += chunk
        else:
            os.kill(pid, 9)
            pytest.fail(f"capsule run did not end within {timeout} s: {out!r}")
    finally:
        os.close(master)
    _, status = os.waitpid(pid, 0)
    assert typed, out
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def report_of(capsule: CapsuleRunner) -> dict:
    done = capsule("report", "--json")
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


@pytest.mark.parametrize("tracer", TRACERS)
def test_ctrl_c_stops_the_run_without_failures(
    capsule: CapsuleRunner, capsule_home: Path, tracer: str
) -> None:
    """The shell and its child die of the terminal's SIGINT (the shell re-raising it on itself): both
    are stopped, none failed; `capsule run` exits 130 and says who stopped it, as the report does."""
    code, out = run_on_a_terminal(
        ["run", "--tracer", tracer, "--", "sh", "-c", "sleep 100; echo after"],
        capsule_home,
        lambda pid: running("sleep", pid),
    )
    assert code == 130, out
    assert "2 processes · " in out, out  # no "2 failed"
    assert "SIGINT · stopped by the terminal (Ctrl-C)" in out, out
    report = report_of(capsule)
    assert report["session"]["stopped_by"] == "the terminal (Ctrl-C)"
    assert report["summary"]["failed"] == 0
    processes = report["processes"]
    assert [(p["argv"][0], p["signal"], p["stopped"], p["failure"]) for p in processes] == [
        ("sh", "SIGINT", True, False),
        ("sleep", "SIGINT", True, False),
    ]
    text = capsule("report").stdout
    assert "status    complete · SIGINT · stopped by the terminal (Ctrl-C)" in text, text
    assert "failures" not in text
    (row,) = orjson.loads(capsule("ls", "--json").stdout)
    assert row["signal"] == "SIGINT"
    assert capsule("replay", "--check").returncode == 0


@pytest.mark.parametrize("tracer", TRACERS)
def test_a_program_that_catches_ctrl_c_and_exits_130(
    capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path, tracer: str
) -> None:
    """A program that handles SIGINT and exits 128+2 (npm, make, a Python KeyboardInterrupt handler) was
    interrupted too; one that goes on and fails later for its own reasons still fails."""
    ready = tmp_path / "ready"

    def ctrl_c_a_python_that_exits(code: int) -> tuple[int, str]:
        """Ctrl-C a Python program that catches KeyboardInterrupt and exits `code`."""
        ready.unlink(missing_ok=True)
        script = (
            "import pathlib, sys, time\n"
            "try:\n"
            f"    pathlib.Path({str(ready)!r}).touch()\n"
            "    time.sleep(100)\n"
            "except KeyboardInterrupt:\n"
            f"    sys.exit({code})\n"
        )
        argv = ["run", "--tracer", tracer, "--", sys.executable, "-c", script]
        return run_on_a_terminal(argv, capsule_home, lambda _pid: ready.exists())

    code, out = ctrl_c_a_python_that_exits(130)
    assert code == 130, out
    assert "exit 130 · stopped by the terminal (Ctrl-C)" in out, out
    report = report_of(capsule)
    (python,) = report["processes"]
    assert (python["exit_code"], python["stopped"], python["failure"]) == (130, True, False)
    assert report["summary"]["failed"] == 0
    # after the same Ctrl-C, a program that exits 1 failed: only 128+2 says "interrupted"
    code, out = ctrl_c_a_python_that_exits(1)
    assert code == 1, out
    assert "1 failed" in out, out
    assert report_of(capsule)["session"]["stopped_by"] is None
