"""The scheduler with real processes: parallelism, timeouts and limits on real trees, live policy, real
hooks, halt now, a big batch, resume after SIGKILL. (What is decided, not done, is tested in memory:
tests/agents/test_machine.py.)"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import orjson
import psutil

from tests.agents.conftest import alive, of
from tests.conftest import CapsuleRunner

PY = sys.executable


def intervals(events: list[dict]) -> dict[str, tuple[float, float]]:
    starts = {e["task"]: e["ts"] for e in of(events, "task.started")}
    ends = {e["task"]: e["ts"] for e in of(events, "task.exited")}
    return {t: (starts[t], ends[t]) for t in starts}


def max_overlap(spans: dict[str, tuple[float, float]]) -> int:
    points = sorted([(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()])
    best = now = 0
    for _, delta in points:
        now += delta
        best = max(best, now)
    return best


def test_parallel_cap_is_honoured(agents) -> None:
    """At most `parallel` tasks overlap, measured from event timestamps; all succeed, exit 0."""
    tasks = "".join(f'[[task]]\nid = "t{i}"\ncommand = "sleep 0.3"\n' for i in range(8))
    done, events = agents(f"[run]\nparallel = 3\n{tasks}")
    assert done.returncode == 0, done.stderr
    spans = intervals(events)
    assert len(spans) == 8
    assert max_overlap(spans) == 3
    assert of(events, "run.finished")[0]["state"] == "succeeded"


def test_timeout_kills_the_whole_tree(agents, tmp_path: Path) -> None:
    """A timeout ends the task's group, a child that ignores SIGTERM and one that left the group too."""
    pids = tmp_path / "pids"
    script = (
        f"trap '' TERM; sleep 30 & echo $! >> {pids}; "
        f"{PY} -c 'import os,time; os.setsid(); time.sleep(30)' & echo $! >> {pids}; sleep 30"
    )
    plan = f'[[task]]\nid = "slow"\ncommand = "{script}"\ntimeout = "0.5s"\ngrace = "0.3s"\n'
    t0 = time.time()
    _done, events = agents(plan)
    assert time.time() - t0 < 10
    failed = of(events, "task.failed", "slow")[0]
    assert failed["outcome"] == "timed_out"
    started = of(events, "task.started", "slow")[0]
    assert not alive(started["pid"], started["started"])
    for pid in map(int, pids.read_text().split()):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_memory_limit_hit_by_a_python_allocator(agents) -> None:
    """A task allocating past its memory limit is killed; the measured RSS is recorded."""
    alloc = f"{PY} -c 'import time; b = bytearray(200 * 2**20); time.sleep(30)'"
    plan = f'[[task]]\nid = "hog"\ncommand = "{alloc}"\nlimits = {{ memory = "100MiB" }}\ntimeout = "20s"\n'
    t0 = time.time()
    _done, events = agents(plan)
    assert time.time() - t0 < 10
    hit = of(events, "task.limit_exceeded", "hog")[0]
    assert hit["limit"] == "memory"
    assert hit["measured"] > 100 * 2**20
    assert of(events, "task.failed", "hog")[0]["outcome"] == "limit_exceeded"


def test_denied_command_inside_the_task_string_never_starts(agents, capsule, tmp_path: Path) -> None:
    """A shell string hiding sudo two `sh -c` levels down is denied before it starts (parsed, not
    matched as text); the live guard in the tree is tests/agents/test_guard_tasks.py."""
    marker = tmp_path / "after"
    inner = f"sleep 0.3; sh -c \\\"sh -c 'sudo -n true' || true; sleep 5; touch {marker}\\\""
    plan = f"""
[run]
trace = true
[policy]
deny_commands = ["sudo *"]
[[task]]
id = "sneaky"
command = "{inner}"
timeout = "20s"
"""
    done, events = agents(plan)
    assert of(events, "task.started", "sneaky") == []
    violation = of(events, "policy.violated", "sneaky")[0]
    assert violation["rule"] == "sudo *"
    assert not marker.exists()
    # one progress line: the command as a shell reads it, and the rule (not a second "denied" line)
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("denied")]
    assert line.startswith("denied    sneaky: sh -c "), line
    assert line.endswith("(rule 'sudo *')"), line
    shown = line.removeprefix("denied    sneaky: ").removesuffix(" (rule 'sudo *')")
    report = capsule("report").stdout.replace("\n", " ")  # (the test's terminal width may wrap it)
    assert f"policy: 'sudo *' matched {shown} " in report  # the report quotes it alike


def one_traced_task(command: str) -> str:
    """A plan of one traced task `t`; `command` as written between TOML's double quotes."""
    return f'[run]\ntrace = true\n[[task]]\nid = "t"\ncommand = "{command}"\n'


