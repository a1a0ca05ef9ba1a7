"""The recorded agents sessions in sessions/agents/ (real runs: `sessions/agents/record.sh`) replay exactly:
their observations fed to a fresh machine give the recorded events; each shows what it was recorded for."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, cast

import pytest

from capsule.events import Event
from capsule.events.observed import ObsReaped
from capsule.events.tasks import (
    HookDecided,
    RunFinished,
    RunResumed,
    TaskCompensated,
    TaskExited,
    TaskFailed,
    TaskLimitExceeded,
    TaskRetrying,
    TaskSkipped,
    TaskStarted,
    TaskStopping,
)
from capsule.fold.tasks import RunState, fold_run, status_dict
from capsule.plan.replay import is_observation, rederive_agents
from capsule.plan.states import next_state
from tests import golden

AGENTS_DIR = golden.SESSIONS_DIR / "agents"
SESSIONS = sorted(path.parent for path in AGENTS_DIR.glob(f"*/{golden.EVENTS}"))


def test_sessions_are_found() -> None:
    """Every scenario the issue names has a recorded session, each with the plan it ran."""
    names = {s.name for s in SESSIONS}
    assert {"retries", "timeout", "halt-soon", "halt-now", "hooks", "compensate", "resume"} <= names
    for session in SESSIONS:
        assert (session / "plan.toml").is_file()


@pytest.fixture(params=SESSIONS, ids=[s.name for s in SESSIONS])
def events(request: pytest.FixtureRequest) -> list[Event]:
    return golden.load_events(cast(Path, request.param))


def test_replay_rederives_the_recorded_events(events: list[Event]) -> None:
    """Re-fed its observations, the machine emits exactly what the scheduler recorded."""
    replayed = rederive_agents(events)
    assert len(replayed.derived) > 5
    assert list(replayed.derived) == list(replayed.recorded)


def test_replay_notices_a_changed_decision(events: list[Event]) -> None:
    """Drop one recorded observation and the replay no longer matches: the check is not vacuous."""
    observations = [i for i, e in enumerate(events) if is_observation(e)]
    cut = observations[len(observations) // 2]
    assert not rederive_agents(events[:cut] + events[cut + 1 :]).same


def test_every_recorded_transition_is_allowed(events: list[Event]) -> None:
    """Each task's state moves only along the table of capsule.plan.states."""
    state = RunState()
    for event in events:
        task = getattr(event, "task", None)
        if task in state.tasks:
            before = state.tasks[task].state
            next_state(before, type(event).KIND, getattr(event, "outcome", ""), strict=True)
        state.apply(event)
    assert state.finished is not None


