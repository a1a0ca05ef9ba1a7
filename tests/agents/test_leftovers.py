"""What a crashed scheduler's task leaves behind is stopped by `agents resume`, `agents kill --all` and
`kill-all`, even when the task's leading process had already exited (issue 10)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil
import pytest

from tests.agents.conftest import alive, of, session_events

PY = sys.executable


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def crash_leaving_children(capsule_home: Path, tmp_path: Path) -> tuple[list[int], dict]:
    """Run a task that starts two long children (one in the task's group, one that left it with setsid)
    and exits; SIGKILL the scheduler before it sees the exit. The children's pids and the task.started."""
    pids = tmp_path / "pids"
    stay = f"{PY} -c 'import os, time; os.setsid(); time.sleep(600)'"
    script = (
        f'if [ "$CAPSULE_ATTEMPT" = 1 ]; then sleep 600 & echo $! >> {pids}; {stay} & echo $! >> {pids}; '
        f"while [ ! -e {tmp_path / 'go'} ]; do sleep 0.02; done; fi"
    )
    plan = tmp_path / "plan.toml"
    plan.write_text('[[task]]\nid = "t"\ncommand = ' + "'''" + script + "'''\n")
    env = {**os.environ, "CAPSULE_HOME": str(capsule_home), "NO_COLOR": "1"}
    scheduler = subprocess.Popen(
        [PY, "-m", "capsule", "agents", "run", str(plan)], env=env, stdout=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2)
        children = [int(p) for p in pids.read_text().split()]
        wait_for(lambda: of(session_events(capsule_home), "task.started", "t"))
    except BaseException:
        (tmp_path / "go").touch()  # a failed start must not leave the task's loop behind
        for pid in map(int, pids.read_text().split() if pids.exists() else []):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        raise
    finally:
        scheduler.send_signal(signal.SIGKILL)
        scheduler.wait()
    started = of(session_events(capsule_home), "task.started", "t")[0]
    (tmp_path / "go").touch()  # now the leading process exits, with no scheduler to notice
    wait_for(lambda: not alive(started["pid"], started["started"]))
    assert not any(gone(p) for p in children)
    return children, started


@pytest.mark.parametrize("command", ["resume", "kill --all", "kill-all"])
def test_children_of_an_exited_leader_are_stopped(
    capsule, capsule_home: Path, tmp_path: Path, command: str
) -> None:
    """After a scheduler crash whose task's leader then exited, the leftover children are stopped."""
    children, _started = crash_leaving_children(capsule_home, tmp_path)
    try:
        session = orjson.loads(capsule("agents", "status", "--json").stdout)["run"]
        args = {
            "resume": ("agents", "resume", session),
            "kill --all": ("agents", "kill", "--all"),
            "kill-all": ("kill-all",),
        }
        done = capsule(*args[command], timeout=60)
        assert done.returncode == 0, done.stderr
        for pid in children:
            assert gone(pid), f"{pid} survived `{command}`"
    finally:
        for pid in children:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_resume_records_what_it_stopped(capsule, capsule_home: Path, tmp_path: Path) -> None:
    """`run.resumed` names the interrupted attempt whose leftovers it stopped, though its leader had gone."""
    children, started = crash_leaving_children(capsule_home, tmp_path)
    session = orjson.loads(capsule("agents", "status", "--json").stdout)["run"]
    try:
        assert capsule("agents", "resume", session, timeout=60).returncode == 0
    finally:
        for pid in children:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
    assert of(session_events(capsule_home), "run.resumed")[0]["reaped"] == [started["pid"]]


def test_a_clean_exit_leaves_nothing_behind(agents, tmp_path: Path) -> None:
    """A task that exits 0 at once, leaving a child that left its group (setsid): the child is stopped
    when the task ends, though no sample ever saw it."""
    pid_file = tmp_path / "pid"
    stay = f"{PY} -c 'import os, time; os.setsid(); time.sleep(600)'"
    plan = '[[task]]\nid = "t"\ncommand = ' + "'''" + f"{stay} & echo $! > {pid_file}" + "'''\n"
    done, events = agents(plan)
    assert done.returncode == 0, done.stderr
    pid = int(pid_file.read_text())
    try:
        wait_for(lambda: gone(pid), timeout=5)
    finally:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)
    assert of(events, "task.succeeded", "t")
