"""`capsule env status`'s records and how they are made from an environment's fold.

In the shell rather than in `capsule.api.environments` (which re-exports them) because the supervisor
answers a status request with the same records, built by the same function, as the CLI builds from the
session: the two can't drift.
"""

from __future__ import annotations

import contextlib
import time

import attrs

from capsule.stages.envctl import SOCKET, remove_pointer
from capsule.stages.envproc import EnvSession, process_stats

UP_STATES = ("ready", "running", "exited")


@attrs.frozen(kw_only=True)
class ProcessStatus:
    """One process of an environment, as `env status --json` shows it."""

    name: str
    state: str = attrs.field(
        metadata={"doc": "starting running ready unhealthy backoff exited stopped gave_up lost (or queued)."}
    )
    pid: int | None
    restarts: int
    health: str | None
    exit_code: int | None
    signal: str | None
    uptime_s: float | None
    last_exit: float | None
    cpu_percent: float | None
    rss: int | None
    error: str | None
    trace_session: str | None
    stop_reason: str | None = attrs.field(
        default=None, metadata={"doc": "Why it is stopped: stop, down, idle, dependency, removed…"}
    )


@attrs.frozen(kw_only=True)
class Supervisor:
    pid: int | None
    alive: bool


@attrs.frozen(kw_only=True)
class Reload:
    """What `env up` of a running environment whose config changed did."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]


@attrs.frozen(kw_only=True)
class EnvironmentStatus:
    """`capsule env status --json`."""

    project: str | None
    config: str | None
    session: str
    active: bool
    deactivated: str | None
    supervisor: Supervisor
    processes: tuple[ProcessStatus, ...]
    reloaded: Reload | None = attrs.field(
        default=None, metadata={"doc": "What `env up` of a changed config changed (None: nothing)."}
    )

    @property
    def not_up(self) -> tuple[str, ...]:
        """The processes that are not ready, running or exited (cleanly done)."""
        return tuple(p.name for p in self.processes if p.state not in UP_STATES)


def status_of(env: EnvSession) -> EnvironmentStatus:
    """What `env status` shows of one environment: its fold, with the liveness of its processes and
    supervisor and their CPU and memory now. The CLI computes it from the session; a live supervisor
    computes it from the state it holds (the same fold), for `env status`'s fast path."""
    from capsule.fold.environment import with_liveness

    live = env.live()
    alive = {p.name: p.name in live for p in env.state.processes.values() if p.pid is not None}
    shown = with_liveness(env.state, alive, supervisor_alive=env.supervisor_alive)
    if not env.supervisor_alive:
        with contextlib.suppress(OSError):  # nothing answers on it any more
            (env.path / SOCKET).unlink()
            if env.config_path is not None:  # the session is home/runs/<id>
                remove_pointer(env.path.parent.parent, env.config_path, env.path)
    now = time.time()
    processes = []
    for name, p in env.state.processes.items():
        cgroup = p.tree.cgroup if p.tree is not None and p.tree.run == p.run else None
        proc = live.get(name)
        cpu, rss = process_stats(proc, cgroup) if proc is not None else (None, None)
        processes.append(
            ProcessStatus(
                name=name,
                state=shown[name],
                pid=p.pid,
                restarts=p.restarts,
                health=p.health,
                exit_code=p.exit_code,
                signal=p.signal,
                uptime_s=round(now - p.since, 3) if p.since and p.pid else None,
                last_exit=p.last_exit_ts,
                cpu_percent=cpu,
                rss=rss,
                error=p.error,
                trace_session=p.trace_session,
                stop_reason=p.stop_reason if p.state == "stopped" else None,
            )
        )
    return EnvironmentStatus(
        project=env.state.project,
        config=env.config_path,
        session=env.id,
        active=env.state.ended is None and env.supervisor_alive,
        deactivated=env.state.deactivated,
        supervisor=Supervisor(pid=env.header.recorder_pid, alive=env.supervisor_alive),
        processes=tuple(processes),
    )