def test_fold_prefix_then_rest(events: list[Event]) -> None:
    """Folding a prefix and then the rest gives the status of folding everything."""
    whole = status_dict(fold_run(events))
    for cut in range(0, len(events), max(1, len(events) // 7)):
        state = copy.deepcopy(fold_run(events[:cut]))
        for event in events[cut:]:
            state.apply(event)
        assert status_dict(state) == whole


def load(name: str) -> tuple[list[Event], RunState]:
    events = golden.load_events(AGENTS_DIR / name)
    return events, fold_run(events)


def of(events: list[Event], cls: type[Any], task: str | None = None) -> list[Any]:
    return [e for e in events if isinstance(e, cls) and (task is None or e.task == task)]


def test_retries_session() -> None:
    """flaky succeeds on its third attempt after two backoffs; fatal's exit 2 is final; spent runs out."""
    events, run = load("retries")
    assert [e.attempt for e in of(events, TaskStarted, "flaky")] == [1, 2, 3]
    assert [d.delay_s for d in of(events, TaskRetrying, "flaky")][1] > 0.2
    assert run.tasks["flaky"].state == "succeeded"
    assert run.tasks["after"].state == "succeeded"
    assert len(of(events, TaskStarted, "fatal")) == 1
    assert run.tasks["fatal"].exit_code == 2
    assert len(of(events, TaskStarted, "spent")) == 2
    assert run.tasks["spent"].state == "failed"


def test_timeout_session() -> None:
    """Both timed out; the one ignoring SIGTERM was SIGKILLed after its grace; quick succeeded."""
    events, run = load("timeout")
    assert {e.task for e in of(events, TaskStopping)} == {"polite", "stubborn"}
    exited = {e.task: e for e in of(events, TaskExited)}
    assert exited["polite"].signal == "SIGTERM"
    assert exited["stubborn"].signal == "SIGKILL"
    assert run.tasks["polite"].state == run.tasks["stubborn"].state == "timed_out"
    assert run.tasks["quick"].state == "succeeded"


def test_halt_sessions() -> None:
    """halt soon lets long finish and starts nothing new; halt now kills long."""
    events, run = load("halt-soon")
    assert run.tasks["long"].state == "succeeded"
    assert {e.task for e in of(events, TaskSkipped)} == {"waiting", "after"}
    events, run = load("halt-now")
    assert run.tasks["long"].state == "killed"
    assert of(events, TaskStopping, "long")[0].reason == "killed"
    assert run.tasks["later"].state == "skipped"


def test_hooks_session() -> None:
    """Each hook answer is acted on; a stray word and a hook too slow both deny."""
    events, run = load("hooks")
    states = {t: run.tasks[t].state for t in run.order}
    assert states == {
        "ok": "succeeded", "pre_skip": "skipped", "pre_deny": "denied", "odd": "denied",
        "slow_hook": "denied", "post_skip": "skipped", "post_deny": "denied", "err_skip": "skipped",
        "err_retry": "succeeded", "dep": "skipped",
    }  # fmt: skip
    reasons = {e.task: e.reason for e in of(events, HookDecided) if e.reason}
    assert "timed out" in reasons["slow_hook"]
    assert "'maybe'" in reasons["odd"]


def test_compensate_session() -> None:
    """boom's failing verify fails it; the succeeded tasks are compensated newest first."""
    events, run = load("compensate")
    assert run.tasks["boom"].state == "failed"
    assert "verify failed" in run.tasks["boom"].reason
    compensated = of(events, TaskCompensated)
    assert [e.task for e in compensated] == ["s2", "s1", "s0"]
    assert [e.ok for e in compensated] == [False, True, True]


def test_limits_policy_session() -> None:
    """A memory limit, a denied command line and a command that cannot start."""
    events, run = load("limits-policy")
    assert of(events, TaskLimitExceeded, "hog")[0].limit == "memory"
    assert run.tasks["hog"].state == "limit_exceeded"
    assert run.tasks["denied"].state == "denied"
    assert not of(events, TaskStarted, "denied")
    failed = of(events, TaskFailed, "missing")[0]
    assert failed.outcome == "spawn_failed"
    assert "cannot start no-such-program-capsule" in failed.reason


def test_resume_session() -> None:
    """The crash left slow running; resume stopped it, ran slow and c, and did not re-run a or b."""
    events, run = load("resume")
    (resumed,) = of(events, RunResumed)
    slow = of(events, TaskStarted, "slow")
    assert resumed.reaped == (slow[0].pid,)
    assert isinstance(events[events.index(resumed) - 1], ObsReaped)
    assert [e.attempt for e in slow] == [1, 2]
    assert len(of(events, TaskStarted, "a")) == len(of(events, TaskStarted, "b")) == 1
    assert run.state == "succeeded"
    assert len(of(events, RunFinished)) == 1


def test_replay_check_command(capsule, tmp_path: Path) -> None:
    """`capsule replay --check` on an agents session: exit 0 when it replays; 1 with a diff when a
    recorded decision differs from the machine's (a copy with one decision changed)."""
    import shutil

    copy_dir = tmp_path / "hooks"
    shutil.copytree(AGENTS_DIR / "hooks", copy_dir)
    done = capsule("replay", str(copy_dir), "--check")
    assert done.returncode == 0, done.stderr
    assert "re-derived from its observations, identical" in done.stdout
    events = copy_dir / golden.EVENTS
    lines = events.read_bytes().splitlines(keepends=True)
    changed = next(i for i, line in enumerate(lines) if b'"kind":"task.skipped"' in line)
    lines[changed] = lines[changed].replace(b"pre hook said skip", b"pre hook said maybe")
    events.write_bytes(b"".join(lines))
    done = capsule("replay", str(copy_dir), "--check")
    assert done.returncode == 1
    assert "pre hook said maybe" in done.stdout
