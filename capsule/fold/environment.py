"""The environment's state: a fold over an `env` session's events, one `ProcessState` per process.

`apply(state, event)` updates in place and returns the state; only the state and the event are looked
at, so folding a prefix and then the rest equals folding everything. This is the whole state of the
environment machine (`capsule.env.machine`): its restart history, pending requests, in-flight stops and
the identities of every tree's members are folded here from what it emitted, observations included.
Process states move only along `capsule.env.states`. Whether the supervisor and the processes are still
alive is not the fold's business: the shell hands those facts to `with_liveness`.
"""

from __future__ import annotations

import attrs

from capsule.env.config import ConfigError, ProcessConfig, ProjectConfig, parse_config
from capsule.env.states import LIVE, State, next_state
from capsule.events import Event, SessionEnded, SessionStarted
from capsule.events.env import (
    EnvActivated,
    EnvConfigured,
    EnvDeactivated,
    EnvDeactivating,
    EnvIdle,
    EnvReconfigured,
    EnvReplied,
    EnvSettled,
    EnvTouched,
    SvcAdopted,
    SvcExited,
    SvcFailed,
    SvcGaveUp,
    SvcQueued,
    SvcReady,
    SvcRestarting,
    SvcStarted,
    SvcStarting,
    SvcStopped,
    SvcStopping,
    SvcUnhealthy,
    SvcWaiting,
)
from capsule.events.env_seen import (
    ObsIdleCheck,
    ObsMembers,
    ObsProbed,
    ObsRequest,
    ObsSpawned,
    ObsStopped,
    ObsTraffic,
)

STATES = ("starting", "running", "ready", "unhealthy", "backoff", "exited", "stopped", "gave_up", "lost")
KEEP_RESTARTS = 64  # restart times kept per process (the policy looks at those within restart_window)


@attrs.frozen(kw_only=True)
class RunTree:
    """What one run of a process may have left: enough to find its members after the leader is gone."""

    name: str
    run: int
    pid: int | None
    started: float | None
    pgid: int | None
    members: tuple[tuple[int, float], ...] = ()
    cgroup: str | None = None
    marker: str | None = None  # the CAPSULE_UNIT value of the run (see `unit_marker`)


def unit_marker(session_id: str, name: str, run: int) -> str:
    """The CAPSULE_UNIT value one run of a process (and everything it starts) carries."""
    return f"{session_id}/{name}/{run}"


@attrs.define
class ProcessState:
    name: str
    state: State = "stopped"
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
    # The machine's memory of this process, all folded from events:
    runs: int = 0  # svc.starting events so far; the current run is runs - 1
    attempt: int = 0  # restarts since the last requested start
    restarts_at: tuple[float, ...] = ()  # when each restart was decided (svc.restarting ts)
    streak: int = 0  # consecutive restarts without a stable run
    restart_at: float | None = None  # when the backoff ends
    settled: bool | None = None  # came up (True) or failed (False) since it was last asked to start
    pending_start: bool = False  # to start once its dependencies are up
    stopping: str | None = None  # the reason of a stop in flight (`leftovers` for a dead leader's tree)
    asked_at: float | None = None  # when it was last started on request (svc.starting with attempt 0)
    tree: RunTree | None = None  # the last run's tree, until a stop saw nothing of it left
    failures: int = 0  # failed health checks in a row since it was last ready (restart_on_unhealthy)
    stop_reason: str | None = None  # why it is stopped (svc.stopped's reason): `dependency`, `idle`…
    touched: float | None = None  # its own last activity: a request naming it, traffic on its port
    waiting: str | None = None  # to stop for this reason once its dependants are stopped (svc.waiting)

    @property
    def run(self) -> int:
        return self.runs - 1


