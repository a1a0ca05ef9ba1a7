"""The ETA and percent of `agents status` (capsule.fold.tasks.eta, progress), pure: a plan run in the
simulated world, then run again and cut anywhere; from what the cut run's fold says, the ETA is what the
rest of the run then takes, durations taken from the first run by spec hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from capsule.events.observed import ObsBegin
from capsule.fold.tasks import durations, eta, progress
from capsule.plan import parse_plan
from capsule.plan.dag import simulate
from tests.agents.sim import T0, Run, Sim

# b holds a slot while x1 and x2 (higher priority) become ready: the ETA must not give them b's slot
PLAN = """
[run]
parallel = 2
[[task]]
id = "a"
command = "a"
[[task]]
id = "b"
command = "b"
[[task]]
id = "x1"
command = "x1"
depends_on = ["a"]
priority = 9
[[task]]
id = "x2"
command = "x2"
depends_on = ["a"]
priority = 9
[[task]]
id = "c"
command = "c"
[[task]]
id = "d"
command = "d"
depends_on = ["x1", "c"]
"""
SECONDS = {"a": 1.0, "b": 3.0, "x1": 1.0, "x2": 1.0, "c": 4.0, "d": 0.5}


def script(task: str, _attempt: int) -> Run:
    return Run(after=SECONDS[task])


def known_durations() -> dict[str, float]:
    """What `estimates` finds for the plan: the first run's durations, by spec hash, mapped to ids."""
    plan = parse_plan(PLAN)
    first = Sim(plan, script).run()
    by_hash = durations([first.state])
    return {t.id: by_hash[t.spec_hash] for t in plan.tasks if t.spec_hash in by_hash}


def test_earlier_durations_are_found_by_spec_hash() -> None:
    """Every task's duration of the first run comes back, by what the task does."""
    assert known_durations() == SECONDS


@pytest.mark.parametrize("cut", [0.0, 0.5, 1.0, 1.5, 2.2, 3.0, 4.9, 5.6, 7.0])
def test_eta_at_any_point_is_what_the_rest_of_the_run_takes(cut: float) -> None:
    """Cut the second run at `cut` s: the ETA from its fold is the time the run then still takes, and
    the percent is the share of tasks over."""
    plan = parse_plan(PLAN)
    known = known_durations()
    sim = Sim(plan, script)
    sim.run(until=lambda s: s.now >= T0 + cut)
    now = sim.now
    state = sim.state
    over = sum(1 for t in state.tasks.values() if t.final)
    assert progress(state) == round(100.0 * over / len(plan.tasks), 1)
    estimate = eta(state, plan, known, now)
    while sim.finished is None and sim.step():
        pass
    assert sim.finished == "succeeded"
    assert estimate == round(sim.now - now, 1)


def test_eta_is_the_list_schedule_of_the_whole_plan_at_the_start() -> None:
    """Before anything ran the ETA is the plan list-scheduled at its parallelism (7.5 s here, where the
    critical path alone is 5.5 s and the work 10.5 s over two slots)."""
    plan = parse_plan(PLAN)
    sim = Sim(plan, script)
    sim.feed(ObsBegin(ts=T0, resume=False))  # the plan queued, a and b spawned
    assert eta(sim.state, plan, known_durations(), T0) == simulate(plan, SECONDS, 2) == 7.5


def test_no_eta_without_durations_or_once_over() -> None:
    """Nothing known of any task, or the run over: no ETA."""
    plan = parse_plan(PLAN)
    sim = Sim(plan, script)
    sim.run(until=lambda s: s.now >= T0 + 1)
    assert eta(sim.state, plan, {}, sim.now) is None
    sim.run()
    assert eta(sim.state, plan, SECONDS, sim.now) is None
    assert progress(sim.state) == 100.0


def test_a_running_task_counts_what_is_left_of_it() -> None:
    """At 1.5 s (nothing happens between a's end at 1 s and x1's at 2 s), x1 has 0.5 s left and b 1.5 s,
    each keeping its slot: x2 follows x1, c follows b, d follows c: 6.0 s left. Dispatching b's rest
    after x1 and x2 by rank, as if it were waiting, said 5.5."""
    plan = parse_plan(PLAN)
    sim = Sim(plan, script)
    sim.run(until=lambda s: s.now >= T0 + 1.0)
    assert {t.id for t in sim.state.tasks.values() if t.state == "running"} == {"x1", "b"}
    assert eta(sim.state, plan, SECONDS, T0 + 1.5) == 6.0
    assert simulate(plan, {**SECONDS, "x1": 0.5, "b": 1.5}, 2, {"a": 0.0}) == 5.5  # the old reading


def test_earlier_durations_are_kept_beside_an_ended_run(capsule, capsule_home: Path, tmp_path: Path) -> None:
    """`history` folds an ended run once and keeps its durations beside it (0600); the kept copy is what
    the fold says, is used while the events are unchanged, and is rebuilt once they change."""
    from capsule.api import agents
    from capsule.stages import snapshot

    plan = tmp_path / "plan.toml"
    plan.write_text('[[task]]\nid = "a"\ncommand = "true"\n[[task]]\nid = "b"\ncommand = "sleep 0.05"\n')
    assert capsule("agents", "run", str(plan)).returncode == 0
    (run,) = agents.sessions()
    kept = run / snapshot.DURATIONS
    assert not kept.exists()
    folded = durations([agents.fold(run)])
    assert agents.history() == folded
    assert kept.stat().st_mode & 0o777 == 0o600
    assert snapshot.read_durations(run) == folded
    planted = dict.fromkeys(folded, 99.0)  # what a fresh snapshot says is what history answers
    snapshot.write_durations(run, planted)
    assert agents.history() == planted
    with open(run / "events.jsonl", "ab") as events:  # the session changed: the snapshot is stale
        events.write(b"\n")
    assert snapshot.read_durations(run) is None
    assert agents.history() == folded
