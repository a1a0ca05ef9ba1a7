"""The agent-run machine in memory (tests/agents/sim.py plays the driver on a virtual clock): halt, skip,
abort, retry, limits, kills, resources, compensation and resume, without a process; and, for arbitrary
plans and behaviours (hypothesis), the rules every run keeps and an exact replay."""

from __future__ import annotations

import itertools
from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from capsule.events.observed import ObsDeadline, ObsExited, ObsHook, ObsKill, ObsSampled, ObsSpawned
from capsule.events.tasks import (
    RunFinished,
    TaskDispatched,
    TaskFailed,
    TaskQueued,
    TaskStarted,
    TaskSucceeded,
)
from capsule.fold.tasks import RunState
from capsule.plan.effects import ReapLeftovers, RunHook, StopTree
from capsule.plan.replay import is_observation, rederive_agents
from capsule.plan.retry import jitter
from capsule.plan.spec import Hook, Plan, TaskSpec, parse_plan
from capsule.plan.states import next_state
from tests.agents.sim import T0, Run, Sim

OK = Run()
FAIL = Run(code=1)
HANG = Run(code=None)


def plan(text: str) -> Plan:
    return parse_plan(text)


def tasks(*specs: str, run: str = "") -> Plan:
    return plan(f"[run]\n{run}\n" + "".join(f"[[task]]\n{s}\n" for s in specs))


def check(sim: Sim) -> None:
    """What every run keeps: a verdict, allowed transitions, the cap, and an exact replay."""
    assert sim.finished is not None
    state = RunState()
    for event in sim.recorded:
        task = getattr(event, "task", None)
        if task in state.tasks:
            next_state(state.tasks[task].state, type(event).KIND, getattr(event, "outcome", ""), strict=True)
        state.apply(event)
    assert all(t.final for t in sim.state.tasks.values())
    assert sim.max_holding <= sim.plan.parallel
    for name, count in sim.plan.resources:
        assert sim.max_resource.get(name, 0) <= count
    replayed = rederive_agents(sim.recorded)
    assert replayed.same


def test_dependency_failure_skips_dependents_transitively() -> None:
    """c fails: d (after c) and e (after d and a) are skipped, naming the dependency."""
    p = tasks(
        'id = "a"\ncommand = "true"',
        'id = "c"\ncommand = "x"\ndepends_on = ["a"]',
        'id = "d"\ncommand = "true"\ndepends_on = ["c"]',
        'id = "e"\ncommand = "true"\ndepends_on = ["d", "a"]',
    )
    sim = Sim(p, lambda t, _a: FAIL if t == "c" else OK).run()
    check(sim)
    assert [(e.task, e.reason) for e in sim.kinds("task.skipped")] == [
        ("d", "dependency c failed"),
        ("e", "dependency d skipped"),
    ]
    assert sim.finished == "failed"


def test_halt_soon_starts_nothing_new_but_lets_running_finish() -> None:
    """After a failure under halt soon, running tasks finish and nothing new starts."""
    p = tasks(
        'id = "long"\ncommand = "x"',
        'id = "bad"\ncommand = "x"',
        'id = "next"\ncommand = "x"',
        run='halt = "soon"\nparallel = 2',
    )
    sim = Sim(p, lambda t, _a: {"long": Run(after=5), "bad": Run(code=1, after=1)}.get(t, OK)).run()
    check(sim)
    assert sim.outcome("long") == "succeeded"
    assert sim.outcome("next") == "skipped"
    assert sim.kinds("task.skipped", "next")[0].reason == "run halted after a failure"
    assert not sim.kinds("task.dispatched", "next")


def test_halt_now_kills_running_tasks_with_their_grace() -> None:
    """halt now: the failure stops running tasks with SIGTERM and their grace; they end `killed`."""
    p = tasks('id = "long"\ncommand = "x"\ngrace = "3s"', 'id = "bad"\ncommand = "x"', run='halt = "now"')
    sim = Sim(p, lambda t, _a: HANG if t == "long" else Run(code=1, after=0.5)).run()
    check(sim)
    stop = sim.kinds("task.stopping", "long")[0]
    assert (stop.reason, stop.signal, stop.grace_s) == ("killed", "SIGTERM", 3.0)
    assert sim.outcome("long") == "killed"
    assert StopTree(task="long", attempt=1, signal="SIGTERM", grace_s=3.0) in sim.effects