@attrs.define
class EnvState:
    header: SessionStarted | None = None
    configured: EnvConfigured | None = None
    config: ProjectConfig | None = None
    activated: EnvActivated | None = None
    processes: dict[str, ProcessState] = attrs.Factory(dict)
    deactivating: str | None = None  # why the environment is going down
    deactivated: str | None = None  # why, once every process is stopped
    idle: bool = False
    settled: EnvSettled | None = None
    requests: dict[int, ObsRequest] = attrs.Factory(dict)  # asked and not yet answered
    ended: SessionEnded | None = None
    last_touch: float | None = None
    last_ts: float | None = None
    retired: dict[str, ProcessConfig] = attrs.Factory(dict)  # removed by a reload, until stopped

    def process_config(self, name: str) -> ProcessConfig:
        """A process's config: the running config's, or the last one a reload took it out of."""
        assert self.config is not None
        try:
            return self.config.process(name)
        except KeyError:
            return self.retired[name]

    @property
    def project(self) -> str | None:
        return self.activated.project if self.activated else (self.header.name if self.header else None)

    @property
    def active(self) -> bool:
        return self.deactivated is None and self.ended is None

    def copy(self) -> EnvState:
        """An independent copy (every field but `processes` and `requests` is immutable)."""
        return attrs.evolve(
            self,
            processes={name: attrs.evolve(p) for name, p in self.processes.items()},
            requests=dict(self.requests),
            retired=dict(self.retired),
        )

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

    def trees(self) -> list[RunTree]:
        """Every run whose tree may still have members: live ones and dead leaders' unswept leftovers."""
        return [p.tree for p in self.processes.values() if p.tree is not None]


def _stop(p: ProcessState) -> None:
    p.pid = p.started = p.pgid = None
    p.health = None if p.health_check is None else p.health


def _move(p: ProcessState, event: Event) -> bool:
    target = next_state(p.state, event.KIND, health_check=p.health_check is not None)
    if target is None:
        return False
    p.state = target
    return True


def _config(text: str, path: str, name: str | None) -> ProjectConfig | None:
    try:
        return parse_config(text, path, default_name=name or "project")
    except ConfigError:
        return None


def _window(state: EnvState, name: str) -> float | None:
    if state.config is None:
        return None
    try:
        return state.config.process(name).restart_window
    except KeyError:
        return None


