"""A traced task's own Capsule process is titled `capsule: task <id>` in ps and top, however it is
started: strace spawned directly (no cgroup here), through the cgroup's join (bash `exec -a`), through
the guard's launcher (strace, or bwrap above it under a mount policy). The command below keeps its argv
and its environment exactly (SHLVL too, which the bash join would otherwise add)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil
import pytest

from capsule.stages import procs
from capsule.stages.task_units import cgroup_name

# The CLI with cgroups made unavailable: the spawn without any wrapper, as on a machine without them.
NO_CGROUP = (
    "import sys; from capsule.stages import procs; procs.open_cgroup = lambda name: None; "
    "from capsule.cli import main; sys.argv[0] = 'capsule'; main()"
)


def task_run(home: Path) -> str:
    """The agents session's id (the run's), once its header is written."""
    for run in (home / "runs").iterdir():
        lines = (run / "events.jsonl").read_bytes().splitlines()
        if lines and orjson.loads(lines[0])["session_kind"] == "agents":
            return run.name
    return ""


def _events(home: Path) -> list[dict]:
    run = task_run(home)
    if not run:
        return []
    lines = (home / "runs" / run / "events.jsonl").read_bytes().splitlines()
    return [orjson.loads(line) for line in lines if line.endswith(b"}")]


@pytest.mark.parametrize(
    ("case", "policy", "cgroup", "top"),
    [
        ("direct", "", False, "strace"),
        ("cgroup", "", True, "strace"),
        ("guard", '[policy]\ndeny_commands = ["sudo *"]\n', True, "strace"),
        ("mount", '[policy]\nprotect_paths = ["*.key"]\n', True, "bwrap"),
    ],
)
@pytest.mark.parametrize("shlvl", [None, "7"])
def test_a_traced_tasks_process_is_titled(
    tmp_path: Path, case: str, policy: str, cgroup: bool, top: str, shlvl: str | None
) -> None:
    if cgroup and not procs.cgroup_status().startswith("a cgroup"):
        pytest.skip(procs.cgroup_status())
    home, gate, started = tmp_path / "home", tmp_path / "gate", tmp_path / "started"
    env_file = tmp_path / "env"
    plan = tmp_path / "plan.toml"
    plan.write_text(
        f'[run]\ntrace = true\n{policy}[[task]]\nid = "t"\n'
        f'command = "env > {env_file}; touch {started}; while [ ! -e {gate} ]; do sleep 0.02; done"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "SHLVL"}
    env["CAPSULE_HOME"] = str(home)
    if shlvl is not None:
        env["SHLVL"] = shlvl
    cli = [sys.executable, "-c", NO_CGROUP] if not cgroup else [sys.executable, "-m", "capsule"]
    with subprocess.Popen(
        [*cli, "agents", "run", str(plan)], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as scheduler:  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not (started.exists() and any(e["kind"] == "task.started" for e in _events(home))):
                assert scheduler.poll() is None, scheduler.communicate()
                assert time.monotonic() < deadline, "the task never started"
                time.sleep(0.01)  # polling the condition (the marker, the session), not a fixed wait
            task = next(e for e in _events(home) if e["kind"] == "task.started")
            process = psutil.Process(task["pid"])
            assert process.cmdline()[0] == "capsule: task t"
            assert process.name() == top  # comm is still the program's: the guard finds strace by it
            in_cgroup = Path(f"/proc/{task['pid']}/cgroup").read_text()
            unit = cgroup_name(task_run(home), "t", 1)
            assert (unit in in_cgroup) == cgroup, in_cgroup
        finally:
            gate.touch()
        out, err = scheduler.communicate(timeout=60)
    assert scheduler.returncode == 0, (out, err)
    seen = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    assert seen.get("SHLVL") == shlvl  # as the scheduler had it: absent stays absent
    assert seen["CAPSULE_TASK"] == "t"
    trace = home / "runs" / task["trace_session"] / "events.jsonl"
    execs = [orjson.loads(line) for line in trace.read_bytes().splitlines() if b'"proc.exec"' in line]
    assert execs[0]["argv"][:2] == ["sh", "-c"]  # the recorded command is the task's own
