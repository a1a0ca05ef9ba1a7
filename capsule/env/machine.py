"""The environment machine: what the supervisor decides, as a pure function (h11's `Connection` style).

    activate(state, configured, now)  -> (events, effects)    once, after the session header
    handle(state, observation, now)   -> (events, effects)    for every observation after that

`state` is the fold (`capsule.fold.environment`) of every event so far, the observations included; the
machine never keeps anything else. It folds its own events onto a copy as it goes, so one observation
can cascade (a process fails, its dependants fail; the last stop ends the environment). The driver
(`capsule.stages.supervise`) records the observation and the events, folds them, and performs the effects,
feeding their outcomes back as observations (`capsule.events.env_seen`).

Rules that live here: dependency gating (a process starts once every dependency came up; one that failed
fails its dependants), restart with backoff and give-up (`capsule.env.policy.decide`), the leftovers of a
dead leader stopped before the restart, health hysteresis (pending until the first pass; unhealthy only
from ready; ready again on the next pass), the idle deadline, the stop order (reverse start order, one
at a time) and when each control request is answered.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable

import attrs

from capsule.env.config import ConfigError, HealthCheck, ProcessConfig, ProjectConfig, parse_config
from capsule.env.policy import RestartHistory, decide
from capsule.env.states import LIVE
from capsule.events import Event
from capsule.events.env import (
    EnvActivated,
    EnvConfigured,
    EnvDeactivated,
    EnvDeactivating,
    EnvIdle,
    EnvReconfigured,
    EnvReplied,
    EnvSettled,
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
    ObsDeadline,
    ObsExited,
    ObsIdleCheck,
    ObsMembers,
    ObsProbed,
    ObsReload,
    ObsRequest,
    ObsSignal,
    ObsSpawned,
    ObsSpawnFailed,
    ObsStopped,
    ObsTraffic,
)
from capsule.fold.environment import EnvState, ProcessState, RunTree, apply, unit_marker

SLACK_S = 0.05  # a deadline observed this much early still counts (timer and wall clock differ slightly)
OPS = ("start", "stop", "restart", "down")

Observation = (
    ObsSpawned
    | ObsSpawnFailed
    | ObsExited
    | ObsStopped
    | ObsProbed
    | ObsMembers
    | ObsDeadline
    | ObsIdleCheck
    | ObsRequest
    | ObsSignal
    | ObsTraffic
    | ObsReload
)
OBSERVATION_TYPES: tuple[type[Event], ...] = (
    ObsSpawned,
    ObsSpawnFailed,
    ObsExited,
    ObsStopped,
    ObsProbed,
    ObsMembers,
    ObsDeadline,
    ObsIdleCheck,
    ObsRequest,
    ObsSignal,
    ObsTraffic,
    ObsReload,
)


# -- effects: what the driver is asked to do -----------------------------------------------------------


@attrs.frozen(kw_only=True)
class Spawn:
    """Start one run of a process (in its own session, its cgroup where there is one, with `marker`)."""

    name: str
    run: int
    argv: tuple[str, ...]
    cwd: str
    env: tuple[tuple[str, str], ...]
    env_files: tuple[str, ...]  # absolute paths, read in order, before `env`
    port_check: HealthCheck | None  # fail the spawn if this http/tcp check already answers
    marker: str  # the CAPSULE_UNIT value


@attrs.frozen(kw_only=True)
class StopTree:
    """Stop a run's tree: `signal`, up to `grace` seconds, then SIGKILL sweeps; then say `ObsStopped`."""

    tree: RunTree
    signal: str
    grace: float
    leader: bool  # the leader is alive and its waiter collects it (procs' keep_leader)


@attrs.frozen(kw_only=True)
class Probe:
    """Run the health check of a run every `interval` (every `poll` until the first pass)."""

    name: str
    run: int
    check: HealthCheck
    cwd: str
    interval: float
    poll: float
    timeout: float
    every_failure: bool = False  # report each failure, not only changes (restart_on_unhealthy counts)
    watch_traffic: bool = False  # also report connections on the checked port (activity = "traffic")