def test_the_report_shows_a_traced_task_tree_as_a_shell_reads_it(agents, capsule: CapsuleRunner) -> None:
    """A traced task's tree in the agents report: argv quoted as a shell reads it, a control character
    shown escaped, not sent to the terminal (was: ' '.join of the raw argv)."""
    done, _events = agents(one_traced_task("sh -c 'echo hi; true x\\u001b[31m; exit 3'"))
    assert done.returncode == 1, done.stdout
    report = capsule("report").stdout
    assert "\x1b" not in report
    assert re.search(r"^ +\d+ sh -c 'echo hi; true x\\x1b\[31m; exit 3' exit 3$", report, re.M), report


def test_a_traced_task_s_background_child_runs_and_is_in_its_trace(
    agents, capsule: CapsuleRunner, tmp_path: Path
) -> None:
    """A traced task whose shell exits right after starting a job: the job runs whole (once strace
    dropped it, its exec failed with ENOSYS under strace's seccomp filter) and is in the attempt's trace."""
    marker = tmp_path / "marker"
    done, events = agents(one_traced_task(f"sh -c 'sleep 0.2; /bin/echo late > {marker}' & echo started"))
    assert done.returncode == 0, done.stdout
    assert marker.read_text() == "late\n"
    started = of(events, "task.started", "t")[0]
    assert "not implemented" not in (Path(started["log_dir"]) / "1.err").read_text()
    report = orjson.loads(capsule("report", started["trace_session"], "--json").stdout)
    assert ["/bin/echo", "late"] in [p["argv"] for p in report["processes"]]


def test_each_hook_decision(agents, tmp_path: Path) -> None:
    """pre hooks answer per task: continue runs it, skip skips it, deny fails it, abort stops the run."""
    hook = tmp_path / "hook.py"
    hook.write_text(
        "import json, sys\n"
        "task = json.load(sys.stdin)\n"
        "print({'go': 'continue', 'nope': 'skip', 'bad': 'deny', 'stop': 'abort'}.get(task['id'], 'continue'))\n"
    )
    plan = f"""
[run]
parallel = 1
[[hook]]
on = "pre"
command = "{PY} {hook}"
[[task]]
id = "go"
command = "true"
[[task]]
id = "nope"
command = "true"
depends_on = ["go"]
[[task]]
id = "bad"
command = "true"
depends_on = ["nope"]
[[task]]
id = "stop"
command = "true"
depends_on = ["go"]
"""
    done, events = agents(plan)
    decisions = {e["task"]: e["decision"] for e in of(events, "hook.decided")}
    assert decisions["go"] == "continue"
    assert decisions["nope"] == "skip"
    assert decisions["stop"] == "abort"
    assert of(events, "task.succeeded", "go")
    assert of(events, "task.skipped", "nope")
    assert of(events, "run.finished")[0]["state"] == "aborted"
    assert done.returncode == 1
    # deny, separately (abort above may have prevented it)
    plan2 = f'[[hook]]\non = "pre"\ncommand = "{PY} {hook}"\n[[task]]\nid = "bad"\ncommand = "true"\n'
    _done, events = agents(plan2)
    assert of(events, "hook.decided", "bad")[0]["decision"] == "deny"
    assert of(events, "task.failed", "bad")[0]["outcome"] == "denied"


def test_hook_timeout_is_a_decision(agents) -> None:
    """A hook that does not answer in time denies, and says why."""
    plan = (
        '[[hook]]\non = "pre"\ncommand = "sleep 5"\ntimeout = "0.3s"\n[[task]]\nid = "x"\ncommand = "true"\n'
    )
    _done, events = agents(plan)
    decided = of(events, "hook.decided", "x")[0]
    assert decided["decision"] == "deny"
    assert "timed out" in decided["reason"]


def test_halt_now_kills_running_tasks(agents) -> None:
    """halt = now: a failure kills running tasks and skips the rest."""
    plan = """
[run]
halt = "now"
parallel = 2
[[task]]
id = "long"
command = "sleep 20"
grace = "0.2s"
[[task]]
id = "fail"
command = "sleep 0.2; exit 1"
[[task]]
id = "later"
command = "true"
depends_on = ["fail"]
"""
    t0 = time.time()
    _done, events = agents(plan)
    assert time.time() - t0 < 8
    assert of(events, "task.failed", "long")[0]["outcome"] == "killed"


def test_batch_of_500_tasks(capsule, capsule_home: Path, tmp_path: Path) -> None:
    """A 500-task JSONL batch at --parallel 8: every task runs once and succeeds."""
    from tests.agents.conftest import session_events

    batch = tmp_path / "tasks.jsonl"
    batch.write_text(
        "".join(orjson.dumps({"id": f"t{i}", "command": ["true"]}).decode() + "\n" for i in range(500))
    )
    t0 = time.time()
    done = capsule("agents", "run", str(tmp_path / "none.toml"), "--batch", str(batch), "--parallel", "8")
    assert done.returncode == 0, done.stderr
    assert time.time() - t0 < 60
    events = session_events(capsule_home)
    assert len(of(events, "task.succeeded")) == 500
    assert max_overlap(intervals(events)) <= 8
    status = orjson.loads(capsule("agents", "status", "--json").stdout)
    assert status["state"] == "succeeded"
    assert len(status["tasks"]) == 500


