"""The state of an agent run, folded from its `agents` session: each task's state, attempts, exit code,
duration, and what a resume needs (which tasks succeeded with which spec, which attempts were cut short
and by which process). Folding a prefix then the rest equals folding everything.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from capsule.events import Event, SessionStarted
from capsule.events.policy import PolicyBlocked
from capsule.events.tasks import (
    HookDecided,
    PolicyViolated,
    RunFinished,
    RunPlanned,
    RunResumed,
    TaskCompensated,
    TaskExited,
    TaskFailed,
    TaskLimitExceeded,
    TaskQueued,
    TaskRetrying,
    TaskSkipped,
    TaskStarted,
    TaskSucceeded,
    TaskVerified,
)

TASK_STATES = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "killed",
    "limit_exceeded",
    "skipped",
    "denied",
    "spawn_failed",
)
FINAL = frozenset(TASK_STATES) - {"queued", "running"}


@attrs.define(kw_only=True)
class Attempt:
    number: int
    pid: int
    started: float  # the process's create time
    pgid: int
    ts: float
    argv: tuple[str, ...]
    log_dir: str
    trace_session: str | None
    end: float | None = None
    exit_code: int | None = None
    signal: str | None = None
    outcome: str | None = None
    cpu_s: float | None = None
    peak_rss: int | None = None


@attrs.define(kw_only=True)
class TaskState:
    id: str
    depends_on: tuple[str, ...] = ()
    spec_hash: str = ""
    state: str = "queued"
    attempts: list[Attempt] = attrs.Factory(list)
    exit_code: int | None = None
    reason: str = ""
    succeeded_hash: str | None = None  # the spec hash it succeeded with
    finished_ts: float | None = None
    verified: list[TaskVerified] = attrs.Factory(list)
    hooks: list[HookDecided] = attrs.Factory(list)
    violations: list[PolicyViolated] = attrs.Factory(list)
    blocked: list[PolicyBlocked] = attrs.Factory(list)  # what the guard refused in its tree
    limits: list[TaskLimitExceeded] = attrs.Factory(list)
    compensated: TaskCompensated | None = None

    @property
    def current(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def start(self) -> float | None:
        return self.attempts[0].ts if self.attempts else None

    @property
    def duration_s(self) -> float | None:
        """The last attempt's run time (what an ETA is made of)."""
        a = self.current
        return None if a is None or a.end is None else round(a.end - a.ts, 6)

    @property
    def interrupted(self) -> Attempt | None:
        """An attempt that started and never ended: its process may still be running."""
        a = self.current
        return a if a is not None and a.end is None and self.state == "running" else None