@attrs.frozen(kw_only=True)
class CancelProbe:
    name: str


@attrs.frozen(kw_only=True)
class SetDeadline:
    """Say `ObsDeadline(key)` at `at` (wall-clock seconds); a later deadline with the same key replaces it."""

    key: str
    at: float


@attrs.frozen(kw_only=True)
class CheckIdleAt:
    """Say `ObsIdleCheck(last_touch)` at `at`; replaces the previous one."""

    at: float


@attrs.frozen(kw_only=True)
class Reply:
    request: int
    ok: bool
    up: bool | None = None
    error: str | None = None
    changes: tuple[tuple[str, tuple[str, ...]], ...] = ()  # a reload's: added, removed, changed


@attrs.frozen(kw_only=True)
class NotifyUp:
    """Every process came up or failed once: tell whoever waits for `env up`."""

    failed: tuple[str, ...]


@attrs.frozen(kw_only=True)
class Finish:
    """Every process is stopped: the supervisor ends."""

    reason: str


Effect = Spawn | StopTree | Probe | CancelProbe | SetDeadline | CheckIdleAt | Reply | NotifyUp | Finish


# -- the machine ---------------------------------------------------------------------------------------


class _Out:
    """Events and effects of one step; every event is folded onto the working state as it is emitted."""

    def __init__(self, state: EnvState, now: float, before: EnvState | None = None) -> None:
        self.state, self.now = state, now
        self.before = before if before is not None else state  # the state before the observation
        self.events: list[Event] = []
        self.effects: list[Effect] = []

    def emit(self, event: Event) -> None:
        apply(self.state, event)
        self.events.append(event)

    def do(self, effect: Effect) -> None:
        self.effects.append(effect)

    @property
    def config(self) -> ProjectConfig:
        assert self.state.config is not None, "handle() before activate()"
        return self.state.config

    def cfg(self, name: str) -> ProcessConfig:
        return self.state.process_config(name)


def activate(state: EnvState, configured: EnvConfigured, now: float) -> tuple[list[Event], list[Effect]]:
    """The first step after the header: record the configuration, activate, start what has no dependency."""
    out = _Out(state.copy(), now)
    out.emit(configured)
    config = out.config
    out.emit(
        EnvActivated(
            ts=now,
            project=config.name,
            config_path=configured.config_path,
            root=posixpath.normpath(posixpath.join(configured.root, config.working_dir)),
            processes=config.start_order,
            inactivity_timeout_s=config.inactivity_timeout,
            socket="ctl.sock",
        )
    )
    if config.inactivity_timeout is not None:
        out.do(CheckIdleAt(at=now + config.inactivity_timeout))
    _advance(out)
    return out.events, out.effects


def handle(state: EnvState, obs: Event, now: float) -> tuple[list[Event], list[Effect]]:
    """The events and effects that follow `obs`; `obs` itself is folded first but not returned."""
    work = state.copy()
    apply(work, obs)
    out = _Out(work, now, before=state)
    step = _STEPS.get(type(obs))
    if step is not None and work.config is not None:
        step(out, obs)
        _advance(out)
    return out.events, out.effects


# -- one function per observation ----------------------------------------------------------------------


def _current(out: _Out, name: str, run: int) -> ProcessState | None:
    p = out.state.processes.get(name)
    return p if p is not None and p.run == run else None


