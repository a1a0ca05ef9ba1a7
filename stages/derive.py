"""Re-deriving a session's events from a trace file: `capsule replay`, `capsule import` and recovery.

All three run the same pipeline as a live recording, from the file source instead of the live tail.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from capsule import __version__
from capsule.codec import LineDecoder
from capsule.events import (
    DERIVATION,
    Event,
    ProcSampled,
    ProcSpawnFailed,
    SessionEnded,
    SessionRecovered,
    SessionStarted,
    SessionTimedOut,
    kind_versions,
)
from capsule.fold.tally import Tally
from capsule.parse import StraceParser
from capsule.parse.forms import (
    ClockProbe,
    anchor,
    has_pid_prefix,
    merge_per_pid,
    probe_clock,
    relative_elapsed,
)
from capsule.stages import import_part
from capsule.stages.import_part import SPLIT_MIN
from capsule.stages.pipeline import (
    Source,
    TraceStats,
    collect_stage,
    exit_status,
    incompleteness,
    run_pipeline,
)
from capsule.stages.record import SessionWriter, record_stage
from capsule.stages.store import (
    EVENTS,
    TRACE,
    ZST,
    create_session,
    open_private,
    open_readable,
    spool_path,
    trace_name,
    tracer_kind,
)
from capsule.stages.trace import (
    CHUNK,
    LineAligner,
    bytes_stage,
    read_stage,
    relayed_read_stage,
    split_read_stage,
)

if TYPE_CHECKING:
    from capsule.fold.labels import RuleSet


def not_from_trace() -> tuple[type[Event], ...]:
    """Kinds that do not come from the trace: a replay neither derives nor compares them."""
    from capsule.events.policy import EVENTS as POLICY_EVENTS  # not loaded by an import (~5 ms)

    return (
        SessionStarted,
        SessionEnded,
        SessionRecovered,
        SessionTimedOut,
        ProcSampled,
        ProcSpawnFailed,
        *POLICY_EVENTS,
    )


def from_trace(events: list[Event]) -> list[Event]:
    kinds = not_from_trace()
    return [e for e in events if not isinstance(e, kinds)]


async def rederive(
    trace: Path, *, level: str, header: SessionStarted | None = None, tracer: str = "strace"
) -> tuple[list[Event], TraceStats]:
    """The events a trace file yields (already-redacted input: no redaction, nothing written).

    `header` supplies the clock of an imported `-t`/`-tt`/`-r` or unstamped log (`trace_origin`, `ts`);
    `tracer` says which parser reads the file (`strace`, or `ebpf` for a trace.ebpf).
    """
    events: list[Event] = []
    clock = clock_of(header)
    stats = await run_pipeline(
        partial(read_stage, trace),
        partial(collect_stage, into=events),
        level=level,
        redact=False,
        tt_origin=clock.get("tt_origin", 0.0),
        default_ts=clock.get("default_ts", 0.0),
        tracer=tracer,
        ends=header is not None and header.session_kind == "import",
    )
    return events, stats


async def rederive_session(
    session_dir: Path, header: SessionStarted, *, answers: RuleSet | None = None
) -> list[Event]:
    """A traced session's whole events.jsonl as this Capsule derives it from the session's raw trace:
    its header naming this DERIVATION (as it was, if it did and nothing changed), the re-derived events with what the trace does not hold (samples,
    policy decisions, a timeout, a recovery) where they were recorded, and a `session.ended` re-tallied
    when the trace's events changed (`answers`: the exit rules to count failures with).
    """
    from capsule.stages.reader import iter_events, parent_writer, stoppers

    written = list(iter_events(session_dir, LineDecoder()))
    derived, stats = await rederive(
        session_dir / trace_name(header.tracer),
        level=header.trace_level,
        header=header,
        tracer=tracer_kind(header.tracer),
    )
    kinds = not_from_trace()
    ended = next((e for e in reversed(written) if isinstance(e, SessionEnded)), None)
    # What the trace does not hold keeps its place: after as many trace events as preceded it when it
    # was written (a sample or a decision is written as it happens, ahead of the trace events of its
    # instant), so re-deriving with the recorder's own derivation gives back the file as it was.
    body: list[Event] = []
    taken = preceding = 0  # derived events placed; trace events that preceded the next kept one
    for event in written[1:]:
        if not isinstance(event, kinds):
            preceding += 1
        elif event is not ended:
            upto = min(preceding, len(derived))
            body += derived[taken:upto]
            taken = max(taken, upto)
            body.append(event)
    body += derived[taken:]
    same = derived == from_trace(written)
    if not (same and header.derivation == DERIVATION):  # this Capsule writes it: its kinds, its derivation
        header = attrs.evolve(header, derivation=DERIVATION, kinds=kind_versions())
    events: list[Event] = [header, *body]
    if ended is not None and same:
        events.append(ended)
    elif ended is not None:
        tally = Tally(answers=answers, stoppers=stoppers(header, parent_writer(session_dir, header)))
        for event in events:
            tally.apply(event)
        events.append(
            attrs.evolve(
                ended,
                lines=stats.lines,
                events=len(events),
                processes=tally.processes,
                failed=tally.failed,
                unparsed=stats.unparsed,
            )
        )
    return events


def clock_of(header: SessionStarted | None) -> dict[str, float]:
    """The pipeline's clock arguments for re-deriving a session's events: as when it was recorded."""
    if header is None or header.trace_clock in (None, "epoch"):
        return {}
    return {"tt_origin": header.trace_origin or 0.0, "default_ts": header.ts}


@attrs.frozen
class Imported:
    session_id: str
    path: Path
    tally: Tally
    lines: int
    events: int  # what session.ended says: the events before it


class ImportRefused(ValueError):
    """The input is not an strace log this import can read as a whole (one line, for the CLI)."""


# `PREFIX.1234`: one file of `strace -ff -o PREFIX`.
_PER_PID = re.compile(r"(?P<prefix>.+)\.(?P<pid>\d{1,7})")
PROBE_BYTES = 1 << 16  # how much of a log's head and tail tells its form


def trace_inputs(path: Path) -> list[tuple[int | None, Path]]:
    """The files an import reads: `[(None, log)]` for one `-o FILE` log, `[(pid, file), ...]` for the files
    of `strace -ff -o PREFIX`, given as the folder holding them or as PREFIX itself."""
    if path.is_dir():
        groups: dict[str, list[tuple[int | None, Path]]] = {}
        for child in sorted(path.iterdir()):
            m = _PER_PID.fullmatch(child.name)
            if m is not None and child.is_file():
                groups.setdefault(m["prefix"], []).append((int(m["pid"]), child))
        if not groups:
            raise ImportRefused(f"{path}: no `strace -ff -o PREFIX` files (PREFIX.<pid>) in this folder")
        if len(groups) > 1:
            names = ", ".join(sorted(groups))
            raise ImportRefused(f"{path}: files of several `strace -ff` runs ({names}); import one prefix")
        return next(iter(groups.values()))
    if path.is_file():
        m = _PER_PID.fullmatch(path.name)
        if m is None:
            return [(None, path)]
        siblings = _siblings(path.parent, m["prefix"])
        with open(path, "rb") as file:
            head = file.read(PROBE_BYTES)
        if has_pid_prefix(head):
            return [(None, path)]  # an `-o FILE` log that happens to be named `x.123`
        if len(siblings) > 1:
            raise ImportRefused(
                f"{path}: one file of `strace -ff -o {m['prefix']}` ({len(siblings)} files, one per process);"
                f" import them together: capsule import {path.parent / m['prefix']}"
            )
        return [(int(m["pid"]), path)]  # the whole -ff set: one process; its pid is in the name
    found = _siblings(path.parent, path.name)
    if not found:
        raise ImportRefused(f"{path}: no such file, folder or `strace -ff -o` prefix")
    return found


def _siblings(folder: Path, prefix: str) -> list[tuple[int | None, Path]]:
    if not folder.is_dir():
        return []
    found: list[tuple[int | None, Path]] = []
    for child in sorted(folder.iterdir()):
        m = _PER_PID.fullmatch(child.name)
        if m is not None and m["prefix"] == prefix and child.is_file():
            found.append((int(m["pid"]), child))
    return found


@attrs.frozen
class _Log:
    """An import's input, read and framed: the source stage, its clock and how its end looks."""

    source: Callable[[trio.MemorySendChannel[bytes]], Awaitable[None]]
    probe: ClockProbe
    head: bytes
    tail: bytes
    mtime: float
    cut: bool  # a file ends mid-line: strace was killed while writing it
    elapsed: float  # the sum of `-r` stamps
    path: Path | None = None  # the one file it reads (not the merged files of `strace -ff`)


