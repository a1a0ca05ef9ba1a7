"""Re-deriving a session's events from a trace file: `capsule replay`, `capsule import` and recovery.

All three run the same pipeline as a live recording, from the file source instead of the live tail.
"""

from __future__ import annotations

import os
import platform
import time
from functools import partial
from pathlib import Path

import attrs
import trio

from capsule import __version__
from capsule.codec import LineDecoder
from capsule.events import (
    Event,
    ProcSampled,
    ProcSpawnFailed,
    SessionEnded,
    SessionRecovered,
    SessionStarted,
    kind_versions,
)
from capsule.events.policy import EVENTS as POLICY_EVENTS
from capsule.fold.tally import Tally
from capsule.stages.pipeline import TraceStats, collect_stage, run_pipeline
from capsule.stages.reader import iter_events
from capsule.stages.record import SessionWriter, record_stage
from capsule.stages.run import _exit_status
from capsule.stages.store import EVENTS, TRACE, create_session, open_private, spool_path
from capsule.stages.trace import read_stage

# Kinds that do not come from the trace: a replay neither derives nor compares them.
NOT_FROM_TRACE = (
    SessionStarted,
    SessionEnded,
    SessionRecovered,
    ProcSampled,
    ProcSpawnFailed,
    *POLICY_EVENTS,
)


def from_trace(events: list[Event]) -> list[Event]:
    return [e for e in events if not isinstance(e, NOT_FROM_TRACE)]


async def rederive(trace: Path, *, level: str) -> tuple[list[Event], TraceStats]:
    """The events a trace file yields (already-redacted input: no redaction, nothing written)."""
    events: list[Event] = []
    stats = await run_pipeline(
        partial(read_stage, trace), partial(collect_stage, into=events), level=level, redact=False
    )
    return events, stats


@attrs.frozen
class Imported:
    session_id: str
    path: Path
    tally: Tally
    lines: int


async def import_log(
    log: Path, *, home: Path, name: str | None, level: str = "process", redact: bool = True
) -> Imported:
    """Turn an `strace -f` log recorded elsewhere into a session."""
    started = time.time()
    mtime = (await trio.Path(log).stat()).st_mtime
    local = time.localtime(mtime)
    # `-tt` stamps carry a time of day only: anchor them to the midnight of the day the log was written.
    midnight = time.mktime((local.tm_year, local.tm_mon, local.tm_mday, 0, 0, 0, 0, 0, -1))
    session_id, path = create_session(home, started)
    writer = SessionWriter(path / EVENTS)
    trace_fd = open_private(path / TRACE)
    try:
        writer.write(
            [
                SessionStarted(
                    ts=started,
                    capsule_version=__version__,
                    session_id=session_id,
                    session_kind="import",
                    name=name or log.name,
                    argv=(str(log),),
                    cwd=os.getcwd(),
                    host=platform.node(),
                    trace_level=level,
                    redacted=redact,
                    kinds=kind_versions(),
                )
            ]
        )
        stats = await run_pipeline(
            partial(read_stage, log),
            partial(record_stage, writer=writer),
            level=level,
            redact=redact,
            trace_fd=trace_fd,
            tt_origin=midnight,
        )
        tally = writer.tally
        code, sig = _exit_status(stats.root_status, 0) if stats.root_status else (None, None)
        writer.write(
            [
                SessionEnded(
                    ts=tally.last_ts if tally.last_ts is not None else started,
                    exit_code=code if sig is None else None,
                    signal=sig,
                    duration_s=round((tally.last_ts or 0) - (tally.first_ts or 0), 6)
                    if tally.events > 1
                    else 0.0,
                    lines=stats.lines,
                    events=tally.events,
                    processes=tally.processes,
                    failed=tally.failed,
                    unparsed=stats.unparsed,
                )
            ]
        )
        return Imported(session_id, path, writer.tally, stats.lines)
    finally:
        writer.close()
        os.fsync(trace_fd)
        os.close(trace_fd)


@attrs.frozen
class Recovered:
    events_before: int
    events_added: int


def _drop_torn_tail(events_file: Path) -> None:
    """A recorder killed mid-write leaves half a line: cut it so appended lines start on their own."""
    with open(events_file, "rb+") as file:
        file.seek(0, 2)
        size = file.tell()
        file.seek(max(0, size - (1 << 16)))
        tail = file.read()
        if tail and not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n")
            file.truncate(size - len(tail) + cut + 1 if cut >= 0 else 0)


async def recover(session_dir: Path, header: SessionStarted, *, home: Path) -> Recovered:
    """Complete a session whose recorder died, from the spooled raw trace (or the kept one).

    The recorder wrote the events of a prefix of the trace; derivation is deterministic, so re-deriving
    the whole trace yields those same events first. Only the rest is appended: the file stays append-only.
    """
    events_file = session_dir / EVENTS
    _drop_torn_tail(events_file)
    decoder = LineDecoder()
    recorded = [e for e in iter_events(session_dir, decoder) if not isinstance(e, NOT_FROM_TRACE)]
    spool = spool_path(home, header.session_id)
    derived: list[Event] = []
    if spool.exists():
        # The spool is the whole raw trace; trace.strace holds only what the recorder had kept of it.
        trace_fd = open_private(session_dir / TRACE, append=False)
        try:
            stats = await run_pipeline(
                partial(read_stage, spool),
                partial(collect_stage, into=derived),
                level=header.trace_level,
                redact=header.redacted,
                trace_fd=trace_fd,
            )
        finally:
            os.fsync(trace_fd)
            os.close(trace_fd)
    else:
        derived, stats = await rederive(session_dir / TRACE, level=header.trace_level)
    added = derived[len(recorded) :]
    tally = Tally()
    for event in derived:
        tally.apply(event)
    code, sig = _exit_status(stats.root_status, 0) if stats.root_status else (None, None)
    now = time.time()
    writer = SessionWriter(events_file, next_seq=decoder.line_no)
    try:
        writer.write(added)
        writer.write(
            [
                SessionRecovered(
                    ts=now,
                    reason="the recorder died before closing the session",
                    events_before=len(recorded),
                    events_added=len(added),
                ),
                SessionEnded(
                    ts=now,
                    exit_code=code if sig is None else None,
                    signal=sig,
                    duration_s=round((tally.last_ts or header.ts) - header.ts, 6),
                    lines=stats.lines,
                    events=decoder.line_no + len(added),
                    processes=tally.processes,
                    failed=tally.failed,
                    unparsed=stats.unparsed,
                ),
            ]
        )
    finally:
        writer.close()
    spool.unlink(missing_ok=True)
    return Recovered(len(recorded), len(added))
