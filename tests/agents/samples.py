"""One hand-built event of every agent-run kind, for the codec's round-trip and schema tests."""

from __future__ import annotations

from capsule.events import Event
from capsule.events.observed import (
    ObsBegin,
    ObsCacheLooked,
    ObsCollected,
    ObsCompensated,
    ObsDeadline,
    ObsExited,
    ObsHook,
    ObsKill,
    ObsLost,
    ObsReaped,
    ObsSampled,
    ObsSpawned,
    ObsSpawnFailed,
    ObsVerified,
    ObsViolation,
)
from capsule.events.placement import RunExecutor, TaskPlaced
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


def task_samples(t0: float) -> tuple[Event, ...]:
    return (
        RunPlanned(
            ts=t0,
            name="nightly",
            parallel=2,
            halt="never",
            on_failure="compensate",
            trace=True,
            tasks=("a", "b"),
            spec_hashes=("h1", "h2"),
            depends_on=("", "a"),
            plan="{}",
        ),
        RunResumed(ts=t0 + 0.1, scheduler_pid=50, scheduler_started=t0, reaped=(51,)),
        TaskQueued(ts=t0 + 0.2, task="a", spec_hash="h1"),
        TaskStarted(
            ts=t0 + 0.3,
            task="a",
            attempt=1,
            pid=52,
            started=t0 + 0.3,
            pgid=52,
            argv=("claude", "-p", "x"),
            log_dir="/runs/x/tasks/a",
            trace_session="20261121-143005-7f3b",
            scheduler_pid=50,
            scheduler_started=t0,
        ),
        TaskLimitExceeded(ts=t0 + 0.4, task="a", attempt=1, limit="memory", measured=2e9, allowed=1e9),
        PolicyViolated(
            ts=t0 + 0.41, task="a", attempt=1, rule="sudo *", argv=("sudo", "ls"), pid=53, live=True
        ),
        TaskExited(
            ts=t0 + 0.5,
            task="a",
            attempt=1,
            exit_code=None,
            signal="SIGKILL",
            outcome="limit_exceeded",
            duration_s=0.2,
            cpu_s=0.1,
            peak_rss=2_000_000_000,
        ),
        TaskRetrying(ts=t0 + 0.5, task="a", attempt=2, delay_s=2.0, reason="exit code 1"),
        TaskVerified(ts=t0 + 0.6, task="a", attempt=2, command="ruff check .", ok=True, exit_code=0),
        HookDecided(ts=t0 + 0.61, task="a", on="post", command="./hook.sh", decision="continue"),
        TaskSucceeded(ts=t0 + 0.62, task="a", attempt=2, duration_s=0.1, spec_hash="h1"),
        TaskFailed(ts=t0 + 0.7, task="b", attempt=1, outcome="timed_out", reason="timed out after 1s"),
        TaskSkipped(ts=t0 + 0.71, task="c", reason="dependency b timed_out"),
        TaskCompensated(ts=t0 + 0.72, task="a", command="git checkout -- .", ok=True, exit_code=0),
        RunFinished(ts=t0 + 0.8, state="failed", succeeded=1, failed=1, skipped=1, duration_s=0.8),
        TaskDispatched(ts=t0 + 0.81, task="a", attempt=3),
        TaskStopping(ts=t0 + 0.82, task="a", attempt=3, reason="timed_out", signal="SIGTERM", grace_s=5.0),
        TaskMembers(ts=t0 + 0.83, task="a", attempt=3, pids=(60, 61), starts=(t0, t0 + 0.01)),
        TaskCollected(
            ts=t0 + 0.84,
            task="d",
            attempt=1,
            outputs=("stdout", "r.json"),
            branch="capsule/r/d",
            commit="ab12",
            files=("f.txt",),
            insertions=1,
            deletions=1,
            cache_key="k1",
        ),
        TaskCached(
            ts=t0 + 0.85, task="e", spec_hash="h2", cache_key="k2", from_run="r0", outputs=("stdout",)
        ),
        *observation_samples(t0 + 0.9),
        RunExecutor(ts=t0 + 0.95, executor="ray", address="auto"),
        TaskPlaced(ts=t0 + 0.96, task="a", attempt=3, node="node-b", node_ip="127.0.0.1", resources=("gpu",)),
    )


def observation_samples(t0: float) -> tuple[Event, ...]:
    """One of each observation the scheduler records (`capsule.events.observed`)."""
    return (
        ObsBegin(ts=t0, resume=True),
        ObsReaped(ts=t0, scheduler_pid=50, scheduler_started=t0 - 1, reaped=(51,)),
        ObsSpawned(ts=t0, task="a", attempt=1, pid=52, started=t0, pgid=52, log_dir="/l", trace_session="x"),
        ObsSpawnFailed(ts=t0, task="b", attempt=1, error="No such file or directory"),
        ObsSampled(ts=t0, task="a", attempt=1, rss=1000, cpu_s=0.5, pids=(52,), starts=(t0,)),
        ObsViolation(ts=t0, task="a", attempt=1, rule="sudo *", argv=("sudo", "ls"), pid=53),
        ObsExited(ts=t0, task="a", attempt=1, exit_code=0, cpu_s=0.5, peak_rss=1000),
        ObsHook(ts=t0, task="a", on="post", index=0, exit_code=0, answer="continue"),
        ObsVerified(ts=t0, task="a", attempt=1, index=0, exit_code=None),
        ObsCompensated(ts=t0, task="a", exit_code=3),
        ObsDeadline(ts=t0, task="a", attempt=1, what="timeout"),
        ObsKill(ts=t0, task=None),
        ObsCollected(ts=t0, task="d", attempt=1, outputs=("stdout",), error="could not keep the result: x"),
        ObsCacheLooked(
            ts=t0, task="e", attempt=1, cache_key="k2", hit=True, from_run="r0", outputs=("stdout",)
        ),
        ObsLost(ts=t0, task="a", attempt=2, node="node-b", error="node died"),
    )
