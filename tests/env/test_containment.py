"""Nothing of a service escapes: leftovers of a killed leader, a dead supervisor's orphans, a racing `env up`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import psutil

from tests.conftest import CapsuleRunner
from tests.env.test_supervise import project, status, wait_for, write

__all__ = ["project"]  # the fixture, imported for these tests

FORKER = """
[[process]]
name = "forker"
command = "sh -c 'sleep 600 & sleep 600'"
restart = "on-failure"
backoff = "100ms"
stop_timeout = "2s"
"""


def sleeps(pid: int) -> list[psutil.Process]:
    return [c for c in psutil.Process(pid).children(recursive=True) if c.name() == "sleep"]


def gone(procs: list[psutil.Process]) -> bool:
    return all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in procs)


def forker(capsule: CapsuleRunner, root: Path) -> dict:
    return next(p for p in status(capsule, root)["processes"] if p["name"] == "forker")


def test_sigkilled_service_leaves_nothing_through_restart_and_down(
    project: Path, capsule: CapsuleRunner
) -> None:
    """`sh -c 'sleep 600 & sleep 600'` SIGKILLed: both sleeps are gone before the restart; down ends the new ones."""
    write(project, FORKER)
    assert capsule("env", "up", str(project)).returncode == 0
    first = forker(capsule, project)["pid"]
    wait_for(lambda: len(sleeps(first)) == 2)
    old = sleeps(first)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: forker(capsule, project)["pid"] not in (None, first))
    assert gone(old), "the killed leader's children outlived its restart"
    again = forker(capsule, project)
    assert again["restarts"] == 1
    wait_for(lambda: len(sleeps(again["pid"])) == 2)
    new = sleeps(again["pid"])
    assert capsule("env", "down", str(project)).returncode == 0
    assert gone(new)
    assert gone(old)


SETSID = """
[[process]]
name = "forker"
command = "sh -c 'setsid sleep 600 & sleep 600'"
"""


def test_dead_supervisors_escaped_orphans_are_stopped_by_down(project: Path, capsule: CapsuleRunner) -> None:
    """Supervisor and leader SIGKILLed: the setsid'd grandchild (another group and session) still goes on down."""
    write(project, SETSID)
    assert capsule("env", "up", str(project)).returncode == 0
    data = status(capsule, project)
    leader = forker(capsule, project)["pid"]
    wait_for(lambda: len(sleeps(leader)) == 2)
    left = sleeps(leader)
    assert {os.getpgid(p.pid) for p in left} != {leader}  # one of them left the group
    os.kill(data["supervisor"]["pid"], signal.SIGKILL)
    os.kill(leader, signal.SIGKILL)
    wait_for(lambda: not status(capsule, project)["supervisor"]["alive"])
    done = capsule("env", "down", str(project))
    assert done.returncode == 0, done.stderr
    psutil.wait_procs(left, timeout=5)
    assert gone(left)


def test_two_env_up_at_once_start_one_environment(project: Path, capsule: CapsuleRunner) -> None:
    """Two `env up` of one config at the same moment: one supervisor, one session; the second joins it."""
    write(project, '[[process]]\nname = "a"\ncommand = "sleep 600"\n')
    env = {**os.environ, "NO_COLOR": "1"}
    ups = [
        subprocess.Popen(
            [sys.executable, "-m", "capsule", "env", "up", str(project), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in ups]
    assert [p.returncode for p in ups] == [0, 0], [err for _out, err in outs]
    sessions = {orjson.loads(out)["session"] for out, _err in outs}
    assert len(sessions) == 1
    rows = orjson.loads(capsule("env", "ls", "--json").stdout)["environments"]
    assert [r["state"] for r in rows] == ["up"]