def test_resume_after_sigkill_runs_no_succeeded_task_twice(
    capsule, capsule_home: Path, tmp_path: Path
) -> None:
    """SIGKILL the scheduler mid-run; resume reaps the interrupted task and runs only what is left."""
    import signal
    import subprocess

    counter = tmp_path / "counter"
    plan = tmp_path / "plan.toml"
    plan.write_text(
        f"""
[run]
parallel = 2
[[task]]
id = "a"
command = "echo a >> {counter}"
[[task]]
id = "b"
command = "echo b >> {counter}"
depends_on = ["a"]
[[task]]
id = "slow"
command = "echo slow >> {counter}; [ $CAPSULE_ATTEMPT -gt 1 ] || sleep 30"
depends_on = ["a"]
[[task]]
id = "c"
command = "echo c >> {counter}"
depends_on = ["slow"]
"""
    )
    env = {**os.environ, "CAPSULE_HOME": str(capsule_home), "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "capsule", "agents", "run", str(plan)], env=env, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 20
        while time.time() < deadline and "slow" not in (counter.read_text() if counter.exists() else ""):
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    from tests.agents.conftest import session_events

    events = session_events(capsule_home)
    slow = of(events, "task.started", "slow")[0]
    assert alive(slow["pid"], slow["started"])  # the task outlived its scheduler
    status = orjson.loads(capsule("agents", "status", "--json").stdout)
    assert status["state"] == "interrupted"
    assert "eta_s" in status
    assert status["eta_s"] is None  # nothing progresses until it is resumed
    assert "eta" not in capsule("agents", "status").stdout.splitlines()[0]
    done = capsule("agents", "resume", status["run"], timeout=60)
    assert done.returncode == 0, done.stderr
    runs = counter.read_text().split()
    assert runs.count("a") == 1
    assert runs.count("b") == 1
    assert runs.count("slow") == 2
    assert runs.count("c") == 1
    events = session_events(capsule_home)
    assert of(events, "run.resumed")[0]["reaped"] == [slow["pid"]]
    assert [e["attempt"] for e in of(events, "task.started", "slow")] == [1, 2]
    assert not alive(slow["pid"], slow["started"])  # the leftover was reaped


def test_cycle_is_named_task_by_task(capsule, tmp_path: Path) -> None:
    """A dependency cycle is an error naming each task of the cycle; exit 4."""
    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[[task]]\nid = "a"\ncommand = "true"\ndepends_on = ["c"]\n'
        '[[task]]\nid = "b"\ncommand = "true"\ndepends_on = ["a"]\n'
        '[[task]]\nid = "c"\ncommand = "true"\ndepends_on = ["b"]\n'
    )
    done = capsule("agents", "check", str(plan))
    assert done.returncode == 4
    assert "dependency cycle: a -> c -> b -> a" in done.stderr
    assert done.stderr.count("\n") == 1


def test_sigterm_to_the_scheduler_ends_the_run(capsule_home: Path, tmp_path: Path) -> None:
    """SIGTERM (or Ctrl-C) to `agents run`: running tasks are stopped `killed`, the rest skipped, and
    the run still finishes (failed, exit 1) with nothing of the tasks left."""
    import signal
    import subprocess

    from tests.agents.conftest import session_events

    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[run]\nparallel = 1\n[[task]]\nid = "long"\ncommand = "sleep 30"\ngrace = "0.5s"\n'
        '[[task]]\nid = "next"\ncommand = "true"\n'
    )
    env = {**os.environ, "CAPSULE_HOME": str(capsule_home), "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [PY, "-m", "capsule", "agents", "run", str(plan)], env=env, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 20
        while time.time() < deadline and not started_yet(capsule_home, "long"):
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    events = session_events(capsule_home)
    assert of(events, "task.failed", "long")[0]["outcome"] == "killed"
    assert of(events, "task.skipped", "next")[0]["reason"] == "run killed"
    assert of(events, "run.finished")[0]["state"] == "failed"
    started = of(events, "task.started", "long")[0]
    assert not alive(started["pid"], started["started"])


def started_yet(home: Path, task: str) -> bool:
    """Has the newest agents session under home recorded the task's start (its file may be empty yet)?"""
    from tests.agents.conftest import session_events

    try:
        return bool(of(session_events(home), "task.started", task))
    except (FileNotFoundError, IndexError, AssertionError):
        return False