def test_halt_never_runs_everything_else() -> None:
    """halt never: a failure does not stop independent tasks."""
    p = tasks('id = "bad"\ncommand = "x"', 'id = "other"\ncommand = "x"', run="parallel = 1")
    sim = Sim(p, lambda t, _a: FAIL if t == "bad" else OK).run()
    check(sim)
    assert sim.outcome("other") == "succeeded"


def test_retry_backoff_doubles_with_recorded_jitter() -> None:
    """Each retry waits backoff * 2^(n-1) stretched by the jitter hashed from session, task and attempt."""
    p = tasks('id = "f"\ncommand = "x"\nretries = 3\nbackoff = "1s"\nbackoff_cap = "3s"')
    sim = Sim(p, lambda _t, _a: FAIL).run()
    check(sim)
    delays = [e.delay_s for e in sim.kinds("task.retrying")]
    session = sim.state.session_id
    expected = [round(min(3.0, 2.0**i * (1 + 0.25 * jitter(session, "f", i + 1))), 6) for i in range(3)]
    assert delays == expected
    starts = [e.ts for e in sim.kinds("task.started")]
    for delay, (before, after) in zip(delays, itertools.pairwise(starts), strict=True):
        assert after - before >= 1.0 + delay - 1e-6  # an attempt lasts 1s in the sim
    assert sim.outcome("f") == "failed"
    assert len(starts) == 4


def test_jitter_is_deterministic_and_spread() -> None:
    """The jitter is a function of its inputs, in [0, 1), and differs between attempts."""
    values = {jitter("s", "t", n) for n in range(50)}
    assert len(values) == 50
    assert all(0 <= v < 1 for v in values)
    assert jitter("s", "t", 1) == jitter("s", "t", 1)


def test_limit_and_timeout_are_not_retried() -> None:
    """A memory limit kills with SIGKILL at once and is final; a timeout is retried."""
    p = tasks(
        'id = "hog"\ncommand = "x"\nretries = 2\nlimits = { memory = "1MiB" }',
        'id = "slow"\ncommand = "x"\nretries = 1\ntimeout = "2s"\nbackoff = "0.1s"',
    )
    sim = Sim(p, lambda t, _a: Run(code=None, rss=2 << 20) if t == "hog" else HANG, sample_s=0.2).run()
    check(sim)
    assert sim.kinds("task.limit_exceeded", "hog")[0].measured == float(2 << 20)
    assert sim.kinds("task.stopping", "hog")[0].signal == "SIGKILL"
    assert len(sim.kinds("task.started", "hog")) == 1
    assert sim.outcome("hog") == "limit_exceeded"
    assert len(sim.kinds("task.started", "slow")) == 2
    assert sim.outcome("slow") == "timed_out"


def test_cpu_limit_summed_over_the_tree() -> None:
    """cpu_time is compared with the tree's sampled CPU seconds."""
    p = tasks('id = "spin"\ncommand = "x"\nlimits = { cpu_time = "1s" }')
    sim = Sim(p, lambda _t, _a: Run(code=None, cpu_per_s=1.0), sample_s=0.25).run()
    check(sim)
    hit = sim.kinds("task.limit_exceeded", "spin")[0]
    assert hit.limit == "cpu_time"
    assert hit.measured > 1.0


def test_samples_within_limits_change_nothing_and_are_not_recorded() -> None:
    """A sample that breaks no limit and shows no new member leads to no event: it is not recorded."""
    p = tasks('id = "t"\ncommand = "x"\nlimits = { memory = "1GiB" }')
    sim = Sim(p, lambda _t, _a: Run(after=2, rss=100), sample_s=0.1).run()
    check(sim)
    assert not sim.kinds("obs.task.sampled")


