"""Session lifecycle events: the header that opens every session, its end, and recovery after a crash."""

from __future__ import annotations

from typing import ClassVar

import attrs

from capsule.events.base import Event

# The container format of events.jsonl. A reader refuses a header whose format is newer than this.
FORMAT_VERSION = 1

# How this Capsule turns what a session recorded (a raw trace; an env's or an agents run's observations)
# into events. Bumped whenever the same recorded input derives different events (a tracker or a machine
# changed what it emits), so `capsule replay --check` can tell a session derived by an older Capsule from
# a changed file. Each bump is a line in schemas/CHANGELOG.md; the golden sessions' bless step refuses
# to rewrite their events without one.
DERIVATION = 2


@attrs.frozen(kw_only=True)
class SessionStarted(Event):
    """The first line of every session: what was recorded, how, and with which vocabulary."""

    KIND: ClassVar[str] = "session.started"
    VERSION: ClassVar[int] = 4  # v2: `parent`; v3: `trace_clock`, `trace_origin`; v4: `derivation`

    format: int = FORMAT_VERSION
    capsule_version: str
    session_id: str
    session_kind: str  # run | env | agents | import
    name: str | None = None
    argv: tuple[str, ...] = ()
    cwd: str = ""
    host: str = ""
    tracer: str | None = None  # path of the strace binary, None when nothing was traced
    tracer_version: str | None = None
    tracer_flags: tuple[str, ...] = ()
    trace_level: str = "process"  # process | file | net | all
    redacted: bool = True
    recorder_pid: int | None = None  # the capsule process writing this session
    recorder_started: float | None = None  # its start time, so a reused pid is never mistaken for it
    tracer_pid: int | None = None
    tracer_started: float | None = None
    kinds: dict[str, int] = attrs.field(factory=dict)  # every kind the writer may use -> its version
    # The session this one was recorded for (an env or agents session tracing a service or a task):
    # `capsule ls` and `latest` skip such child sessions unless asked.
    parent: str | None = None
    # How the trace tells time: `epoch` (-ttt), `time-of-day` (-t, -tt), `relative` (-r) or `none`;
    # None when nothing was traced or the writer predates v3 (`capsule run` always traces with -ttt).
    trace_clock: str | None = None
    # The epoch seconds the trace's own clock counts from, so a replay derives the same times: the
    # midnight of `time-of-day` stamps, the start of `relative` ones, and the time of every line of a
    # trace with no stamps (an import takes them from the log file's modification time).
    trace_origin: float | None = None
    # The DERIVATION its events were derived with (every writer names its own); None for a session
    # written before v4 named it.
    derivation: int | None = None


@attrs.frozen(kw_only=True)
class SessionEnded(Event):
    """The last line of a session: how it ended, and whether its trace is whole."""

    KIND: ClassVar[str] = "session.ended"
    VERSION: ClassVar[int] = 3  # v2: `duration_s` may be null, `incomplete`; v3: `timed_out_s`

    exit_code: int | None = None
    signal: str | None = None
    duration_s: float | None = 0.0  # None: the trace carries no timestamps
    lines: int = 0  # trace lines read
    events: int = 0  # events written, this one excluded
    processes: int = 0  # processes seen, so `capsule ls` need not fold the whole session
    failed: int = 0  # processes that exited non-zero or were killed by a signal
    unparsed: int = 0  # trace lines the parser could not understand
    dropped: int = 0  # always 0: channels apply backpressure instead of dropping
    error: str | None = None  # why the command could not run, if it could not
    # Why the trace stops before the command ended (strace killed: a cut last line, processes with no
    # exit), with how much is missing when known; None when the trace is whole.
    incomplete: str | None = None
    # The `--timeout` limit when it stopped the command (its session.timed_out may be far from the end,
    # where `capsule ls` reads); None when the command ran to its own end.
    timed_out_s: float | None = None


@attrs.frozen(kw_only=True)
class SessionTimedOut(Event):
    """`capsule run --timeout`: the command ran out of time and its whole tree was stopped."""

    KIND: ClassVar[str] = "session.timed_out"

    limit_s: float  # the time limit
    grace_s: float  # between SIGTERM and SIGKILL
    terminated: int  # processes sent SIGTERM
    killed: int  # processes still there after the grace, sent SIGKILL


@attrs.frozen(kw_only=True)
class SessionRecovered(Event):
    """Written when a session whose recorder died was completed from its raw trace."""

    KIND: ClassVar[str] = "session.recovered"

    reason: str
    events_before: int  # whole events found in events.jsonl before recovery
    events_added: int