@attrs.define(kw_only=True)
class RunState:
    session_id: str = ""
    name: str = ""
    started: float | None = None
    plan: str = ""
    parallel: int = 0
    order: list[str] = attrs.Factory(list)
    tasks: dict[str, TaskState] = attrs.Factory(dict)
    finished: RunFinished | None = None
    resumed: list[RunResumed] = attrs.Factory(list)
    scheduler_pid: int | None = None
    scheduler_started: float | None = None
    last_ts: float = 0.0

    @property
    def state(self) -> str:
        """running | succeeded | failed | aborted (the scheduler's own word once it has finished)."""
        return self.finished.state if self.finished is not None else "running"

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(TASK_STATES, 0)
        for task in self.tasks.values():
            out[task.state] += 1
        return out

    def apply(self, event: Event) -> None:
        self.last_ts = max(self.last_ts, event.ts)
        match event:
            case SessionStarted():
                self.session_id = event.session_id
                self.started = event.ts
                self.scheduler_pid, self.scheduler_started = event.recorder_pid, event.recorder_started
            case RunPlanned():
                self.name, self.plan, self.parallel = event.name, event.plan, event.parallel
                self.finished = None
                for task_id, spec_hash, deps in zip(
                    event.tasks, event.spec_hashes, event.depends_on, strict=True
                ):
                    if task_id not in self.tasks:
                        self.order.append(task_id)
                        self.tasks[task_id] = TaskState(id=task_id)
                    self.tasks[task_id].depends_on = tuple(deps.split())
                    self.tasks[task_id].spec_hash = spec_hash
            case RunResumed():
                self.resumed.append(event)
                self.finished = None
                self.scheduler_pid, self.scheduler_started = event.scheduler_pid, event.scheduler_started
                for task in self.tasks.values():
                    if task.state == "running":  # its scheduler died: the attempt is over
                        task.state = "killed"
                        if (a := task.current) is not None and a.end is None:
                            a.end, a.outcome = event.ts, "killed"
            case TaskQueued():
                task = self.tasks.setdefault(event.task, TaskState(id=event.task))
                if event.task not in self.order:
                    self.order.append(event.task)
                task.state, task.spec_hash = "queued", event.spec_hash
            case TaskStarted():
                task = self.tasks[event.task]
                task.state = "running"
                task.attempts.append(
                    Attempt(
                        number=event.attempt,
                        pid=event.pid,
                        started=event.started,
                        pgid=event.pgid,
                        ts=event.ts,
                        argv=event.argv,
                        log_dir=event.log_dir,
                        trace_session=event.trace_session,
                    )
                )
            case TaskExited():
                task = self.tasks[event.task]
                a = task.current
                if a is not None and a.number == event.attempt:
                    a.end, a.exit_code, a.signal, a.outcome = (
                        event.ts,
                        event.exit_code,
                        event.signal,
                        event.outcome,
                    )
                    a.cpu_s, a.peak_rss = event.cpu_s, event.peak_rss
                task.exit_code = event.exit_code
            case TaskRetrying():
                task = self.tasks[event.task]
                task.state, task.reason = "queued", event.reason
            case TaskSucceeded():
                task = self.tasks[event.task]
                task.state, task.succeeded_hash, task.finished_ts = "succeeded", event.spec_hash, event.ts
                task.reason = ""
            case TaskFailed():
                task = self.tasks[event.task]
                task.state, task.reason, task.finished_ts = event.outcome, event.reason, event.ts
                if event.exit_code is not None:
                    task.exit_code = event.exit_code
                task.succeeded_hash = None
            case TaskSkipped():
                task = self.tasks[event.task]
                task.state, task.reason, task.finished_ts = "skipped", event.reason, event.ts
            case TaskLimitExceeded():
                self.tasks[event.task].limits.append(event)
            case HookDecided():
                self.tasks[event.task].hooks.append(event)
            case PolicyViolated():
                self.tasks[event.task].violations.append(event)
            case PolicyBlocked(task=str() as blocked_task) if blocked_task in self.tasks:
                self.tasks[blocked_task].blocked.append(event)
            case TaskVerified():
                self.tasks[event.task].verified.append(event)
            case TaskCompensated():
                self.tasks[event.task].compensated = event
            case RunFinished():
                self.finished = event
            case _:
                pass


def fold_run(events: Iterable[Event]) -> RunState:
    state = RunState()
    for event in events:
        state.apply(event)
    return state


def durations(states: Iterable[RunState]) -> dict[str, float]:
    """Each task's latest successful duration across earlier runs (for ETAs and `agents check`)."""
    out: dict[str, float] = {}
    for run in states:
        for task in run.tasks.values():
            if task.state == "succeeded" and task.duration_s is not None:
                out[task.id] = task.duration_s
    return out


def status_dict(run: RunState, state: str | None = None) -> dict[str, object]:
    """The stable shape of `capsule agents status --json`."""
    return {
        "run": run.session_id,
        "name": run.name,
        "state": state or run.state,
        "counts": {k: v for k, v in run.counts().items() if v},
        "tasks": [
            {
                "id": t.id,
                "state": t.state,
                "attempts": len(t.attempts),
                "exit_code": t.exit_code,
                "duration_s": t.duration_s,
                "reason": t.reason,
                "pid": t.current.pid if t.current else None,
                "blocked": len(t.blocked),  # refusals by the guard in the task's tree
            }
            for t in (run.tasks[i] for i in run.order)
        ],
    }