def test_new_members_are_recorded_once() -> None:
    """Processes seen in a tree are recorded by pid and start time, each once."""
    p = tasks('id = "t"\ncommand = "x"')
    sim = Sim(p, lambda _t, _a: HANG)
    sim.run(until=lambda s: bool(s.kinds("task.started")))
    for pids in [(100,), (100, 7), (100, 7)]:
        sim.feed(
            ObsSampled(ts=T0 + 1, task="t", attempt=1, rss=0, cpu_s=0, pids=pids, starts=(T0,) * len(pids))
        )
    assert [e.pids for e in sim.kinds("task.members")] == [(100,), (7,)]


def test_pre_hook_abort_stops_the_run() -> None:
    """A pre hook answering abort skips that task, kills what runs and skips the rest: run `aborted`."""
    p = plan(
        '[run]\nparallel = 2\n[[hook]]\non = "pre"\ncommand = "h"\n'
        '[[task]]\nid = "long"\ncommand = "x"\n'
        '[[task]]\nid = "stop"\ncommand = "x"\ndepends_on = ["gate"]\n'
        '[[task]]\nid = "gate"\ncommand = "x"\n'
        '[[task]]\nid = "later"\ncommand = "x"\ndepends_on = ["stop"]\n'
    )
    sim = Sim(
        p,
        lambda t, _a: HANG if t == "long" else OK,
        answer=lambda t, _on, _i: (0, "abort" if t == "stop" else "continue"),
    ).run()
    check(sim)
    assert sim.finished == "aborted"
    assert sim.outcome("stop") == "skipped"
    assert sim.outcome("later") == "skipped"
    assert sim.outcome("long") == "killed"


def test_hook_answers_are_asked_in_order_and_once() -> None:
    """Two pre hooks: the second is asked only after the first said continue; a deny ends it there."""
    p = plan(
        '[[hook]]\non = "pre"\ncommand = "one"\n[[hook]]\non = "pre"\ncommand = "two"\n'
        '[[task]]\nid = "a"\ncommand = "x"\n[[task]]\nid = "b"\ncommand = "x"\n'
    )
    sim = Sim(p, answer=lambda t, _on, i: (0, "deny" if (t, i) == ("b", 0) else "continue")).run()
    check(sim)
    asked = [(e.task, e.index) for e in sim.effects if isinstance(e, RunHook)]
    assert asked.count(("a", 0)) == asked.count(("a", 1)) == asked.count(("b", 0)) == 1
    assert ("b", 1) not in asked
    assert sim.outcome("a") == "succeeded"
    assert sim.outcome("b") == "denied"


def test_a_stale_or_repeated_answer_changes_nothing() -> None:
    """An answer nobody waits for (repeated, wrong index, unknown task) leads to no event."""
    p = plan('[[hook]]\non = "pre"\ncommand = "h"\n[[task]]\nid = "a"\ncommand = "x"\n')
    sim = Sim(p, lambda _t, _a: HANG).run(until=lambda s: bool(s.kinds("task.started")))
    for obs in [
        ObsHook(ts=T0 + 5, task="a", on="pre", index=0, exit_code=0, answer="skip"),
        ObsHook(ts=T0 + 5, task="zzz", on="pre", index=0, exit_code=0, answer="skip"),
        ObsExited(ts=T0 + 5, task="a", attempt=9, exit_code=0),
        ObsDeadline(ts=T0 + 5, task="a", attempt=1, what="retry"),
    ]:
        assert sim.feed(obs) == []


def test_hook_decision_words() -> None:
    """No answer in time, a failing hook and a stray word all deny, with the reason."""
    p = plan(
        '[[hook]]\non = "pre"\ncommand = "h"\ntimeout = "1s"\n'
        + "".join(f'[[task]]\nid = "{t}"\ncommand = "x"\n' for t in "abc")
    )
    answers = {"a": (None, ""), "b": (2, "continue"), "c": (0, "Perhaps")}
    sim = Sim(p, answer=lambda t, _on, _i: answers[t]).run()
    check(sim)
    reasons = {e.task: e.reason for e in sim.kinds("hook.decided")}
    assert reasons == {
        "a": "hook timed out after 1.0s",
        "b": "hook exited with 2",
        "c": "hook answered 'perhaps', not one of continue, skip, deny, abort",
    }