def _on_spawned(out: _Out, obs: ObsSpawned) -> None:
    p = _current(out, obs.name, obs.run)
    if p is None or p.state != "starting" or p.pid is not None:
        return
    cfg = out.cfg(obs.name)
    hc = cfg.health_check
    out.emit(
        SvcStarted(
            ts=out.now,
            name=obs.name,
            pid=obs.pid,
            started=obs.started,
            pgid=obs.pgid,
            health_check=hc.text if hc else None,
            trace_session=obs.trace_session,
        )
    )
    if p.stopping is not None:  # asked to stop while it was being spawned
        _stop_tree(out, p, leader=True)
    elif hc is not None and out.state.deactivating is None:
        out.do(
            Probe(
                name=obs.name,
                run=obs.run,
                check=hc,
                cwd=_cwd(out, cfg),
                interval=cfg.health_check_interval,
                poll=min(0.1, cfg.health_check_interval),
                timeout=cfg.health_timeout,
                every_failure=cfg.restart_on_unhealthy > 0,
                watch_traffic=cfg.idle_traffic,
            )
        )


def _on_spawn_failed(out: _Out, obs: ObsSpawnFailed) -> None:
    p = _current(out, obs.name, obs.run)
    if p is None or p.state != "starting":
        return
    if p.stopping is not None:
        out.emit(SvcStopped(ts=out.now, name=obs.name, reason=p.stopping))
    else:
        out.emit(SvcFailed(ts=out.now, name=obs.name, error=obs.error))


def _on_exited(out: _Out, obs: ObsExited) -> None:
    p = _current(out, obs.name, obs.run)
    if p is None or p.pid != obs.pid or p.state not in LIVE or p.stopping is not None:
        return  # an earlier run, or a stop in flight: ObsStopped will say how it ended
    cfg = out.cfg(obs.name)
    ran = max(out.now - (p.since or out.now), 0.0)
    out.emit(
        SvcExited(
            ts=out.now,
            name=obs.name,
            pid=obs.pid,
            exit_code=obs.exit_code,
            signal=obs.signal,
            ran_s=round(ran, 6),
        )
    )
    out.do(CancelProbe(name=obs.name))
    if _restart_after(out, p, cfg, ran, obs.exit_code, obs.signal, obs.last_stderr):
        # What the dead leader left (its children, their children) goes before the next run starts.
        _stop_tree(out, p, leader=False, reason="leftovers")


def _restart_after(
    out: _Out,
    p: ProcessState,
    cfg: ProcessConfig,
    ran: float,
    exit_code: int | None,
    signal: str | None,
    last_stderr: str = "",
) -> bool:
    """The restart policy after a run ended: restart (True, backoff deadline set), give up or leave it."""
    history = RestartHistory(restarts_at=p.restarts_at, streak=p.streak, total=p.attempt)
    decision = decide(cfg, history, now=out.now, ran_s=ran, exit_code=exit_code, signal=signal)
    if out.state.deactivating is not None or decision.action == "exit":
        return False
    if decision.action == "give_up":
        reason = decision.reason
        if last_stderr:
            reason += f"; last stderr: {last_stderr[:300]}"
        out.emit(SvcGaveUp(ts=out.now, name=p.name, restarts=decision.history.total, reason=reason))
        return False
    out.emit(
        SvcRestarting(ts=out.now, name=p.name, restarts=decision.history.total, delay_s=decision.delay_s)
    )
    out.do(SetDeadline(key=f"restart:{p.name}", at=out.now + decision.delay_s))
    return True


def _on_stopped(out: _Out, obs: ObsStopped) -> None:
    p = out.state.processes.get(obs.name)
    was = out.before.processes.get(obs.name)
    reason = was.stopping if was is not None else None  # folding `obs` cleared it
    if p is None or reason is None:
        return
    if reason == "leftovers":
        if (
            out.state.deactivating is None
            and p.state == "backoff"
            and p.restart_at is not None
            and out.now >= p.restart_at - SLACK_S
        ):
            _start(out, p, attempt=p.attempt + 1)
        return
    if p.state not in LIVE:
        return
    if reason == "unhealthy":  # restart_on_unhealthy: it ended as a failed run, under the restart policy
        ran = max(out.now - (p.since or out.now), 0.0)
        out.emit(
            SvcExited(
                ts=out.now,
                name=obs.name,
                pid=obs.pid or 0,
                exit_code=obs.exit_code,
                signal=obs.signal,
                ran_s=round(ran, 6),
            )
        )
        cfg = attrs.evolve(out.cfg(obs.name), restart="always")
        _restart_after(out, p, cfg, ran, obs.exit_code, obs.signal or "unhealthy")
        return
    out.emit(
        SvcStopped(
            ts=out.now,
            name=obs.name,
            pid=obs.pid,
            exit_code=obs.exit_code,
            signal=obs.signal,
            killed=obs.killed,
            reason=reason,
        )
    )
    back = reason == "removed" and obs.name in out.config.start_order  # a later reload put it back
    if (reason in ("restart", "reload") or back) and out.state.deactivating is None:
        if reason in ("reload", "removed"):
            out.emit(SvcQueued(ts=out.now, name=obs.name, reason="reload"))
        else:
            _start_requested(out, p)