def _read_log(inputs: list[tuple[int | None, Path]]) -> _Log:
    """Read what the import needs to know before the first event is written (runs in a thread)."""
    mtime = max(p.stat().st_mtime for _pid, p in inputs)
    if inputs[0][0] is None:
        path = inputs[0][1]
        with open_readable(path) as file:
            head = file.read(PROBE_BYTES)
        size = path.stat().st_size
        with open(path, "rb") as file:
            file.seek(max(0, size - PROBE_BYTES))
            tail = file.read()
        probe = probe_clock(head, tail)
        elapsed = 0.0
        if probe.clock == "relative":
            with open(path, "rb") as file:
                for chunk in _line_chunks(file):
                    elapsed = relative_elapsed(chunk, elapsed)
        return _Log(
            partial(read_stage, path),
            probe,
            head,
            tail,
            mtime,
            bool(tail) and not tail.endswith(b"\n"),
            elapsed,
            path,
        )
    files = [(pid, p.read_bytes()) for pid, p in inputs if pid is not None]
    merged = b"".join(merge_per_pid(files))
    probe = probe_clock(merged[:PROBE_BYTES], merged[-PROBE_BYTES:])
    cut = any(data and not data.endswith(b"\n") for _pid, data in files)
    elapsed = relative_elapsed(merged) if probe.clock == "relative" else 0.0
    return _Log(
        partial(bytes_stage, merged), probe, merged[:PROBE_BYTES], merged[-PROBE_BYTES:], mtime, cut, elapsed
    )


