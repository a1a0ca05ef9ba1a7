"""The state of an agent run, folded from its `agents` session: each task's state, attempts, exit code,
duration, and what a resume needs (which tasks succeeded with which spec, which attempts were cut short
and by which process). Folding a prefix then the rest equals folding everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import attrs

from capsule.events import Event, SessionStarted
from capsule.events.observed import ObsSampled
from capsule.events.placement import RunExecutor, TaskPlaced
from capsule.events.policy import PolicyBlocked
from capsule.events.tasks import (
    HookDecided,
    PolicyViolated,
    RunFinished,
    RunPlanned,
    RunResumed,
    TaskCached,
    TaskCollected,
    TaskCompensated,
    TaskDispatched,
    TaskExited,
    TaskFailed,
    TaskLimitExceeded,
    TaskMembers,
    TaskQueued,
    TaskRetrying,
    TaskSkipped,
    TaskStarted,
    TaskStopping,
    TaskSucceeded,
    TaskVerified,
)
from capsule.plan.states import TASK_STATES, TaskStatus, is_final, next_state

if TYPE_CHECKING:
    from capsule.plan.spec import Plan

FINAL = frozenset(s for s in TASK_STATES if is_final(s))


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
    sampled: ObsSampled | None = None  # the latest sample of its tree (a cluster node's: shown by `ps`)


@attrs.define(kw_only=True)
class TaskState:
    id: str
    depends_on: tuple[str, ...] = ()
    spec_hash: str = ""
    state: TaskStatus = "queued"
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
    collected: TaskCollected | None = None  # what its last success kept (outputs, commit)
    cached: TaskCached | None = None  # the earlier result it was restored from
    placed: dict[int, TaskPlaced] = attrs.Factory(dict)  # attempt -> the cluster node it ran on
    # What the scheduler's machine reads about the task's current step (architecture §9): the fold of the
    # events it emitted, nothing else.
    base: int = 0  # attempts made before this run (a resume counts its retries afresh)
    dispatched: int | None = None  # the attempt given a slot whose process has not started yet
    stopping: TaskStopping | None = None  # the current attempt is being stopped, and why
    exited: TaskExited | None = None  # how the current attempt's process ended
    pre: list[HookDecided] = attrs.Factory(list)  # pre hook answers since the task was queued
    deciding: list[HookDecided] = attrs.Factory(list)  # post/error answers about the current attempt
    retry_at: float | None = None  # a retry's backoff ends then
    members: dict[int, dict[int, float]] = attrs.Factory(dict)  # attempt -> {pid: start time}

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

    @property
    def final(self) -> bool:
        return is_final(self.state)

    def holds_slot(self) -> bool:
        """A dispatched or running task holds a run slot and its resources until its verdict."""
        return self.dispatched is not None or self.state == "running"

    @property
    def kept(self) -> tuple[str | None, str | None, tuple[str, ...]]:
        """Branch, commit and stored outputs of its result: what it collected, or what it was cached from."""
        if self.collected is not None:
            return self.collected.branch, self.collected.commit, self.collected.outputs
        if self.cached is not None:
            return self.cached.branch, self.cached.commit, self.cached.outputs
        return None, None, ()

    @property
    def node(self) -> str | None:
        """The cluster node its latest placed attempt ran on; None when it ran on this machine."""
        return self.placed[max(self.placed)].node if self.placed else None

    def current_verified(self) -> list[TaskVerified]:
        a = self.current
        return [v for v in self.verified if a is not None and v.attempt == a.number]


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
    # this scheduler's run (from its run.planned on): what halting, aborting and compensating read
    halt: str = "never"
    on_failure: str = "stop"
    planned_ts: float | None = None
    failed_now: bool = False  # a task failed in this run
    aborted: bool = False  # a hook answered abort in this run
    compensated_now: list[str] = attrs.Factory(list)
    holding: dict[str, None] = attrs.Factory(dict)  # tasks holding a slot (dispatched or running), in order
    unfinished: int = 0  # tasks not in a final state: "has every task ended?" without a scan per event
    executor: RunExecutor | None = None  # who performed the attempts, when not this machine

    @property
    def state(self) -> str:
        """running | succeeded | failed | aborted (the scheduler's own word once it has finished)."""
        return self.finished.state if self.finished is not None else "running"

    @property
    def halted(self) -> bool:
        """Start nothing new: a hook aborted, or a task failed and the plan says halt soon or now."""
        return self.aborted or (self.failed_now and self.halt in ("soon", "now"))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = dict.fromkeys(TASK_STATES, 0)
        for task in self.tasks.values():
            out[task.state] += 1
        return out

    def _move(self, task: TaskState, event: Event, outcome: str = "") -> None:
        before = task.final
        task.state = next_state(task.state, type(event).KIND, outcome)
        self.unfinished += int(before) - int(task.final)

    def _new_task(self, task_id: str) -> TaskState:
        self.order.append(task_id)
        self.unfinished += 1
        task = self.tasks[task_id] = TaskState(id=task_id)
        return task

    def apply(self, event: Event) -> None:
        self.last_ts = max(self.last_ts, event.ts)
        match event:
            case SessionStarted():
                self.session_id = event.session_id
                self.started = event.ts
                self.scheduler_pid, self.scheduler_started = event.recorder_pid, event.recorder_started
            case RunPlanned():
                self.name, self.plan, self.parallel = event.name, event.plan, event.parallel
                self.halt, self.on_failure, self.planned_ts = event.halt, event.on_failure, event.ts
                self.finished = None
                self.failed_now = self.aborted = False
                self.compensated_now = []
                for task_id, spec_hash, deps in zip(
                    event.tasks, event.spec_hashes, event.depends_on, strict=True
                ):
                    if task_id not in self.tasks:
                        self._new_task(task_id)
                    task = self.tasks[task_id]
                    task.depends_on = tuple(deps.split())
                    task.spec_hash = spec_hash
                    task.base = len(task.attempts)
            case RunResumed():
                self.resumed.append(event)
                self.holding.clear()
                self.finished = None
                self.scheduler_pid, self.scheduler_started = event.scheduler_pid, event.scheduler_started
                for task in self.tasks.values():
                    task.dispatched = None
                    if task.state == "running":
                        self._move(task, event)
                        if (a := task.current) is not None and a.end is None:
                            a.end, a.outcome = event.ts, "killed"
            case TaskQueued():
                self.holding.pop(event.task, None)
                task = self.tasks.get(event.task) or self._new_task(event.task)
                self._move(task, event)
                task.spec_hash = event.spec_hash
                task.pre, task.retry_at, task.dispatched = [], None, None
            case TaskDispatched():
                task = self.tasks[event.task]
                task.dispatched, task.retry_at = event.attempt, None
                self.holding[event.task] = None
            case TaskStarted():
                task = self.tasks[event.task]
                self._move(task, event)
                self.holding[event.task] = None
                task.dispatched, task.stopping, task.exited, task.deciding = None, None, None, []
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
            case TaskStopping():
                self.tasks[event.task].stopping = event
            case TaskMembers():
                seen = self.tasks[event.task].members.setdefault(event.attempt, {})
                seen.update(zip(event.pids, event.starts, strict=True))
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
                    task.exited = event
                task.exit_code = event.exit_code
            case TaskRetrying():
                self.holding.pop(event.task, None)
                task = self.tasks[event.task]
                self._move(task, event)
                task.reason, task.retry_at = event.reason, event.ts + event.delay_s
            case TaskSucceeded():
                self.holding.pop(event.task, None)
                task = self.tasks[event.task]
                self._move(task, event)
                task.succeeded_hash, task.finished_ts = event.spec_hash, event.ts
                task.reason = ""
            case TaskFailed():
                self.holding.pop(event.task, None)
                task = self.tasks[event.task]
                task.dispatched = None
                self._move(task, event, event.outcome)
                task.reason, task.finished_ts = event.reason, event.ts
                if event.exit_code is not None:
                    task.exit_code = event.exit_code
                task.succeeded_hash = None
                self.failed_now = True
            case TaskSkipped():
                self.holding.pop(event.task, None)
                task = self.tasks[event.task]
                task.dispatched = None
                self._move(task, event)
                task.reason, task.finished_ts = event.reason, event.ts
            case TaskLimitExceeded():
                self.tasks[event.task].limits.append(event)
            case HookDecided():
                task = self.tasks[event.task]
                task.hooks.append(event)
                (task.pre if event.on == "pre" else task.deciding).append(event)
                if event.decision == "abort":
                    self.aborted = True
            case PolicyViolated():
                self.tasks[event.task].violations.append(event)
            case PolicyBlocked(task=str() as blocked_task) if blocked_task in self.tasks:
                self.tasks[blocked_task].blocked.append(event)
            case TaskVerified():
                self.tasks[event.task].verified.append(event)
            case TaskCollected():
                self.tasks[event.task].collected = event
            case TaskCached():
                self.holding.pop(event.task, None)
                task = self.tasks[event.task]
                task.dispatched = None
                self._move(task, event)
                task.cached, task.reason, task.finished_ts = event, f"cached from {event.from_run}", event.ts
                task.succeeded_hash = event.spec_hash
            case TaskCompensated():
                self.tasks[event.task].compensated = event
                self.compensated_now.append(event.task)
            case RunFinished():
                self.finished = event
            case TaskPlaced(task=str() as placed_task) if placed_task in self.tasks:
                self.tasks[placed_task].placed[event.attempt] = event
            case ObsSampled(task=str() as sampled_task) if sampled_task in self.tasks:
                a = self.tasks[sampled_task].current
                if a is not None and a.number == event.attempt:
                    a.sampled = event
            case RunExecutor():
                self.executor = event
            case _:
                pass


def fold_run(events: Iterable[Event]) -> RunState:
    state = RunState()
    for event in events:
        state.apply(event)
    return state


def durations(states: Iterable[RunState]) -> dict[str, float]:
    """The latest successful duration of each spec hash across earlier runs (for ETAs and `agents
    check`): by what the task does, not its id, which unrelated plans share (`build`, `test`)."""
    out: dict[str, float] = {}
    for run in states:
        for task in run.tasks.values():
            if task.state == "succeeded" and task.duration_s is not None and task.succeeded_hash:
                out[task.succeeded_hash] = task.duration_s
    return out


def progress(run: RunState) -> float:
    """The share of the run's tasks that have ended, in percent."""
    if not run.tasks:
        return 0.0
    return round(100.0 * sum(1 for t in run.tasks.values() if t.final) / len(run.tasks), 1)


def eta(run: RunState, plan: Plan, known: Mapping[str, float], now: float) -> float | None:
    """Seconds left of a run at `now`: what is left of the plan list-scheduled as the scheduler dispatches
    (`capsule.plan.dag.simulate`) with `known` durations by task id (earlier successes of the same spec
    hash; unknown ones count 0); tasks over count nothing, tasks holding a slot what is left of their
    duration. None when the run is over or no duration is known."""
    from capsule.plan.dag import simulate

    if run.finished is not None or not known:
        return None
    done = {t.id: 0.0 for t in run.tasks.values() if t.final}
    running = {}
    for t in run.tasks.values():
        if t.final or not t.holds_slot():
            continue
        a, full = t.current, known.get(t.id, 0.0)
        if a is None or (t.dispatched is not None and a.number != t.dispatched):
            running[t.id] = full  # dispatched, not started yet
        else:
            running[t.id] = 0.0 if a.end is not None else max(0.0, full - (now - a.ts))
    return round(simulate(plan, known, plan.parallel, done, running), 1)


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
                "node": t.node,  # the cluster node its latest attempt ran on (None: this machine)
            }
            for t in (run.tasks[i] for i in run.order)
        ],
    }