def test_policy_denies_before_start() -> None:
    """A command matching deny_commands fails `denied` with attempt 0 and never starts."""
    p = plan('[policy]\ndeny_commands = ["sudo *"]\n[[task]]\nid = "x"\ncommand = ["sudo", "ls"]\n')
    sim = Sim(p).run()
    check(sim)
    assert not sim.kinds("task.dispatched")
    assert sim.kinds("task.failed")[0].attempt == 0
    assert sim.outcome("x") == "denied"


def test_kill_request_stops_running_and_skips_the_rest() -> None:
    """obs.run.kill for the whole run: running tasks stopped `killed`, queued ones skipped; run failed."""
    p = tasks(
        'id = "a"\ncommand = "x"',
        'id = "b"\ncommand = "x"\ndepends_on = ["a"]',
        'id = "c"\ncommand = "x"',
        run="parallel = 1",
    )
    sim = Sim(p, lambda _t, _a: HANG)
    sim.run(until=lambda s: bool(s.kinds("task.started")))
    sim.feed(ObsKill(ts=sim.now))
    while sim.finished is None and sim.step():
        pass
    check(sim)
    assert sim.outcome("a") == "killed"
    assert sim.outcome("b") == sim.outcome("c") == "skipped"


def test_resources_and_the_cap() -> None:
    """gpu = 1 keeps its users apart at parallel 3; a task without `uses` runs beside them."""
    p = plan(
        "[run]\nparallel = 3\n[resources]\ngpu = 1\n"
        + "".join(f'[[task]]\nid = "g{i}"\ncommand = "x"\nuses = ["gpu"]\n' for i in range(3))
        + '[[task]]\nid = "free"\ncommand = "x"\n'
    )
    sim = Sim(p).run()
    check(sim)
    assert sim.max_resource["gpu"] == 1
    first = [e.task for e in sim.recorded if isinstance(e, TaskDispatched)][:2]
    assert first == ["g0", "free"]


def test_compensation_newest_first_then_finish() -> None:
    """on_failure = compensate: succeeded tasks are undone newest first, one at a time, then the verdict."""
    p = plan(
        '[run]\non_failure = "compensate"\n'
        + "".join(
            f'[[task]]\nid = "s{i}"\ncommand = "x"\ncompensate = "undo"\n'
            + (f'depends_on = ["s{i - 1}"]\n' if i else "")
            for i in range(3)
        )
        + '[[task]]\nid = "boom"\ncommand = "x"\ndepends_on = ["s2"]\n'
    )
    sim = Sim(p, lambda t, _a: FAIL if t == "boom" else OK).run()
    check(sim)
    assert [e.task for e in sim.kinds("task.compensated")] == ["s2", "s1", "s0"]
    assert isinstance(sim.recorded[-1], RunFinished)


def test_verify_failure_fails_and_is_retried() -> None:
    """A failing verify fails the attempt (retryable); the next attempt's checks pass."""
    p = tasks('id = "v"\ncommand = "x"\nretries = 1\nbackoff = "0.1s"\nverify = ["a", "b"]')
    calls: list[int] = []

    def verify(_task: str, index: int) -> int:
        calls.append(index)
        return 4 if calls == [0, 1] else 0

    sim = Sim(p, verify=verify).run()
    check(sim)
    assert [(e.attempt, e.ok) for e in sim.kinds("task.verified")] == [
        (1, True),
        (1, False),
        (2, True),
        (2, True),
    ]
    assert sim.outcome("v") == "succeeded"


def test_spawn_failure_is_final_and_says_why() -> None:
    """A command that cannot start fails `spawn_failed` (never retried), with the error in the reason."""
    p = tasks('id = "m"\ncommand = ["nope"]\nretries = 2')
    sim = Sim(p, lambda _t, _a: Run(spawn_error="No such file or directory")).run()
    check(sim)
    failed = sim.kinds("task.failed")[0]
    assert (failed.outcome, failed.reason) == ("spawn_failed", "cannot start nope: No such file or directory")