def _line_chunks(file: Any) -> Iterator[bytes]:
    aligner = LineAligner()
    while data := file.read(CHUNK):
        yield aligner.feed(data)
    yield aligner.close()


def _midnight(ts: float) -> float:
    local = time.localtime(ts)
    return time.mktime((local.tm_year, local.tm_mon, local.tm_mday, 0, 0, 0, 0, 0, -1))


async def import_log(
    log: Path,
    *,
    home: Path,
    name: str | None,
    level: str = "process",
    redact: bool = True,
    relay: bool = True,
) -> Imported:
    """Turn an `strace -f` log recorded elsewhere (or the files of `strace -ff`) into a session.

    The session's times are the trace's: it starts at the first stamp and ends at the last. A failed
    import leaves no session behind. With `relay` a single file is redacted by the spool relay in a
    second process while this one parses (both cores; the same redaction, line by line).
    """
    try:
        inputs = trace_inputs(log)
        read = await trio.to_thread.run_sync(_read_log, inputs)
        origin, started = anchor(
            read.probe, mtime=read.mtime, midnight=_midnight(read.mtime), elapsed=read.elapsed
        )
        session_id, path = create_session(home, time.time())
        try:
            return await _import_into(
                session_id,
                path,
                log,
                read,
                origin,
                started,
                name=name,
                level=level,
                redact=redact,
                relay=relay,
            )
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
    finally:
        import_part.discard()  # a second process started for this log and not used (it was not split)


def _import_source(
    read: _Log, scratch: Path, *, level: str, redact: bool, relay: bool
) -> tuple[Source, bool]:
    """How an import reads its log: split between two processes (a large plain `-ttt` log), through the
    redacting relay, or here alone; and whether that source redacts (then the pipeline does not)."""
    log = read.path
    if log is None or not relay:
        return read.source, False
    size = log.stat().st_size
    if (
        read.probe.clock == "epoch"
        and size >= SPLIT_MIN
        and log.suffix != ZST
        and StraceParser.filters_from(read.head)
        and b"\r\n" not in read.head  # CRLF: the parser's feed reads it, the part's line picking does not
    ):
        split = partial(split_read_stage, log, size=size, redact=redact, level=level, scratch=scratch)
        return split, False
    if redact:
        return partial(relayed_read_stage, log), True
    return read.source, False


