"""More of the scheduler with real processes: protected paths, CPU limits, resume with a changed spec.
(Halt, resources, post and error hooks are decided by the machine: tests/agents/test_machine.py.)"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson

from tests.agents.conftest import of, session_events

PY = sys.executable


def test_protected_path_opened_deep_in_the_tree_is_killed_live(agents, tmp_path: Path) -> None:
    """At trace level file, a grandchild opening a protected file kills the task; the path is recorded."""
    (tmp_path / ".env").write_text("SECRET=1\n")
    marker = tmp_path / "after"
    inner = f'sleep 0.3; sh -c \\"cat .env > /dev/null; sleep 5; touch {marker}\\"'
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
    t0 = time.time()
    _done, events = agents(plan)
    assert time.time() - t0 < 5
    violation = of(events, "policy.violated", "peek")[0]
    assert violation["live"] is True
    assert violation["rule"] == ".env"
    assert violation["path"].endswith(".env")
    assert of(events, "task.failed", "peek")[0]["outcome"] == "denied"
    time.sleep(0.2)
    assert not marker.exists()


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
