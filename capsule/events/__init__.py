"""The vocabulary: every event kind Capsule writes, one frozen attrs record per kind and version."""

from __future__ import annotations

from capsule.events import env as _env
from capsule.events import observed as _observed
from capsule.events import placement as _placement
from capsule.events import policy as _policy
from capsule.events import tasks as _tasks
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
    FORMAT_VERSION,
    SessionEnded,
    SessionRecovered,
    SessionStarted,
    SessionTimedOut,
)

EVENT_TYPES: tuple[type[Event], ...] = (
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
    *_env.EVENTS,
    *_tasks.EVENTS,
    *_observed.EVENTS,
    *_policy.EVENTS,
    *_placement.EVENTS,
)

KINDS: dict[str, type[Event]] = {cls.KIND: cls for cls in EVENT_TYPES}


def kind_versions() -> dict[str, int]:
    """Every kind this writer knows and its current version, for the session header."""
    return {cls.KIND: cls.VERSION for cls in EVENT_TYPES}


__all__ = [
    "EVENT_TYPES",
    "FORMAT_VERSION",
    "KINDS",
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
