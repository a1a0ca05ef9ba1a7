"""More of the scheduler with real processes: protected paths, CPU limits, resources, halt soon, post and
error hooks, resume with a changed spec."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson

from tests.agents.conftest import of, session_events
from tests.agents.test_scheduler import intervals, max_overlap

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


def test_resource_semaphore(agents) -> None:
    """gpu = 1: three gpu tasks never overlap at parallel 3, while a task without `uses` runs alongside."""
    tasks = "".join(f'[[task]]\nid = "g{i}"\ncommand = "sleep 0.25"\nuses = ["gpu"]\n' for i in range(3))
    plan = f'[run]\nparallel = 3\n[resources]\ngpu = 1\n{tasks}[[task]]\nid = "free"\ncommand = "sleep 0.5"\n'
    done, events = agents(plan)
    assert done.returncode == 0, done.stderr
    spans = intervals(events)
    gpu = {k: v for k, v in spans.items() if k.startswith("g")}
    assert len(gpu) == 3
    assert max_overlap(gpu) == 1
    free = spans["free"]
    assert any(s < free[1] and free[0] < e for s, e in gpu.values())


def test_halt_soon_starts_nothing_new_and_lets_running_tasks_finish(agents, tmp_path: Path) -> None:
    """halt = soon: a task waiting for the failing task's slot (here a resource) never starts, even while
    the error hook decides; running tasks finish."""
    hook = tmp_path / "hook.sh"
    hook.write_text("sleep 0.2; echo continue\n")
    plan = f"""
[run]
halt = "soon"
parallel = 4
[resources]
lane = 1
[[hook]]
on = "error"
command = "sh {hook}"
[[task]]
id = "long"
command = "sleep 1"
[[task]]
id = "fail"
command = "sleep 0.2; exit 1"
uses = ["lane"]
[[task]]
id = "gate"
command = "sleep 0.05"
[[task]]
id = "waiting"
command = "true"
uses = ["lane"]
depends_on = ["gate"]
[[task]]
id = "after"
command = "true"
depends_on = ["long"]
"""
    done, events = agents(plan)
    assert done.returncode == 1
    assert of(events, "task.succeeded", "long")
    assert of(events, "task.failed", "fail")[0]["exit_code"] == 1
    assert {e["task"] for e in of(events, "task.started")} == {"long", "fail", "gate"}
    assert {e["task"] for e in of(events, "task.skipped")} == {"waiting", "after"}
    assert of(events, "task.failed", "waiting") == []


HOOK = """import json, sys
task = json.load(sys.stdin)
answers = {
    ("post", "p_cont"): "continue", ("post", "p_skip"): "skip", ("post", "p_deny"): "deny",
    ("error", "e_cont"): "continue", ("error", "e_skip"): "skip", ("error", "e_deny"): "deny",
    ("post", "p_abort"): "abort", ("error", "e_abort"): "abort",
}
print(answers.get((task["on"], task["id"]), "continue"))
"""


def test_post_and_error_hook_decisions(agents, tmp_path: Path) -> None:
    """post and error hooks: continue, skip, deny, each a hook.decided event and acted on."""
    hook = tmp_path / "hook.py"
    hook.write_text(HOOK)
    hooks = (
        f'[[hook]]\non = "post"\ncommand = "{PY} {hook}"\n[[hook]]\non = "error"\ncommand = "{PY} {hook}"\n'
    )
    tasks = "".join(f'[[task]]\nid = "{t}"\ncommand = "true"\n' for t in ("p_cont", "p_skip", "p_deny"))
    tasks += "".join(
        f'[[task]]\nid = "{t}"\ncommand = "exit 1"\nretries = 1\nbackoff = "0.05s"\n'
        for t in ("e_cont", "e_skip", "e_deny")
    )
    tasks += '[[task]]\nid = "dep"\ncommand = "true"\ndepends_on = ["p_skip"]\n'
    done, events = agents(f"[run]\nparallel = 6\n{hooks}{tasks}")
    assert done.returncode == 1
    decided = [(e["task"], e["on"], e["decision"]) for e in of(events, "hook.decided")]
    for expected in [
        ("p_cont", "post", "continue"),
        ("p_skip", "post", "skip"),
        ("p_deny", "post", "deny"),
        ("p_deny", "error", "continue"),
        ("e_cont", "error", "continue"),
        ("e_skip", "error", "skip"),
        ("e_deny", "error", "deny"),
    ]:
        assert expected in decided, expected
    assert decided.count(("e_cont", "error", "continue")) == 2  # before the retry and after it
    assert of(events, "task.succeeded", "p_cont")
    assert of(events, "task.skipped", "p_skip")[0]["reason"] == "post hook said skip"
    assert of(events, "task.skipped", "dep")  # a skipped dependency is not a success
    assert of(events, "task.failed", "p_deny")[0]["outcome"] == "denied"
    assert len(of(events, "task.started", "e_cont")) == 2
    assert of(events, "task.failed", "e_cont")[0]["outcome"] == "failed"
    assert of(events, "task.skipped", "e_skip")
    assert len(of(events, "task.started", "e_deny")) == 1
    assert of(events, "task.failed", "e_deny")[0]["exit_code"] == 1


def test_post_and_error_hook_abort(agents, tmp_path: Path) -> None:
    """abort from a post or an error hook fails that task and ends the run `aborted`."""
    hook = tmp_path / "hook.py"
    hook.write_text(HOOK)
    for task, command in (("p_abort", "true"), ("e_abort", "exit 1")):
        plan = f"""
[run]
parallel = 1
[[hook]]
on = "post"
command = "{PY} {hook}"
[[hook]]
on = "error"
command = "{PY} {hook}"
[[task]]
id = "{task}"
command = "{command}"
retries = 2
[[task]]
id = "later"
command = "true"
depends_on = ["{task}"]
"""
        done, events = agents(plan)
        assert done.returncode == 1
        assert of(events, "hook.decided", task)[-1]["decision"] == "abort"
        assert len(of(events, "task.started", task)) == 1
        assert of(events, "task.failed", task)
        assert of(events, "task.started", "later") == []
        assert of(events, "run.finished")[0]["state"] == "aborted"


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