async def _import_into(
    session_id: str,
    path: Path,
    log: Path,
    read: _Log,
    origin: float | None,
    started: float,
    *,
    name: str | None,
    level: str,
    redact: bool,
    relay: bool,
) -> Imported:
    source, relayed = _import_source(read, path, level=level, redact=redact, relay=relay)
    header = SessionStarted(
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
        derivation=DERIVATION,
        trace_clock=read.probe.clock,
        trace_origin=origin,
    )
    writer = SessionWriter(path / EVENTS)
    trace_fd = open_private(path / TRACE)
    try:
        writer.write([header])
        stats = await run_pipeline(
            source,
            partial(record_stage, writer=writer),
            level=level,
            redact=redact and not relayed,
            trace_fd=trace_fd,
            tt_origin=header.trace_origin or 0.0,
            default_ts=header.ts if header.trace_clock != "epoch" else 0.0,
            writeback=True,
            ends=True,
        )
        tally = writer.tally
        if tally.processes == 0:
            raise ImportRefused(f"{log}: no strace lines recognised (is it an `strace -f` log?)")
        code, sig = exit_status(stats.root_status, 0) if stats.root_status else (None, None)
        timed = read.probe.clock != "none"
        ended = SessionEnded(
            ts=tally.last_ts if tally.last_ts is not None else started,
            exit_code=code if sig is None else None,
            signal=sig,
            duration_s=round(max(0.0, (tally.last_ts or started) - started), 6) if timed else None,
            lines=stats.lines,
            events=tally.events,
            processes=tally.processes,
            failed=tally.failed,
            unparsed=stats.unparsed,
            incomplete=incompleteness(stats, cut=read.cut or stats.cut, imported=tally.processes),
        )
        writer.write([ended])
        return Imported(session_id, path, writer.tally, stats.lines, ended.events)
    finally:
        writer.close()
        os.fsync(trace_fd)
        os.close(trace_fd)


def _after_recorded(derived: list[Event], recorded: list[Event]) -> list[Event]:
    """The derived events a recovery appends: those after the recorded prefix, which derivation being
    deterministic makes the same events; when it is not (another Capsule derived `recorded`), those
    later than the last recorded instant, so nothing the recorder wrote is written twice."""
    if derived[: len(recorded)] == recorded:
        return derived[len(recorded) :]
    last = max((e.ts for e in recorded), default=float("-inf"))
    return [e for e in derived if e.ts > last]


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
    from capsule.stages.reader import iter_events

    events_file = session_dir / EVENTS
    _drop_torn_tail(events_file)
    decoder = LineDecoder()
    kinds = not_from_trace()
    written = list(iter_events(session_dir, decoder))
    recorded = [e for e in written if not isinstance(e, kinds)]
    timed_out = next((e.limit_s for e in written if isinstance(e, SessionTimedOut)), None)
    spool = spool_path(home, header.session_id)
    derived: list[Event] = []
    if spool.exists():
        # The spool is the whole raw trace; trace.strace holds only what the recorder had kept of it.
        trace_fd = open_private(session_dir / trace_name(header.tracer), append=False)
        try:
            stats = await run_pipeline(
                partial(read_stage, spool),
                partial(collect_stage, into=derived),
                level=header.trace_level,
                redact=header.redacted,
                trace_fd=trace_fd,
                tracer=tracer_kind(header.tracer),
            )
        finally:
            os.fsync(trace_fd)
            os.close(trace_fd)
    else:
        derived, stats = await rederive(
            session_dir / trace_name(header.tracer),
            level=header.trace_level,
            header=header,
            tracer=tracer_kind(header.tracer),
        )
    added, reason = _after_recorded(derived, recorded), "the recorder died before closing the session"
    if derived[: len(recorded)] != recorded:
        # Derived by another Capsule (an upgrade between the crash and this recovery): its events are
        # not a prefix of this one's, so what is appended is what this Capsule derives after the last
        # instant the recorder wrote, and the recovery says so.
        which = "unnamed" if header.derivation is None else header.derivation
        reason += (
            f"; it was derived by another Capsule (derivation {which}), so this one ({DERIVATION}) "
            "appended what the trace holds after the last event it wrote"
        )
    tally = Tally()
    for event in derived:
        tally.apply(event)
    code, sig = exit_status(stats.root_status, 0) if stats.root_status else (None, None)
    now = time.time()
    writer = SessionWriter(events_file, next_seq=decoder.line_no)
    try:
        writer.write(added)
        writer.write(
            [
                SessionRecovered(
                    ts=now,
                    reason=reason,
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
                    incomplete=incompleteness(stats, cut=stats.cut) if stats.lines else None,
                    timed_out_s=timed_out,
                ),
            ]
        )
    finally:
        writer.close()
    spool.unlink(missing_ok=True)
    return Recovered(len(recorded), len(added))
