"""One sample of every environment event kind, for the codec round-trip and schema tests."""

from __future__ import annotations

from capsule.events import Event
from capsule.events import env as e
from capsule.events import env_seen as o


def env_samples(t: float) -> tuple[Event, ...]:
    return (
        e.EnvActivated(
            ts=t,
            project="app",
            config_path="/p/capsule.toml",
            root="/p",
            processes=("db", "web"),
            inactivity_timeout_s=1800.0,
            socket="ctl.sock",
        ),
        e.SvcStarting(ts=t + 0.001, name="db", argv=("postgres",), cwd="/p", attempt=0),
        e.SvcStarted(
            ts=t + 0.002,
            name="db",
            pid=900,
            started=t,
            pgid=900,
            health_check="tcp://127.0.0.1:5432",
            trace_session="20261121-143005-123ab",
        ),
        e.SvcReady(ts=t + 0.003, name="db", health="ok"),
        e.SvcUnhealthy(ts=t + 0.004, name="db", reason="no answer within 2s"),
        e.SvcFailed(ts=t + 0.005, name="web", error="command not found: web"),
        e.SvcExited(ts=t + 0.006, name="db", pid=900, exit_code=1, ran_s=0.5),
        e.SvcRestarting(ts=t + 0.007, name="db", restarts=1, delay_s=1.0),
        e.SvcAdopted(
            ts=t + 0.008, name="db", pid=901, started=t, pgid=901, from_session="20261121-143005-123ab"
        ),
        e.SvcGaveUp(ts=t + 0.009, name="db", restarts=5, reason="5 restarts within 60s"),
        e.SvcStopped(ts=t + 0.010, name="db", pid=901, signal="SIGKILL", killed=True, reason="down"),
        e.EnvTouched(ts=t + 0.011, command="status"),
        e.EnvIdle(ts=t + 0.012, idle_s=1800.0, timeout_s=1800.0),
        e.EnvDeactivated(ts=t + 0.013, reason="idle"),
        e.EnvConfigured(
            ts=t,
            config_text="[[process]]\nname='db'\ncommand='postgres'\n",
            config_path="/p/capsule.toml",
            root="/p",
            python="/usr/bin/python3",
        ),
        e.SvcStopping(ts=t + 0.014, name="db", reason="leftovers", signal="SIGTERM", grace_s=10.0),
        e.EnvDeactivating(ts=t + 0.015, reason="down"),
        e.EnvSettled(ts=t + 0.016, failed=("web",)),
        e.EnvReplied(ts=t + 0.017, request=3, ok=True, up=False, error=None),
        o.ObsSpawned(
            ts=t + 0.018,
            name="db",
            run=0,
            pid=900,
            started=t,
            pgid=900,
            cgroup="/sys/fs/cgroup/capsule-x-db-0",
            trace_session=None,
        ),
        o.ObsSpawnFailed(ts=t + 0.019, name="web", run=0, error="command not found: web"),
        o.ObsExited(ts=t + 0.020, name="db", run=0, pid=900, signal="SIGKILL", last_stderr="boom"),
        o.ObsStopped(ts=t + 0.021, name="db", run=0, pid=900, exit_code=0, killed=False, survivors=(77,)),
        o.ObsProbed(ts=t + 0.022, name="db", run=1, ok=False, reason="connection refused"),
        o.ObsMembers(ts=t + 0.023, name="db", run=1, pids=(900, 901), started=(t, t + 0.5)),
        o.ObsDeadline(ts=t + 0.024, key="restart:db"),
        o.ObsIdleCheck(ts=t + 0.025, last_touch=t + 0.001),
        o.ObsRequest(ts=t + 0.026, request=4, op="restart", name="db"),
        o.ObsSignal(ts=t + 0.027, signal="SIGTERM"),
        e.SvcQueued(ts=t + 0.028, name="web", reason="dependency"),
        e.SvcWaiting(ts=t + 0.0285, name="db", reason="stop"),
        e.EnvReconfigured(
            ts=t + 0.029,
            config_text="[[process]]\nname='db'\ncommand='pg'\n",
            removed=("web",),
            changed=("db",),
        ),
        o.ObsTraffic(ts=t + 0.030, name="db", connections=2),
        o.ObsReload(ts=t + 0.031, request=5, config_text="[[process]]\nname='db'\ncommand='pg'\n"),
    )
