"""What the agent-run machine asks its driver to do: frozen records, performed by `stages/schedule.py`,
whose results come back as observations (`capsule.events.observed`)."""

from __future__ import annotations

import attrs

from capsule.fold.tasks import RunState


@attrs.frozen(kw_only=True)
class Spawn:
    """Start attempt `attempt` of the task (its command, cwd and env are the plan's; traced if it says so).
    The driver answers at once with `obs.task.spawned` or `obs.task.spawn_failed`, before any other
    observation (a spawn the machine no longer wants is stopped at once)."""

    task: str
    attempt: int


@attrs.frozen(kw_only=True)
class StopTree:
    """Stop the attempt's whole tree: `signal`, then SIGKILL to whatever is left after `grace_s`."""

    task: str
    attempt: int
    signal: str  # SIGTERM | SIGKILL
    grace_s: float


@attrs.frozen(kw_only=True)
class RunHook:
    """Run hook `index` of the plan with `payload` on its stdin; answer with `obs.task.hook`."""

    task: str
    on: str
    index: int
    command: str
    timeout_s: float
    payload: bytes


@attrs.frozen(kw_only=True)
class RunVerify:
    task: str
    attempt: int
    index: int
    command: str
    timeout_s: float


@attrs.frozen(kw_only=True)
class RunCompensate:
    task: str
    command: str
    timeout_s: float


@attrs.frozen(kw_only=True)
class SetDeadline:
    """Observe `obs.task.deadline` once the wall clock reads `at` or later."""

    task: str
    attempt: int
    what: str  # timeout | retry
    at: float


@attrs.frozen(kw_only=True)
class Leftover:
    """An attempt of a dead scheduler: its leading process, its group and every member it recorded."""

    task: str
    attempt: int
    pid: int
    started: float
    pgid: int
    members: tuple[tuple[int, float], ...] = ()
    interrupted: bool = False  # it never ended: its group may still have members nobody recorded


@attrs.frozen(kw_only=True)
class ReapLeftovers:
    """Stop what is left of these attempts (pid and start time must match); answer with `obs.run.reaped`."""

    leftovers: tuple[Leftover, ...]


@attrs.frozen(kw_only=True)
class Collect:
    """Keep what a successful attempt left (stdout, outputs, the workspace's commit, the cache entry);
    answer with `obs.task.collected`. Its success counts only then."""

    task: str
    attempt: int


@attrs.frozen(kw_only=True)
class LookupCache:
    """Look the dispatched attempt up in the cache (at once, like Spawn): `obs.task.cache` answers."""

    task: str
    attempt: int


@attrs.frozen(kw_only=True)
class Finish:
    """The run is over (`run.finished` was emitted): the driver stops, once its stops are done."""

    state: str


Effect = (
    Spawn
    | StopTree
    | RunHook
    | RunVerify
    | RunCompensate
    | SetDeadline
    | ReapLeftovers
    | Collect
    | LookupCache
    | Finish
)


def leftovers(state: RunState) -> tuple[Leftover, ...]:
    """Every recorded attempt of a run, with its members: what a dead scheduler may have left running."""
    out = []
    for t in state.tasks.values():
        for a in t.attempts:
            if a.pid <= 0:
                continue
            members = tuple(sorted(t.members.get(a.number, {}).items()))
            out.append(
                Leftover(
                    task=t.id,
                    attempt=a.number,
                    pid=a.pid,
                    started=a.started,
                    pgid=a.pgid,
                    members=members,
                    # never ended, or ended without a verdict: its tree may not have been swept
                    interrupted=a.end is None or (a is t.current and t.state == "running"),
                )
            )
        if t.dispatched is not None:  # its process may have started, unrecorded: found by marker and cgroup
            out.append(
                Leftover(task=t.id, attempt=t.dispatched, pid=0, started=0.0, pgid=0, interrupted=True)
            )
    return tuple(out)
