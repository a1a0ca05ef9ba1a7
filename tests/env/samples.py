"""One sample of every environment event kind, for the codec round-trip and schema tests."""

from __future__ import annotations

from capsule.events import Event
from capsule.events import env as e


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
    )
