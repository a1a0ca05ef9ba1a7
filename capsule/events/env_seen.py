"""What an environment's supervisor saw: the observations it fed its machine (`capsule.env.machine`).

They are recorded like any event, so `capsule replay --check` can feed them to the machine again and
compare what it decides with what was recorded. Each names the process by `run`: how many times it had
been started before (0 for the first start), so a late observation of an earlier run is recognised.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from capsule.events.base import Event


@attrs.frozen(kw_only=True)
class ObsSpawned(Event):
    """A process was spawned: its identity and where its tree is held."""

    KIND: ClassVar[str] = "obs.svc.spawned"

    name: str
    run: int
    pid: int
    started: float
    pgid: int
    cgroup: str | None = None  # its cgroup v2 directory, when Capsule could create one
    trace_session: str | None = None


@attrs.frozen(kw_only=True)
class ObsSpawnFailed(Event):
    """A process could not be spawned (command or working_dir missing, env_file unreadable, port taken)."""

    KIND: ClassVar[str] = "obs.svc.spawn_failed"

    name: str
    run: int
    error: str


@attrs.frozen(kw_only=True)
class ObsExited(Event):
    """A process's leader ended (on its own, or because it was being stopped)."""

    KIND: ClassVar[str] = "obs.svc.exited"

    name: str
    run: int
    pid: int
    exit_code: int | None = None
    signal: str | None = None
    last_stderr: str = ""  # the last non-blank stderr line, the likely cause when it gives up


@attrs.frozen(kw_only=True)
class ObsStopped(Event):
    """A stop of a tree finished: nothing of it is left (or `survivors` are)."""

    KIND: ClassVar[str] = "obs.svc.stopped"

    name: str
    run: int
    pid: int | None = None  # the leader, when there was one to stop
    exit_code: int | None = None
    signal: str | None = None
    killed: bool = False  # something outlived the grace and got SIGKILL
    survivors: tuple[int, ...] = ()


@attrs.frozen(kw_only=True)
class ObsProbed(Event):
    """A health check's answer changed (the first answer of a run always counts as a change)."""

    KIND: ClassVar[str] = "obs.svc.probed"

    name: str
    run: int
    ok: bool
    reason: str = ""


@attrs.frozen(kw_only=True)
class ObsMembers(Event):
    """The members of a process's tree changed: pids and start times, so a later command finds them."""

    KIND: ClassVar[str] = "obs.svc.members"

    name: str
    run: int
    pids: tuple[int, ...]
    started: tuple[float, ...]  # start time of each pid, in the same order


@attrs.frozen(kw_only=True)
class ObsDeadline(Event):
    """A deadline the machine set passed."""

    KIND: ClassVar[str] = "obs.env.deadline"

    key: str


@attrs.frozen(kw_only=True)
class ObsIdleCheck(Event):
    """The idle deadline passed: when the control socket was last used (any request, status included)."""

    KIND: ClassVar[str] = "obs.env.idle_check"

    last_touch: float


@attrs.frozen(kw_only=True)
class ObsRequest(Event):
    """A request on the control socket that changes something (status and touch only touch)."""

    KIND: ClassVar[str] = "obs.env.request"

    request: int
    op: str
    name: str | None = None


@attrs.frozen(kw_only=True)
class ObsSignal(Event):
    """The supervisor received a signal that ends it (SIGTERM, SIGINT, SIGHUP)."""

    KIND: ClassVar[str] = "obs.env.signal"

    signal: str


@attrs.frozen(kw_only=True)
class ObsTraffic(Event):
    """Connections were seen on a process's health port (`activity = "traffic"`): it is in use."""

    KIND: ClassVar[str] = "obs.svc.traffic"

    name: str
    connections: int


@attrs.frozen(kw_only=True)
class ObsReload(Event):
    """`env up` asked a running supervisor to run a changed config (`config_text`, masked as recorded);
    `env_changed` names the processes whose env values changed (the masked text cannot show it)."""

    KIND: ClassVar[str] = "obs.env.reload"

    request: int
    config_text: str
    env_changed: tuple[str, ...] = ()


EVENTS: tuple[type[Event], ...] = (
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
OBSERVATIONS = EVENTS
