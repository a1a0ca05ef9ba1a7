"""Agent-run events: a plan of tasks run by the scheduler (architecture §3, `run.*`, `task.*`, `hook.*`…).

A task's life: `task.queued`, then per attempt `task.started` → `task.exited` (→ `task.verified`…) and
one verdict: `task.retrying` (another attempt follows), `task.succeeded`, `task.failed` (with the
outcome: failed, timed_out, killed, limit_exceeded, denied, spawn_failed) or `task.skipped`.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from capsule.events.base import Event


@attrs.frozen(kw_only=True)
class RunPlanned(Event):
    """The plan a run carries out: its tasks in plan order, each with the hash of its spec."""

    KIND: ClassVar[str] = "run.planned"
    VERSION: ClassVar[int] = 2  # v2: `plan` keeps each task's env names (`env_names`), never values

    name: str
    plan_path: str | None = None
    parallel: int
    halt: str  # never | soon | now
    on_failure: str  # stop | compensate
    trace: bool = False
    tasks: tuple[str, ...]
    spec_hashes: tuple[str, ...]  # parallel to tasks: a resume re-runs a task whose spec changed
    # parallel to tasks: each task's dependencies, space-separated (ids have no spaces; one flat array
    # of strings keeps the line format's tuples one level deep)
    depends_on: tuple[str, ...]
    plan: str = ""  # the plan as canonical JSON, so resume needs nothing but the session


@attrs.frozen(kw_only=True)
class RunResumed(Event):
    """`capsule agents resume`: a new scheduler appends to the session of a run whose scheduler died."""

    KIND: ClassVar[str] = "run.resumed"

    scheduler_pid: int
    scheduler_started: float
    # the leading pid of each earlier attempt that still had processes left, which were killed
    reaped: tuple[int, ...] = ()


@attrs.frozen(kw_only=True)
class TaskQueued(Event):
    KIND: ClassVar[str] = "task.queued"

    task: str
    spec_hash: str


@attrs.frozen(kw_only=True)
class TaskStarted(Event):
    """An attempt began: the process (pid and start time, so a reused pid is never mistaken), its group."""

    KIND: ClassVar[str] = "task.started"

    task: str
    attempt: int
    pid: int
    started: float  # the process's create time (psutil)
    pgid: int
    argv: tuple[str, ...]
    log_dir: str = ""  # where this attempt's stdout and stderr are
    trace_session: str | None = None  # the `run` session recording this attempt's process tree
    scheduler_pid: int | None = None
    scheduler_started: float | None = None


@attrs.frozen(kw_only=True)
class TaskExited(Event):
    """The attempt's process ended (its group has been swept); outcome is what ended it."""

    KIND: ClassVar[str] = "task.exited"
    VERSION: ClassVar[int] = 2

    task: str
    attempt: int
    exit_code: int | None = None
    signal: str | None = None
    outcome: str  # succeeded | failed | timed_out | killed | limit_exceeded | denied | spawn_failed
    duration_s: float
    cpu_s: float | None = None
    peak_rss: int | None = None  # bytes, summed over the tree, the highest sample
    reason: str = ""  # v2: why it could not start (spawn_failed), so a later decision can say so


@attrs.frozen(kw_only=True)
class TaskDispatched(Event):
    """The scheduler gave the task a run slot and its resources, and asked for attempt `attempt`."""

    KIND: ClassVar[str] = "task.dispatched"

    task: str
    attempt: int


@attrs.frozen(kw_only=True)
class TaskStopping(Event):
    """The scheduler is ending a running attempt: why, with which signal, how long before SIGKILL."""

    KIND: ClassVar[str] = "task.stopping"

    task: str
    attempt: int
    reason: str  # timed_out | killed | limit_exceeded | denied
    signal: str  # SIGTERM | SIGKILL
    grace_s: float


@attrs.frozen(kw_only=True)
class TaskMembers(Event):
    """Processes newly seen in an attempt's tree, by pid and start time, so that whatever is left of
    the tree can be stopped after the scheduler itself died (`agents resume`, `kill --all`, `kill-all`)."""

    KIND: ClassVar[str] = "task.members"

    task: str
    attempt: int
    pids: tuple[int, ...]
    starts: tuple[float, ...]  # parallel to pids: each process's create time


@attrs.frozen(kw_only=True)
class TaskRetrying(Event):
    KIND: ClassVar[str] = "task.retrying"

    task: str
    attempt: int  # the attempt that will follow
    delay_s: float
    reason: str


@attrs.frozen(kw_only=True)
class TaskSucceeded(Event):
    KIND: ClassVar[str] = "task.succeeded"

    task: str
    attempt: int
    duration_s: float
    spec_hash: str


@attrs.frozen(kw_only=True)
class TaskFailed(Event):
    KIND: ClassVar[str] = "task.failed"

    task: str
    attempt: int
    outcome: str  # failed | timed_out | killed | limit_exceeded | denied | spawn_failed
    reason: str
    exit_code: int | None = None


@attrs.frozen(kw_only=True)
class TaskSkipped(Event):
    KIND: ClassVar[str] = "task.skipped"

    task: str
    reason: str


@attrs.frozen(kw_only=True)
class TaskLimitExceeded(Event):
    """A sample of the task's tree broke a limit; the tree is killed."""

    KIND: ClassVar[str] = "task.limit_exceeded"

    task: str
    attempt: int
    limit: str  # memory | cpu_time
    measured: float  # bytes for memory, seconds for cpu_time
    allowed: float


@attrs.frozen(kw_only=True)
class HookDecided(Event):
    KIND: ClassVar[str] = "hook.decided"

    task: str
    on: str  # pre | post | error
    command: str
    decision: str  # continue | skip | deny | abort
    reason: str = ""  # why, when the hook did not answer cleanly (timeout, bad answer, exit code)


@attrs.frozen(kw_only=True)
class PolicyViolated(Event):
    KIND: ClassVar[str] = "policy.violated"

    task: str
    attempt: int
    rule: str  # the deny_commands or protect_paths glob that matched
    argv: tuple[str, ...] = ()  # the offending command line
    path: str | None = None  # the protected path, for protect_paths
    pid: int | None = None
    live: bool = False  # seen in the traced tree (else: the task's own command, before it started)


@attrs.frozen(kw_only=True)
class TaskVerified(Event):
    KIND: ClassVar[str] = "task.verified"

    task: str
    attempt: int
    command: str
    ok: bool
    exit_code: int | None = None


@attrs.frozen(kw_only=True)
class TaskCompensated(Event):
    KIND: ClassVar[str] = "task.compensated"

    task: str
    command: str
    ok: bool
    exit_code: int | None = None


@attrs.frozen(kw_only=True)
class RunFinished(Event):
    KIND: ClassVar[str] = "run.finished"

    state: str  # succeeded | failed | aborted
    succeeded: int
    failed: int
    skipped: int
    duration_s: float


# Every kind defined here, for the registry in capsule/events/__init__.py.
EVENTS: tuple[type[Event], ...] = (
    RunPlanned,
    RunResumed,
    TaskQueued,
    TaskDispatched,
    TaskStarted,
    TaskStopping,
    TaskMembers,
    TaskExited,
    TaskRetrying,
    TaskSucceeded,
    TaskFailed,
    TaskSkipped,
    TaskLimitExceeded,
    HookDecided,
    PolicyViolated,
    TaskVerified,
    TaskCompensated,
    RunFinished,
)