def _begin_stop(out: _Out, p: ProcessState, reason: str) -> None:
    """Stop a live process for `reason` now, or once every process that depends on it is stopped
    (`svc.waiting`: `_release` stops it then)."""
    if _blocked(out, p.name):
        out.emit(SvcWaiting(ts=out.now, name=p.name, reason=reason))
        return
    out.emit(_stopping(out, p, reason))
    if p.pid is not None:  # else it is being spawned: stopped once it is (_on_spawned)
        _stop_tree(out, p, leader=True)


def _release(out: _Out) -> None:
    """Stop what waited for its dependants to stop, now that none of them is stopping any more."""
    for name in reversed(out.config.start_order):
        p = out.state.processes.get(name)
        if p is None or p.waiting is None or _blocked(out, name):
            continue
        reason = p.waiting
        if p.state in LIVE and p.stopping is None:
            _begin_stop(out, p, reason)
        else:  # it ended meanwhile (or is in backoff): it just stays stopped
            out.emit(SvcStopped(ts=out.now, name=name, reason=reason))


def _on_probed(out: _Out, obs: ObsProbed) -> None:
    p = _current(out, obs.name, obs.run)
    if p is None or p.state not in LIVE or p.pid is None or p.stopping is not None or p.waiting is not None:
        return  # (being stopped, or about to be once its dependants are)
    if obs.ok and p.state != "ready":
        out.emit(SvcReady(ts=out.now, name=obs.name))
    elif not obs.ok and p.state == "ready":
        out.emit(SvcUnhealthy(ts=out.now, name=obs.name, reason=obs.reason))
    limit = out.cfg(obs.name).restart_on_unhealthy
    if not obs.ok and limit and p.failures >= limit and out.state.deactivating is None:
        _begin_stop(out, p, "unhealthy")


def _on_deadline(out: _Out, obs: ObsDeadline) -> None:
    kind, _, arg = obs.key.partition(":")
    if kind == "restart":
        p = out.state.processes.get(arg)
        if (
            p is not None
            and p.state == "backoff"
            and p.stopping is None
            and p.restart_at is not None
            and out.now >= p.restart_at - SLACK_S
            and out.state.deactivating is None
        ):
            _start(out, p, attempt=p.attempt + 1)
    elif kind == "reply" and arg.isdigit():
        request = out.state.requests.get(int(arg))
        if request is not None and request.name is not None:
            q = out.state.processes.get(request.name)
            _reply(out, request, ok=True, up=q is not None and q.settled is True)


def _on_idle_check(out: _Out, obs: ObsIdleCheck) -> None:
    if out.state.deactivating is not None:
        return
    timeout = out.config.inactivity_timeout
    last = out.state.last_touch if out.state.last_touch is not None else obs.last_touch
    if timeout is not None and out.now - last >= timeout - SLACK_S:
        out.emit(EnvIdle(ts=out.now, idle_s=round(out.now - last, 3), timeout_s=timeout))
        out.emit(EnvDeactivating(ts=out.now, reason="idle"))
        return
    for cfg in out.config.processes:
        p = out.state.processes.get(cfg.name)
        if cfg.inactivity_timeout is None or p is None or p.state not in LIVE or p.stopping is not None:
            continue
        since = max(last, p.touched or 0.0, p.since or 0.0)
        if out.now - since >= cfg.inactivity_timeout - SLACK_S:
            _stop_with_dependants(out, p, "idle")
    due = _idle_due(out)
    if due is not None:
        out.do(CheckIdleAt(at=due))


