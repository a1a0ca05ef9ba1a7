"""The cache and detached runs, with real processes: a second run of an unchanged plan is all `cached`
(outputs restored), one changed input re-runs only what depends on it, `--no-cache` forces, `capsule
prune` removes old entries; `agents run --detach` then `agents wait`; `agents ps` marks orphaned tasks."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson
import psutil

from tests.agents.conftest import of, session_events

PLAN = """
[defaults]
cache = true
cwd = "w"
[[task]]
id = "a"
command = "cat a.txt; echo built > out.bin"
inputs = ["a.txt"]
outputs = ["out.bin"]
[[task]]
id = "b"
command = "cat b.txt"
inputs = ["b.txt"]
[[task]]
id = "c"
depends_on = ["a"]
command = "cat {inputs.a.stdout}"
"""


def states(events: list[dict]) -> dict[str, str]:
    out = {e["task"]: "succeeded" for e in of(events, "task.succeeded")}
    out.update({e["task"]: "cached" for e in of(events, "task.cached")})
    return out


def test_unchanged_plan_is_cached_and_a_changed_input_reruns_its_dependents(
    agents, tmp_path: Path, capsule, capsule_home: Path
) -> None:
    """Run 2 is all cached with out.bin restored; changing a.txt re-runs a and c, not b; --no-cache runs all."""
    work = tmp_path / "w"
    work.mkdir()
    (work / "a.txt").write_text("one\n")
    (work / "b.txt").write_text("two\n")
    done, events = agents(PLAN)
    assert done.returncode == 0, done.stderr
    assert states(events) == dict.fromkeys("abc", "succeeded")
    first = events[0]["session_id"]
    (work / "out.bin").unlink()
    done, events = agents(PLAN)
    assert done.returncode == 0, done.stderr
    assert states(events) == dict.fromkeys("abc", "cached")
    assert not of(events, "task.started")
    assert {e["from_run"] for e in of(events, "task.cached")} == {first}
    assert (work / "out.bin").read_text() == "built\n"
    status = orjson.loads(capsule("agents", "status", "--json").stdout)
    assert status["counts"] == {"cached": 3}
    assert status["state"] == "succeeded"
    (work / "a.txt").write_text("changed\n")
    done, events = agents(PLAN)
    assert done.returncode == 0, done.stderr
    assert states(events) == {"a": "succeeded", "b": "cached", "c": "succeeded"}
    log = Path(of(events, "task.started", "c")[0]["log_dir"]) / "1.out"
    assert log.read_text() == "changed\n"
    done, events = agents(PLAN, "--no-cache")
    assert done.returncode == 0, done.stderr
    assert states(events) == dict.fromkeys("abc", "succeeded")
    for run in (capsule_home / "runs").iterdir():  # the cache's decisions replay like any other
        replayed = capsule("replay", "--check", run.name)
        assert replayed.returncode == 0, replayed.stderr + replayed.stdout


def test_prune_removes_old_cache_entries(agents, tmp_path: Path, capsule, capsule_home: Path) -> None:
    """`capsule prune --older-than` deletes cache entries unused for that long."""
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "a.txt").write_text("1\n")
    (tmp_path / "w" / "b.txt").write_text("2\n")
    done, _events = agents(PLAN)
    assert done.returncode == 0, done.stderr
    entries = list((capsule_home / "cache").iterdir())
    assert len(entries) == 3
    old = entries[0]
    os.utime(old, (1_000_000_000, 1_000_000_000))
    pruned = capsule("prune", "--older-than", "30d", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert orjson.loads(pruned.stdout)["cache_entries"] == 1
    assert sorted(p.name for p in (capsule_home / "cache").iterdir()) == sorted(p.name for p in entries[1:])


def test_detach_then_wait(capsule, capsule_home: Path, tmp_path: Path) -> None:
    """`run --detach` prints the run id at once; `wait` blocks until it ends and exits with its status."""
    gate = tmp_path / "go"
    plan = tmp_path / "plan.toml"
    plan.write_text(
        f'[[task]]\nid = "w"\ncommand = "while [ ! -e {gate} ]; do sleep 0.02; done"\n'
        '[[task]]\nid = "bad"\ncommand = "exit 2"\ndepends_on = ["w"]\n'
    )
    started = capsule("agents", "run", str(plan), "--detach")
    assert started.returncode == 0, started.stderr
    run = started.stdout.strip()
    assert (capsule_home / "runs" / run / "events.jsonl").is_file()
    early = capsule("agents", "wait", run, "--timeout", "0.3s")
    assert early.returncode == 5
    assert "still running" in early.stderr
    gate.touch()
    done = capsule("agents", "wait", run, "--json", timeout=60)
    assert done.returncode == 1
    assert orjson.loads(done.stdout)["state"] == "failed"
    assert of(session_events(capsule_home), "task.failed", "bad")
    watched = capsule("agents", "status", run, "--watch")  # an ended run: drawn once, then done
    assert watched.returncode == 0, watched.stderr
    assert f"{run} · failed · 100%" in watched.stdout


def test_ps_marks_tasks_of_a_dead_scheduler_orphaned(capsule, capsule_home: Path, tmp_path: Path) -> None:
    """The scheduler SIGKILLed: its running task is listed by `agents ps` as orphaned; kill --all stops it."""
    started_file = tmp_path / "started"
    plan = tmp_path / "plan.toml"
    plan.write_text(f'[[task]]\nid = "long"\ncommand = "touch {started_file}; sleep 60"\n')
    run = capsule("agents", "run", str(plan), "--detach").stdout.strip()
    events = capsule_home / "runs" / run / "events.jsonl"
    deadline = time.monotonic() + 30
    while not (started_file.exists() and b'"task.started"' in events.read_bytes()):
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.01)  # polling the condition (the session file), not a fixed wait
    header = orjson.loads(events.read_bytes().splitlines()[0])
    scheduler = psutil.Process(header["recorder_pid"])
    assert " ".join(scheduler.cmdline()).strip() == f"capsule: scheduler {run}"  # setproctitle
    os.kill(header["recorder_pid"], signal.SIGKILL)
    scheduler.wait(10)
    rows = orjson.loads(capsule("agents", "ps", "--json").stdout)
    assert [(r["task"], r["orphaned"]) for r in rows] == [("long", True)]
    killed = capsule("agents", "kill", "--all", "--grace", "0.2s")
    assert killed.returncode == 0, killed.stderr
    assert not orjson.loads(capsule("agents", "ps", "--json").stdout)


def test_rerun_from_reruns_the_task_and_its_dependents(
    agents, tmp_path: Path, capsule, capsule_home: Path
) -> None:
    """`rerun RUN --from b`: b and what depends on it run again in a new session linked to RUN; a and d
    are reused (state cached, from RUN) and a's outputs still reach b."""
    count = tmp_path / "count"
    plan = (
        '[[task]]\nid = "a"\ncommand = "echo A; echo r > r.txt"\noutputs = ["r.txt"]\ncwd = "w"\n'
        f'[[task]]\nid = "b"\ndepends_on = ["a"]\ncommand = "echo b >> {count}; cat {{inputs.a.path}}/r.txt"\n'
        f'[[task]]\nid = "c"\ndepends_on = ["b"]\ncommand = "echo c >> {count}"\n'
        f'[[task]]\nid = "d"\ncommand = "echo d >> {count}"\n'
    )
    (tmp_path / "w").mkdir()
    done, events = agents(plan)
    assert done.returncode == 0, done.stderr
    first = events[0]["session_id"]
    again = capsule("agents", "rerun", first, "--from", "b")
    assert again.returncode == 0, again.stderr
    events = session_events(capsule_home)
    assert events[0]["session_id"] != first
    assert events[0]["parent"] == first
    assert states(events) == {"a": "cached", "b": "succeeded", "c": "succeeded", "d": "cached"}
    assert {e["from_run"] for e in of(events, "task.cached")} == {first}
    ran = count.read_text().split()
    assert sorted(ran[:3]) == ["b", "c", "d"]
    assert ran[3:] == ["b", "c"]
    log = Path(of(events, "task.started", "b")[0]["log_dir"]) / "1.out"
    assert log.read_text() == "r\n"
    replayed = capsule("replay", "--check", events[0]["session_id"])
    assert replayed.returncode == 0, replayed.stderr + replayed.stdout
    bad = capsule("agents", "rerun", first, "--from", "zz")
    assert bad.returncode == 3
    assert "no task 'zz'" in bad.stderr
