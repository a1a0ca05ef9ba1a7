"""What the agent-run scheduler saw (architecture §9): the inputs of `capsule.plan.machine`, recorded as events.

An observation is written to the `agents` session, just before the events the machine derived from it,
only when it led to any: one that changed nothing (a sample within limits, a deadline of an attempt that
has already ended) leaves the machine's state as it was, so replay needs it no more than the machine did.
`capsule replay --check` feeds these back to the machine and compares what comes out with the rest.
The fold of a run ignores them.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from capsule.events.base import Event


@attrs.frozen(kw_only=True)
class ObsBegin(Event):
    """The scheduler starts work on the plan (`agents run`), or on what a dead scheduler left (`resume`)."""

    KIND: ClassVar[str] = "obs.run.begin"

    resume: bool = False


@attrs.frozen(kw_only=True)
class ObsReaped(Event):
    """Resume: the leftovers of the interrupted attempts were stopped; the new scheduler is this process."""

    KIND: ClassVar[str] = "obs.run.reaped"

    scheduler_pid: int
    scheduler_started: float
    reaped: tuple[int, ...] = ()


@attrs.frozen(kw_only=True)
class ObsSpawned(Event):
    KIND: ClassVar[str] = "obs.task.spawned"

    task: str
    attempt: int
    pid: int
    started: float  # the process's create time
    pgid: int
    log_dir: str = ""
    trace_session: str | None = None


@attrs.frozen(kw_only=True)
class ObsSpawnFailed(Event):
    KIND: ClassVar[str] = "obs.task.spawn_failed"

    task: str
    attempt: int
    error: str  # e.g. "No such file or directory"
    log_dir: str = ""


@attrs.frozen(kw_only=True)
class ObsExited(Event):
    """The attempt's leading process ended (and, when traced, its trace was read to the end)."""

    KIND: ClassVar[str] = "obs.task.exited"

    task: str
    attempt: int
    exit_code: int | None = None
    signal: str | None = None
    cpu_s: float | None = None  # the highest CPU time sampled over the tree
    peak_rss: int | None = None  # the highest RSS sampled over the tree


@attrs.frozen(kw_only=True)
class ObsSampled(Event):
    """The attempt's tree now: its members (pid, start time) and their summed RSS and CPU time."""

    KIND: ClassVar[str] = "obs.task.sampled"

    task: str
    attempt: int
    rss: int
    cpu_s: float
    pids: tuple[int, ...] = ()
    starts: tuple[float, ...] = ()


@attrs.frozen(kw_only=True)
class ObsViolation(Event):
    """The attempt's trace shows a process breaking the plan's policy (`capsule.plan.policy`)."""

    KIND: ClassVar[str] = "obs.task.violation"

    task: str
    attempt: int
    rule: str
    argv: tuple[str, ...] = ()
    path: str | None = None
    pid: int | None = None


@attrs.frozen(kw_only=True)
class ObsHook(Event):
    """A hook ran: how it exited (None: it did not finish in time) and the first word it printed."""

    KIND: ClassVar[str] = "obs.task.hook"

    task: str
    on: str  # pre | post | error
    index: int  # the hook's position in the plan's [[hook]] list
    exit_code: int | None = None
    answer: str = ""


@attrs.frozen(kw_only=True)
class ObsVerified(Event):
    KIND: ClassVar[str] = "obs.task.verified"

    task: str
    attempt: int
    index: int  # the command's position in the task's verify list
    exit_code: int | None = None  # None: it did not finish in time


@attrs.frozen(kw_only=True)
class ObsCompensated(Event):
    KIND: ClassVar[str] = "obs.task.compensated"

    task: str
    exit_code: int | None = None


@attrs.frozen(kw_only=True)
class ObsDeadline(Event):
    """A deadline the machine set has passed: an attempt's timeout, or the end of a retry's backoff."""

    KIND: ClassVar[str] = "obs.task.deadline"

    task: str
    attempt: int
    what: str  # timeout | retry


@attrs.frozen(kw_only=True)
class ObsKill(Event):
    """Someone asked the scheduler to stop a task (`task`) or the whole run (None): SIGINT or SIGTERM."""

    KIND: ClassVar[str] = "obs.run.kill"

    task: str | None = None


@attrs.frozen(kw_only=True)
class ObsCollected(Event):
    """The driver kept what a successful attempt left (see `task.collected`), or says why it could not."""

    KIND: ClassVar[str] = "obs.task.collected"

    task: str
    attempt: int
    outputs: tuple[str, ...] = ()
    workspace: str | None = None
    branch: str | None = None
    commit: str | None = None
    files: tuple[str, ...] = ()
    insertions: int = 0
    deletions: int = 0
    cache_key: str | None = None
    error: str | None = None


@attrs.frozen(kw_only=True)
class ObsCacheLooked(Event):
    """The cache was looked up for a dispatched attempt: a hit (outputs restored) or a miss (spawn it)."""

    KIND: ClassVar[str] = "obs.task.cache"

    task: str
    attempt: int
    cache_key: str
    hit: bool
    from_run: str = ""
    outputs: tuple[str, ...] = ()
    branch: str | None = None
    commit: str | None = None


@attrs.frozen(kw_only=True)
class ObsLost(Event):
    """The node running the attempt died (or its worker did) before the attempt's end could be seen."""

    KIND: ClassVar[str] = "obs.task.lost"

    task: str
    attempt: int
    node: str = ""
    error: str = ""


Observation = (
    ObsBegin
    | ObsReaped
    | ObsSpawned
    | ObsSpawnFailed
    | ObsExited
    | ObsSampled
    | ObsViolation
    | ObsHook
    | ObsVerified
    | ObsCompensated
    | ObsDeadline
    | ObsKill
    | ObsCollected
    | ObsCacheLooked
    | ObsLost
)

EVENTS: tuple[type[Event], ...] = (
    ObsBegin,
    ObsReaped,
    ObsSpawned,
    ObsSpawnFailed,
    ObsExited,
    ObsSampled,
    ObsViolation,
    ObsHook,
    ObsVerified,
    ObsCompensated,
    ObsDeadline,
    ObsKill,
    ObsCollected,
    ObsCacheLooked,
    ObsLost,
)