def _idle_due(out: _Out) -> float | None:
    """When the next idle check is due: the environment's timeout, or a live process's own."""
    last = out.state.last_touch or out.now
    due = [last + out.config.inactivity_timeout] if out.config.inactivity_timeout is not None else []
    for cfg in out.config.processes:
        p = out.state.processes.get(cfg.name)
        if cfg.inactivity_timeout is not None and p is not None and p.state in LIVE:
            due.append(max(last, p.touched or 0.0, p.since or 0.0) + cfg.inactivity_timeout)
    return min(due) if due else None


def _on_request(out: _Out, obs: ObsRequest) -> None:
    state = out.state
    if obs.op == "down":
        if state.deactivating is None:
            out.emit(EnvDeactivating(ts=out.now, reason="down"))
        return
    if obs.op not in OPS:
        _reply(out, obs, ok=False, error=f"unknown op {obs.op!r}")
        return
    p = state.processes.get(obs.name or "")
    if p is None or obs.name not in out.config.start_order:
        _reply(out, obs, ok=False, error=f"no process named {obs.name!r} in {out.config.name}")
        return
    if state.deactivating is not None:
        _reply(out, obs, ok=False, error=f"{out.config.name} is going down")
        return
    if (p.stopping is not None and p.stopping != "leftovers") or p.waiting is not None:
        return  # answered once that stop is over (see _answer)
    if p.stopping == "leftovers" and obs.op in ("start", "restart"):
        # A dead leader's leftovers are still being swept: the new run starts once they are gone.
        if p.state == "backoff":
            out.emit(SvcStopped(ts=out.now, name=p.name, reason=obs.op))
        return
    if obs.op == "stop":
        _stop_with_dependants(out, p, "stop")
    elif obs.op == "start":
        if p.state in LIVE or p.state == "backoff":
            _reply(out, obs, ok=True, up=p.settled is True)
        else:
            _start_requested(out, p)
    elif p.state in LIVE:  # restart
        _stop_with_dependants(out, p, "restart")
    else:
        _stop_dependants(out, p.name)
        if p.state == "backoff":
            out.emit(SvcStopped(ts=out.now, name=p.name, reason="restart"))
        _start_requested(out, p)


def _stop_dependants(out: _Out, name: str) -> None:
    """Every process that depends on `name` (directly or not) stops first: `stopped (dependency)`."""
    for other in reversed(_dependants(out, name)):
        q = out.state.processes[other]
        if q.stopping is not None or q.waiting is not None:
            continue
        if q.state in LIVE:
            _begin_stop(out, q, "dependency")
        elif q.state == "backoff" or q.pending_start:
            out.emit(SvcStopped(ts=out.now, name=other, reason="dependency"))


def _stop_with_dependants(out: _Out, p: ProcessState, reason: str) -> None:
    """Stop `p` for `reason` once everything that depends on it is stopped."""
    _stop_dependants(out, p.name)
    if p.state in LIVE:
        _begin_stop(out, p, reason)
    elif p.state == "backoff":
        out.emit(SvcStopped(ts=out.now, name=p.name, reason=reason))


def _dependants(out: _Out, name: str) -> list[str]:
    """The processes that depend on `name`, directly or through others, in start order."""
    found: set[str] = set()
    changed = True
    while changed:
        changed = False
        for p in out.config.processes:
            if p.name not in found and any(d == name or d in found for d in p.depends_on):
                found.add(p.name)
                changed = True
    return [n for n in out.config.start_order if n in found and n in out.state.processes]