def apply(state: EnvState, event: Event) -> EnvState:
    state.last_ts = event.ts
    match event:
        case SessionStarted():
            state.header = event
        case EnvConfigured():
            state.configured = event
            state.config = _config(
                event.config_text, event.config_path, state.header.name if state.header else None
            )
        case EnvReconfigured():
            path = state.configured.config_path if state.configured else "capsule.toml"
            new = _config(event.config_text, path, state.config.name if state.config else None)
            if new is not None:
                if state.config is not None:
                    for c in state.config.processes:
                        if c.name in event.removed:
                            state.retired[c.name] = c
                state.config = new
                for name in new.start_order:
                    state.process(name)
        case EnvActivated():
            state.activated = event
            state.last_touch = event.ts
            for name in event.processes:
                state.process(name).pending_start = True
        case SvcStarting():
            p = state.process(event.name)
            _move(p, event)
            p.error = None
            p.runs += 1
            p.attempt = event.attempt
            p.pending_start = False
            p.restart_at = None
            p.stop_reason = None
            p.failures = 0
            if event.attempt == 0:  # a requested start begins a new restart history
                p.restarts_at, p.streak, p.settled, p.asked_at = (), 0, None, event.ts
        case ObsSpawned():
            p = state.process(event.name)
            marker = unit_marker(state.header.session_id, event.name, event.run) if state.header else None
            p.tree = RunTree(
                name=event.name,
                run=event.run,
                pid=event.pid,
                started=event.started,
                pgid=event.pgid,
                cgroup=event.cgroup,
                marker=marker,
            )
        case ObsMembers():
            p = state.process(event.name)
            if p.tree is not None and p.tree.run == event.run:
                p.tree = attrs.evolve(p.tree, members=tuple(zip(event.pids, event.started, strict=True)))
        case SvcStarted() | SvcAdopted():
            p = state.process(event.name)
            if isinstance(event, SvcStarted):
                p.health_check = event.health_check
                p.trace_session = event.trace_session
            _move(p, event)
            p.pid, p.started, p.pgid, p.since = event.pid, event.started, event.pgid, event.ts
            p.health = "pending" if p.health_check is not None else None
            if p.health_check is None:  # up (again: a restart that runs lets its dependants start)
                p.settled = True
        case SvcReady():
            p = state.process(event.name)
            if _move(p, event):  # a health result that lands after the stop moves nothing
                p.health = event.health
                p.settled = True
                p.failures = 0
        case SvcUnhealthy():
            p = state.process(event.name)
            if _move(p, event):
                p.health = event.reason
        case SvcExited():
            p = state.process(event.name)
            _move(p, event)
            p.exit_code, p.signal, p.last_exit_ts = event.exit_code, event.signal, event.ts
            window = _window(state, event.name)
            if window is not None and event.ran_s >= window:
                p.streak = 0
            if p.settled is None:
                p.settled = False
            _stop(p)
        case SvcRestarting():
            p = state.process(event.name)
            _move(p, event)
            p.restarts = event.restarts
            p.restarts_at = (*p.restarts_at, event.ts)[-KEEP_RESTARTS:]
            p.streak += 1
            p.restart_at = event.ts + event.delay_s
        case SvcStopping():
            p = state.process(event.name)
            p.stopping, p.waiting = event.reason, None
        case SvcWaiting():
            state.process(event.name).waiting = event.reason
        case ObsProbed():
            p = state.process(event.name)
            if p.run == event.run and p.state in ("ready", "unhealthy"):
                p.failures = 0 if event.ok else p.failures + 1
        case ObsTraffic():
            state.process(event.name).touched = event.ts
        case SvcQueued():
            p = state.process(event.name)
            p.pending_start = True
            p.stop_reason = None
        case ObsStopped():
            p = state.process(event.name)
            p.stopping = None
            if p.tree is not None and p.tree.run == event.run and not event.survivors:
                p.tree = None
        case SvcStopped():
            p = state.process(event.name)
            _move(p, event)
            p.pending_start = False
            p.restart_at = None
            p.stop_reason = event.reason
            p.waiting = None
            if (
                p.stopping != "leftovers"
            ):  # a dead leader's tree is still being swept: obs.svc.stopped says when done
                p.stopping = None
            if event.pid is not None:
                p.exit_code, p.signal, p.last_exit_ts = event.exit_code, event.signal, event.ts
            _stop(p)
            in_config = state.config is not None and event.name in state.config.start_order
            if event.reason == "removed" and p.tree is None and p.stopping is None and not in_config:
                del state.processes[event.name]  # a reload took it out of the config
                state.retired.pop(event.name, None)
        case SvcGaveUp() | SvcFailed():
            p = state.process(event.name)
            _move(p, event)
            p.error = event.reason if isinstance(event, SvcGaveUp) else event.error
            p.pending_start = False
            p.restart_at = None
            if p.settled is None:
                p.settled = False
            _stop(p)
        case ObsRequest():
            state.requests[event.request] = event
            state.last_touch = event.ts
            if event.name in state.processes:
                state.processes[event.name].touched = event.ts
        case EnvReplied():
            state.requests.pop(event.request, None)
        case ObsIdleCheck():
            state.last_touch = max(state.last_touch or 0.0, event.last_touch)
        case EnvTouched():
            state.last_touch = event.ts
        case EnvSettled():
            state.settled = event
        case EnvIdle():
            state.idle = True
        case EnvDeactivating():
            state.deactivating = event.reason
            for p in state.processes.values():
                p.pending_start = False
                p.waiting = None
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


def with_liveness(
    state: EnvState, alive: dict[str, bool], *, supervisor_alive: bool = False
) -> dict[str, str]:
    """Each process's state given which pids are alive (`alive[name]`): a live state whose pid is gone is
    `lost` once its supervisor is dead too; while the supervisor lives it is `exited` (the supervisor
    has yet to write so, and decides what follows)."""
    shown: dict[str, str] = {}
    for name, p in state.processes.items():
        gone = p.state in LIVE and p.pid is not None and not alive.get(name, False)
        shown[name] = ("exited" if supervisor_alive else "lost") if gone else p.state
    return shown
