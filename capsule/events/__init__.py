"""The vocabulary: every event kind Capsule writes, one frozen attrs record per kind and version.

Only the run records (process and session kinds) load with the package: `capsule run` writes nothing
else, and building the ninety attrs classes of every kind cost ~35 ms of each start. `EVENT_TYPES` and
`KINDS` (what a reader decodes with) import the other modules on first use; `kind_versions` (every
session header) reads `VERSIONS`, a table tests/codec/test_codec_schemas.py checks against the classes.
"""

from __future__ import annotations

from capsule.events.base import Event
from capsule.events.process import (
    FileChanged,
    FileOpened,
    NetConnected,
    NetSocket,
    ProcExec,
    ProcExited,
    ProcSampled,
    ProcSignaled,
    ProcSpawned,
    ProcSpawnFailed,
    TraceUnparsed,
)
from capsule.events.session import (
    DERIVATION,
    FORMAT_VERSION,
    SessionEnded,
    SessionRecovered,
    SessionStarted,
    SessionTimedOut,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    EVENT_TYPES: tuple[type[Event], ...]
    KINDS: dict[str, type[Event]]

# Every kind and its current version, in EVENT_TYPES order (the order the session header lists them).
VERSIONS: dict[str, int] = {
    "session.started": 4,
    "session.ended": 3,
    "session.recovered": 1,
    "session.timed_out": 1,
    "proc.spawned": 1,
    "proc.exec": 2,
    "proc.exited": 1,
    "proc.signaled": 1,
    "proc.spawn_failed": 1,
    "file.opened": 1,
    "file.changed": 1,
    "net.connected": 1,
    "net.socket": 1,
    "trace.unparsed": 1,
    "proc.sampled": 2,
    "env.activated": 1,
    "svc.starting": 1,
    "svc.started": 1,
    "svc.failed": 1,
    "svc.ready": 1,
    "svc.unhealthy": 1,
    "svc.exited": 1,
    "svc.restarting": 1,
    "svc.stopped": 1,
    "svc.gave_up": 1,
    "svc.adopted": 1,
    "env.touched": 1,
    "env.idle": 1,
    "env.deactivated": 1,
    "env.configured": 1,
    "svc.stopping": 1,
    "env.deactivating": 1,
    "env.settled": 1,
    "env.replied": 1,
    "svc.queued": 1,
    "svc.waiting": 1,
    "env.reconfigured": 1,
    "obs.svc.spawned": 1,
    "obs.svc.spawn_failed": 1,
    "obs.svc.exited": 1,
    "obs.svc.stopped": 1,
    "obs.svc.probed": 1,
    "obs.svc.members": 1,
    "obs.env.deadline": 1,
    "obs.env.idle_check": 1,
    "obs.env.request": 1,
    "obs.env.signal": 1,
    "obs.svc.traffic": 1,
    "obs.env.reload": 1,
    "run.planned": 2,
    "run.resumed": 1,
    "task.queued": 1,
    "task.dispatched": 1,
    "task.started": 1,
    "task.stopping": 1,
    "task.members": 1,
    "task.exited": 2,
    "task.retrying": 1,
    "task.succeeded": 1,
    "task.failed": 1,
    "task.skipped": 1,
    "task.limit_exceeded": 1,
    "hook.decided": 1,
    "policy.violated": 1,
    "task.verified": 1,
    "task.compensated": 1,
    "task.collected": 1,
    "task.cached": 1,
    "run.finished": 1,
    "obs.run.begin": 1,
    "obs.run.reaped": 1,
    "obs.task.spawned": 1,
    "obs.task.spawn_failed": 1,
    "obs.task.exited": 1,
    "obs.task.sampled": 1,
    "obs.task.violation": 1,
    "obs.task.hook": 1,
    "obs.task.verified": 1,
    "obs.task.compensated": 1,
    "obs.task.deadline": 1,
    "obs.run.kill": 1,
    "obs.task.collected": 1,
    "obs.task.cache": 1,
    "obs.task.lost": 1,
    "policy.applied": 1,
    "policy.blocked": 1,
    "policy.checked": 1,
    "run.executor": 1,
    "task.placed": 1,
}


def kind_versions() -> dict[str, int]:
    """Every kind this writer knows and its current version, for the session header."""
    return dict(VERSIONS)


def _all_types() -> tuple[type[Event], ...]:
    from capsule.events import env, observed, placement, policy, tasks

    return (
        SessionStarted,
        SessionEnded,
        SessionRecovered,
        SessionTimedOut,
        ProcSpawned,
        ProcExec,
        ProcExited,
        ProcSignaled,
        ProcSpawnFailed,
        FileOpened,
        FileChanged,
        NetConnected,
        NetSocket,
        TraceUnparsed,
        ProcSampled,
        *env.EVENTS,
        *tasks.EVENTS,
        *observed.EVENTS,
        *policy.EVENTS,
        *placement.EVENTS,
    )


def __getattr__(name: str) -> object:
    # EVENT_TYPES and KINDS, built (with the modules of every kind) the first time one is asked for.
    global EVENT_TYPES, KINDS
    if name in ("EVENT_TYPES", "KINDS"):
        EVENT_TYPES = _all_types()
        KINDS = {cls.KIND: cls for cls in EVENT_TYPES}
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DERIVATION",
    "EVENT_TYPES",
    "FORMAT_VERSION",
    "KINDS",
    "VERSIONS",
    "Event",
    "FileChanged",
    "FileOpened",
    "NetConnected",
    "NetSocket",
    "ProcExec",
    "ProcExited",
    "ProcSampled",
    "ProcSignaled",
    "ProcSpawnFailed",
    "ProcSpawned",
    "SessionEnded",
    "SessionRecovered",
    "SessionStarted",
    "SessionTimedOut",
    "TraceUnparsed",
    "kind_versions",
]