def _blocked(out: _Out, name: str) -> bool:
    """A dependant of `name` is still being stopped (one at a time, dependants first)."""
    return any(out.state.processes[d].stopping not in (None, "leftovers") for d in _dependants(out, name))


def _on_signal(out: _Out, obs: ObsSignal) -> None:
    if out.state.deactivating is None:
        out.emit(EnvDeactivating(ts=out.now, reason="signal"))


def _on_members(out: _Out, obs: ObsMembers) -> None:
    """Nothing to decide: the fold keeps them, for whoever stops the tree later."""


def _on_traffic(out: _Out, obs: ObsTraffic) -> None:
    """Nothing to decide: the fold notes the activity, the next idle check sees it."""


def _on_reload(out: _Out, obs: ObsReload) -> None:
    """Run a changed config: new processes start, removed ones stop, changed ones restart (dependency
    order), the others keep running untouched."""
    old = out.config
    path = out.state.configured.config_path if out.state.configured else old.file
    try:
        new = parse_config(obs.config_text, path, default_name=old.name)
    except ConfigError as exc:
        out.do(Reply(request=obs.request, ok=False, error=str(exc)))
        return
    if out.state.deactivating is not None:
        out.do(Reply(request=obs.request, ok=False, error=f"{old.name} is going down"))
        return
    before = {p.name: p for p in old.processes}
    after = {p.name: p for p in new.processes}
    added = tuple(n for n in new.start_order if n not in before)
    removed = tuple(n for n in old.start_order if n not in after)
    project_changed = (old.env, old.env_file, old.working_dir) != (new.env, new.env_file, new.working_dir)
    changed = tuple(
        n
        for n in new.start_order
        if n in before and (before[n] != after[n] or project_changed or n in obs.env_changed)
    )
    # a process whose dependency restarts restarts after it as well
    restarting = set(changed)
    for n in changed:
        restarting.update(_dependants(out, n))
    out.emit(
        EnvReconfigured(
            ts=out.now, config_text=obs.config_text, added=added, removed=removed, changed=changed
        )
    )
    for n in reversed(removed):
        q = out.state.processes.get(n)
        if q is None:
            continue
        if q.state in LIVE and q.stopping is None:
            _begin_stop(out, q, "removed")
        elif q.stopping is None:
            out.emit(SvcStopped(ts=out.now, name=n, reason="removed"))
    for n in reversed(new.start_order):
        q = out.state.processes[n]
        if n not in restarting or q.stopping is not None or q.waiting is not None:
            continue
        if q.state in LIVE:
            _begin_stop(out, q, "reload")
        else:
            out.emit(SvcQueued(ts=out.now, name=n, reason="reload"))
    for n in added:
        out.emit(SvcQueued(ts=out.now, name=n, reason="reload"))
    out.do(
        Reply(
            request=obs.request,
            ok=True,
            changes=(
                ("added", added),
                ("removed", removed),
                ("changed", tuple(n for n in new.start_order if n in restarting)),
            ),
        )
    )


_STEPS: dict[type[Event], Callable[[_Out, object], None]] = {
    ObsSpawned: _on_spawned,  # type: ignore[dict-item]
    ObsSpawnFailed: _on_spawn_failed,  # type: ignore[dict-item]
    ObsExited: _on_exited,  # type: ignore[dict-item]
    ObsStopped: _on_stopped,  # type: ignore[dict-item]
    ObsProbed: _on_probed,  # type: ignore[dict-item]
    ObsDeadline: _on_deadline,  # type: ignore[dict-item]
    ObsIdleCheck: _on_idle_check,  # type: ignore[dict-item]
    ObsRequest: _on_request,  # type: ignore[dict-item]
    ObsSignal: _on_signal,  # type: ignore[dict-item]
    ObsMembers: _on_members,  # type: ignore[dict-item]
    ObsTraffic: _on_traffic,  # type: ignore[dict-item]
    ObsReload: _on_reload,  # type: ignore[dict-item]
}


