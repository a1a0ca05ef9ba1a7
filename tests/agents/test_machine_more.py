"""The agent-run machine in memory, for issue 13's steps: the cache (`cached` state), collecting a
success before it counts, priorities among ready tasks, the whole run's timeout. Every run replays exactly
and moves tasks only as the transition table allows (`check`)."""

from __future__ import annotations

from capsule.plan.spec import parse_plan
from tests.agents.sim import Run, Sim
from tests.agents.test_machine import check


def test_cached_tasks_do_not_run_and_dependents_use_them() -> None:
    """A cache hit ends the task as `cached` with no process; its dependent still runs; the run succeeds."""
    plan = parse_plan(
        '[defaults]\ncache = true\n[[task]]\nid = "a"\ncommand = "x"\n'
        '[[task]]\nid = "b"\ncommand = "x"\ndepends_on = ["a"]\n[[task]]\nid = "c"\ncommand = "x"\n'
    )
    sim = Sim(plan, cached=lambda task: task in ("a", "c")).run()
    check(sim)
    assert [sim.outcome(t) for t in "abc"] == ["cached", "succeeded", "cached"]
    assert [e.task for e in sim.kinds("task.started")] == ["b"]
    assert sim.kinds("task.cached", "a")[0].from_run == "earlier"
    finished = sim.kinds("run.finished")[0]
    assert (finished.state, finished.succeeded, finished.failed) == ("succeeded", 3, 0)


def test_no_cache_runs_every_task() -> None:
    """With the plan's cache off (`--no-cache`), nothing is looked up: every task runs."""
    import attrs

    plan = attrs.evolve(parse_plan('[[task]]\nid = "a"\ncommand = "x"\ncache = true\n'), use_cache=False)
    sim = Sim(plan, cached=lambda _t: True).run()
    check(sim)
    assert sim.outcome("a") == "succeeded"


def test_success_counts_after_collection_and_dependents_wait_for_it() -> None:
    """An attempt with outputs succeeds only once collected; its dependent starts after that."""
    plan = parse_plan(
        '[[task]]\nid = "a"\ncommand = "x"\noutputs = ["r.json"]\n'
        '[[task]]\nid = "b"\ncommand = "x"\ndepends_on = ["a"]\n'
    )
    sim = Sim(plan).run()
    check(sim)
    collected = sim.kinds("task.collected", "a")[0]
    assert sim.kinds("task.exited", "a")[0].ts < collected.ts
    assert collected.ts == sim.kinds("task.succeeded", "a")[0].ts <= sim.kinds("task.started", "b")[0].ts


def test_collection_error_fails_the_task() -> None:
    """A commit or copy that fails fails the task with that reason; its dependents are skipped."""
    plan = parse_plan(
        '[[task]]\nid = "a"\ncommand = "x"\nisolate = "worktree"\n'
        '[[task]]\nid = "b"\ncommand = "x"\ndepends_on = ["a"]\n'
    )
    sim = Sim(plan, collect_error=lambda _t: "could not keep the result: git commit: no space").run()
    check(sim)
    assert sim.outcome("a") == "failed"
    assert sim.state.tasks["a"].reason == "could not keep the result: git commit: no space"
    assert sim.outcome("b") == "skipped"


def test_priority_decides_who_gets_the_slot() -> None:
    """With one slot, ready tasks start by priority (higher first), then plan order."""
    plan = parse_plan(
        '[run]\nparallel = 1\n[[task]]\nid = "low"\ncommand = "x"\n'
        '[[task]]\nid = "high"\ncommand = "x"\npriority = 9\n[[task]]\nid = "mid"\ncommand = "x"\npriority = 3\n'
    )
    sim = Sim(plan).run()
    check(sim)
    assert [e.task for e in sim.kinds("task.started")] == ["high", "mid", "low"]


def test_run_timeout_stops_running_and_skips_the_rest() -> None:
    """[run] timeout: at the deadline running tasks are stopped, queued ones skipped; the run fails."""
    plan = parse_plan(
        '[run]\nparallel = 1\ntimeout = "5s"\n[[task]]\nid = "a"\ncommand = "x"\n'
        '[[task]]\nid = "slow"\ncommand = "x"\n[[task]]\nid = "never"\ncommand = "x"\n'
    )
    sim = Sim(plan, lambda task, _a: Run(after=100.0) if task == "slow" else Run(after=1.0)).run()
    check(sim)
    assert sim.outcome("a") == "succeeded"
    assert sim.outcome("slow") == "killed"
    assert sim.outcome("never") == "skipped"
    assert sim.state.tasks["never"].reason == "run timed out after 5.0s"
    assert sim.kinds("run.finished")[0].state == "failed"
    assert sim.now < sim.start + 10