def test_resume_keeps_succeeded_tasks_and_reaps_the_interrupted() -> None:
    """A crash mid-run, then resume: leftovers of the interrupted attempt reaped; a not re-run."""
    p = tasks('id = "a"\ncommand = "x"', 'id = "slow"\ncommand = "x"\ndepends_on = ["a"]')
    first = Sim(p, lambda t, a: HANG if (t, a) == ("slow", 1) else OK)
    first.run(until=lambda s: bool(s.kinds("task.started", "slow")))
    state = first.state  # the fold of what the dead scheduler recorded
    second = Sim(p, state=state, start=first.now + 10).run(resume=True)
    reap = next(e for e in second.effects if isinstance(e, ReapLeftovers))
    assert [(x.task, x.interrupted) for x in reap.leftovers] == [("a", False), ("slow", True)]
    assert second.kinds("run.resumed")[0].reaped == (reap.leftovers[1].pid,)
    assert [e.task for e in second.recorded if isinstance(e, TaskQueued)] == ["slow"]
    assert second.outcome("slow") == "succeeded"
    assert second.finished == "succeeded"
    assert [a.outcome for a in state.tasks["slow"].attempts] == ["killed", "succeeded"]
    whole = rederive_agents(first.recorded + second.recorded)
    assert whole.same


def test_unwanted_process_is_stopped() -> None:
    """A spawn nobody dispatched is stopped at once, and no event records it."""
    sim = Sim(tasks('id = "a"\ncommand = "x"'), lambda _t, _a: HANG)
    sim.run(until=lambda s: bool(s.kinds("task.started")))
    events, effects = sim.machine.handle(
        ObsSpawned(ts=T0, task="a", attempt=7, pid=9, started=T0, pgid=9), T0
    )
    assert events == []
    assert effects == [StopTree(task="a", attempt=7, signal="SIGKILL", grace_s=0.0)]


# -- any plan, any behaviour ------------------------------------------------------------------------


@st.composite
def runs(draw: Any) -> tuple[Plan, dict[tuple[str, int], Run], dict[tuple[str, str], str]]:
    n = draw(st.integers(1, 6))
    ids = [f"t{i}" for i in range(n)]
    specs = []
    for i, task_id in enumerate(ids):
        deps = tuple(draw(st.lists(st.sampled_from(ids[:i]), unique=True, max_size=2))) if i else ()
        specs.append(
            TaskSpec(
                id=task_id,
                command=("x",),
                depends_on=deps,
                uses=tuple(draw(st.lists(st.just("gpu"), max_size=1))),
                retries=draw(st.integers(0, 2)),
                backoff_s=0.5,
                timeout_s=draw(st.sampled_from([None, 2.0])),
                memory=draw(st.sampled_from([None, 1000])),
                verify=tuple(draw(st.lists(st.just("check"), max_size=1))),
                compensate=draw(st.sampled_from([None, "undo"])),
            )
        )
    hooks = tuple(
        Hook(on=on, command=on)
        for on in draw(st.lists(st.sampled_from(["pre", "post", "error"]), unique=True))
    )
    p = Plan(
        name="p",
        parallel=draw(st.integers(1, 3)),
        halt=draw(st.sampled_from(["never", "soon", "now"])),
        on_failure=draw(st.sampled_from(["stop", "compensate"])),
        resources=(("gpu", 1),),
        tasks=tuple(specs),
        hooks=hooks,
    )
    behaviour = st.builds(
        Run,
        code=st.sampled_from([0, 0, 1, 2, None]),
        after=st.sampled_from([0.5, 1.0, 3.0]),
        ignores_term=st.booleans(),
        rss=st.sampled_from([0, 5000]),
    )
    script = {(t.id, a): draw(behaviour) for t in specs for a in range(1, 4)}
    for (task_id, a), run in script.items():  # a process that never exits needs a timeout to end
        if run.code is None and p.task(task_id).timeout_s is None:
            script[(task_id, a)] = attrs.evolve(run, code=1)
    answers = {
        (t, on): draw(st.sampled_from(["continue", "continue", "skip", "deny", "abort"]))
        for t in ids
        for on in ("pre", "post", "error")
    }
    return p, script, answers