# -- helpers -------------------------------------------------------------------------------------------


def _root(out: _Out) -> str:
    """The project's working directory (what `env.activated` says)."""
    return out.state.activated.root if out.state.activated else "."


def _cwd(out: _Out, cfg: ProcessConfig) -> str:
    return posixpath.normpath(posixpath.join(_root(out), cfg.working_dir))


def _argv(out: _Out, cfg: ProcessConfig) -> tuple[str, ...]:
    if not cfg.trace:
        return cfg.argv
    session = out.state.header.session_id if out.state.header else ""
    python = out.state.configured.python if out.state.configured else "python3"
    name = f"{out.config.name}.{cfg.name}"
    tracer: tuple[str, ...] = ("--tracer", cfg.tracer) if cfg.tracer != "strace" else ()
    if cfg.guarded_by_its_recorder and not out.config.policy.empty and out.state.configured:
        tracer += ("--policy", out.state.configured.config_path)  # its [policy] table
    return (python, "-m", "capsule", "run", "--name", name, "--parent", session, *tracer, "--", *cfg.argv)


def _start(out: _Out, p: ProcessState, *, attempt: int) -> None:
    cfg = out.cfg(p.name)
    cwd = _cwd(out, cfg)
    out.emit(SvcStarting(ts=out.now, name=p.name, argv=_argv(out, cfg), cwd=cwd, attempt=attempt))
    env_files = []
    if out.config.env_file:
        env_files.append(posixpath.join(_root(out), out.config.env_file))
    if cfg.env_file:
        env_files.append(posixpath.join(cwd, cfg.env_file))
    session = out.state.header.session_id if out.state.header else ""
    out.do(
        Spawn(
            name=p.name,
            run=p.run,
            argv=_argv(out, cfg),
            cwd=cwd,
            env=tuple({**dict(out.config.env), **dict(cfg.env)}.items()),
            env_files=tuple(env_files),
            port_check=cfg.health_check if cfg.health_check and cfg.health_check.kind != "cmd" else None,
            marker=unit_marker(session, p.name, p.run),
        )
    )


def _start_requested(out: _Out, p: ProcessState) -> None:
    """A start asked for by a request: dependencies must be up now; the answer waits for it to settle."""
    for dep in out.cfg(p.name).depends_on:
        q = out.state.processes.get(dep)
        if q is None or q.settled is not True or q.state not in LIVE:
            out.emit(SvcFailed(ts=out.now, name=p.name, error=f"dependency {dep!r} is not up"))
            for request in list(out.state.requests.values()):
                if request.name == p.name and request.op in ("start", "restart"):
                    _reply(out, request, ok=True, up=False)
            return
    _start(out, p, attempt=0)
    for other in _dependants(out, p.name):  # what stopped (or failed) for want of it comes back after it
        q = out.state.processes[other]
        if (q.state == "stopped" and q.stop_reason == "dependency") or (
            q.state == "gave_up" and (q.error or "").startswith("dependency ")
        ):
            out.emit(SvcQueued(ts=out.now, name=other, reason="dependency"))
    cfg = out.cfg(p.name)
    for request in list(out.state.requests.values()):
        if request.name == p.name and request.op in ("start", "restart"):
            out.do(SetDeadline(key=f"reply:{request.request}", at=out.now + max(5.0, cfg.health_timeout * 3)))


def _stopping(out: _Out, p: ProcessState, reason: str) -> SvcStopping:
    cfg = out.cfg(p.name)
    return SvcStopping(
        ts=out.now, name=p.name, reason=reason, signal=cfg.stop_signal, grace_s=cfg.stop_timeout
    )


def _stop_tree(out: _Out, p: ProcessState, *, leader: bool, reason: str | None = None) -> None:
    """Ask for the run's tree to be stopped (and say so first when `reason` is given)."""
    if p.tree is None:
        return  # nothing recorded of it: nothing to sweep
    if reason is not None:
        out.emit(_stopping(out, p, reason))
    cfg = out.cfg(p.name)
    out.do(CancelProbe(name=p.name))
    out.do(StopTree(tree=p.tree, signal=cfg.stop_signal, grace=cfg.stop_timeout, leader=leader))


