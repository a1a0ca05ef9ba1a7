"""The environment state machine: a fold over an `env` session's events, one state per process.

`apply(state, event)` updates in place and returns the state; only the state and the event are looked
at, so folding a prefix and then the rest equals folding everything. Whether the supervisor and the
processes are still alive is not the fold's business: the shell hands those facts to `with_liveness`,
which turns processes whose pid is gone into `lost`.
"""

from __future__ import annotations

import attrs

from capsule.events import Event, SessionEnded, SessionStarted
from capsule.events.env import (
    EnvActivated,
    EnvDeactivated,
    EnvIdle,
    EnvTouched,
    SvcAdopted,
    SvcExited,
    SvcFailed,
    SvcGaveUp,
    SvcReady,
    SvcRestarting,
    SvcStarted,
    SvcStarting,
    SvcStopped,
    SvcUnhealthy,
)

# States in which a process of the environment is supposed to exist.
LIVE = frozenset({"starting", "running", "ready", "unhealthy"})
STATES = ("starting", "running", "ready", "unhealthy", "backoff", "exited", "stopped", "gave_up", "lost")


@attrs.define
class ProcessState:
    name: str
    state: str = "stopped"
    pid: int | None = None
    started: float | None = None  # process start time (with pid: its identity)
    pgid: int | None = None
    since: float | None = None  # when it entered its current run (svc.started ts)
    restarts: int = 0
    health: str | None = None  # None: no health check
    health_check: str | None = None
    exit_code: int | None = None
    signal: str | None = None
    last_exit_ts: float | None = None
    error: str | None = None
    trace_session: str | None = None


@attrs.define
class EnvState:
    header: SessionStarted | None = None
    activated: EnvActivated | None = None
    processes: dict[str, ProcessState] = attrs.Factory(dict)
    deactivated: str | None = None  # why, once every process is stopped
    idle: bool = False
    ended: SessionEnded | None = None
    last_touch: float | None = None
    last_ts: float | None = None

    @property
    def project(self) -> str | None:
        return self.activated.project if self.activated else (self.header.name if self.header else None)

    @property
    def active(self) -> bool:
        return self.deactivated is None and self.ended is None

    def process(self, name: str) -> ProcessState:
        if name not in self.processes:
            self.processes[name] = ProcessState(name=name)
        return self.processes[name]

    def live_pids(self) -> list[tuple[str, int, float | None, int | None]]:
        """(name, pid, start time, pgid) of every process the session says should still exist."""
        return [
            (p.name, p.pid, p.started, p.pgid)
            for p in self.processes.values()
            if p.state in LIVE and p.pid is not None
        ]


def _stop(p: ProcessState) -> None:
    p.pid = p.started = p.pgid = None
    p.health = None if p.health_check is None else p.health


def apply(state: EnvState, event: Event) -> EnvState:
    state.last_ts = event.ts
    match event:
        case SessionStarted():
            state.header = event
        case EnvActivated():
            state.activated = event
            for name in event.processes:
                state.process(name)
        case SvcStarting():
            p = state.process(event.name)
            p.state = "starting"
            p.error = None
        case SvcStarted() | SvcAdopted():
            p = state.process(event.name)
            p.pid, p.started, p.pgid, p.since = event.pid, event.started, event.pgid, event.ts
            if isinstance(event, SvcStarted):
                p.health_check = event.health_check
                p.trace_session = event.trace_session
            p.state = "starting" if p.health_check is not None else "running"
            p.health = "pending" if p.health_check is not None else None
        case SvcReady():
            p = state.process(event.name)
            if p.state in LIVE:  # a health result that lands after the stop moves nothing
                p.state, p.health = "ready", event.health
        case SvcUnhealthy():
            p = state.process(event.name)
            if p.state in LIVE:
                p.state, p.health = "unhealthy", event.reason
        case SvcExited():
            p = state.process(event.name)
            p.state = "exited"
            p.exit_code, p.signal, p.last_exit_ts = event.exit_code, event.signal, event.ts
            _stop(p)
        case SvcRestarting():
            p = state.process(event.name)
            p.state, p.restarts = "backoff", event.restarts
        case SvcStopped():
            p = state.process(event.name)
            p.state = "stopped"
            if event.pid is not None:
                p.exit_code, p.signal, p.last_exit_ts = event.exit_code, event.signal, event.ts
            _stop(p)
        case SvcGaveUp():
            p = state.process(event.name)
            p.state, p.error = "gave_up", event.reason
            _stop(p)
        case SvcFailed():
            p = state.process(event.name)
            p.state, p.error = "gave_up", event.error
            _stop(p)
        case EnvTouched():
            state.last_touch = event.ts
        case EnvIdle():
            state.idle = True
        case EnvDeactivated():
            state.deactivated = event.reason
        case SessionEnded():
            state.ended = event
    return state


def fold(events: list[Event] | tuple[Event, ...], state: EnvState | None = None) -> EnvState:
    state = state if state is not None else EnvState()
    for event in events:
        apply(state, event)
    return state


def with_liveness(state: EnvState, alive: dict[str, bool]) -> dict[str, str]:
    """Each process's state given which pids are alive (`alive[name]`): a live state whose pid is gone is `lost`."""
    shown = {}
    for name, p in state.processes.items():
        lost = p.state in LIVE and p.pid is not None and not alive.get(name, False)
        shown[name] = "lost" if lost else p.state
    return shown
