"""More of the scheduler with real processes: protected paths, CPU limits, resume with a changed spec.
(Halt, resources, post and error hooks are decided by the machine: tests/agents/test_machine.py.)"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.agents.conftest import of, session_events

PY = sys.executable


def test_protected_path_cannot_be_opened_deep_in_the_tree(agents, tmp_path: Path) -> None:
    """A grandchild's `cat .env` fails (the guard hides it); the secret is not in the task's log, and
    at trace level file the refusal is a policy.blocked event of the task."""
    (tmp_path / ".env").write_text("SECRET=s3cr3t-value-41\n")
    inner = "sleep 0.1; sh -c 'cat .env; echo rc=$?'"
    plan = f"""
[run]
trace = "file"
[policy]
protect_paths = [".env", "*.key"]
[[task]]
id = "peek"
command = "{inner}"
timeout = "20s"
"""
    _done, events = agents(plan)
    started = of(events, "task.started", "peek")[0]
    log = Path(started["log_dir"]) / "1.out"
    assert "rc=1" in log.read_text()
    assert "s3cr3t-value-41" not in log.read_text() + (Path(started["log_dir"]) / "1.err").read_text()
    blocked = of(events, "policy.blocked", "peek")
    assert blocked[0]["rule"] == ".env"
    assert blocked[0]["mechanism"] == "mount-namespace"
    assert of(events, "task.succeeded", "peek")


def test_cpu_time_limit_summed_over_the_tree(agents) -> None:
    """A busy loop in a child process (the root itself idles) exceeds cpu_time: killed, value recorded."""
    busy = f"{PY} -c 'while True: pass'"
    plan = f"""
[[task]]
id = "spin"
command = "{busy} & wait"
limits = {{ cpu_time = "0.5s" }}
timeout = "20s"
"""
    t0 = time.time()
    _done, events = agents(plan)
    assert time.time() - t0 < 10
    hit = of(events, "task.limit_exceeded", "spin")[0]
    assert hit["limit"] == "cpu_time"
    assert hit["allowed"] == 0.5
    assert hit["measured"] > 0.5
    assert of(events, "task.failed", "spin")[0]["outcome"] == "limit_exceeded"
    assert len(of(events, "task.started", "spin")) == 1  # a limit is not retried


def test_resume_reruns_a_succeeded_task_whose_spec_changed(
    capsule, capsule_home: Path, tmp_path: Path
) -> None:
    """Resume with an edited plan: a succeeded task with a changed command runs again, an unchanged one not."""
    counter = tmp_path / "counter"
    plan = tmp_path / "plan.toml"
    text = (
        f'[[task]]\nid = "same"\ncommand = "echo same >> {counter}"\n'
        f'[[task]]\nid = "edited"\ncommand = "echo v1 >> {counter}"\n'
        f'[[task]]\nid = "broken"\ncommand = "echo broken >> {counter}; exit 1"\n'
    )
    plan.write_text(text)
    assert capsule("agents", "run", str(plan)).returncode == 1
    session = orjson.loads(capsule("agents", "status", "--json").stdout)["run"]
    plan.write_text(text.replace("echo v1", "echo v2").replace("; exit 1", ""))
    done = capsule("agents", "resume", session, "--plan", str(plan))
    assert done.returncode == 0, done.stderr
    assert sorted(counter.read_text().split()) == ["broken", "broken", "same", "v1", "v2"]
    events = session_events(capsule_home)
    assert len(of(events, "task.started", "same")) == 1
    assert len(of(events, "task.started", "edited")) == 2
    status = orjson.loads(capsule("agents", "status", "--json").stdout)
    assert status["state"] == "succeeded"
    # resuming again with the same plan runs nothing
    done = capsule("agents", "resume", session, "--plan", str(plan))
    assert done.returncode == 0, done.stderr
    assert len(counter.read_text().split()) == 5


def test_a_task_runs_in_its_attempts_cgroup_with_its_pid_argv_and_environment(
    capsule, capsule_home: Path, tmp_path: Path
) -> None:
    """The attempt's process is the recorded pid, in the cgroup `capsule-<run>-<task>-<attempt>` from
    before its first fork (a child it starts at once is in it too), with its argv and environment as
    the scheduler gave them (the joining shell leaves no trace: PWD stays as it was)."""
    from capsule.stages import procs

    if procs.cgroup_status().startswith("no cgroup"):
        pytest.skip(procs.cgroup_status())
    out = tmp_path / "seen.json"
    probe = (
        "import json, os, subprocess, sys; "
        "child = subprocess.run(['cat', '/proc/self/cgroup'], capture_output=True, text=True).stdout; "
        f"json.dump([os.getpid(), sys.argv[1:], dict(os.environ), open('/proc/self/cgroup').read(), child], "
        f"open({str(out)!r}, 'w'))"
    )
    plan = tmp_path / "plan.toml"
    plan.write_text(
        "[[task]]\nid = 'p'\ncommand = " + orjson.dumps([PY, "-c", probe, "a b", "$X"]).decode() + "\n"
        "env = { FOO = 'bar' }\n"
    )
    done = capsule("agents", "run", str(plan), env={"PWD": "/stale-pwd"})
    assert done.returncode == 0, done.stderr
    events = session_events(capsule_home)
    started = of(events, "task.started", "p")[0]
    pid, argv, env, groups, child = orjson.loads(out.read_bytes())
    assert pid == started["pid"]
    assert argv == ["a b", "$X"]
    assert env["PWD"] == "/stale-pwd"  # noqa: S105 (a directory, not a password)
    assert env["FOO"] == "bar"
    assert env["CAPSULE_TASK"] == "p"
    name = f"capsule-{events[0]['session_id']}-p-1"
    for text in (groups, child):
        assert any(g.startswith("0::") and g.endswith("/" + name) for g in text.splitlines()), text