def _reply(
    out: _Out, request: ObsRequest, *, ok: bool, up: bool | None = None, error: str | None = None
) -> None:
    out.emit(EnvReplied(ts=out.now, request=request.request, ok=ok, up=up, error=error))
    out.do(Reply(request=request.request, ok=ok, up=up, error=error))


def _advance(out: _Out) -> None:
    """What follows from the state as it now is: gating, the stop order, the up notice, the answers."""
    state = out.state
    if state.deactivating is not None:
        _deactivate_step(out)
    else:
        _release(out)
        _gate(out)
    if (
        state.settled is None
        and state.deactivating is None
        and state.processes
        and all(p.settled is not None for p in state.processes.values())
    ):
        failed = tuple(n for n, p in state.processes.items() if p.settled is not True)
        out.emit(EnvSettled(ts=out.now, failed=failed))
        out.do(NotifyUp(failed=failed))
    _answer(out)
    if state.deactivating is None and any(c.inactivity_timeout is not None for c in out.config.processes):
        due = _idle_due(out)  # a process of its own timeout started, or was used: look again then
        if due is not None:
            out.do(CheckIdleAt(at=due))


def _gate(out: _Out) -> None:
    for name in out.config.start_order:
        p = out.state.processes[name]
        if not p.pending_start or p.stopping is not None:
            continue  # (a stop still in flight ends first: a reload put a removed process back)
        deps = [out.state.processes[d] for d in out.cfg(name).depends_on]
        # A dependency that failed but will run again (backoff, a restart under way) is waited for.
        failed = next(
            (
                d
                for d in deps
                if d.settled is False and d.state in ("stopped", "exited", "gave_up") and not d.pending_start
            ),
            None,
        )
        if failed is not None:
            out.emit(SvcFailed(ts=out.now, name=name, error=f"dependency {failed.name!r} did not come up"))
        elif all(d.settled is True and d.stopping is None and not d.pending_start for d in deps):
            _start(out, p, attempt=0)


def _deactivate_step(out: _Out) -> None:
    state = out.state
    reason = state.deactivating or "down"
    if state.deactivated is not None:
        return
    order = out.config.start_order
    retired = [n for n in state.processes if n not in order]  # a reload removed them: first to go
    for name in [*retired, *reversed(order)]:
        p = state.processes[name]
        if p.stopping is not None:
            return  # one at a time, in reverse start order
        if p.state in LIVE:
            if p.pid is None:
                return  # being spawned: stopped once it is
            out.emit(_stopping(out, p, reason))
            _stop_tree(out, p, leader=True)
            return
        if p.state == "backoff":
            out.emit(SvcStopped(ts=out.now, name=name, reason=reason))
        if p.tree is not None:
            _stop_tree(out, p, leader=False, reason="leftovers")
            return
    for request in list(state.requests.values()):  # every answer goes out before the end
        if request.op == "down":
            _reply(out, request, ok=True)
        else:
            _reply(out, request, ok=False, error=f"{out.config.name} went down")
    out.emit(EnvDeactivated(ts=out.now, reason=reason))
    out.do(Finish(reason=reason))


def _answer(out: _Out) -> None:
    """Answer the requests whose operation is over (`down` is answered by the last stop)."""
    state = out.state
    for request in list(state.requests.values()):
        p = state.processes.get(request.name or "")
        if request.op == "down" or p is None:
            continue
        if request.op == "stop":
            if p.stopping is None and p.state not in LIVE:
                _reply(out, request, ok=True, up=False)
        elif (
            p.stopping is None
            and p.settled is not None
            and p.asked_at is not None
            and p.asked_at >= request.ts
        ):
            _reply(out, request, ok=True, up=p.settled)
