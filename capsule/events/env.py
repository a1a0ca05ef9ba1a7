"""Environment lifecycle events: an environment's supervisor and the services it runs (architecture §3).

The supervisor's own pid and start time are in the session header (`recorder_pid`, `recorder_started`);
every process it starts is named by pid *and* start time, so a reused pid is never mistaken for it.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from capsule.events import env_seen as _seen
from capsule.events.base import Event


@attrs.frozen(kw_only=True)
class EnvActivated(Event):
    """The supervisor is up: which project, from which file, which processes in start order."""

    KIND: ClassVar[str] = "env.activated"

    project: str
    config_path: str
    root: str  # the project's working directory
    processes: tuple[str, ...]  # in dependency (start) order
    inactivity_timeout_s: float | None = None
    socket: str = ""  # the control socket, relative to the session directory


@attrs.frozen(kw_only=True)
class SvcStarting(Event):
    """A process is about to be spawned (first start or a restart)."""

    KIND: ClassVar[str] = "svc.starting"

    name: str
    argv: tuple[str, ...]
    cwd: str
    attempt: int = 0  # 0 for the first start, then one more per restart


@attrs.frozen(kw_only=True)
class SvcStarted(Event):
    """A process is running, in its own process group."""

    KIND: ClassVar[str] = "svc.started"

    name: str
    pid: int
    started: float  # the process's start time (psutil create_time), paired with pid
    pgid: int
    health_check: str | None = None  # None: the process counts as up as soon as it runs
    trace_session: str | None = None  # the `run` session recording it when `trace = true`


@attrs.frozen(kw_only=True)
class SvcFailed(Event):
    """A process could not be started: command not found, no such working directory, a failed dependency."""

    KIND: ClassVar[str] = "svc.failed"

    name: str
    error: str


@attrs.frozen(kw_only=True)
class SvcReady(Event):
    """The health check passed (again)."""

    KIND: ClassVar[str] = "svc.ready"

    name: str
    health: str = "ok"


@attrs.frozen(kw_only=True)
class SvcUnhealthy(Event):
    """A ready process failed its health check."""

    KIND: ClassVar[str] = "svc.unhealthy"

    name: str
    reason: str


@attrs.frozen(kw_only=True)
class SvcExited(Event):
    """A process ended on its own (not because the supervisor stopped it)."""

    KIND: ClassVar[str] = "svc.exited"

    name: str
    pid: int
    exit_code: int | None = None
    signal: str | None = None
    ran_s: float = 0.0


@attrs.frozen(kw_only=True)
class SvcRestarting(Event):
    """The restart policy decided to start the process again after `delay_s`."""

    KIND: ClassVar[str] = "svc.restarting"

    name: str
    restarts: int  # restarts so far, this one included
    delay_s: float


@attrs.frozen(kw_only=True)
class SvcStopped(Event):
    """A process was stopped by the supervisor (or by recovery after the supervisor died)."""

    KIND: ClassVar[str] = "svc.stopped"

    name: str
    pid: int | None = None
    exit_code: int | None = None
    signal: str | None = None
    killed: bool = False  # it outlived stop_timeout and its group got SIGKILL
    reason: str = "stop"  # stop | down | idle | signal | recovered


@attrs.frozen(kw_only=True)
class SvcGaveUp(Event):
    """The restart policy gave up: too many restarts within the window."""

    KIND: ClassVar[str] = "svc.gave_up"

    name: str
    restarts: int
    reason: str


@attrs.frozen(kw_only=True)
class SvcAdopted(Event):
    """A process left running by a dead supervisor, found again by pid and start time."""

    KIND: ClassVar[str] = "svc.adopted"

    name: str
    pid: int
    started: float
    pgid: int
    from_session: str


@attrs.frozen(kw_only=True)
class EnvTouched(Event):
    """A CLI (or MCP) interaction, which keeps the environment from going idle."""

    KIND: ClassVar[str] = "env.touched"

    command: str


@attrs.frozen(kw_only=True)
class EnvIdle(Event):
    """Nothing touched the environment for `inactivity_timeout`: it is being stopped."""

    KIND: ClassVar[str] = "env.idle"

    idle_s: float
    timeout_s: float


@attrs.frozen(kw_only=True)
class EnvDeactivated(Event):
    """Every process is stopped; the supervisor is ending."""

    KIND: ClassVar[str] = "env.deactivated"

    reason: str  # down | idle | signal | recovered | error


@attrs.frozen(kw_only=True)
class EnvConfigured(Event):
    """The configuration the supervisor runs, as text: the environment machine's state starts from it."""

    KIND: ClassVar[str] = "env.configured"

    config_text: str
    config_path: str
    root: str
    python: str  # the interpreter that runs `capsule run` for `trace = true` processes


@attrs.frozen(kw_only=True)
class SvcStopping(Event):
    """The supervisor began stopping a process's tree (or what a dead leader left of it: `leftovers`)."""

    KIND: ClassVar[str] = "svc.stopping"

    name: str
    reason: str  # stop | restart | down | idle | signal | leftovers
    signal: str
    grace_s: float


@attrs.frozen(kw_only=True)
class EnvDeactivating(Event):
    """The environment is going down: processes stop in reverse start order, none starts any more."""

    KIND: ClassVar[str] = "env.deactivating"

    reason: str  # down | idle | signal


@attrs.frozen(kw_only=True)
class EnvSettled(Event):
    """Every process came up or failed once after activation (what `env up` waits for)."""

    KIND: ClassVar[str] = "env.settled"

    failed: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class EnvReplied(Event):
    """The answer to a request on the control socket (`obs.env.request` with the same `request`)."""

    KIND: ClassVar[str] = "env.replied"

    request: int
    ok: bool
    up: bool | None = None
    error: str | None = None


# Every kind defined here, for the registry in capsule/events/__init__.py.
EVENTS: tuple[type[Event], ...] = (
    EnvActivated,
    SvcStarting,
    SvcStarted,
    SvcFailed,
    SvcReady,
    SvcUnhealthy,
    SvcExited,
    SvcRestarting,
    SvcStopped,
    SvcGaveUp,
    SvcAdopted,
    EnvTouched,
    EnvIdle,
    EnvDeactivated,
    EnvConfigured,
    SvcStopping,
    EnvDeactivating,
    EnvSettled,
    EnvReplied,
    *_seen.EVENTS,
)