@settings(max_examples=150, deadline=None)
@given(runs())
def test_any_run_keeps_the_rules_and_replays(
    case: tuple[Plan, dict[tuple[str, int], Run], dict[tuple[str, str], str]],
) -> None:
    """Any plan, any exits, any hook answers: the run finishes, every task ends, transitions are the
    table's, the cap and resources hold, dependencies come first, halting holds, replay is exact."""
    p, script, answers = case
    sim = Sim(
        p, lambda t, a: script[(t, a)], answer=lambda t, on, _i: (0, answers[(t, on)]), sample_s=0.4
    ).run()
    check(sim)
    order = [e for e in sim.recorded if isinstance(e, TaskStarted | TaskSucceeded | TaskFailed)]
    done: set[str] = set()
    for e in order:
        if isinstance(e, TaskStarted):
            assert all(d in done for d in p.task(e.task).depends_on)
        elif isinstance(e, TaskSucceeded):
            done.add(e.task)
    if p.halt != "never":
        failed = [i for i, e in enumerate(sim.recorded) if isinstance(e, TaskFailed)]
        if failed:
            assert not [e for e in sim.recorded[failed[0] + 1 :] if isinstance(e, TaskDispatched)]
    for t in p.tasks:
        assert len(sim.kinds("task.started", t.id)) <= t.retries + 1
    if sim.finished == "succeeded":
        assert all(s.state == "succeeded" for s in sim.state.tasks.values())
    if p.on_failure == "compensate" and sim.kinds("task.compensated"):
        times = [sim.state.tasks[e.task].finished_ts for e in sim.kinds("task.compensated")]
        assert times == sorted(times, reverse=True)


def test_replay_of_a_prefix_is_a_prefix() -> None:
    """Cut a recorded run before any step: its replay is the recorded prefix (what resume relies on)."""
    p = tasks('id = "a"\ncommand = "x"\nretries = 1', 'id = "b"\ncommand = "x"\ndepends_on = ["a"]')
    sim = Sim(p, lambda t, a: FAIL if (t, a) == ("a", 1) else OK).run()
    cuts = [i for i, e in enumerate(sim.recorded) if is_observation(e)]
    assert len(cuts) > 5
    for cut in cuts:  # a crash falls between two steps: each step is written in one write()
        assert rederive_agents(sim.recorded[:cut]).same


def test_post_and_error_hook_abort_end_the_run_aborted() -> None:
    """abort from a post hook fails the task `denied`; from an error hook with its outcome; no retry."""
    for on, run, outcome in (("post", OK, "denied"), ("error", FAIL, "failed")):
        p = plan(
            f'[run]\nparallel = 1\n[[hook]]\non = "{on}"\ncommand = "h"\n'
            '[[task]]\nid = "t"\ncommand = "x"\nretries = 2\n'
            '[[task]]\nid = "later"\ncommand = "x"\ndepends_on = ["t"]\n'
        )
        sim = Sim(p, lambda _t, _a, run=run: run, answer=lambda _t, _on, _i: (0, "abort")).run()
        check(sim)
        assert sim.finished == "aborted"
        assert len(sim.kinds("task.started", "t")) == 1
        assert sim.kinds("task.failed", "t")[0].outcome == outcome
        assert not sim.kinds("task.started", "later")


def test_no_retry_exit_codes_are_final() -> None:
    """An exit code listed in no_retry_exit_codes is not retried; another one is."""
    p = tasks(
        'id = "two"\ncommand = "x"\nretries = 3\nno_retry_exit_codes = [2]',
        'id = "one"\ncommand = "x"\nretries = 1\nbackoff = "0.1s"\nno_retry_exit_codes = [2]',
    )
    sim = Sim(p, lambda t, _a: Run(code=2 if t == "two" else 1)).run()
    check(sim)
    assert len(sim.kinds("task.started", "two")) == 1
    assert len(sim.kinds("task.started", "one")) == 2


def test_resume_with_a_changed_spec_reruns_only_that_task() -> None:
    """Resume with an edited plan: a succeeded task whose spec hash changed runs again, the others not."""
    p = tasks('id = "same"\ncommand = "x"', 'id = "edited"\ncommand = "v1"')
    first = Sim(p).run()
    edited = tasks('id = "same"\ncommand = "x"', 'id = "edited"\ncommand = "v2"')
    second = Sim(edited, state=first.state, start=first.now + 5).run(resume=True)
    assert [e.task for e in second.kinds("task.queued")] == ["edited"]
    assert second.finished == "succeeded"
    assert rederive_agents(first.recorded + second.recorded).same
