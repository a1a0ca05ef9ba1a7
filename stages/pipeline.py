"""The pipeline: source -> keep trace (redact, write the raw trace) -> parse -> track -> sink.

The parser and tracker pair depends on the tracer that wrote the trace (`strace`, or `ebpf`: Capsule's
eBPF recorder, stages/bpf); everything downstream of track is the same for both.

Stages are trio tasks joined by bounded memory channels carrying batches: backpressure, never loss.
Each stage owns the channel ends it is given and closes them; end of stream travels downstream.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Protocol, cast, get_args

import attrs
import trio

from capsule.events import Event
from capsule.parse import StraceParser
from capsule.parse.wanted import Selected
from capsule.redact import redact_bytes
from capsule.track import Tracker
from capsule.track.tracker import Level


@attrs.frozen
class ReadElsewhere:
    """A piece of the rest of a trace, read by another process (stages/import_part.py): the lines chosen
    from some of its chunks, and how much of the file of its kept (redacted) bytes is written (`upto`:
    the keep stage appends it as it grows). The first piece holds that file, `trace` (a descriptor, then
    the keep stage's to close); the last one its unfinished last line."""

    trace: int | None
    chunks: list[tuple[Any, ...]]  # Selected, as marshal gives them back
    tail: bytes
    upto: int = 0


Piece = bytes | ReadElsewhere  # what a source sends: trace bytes (whole lines), or a part read elsewhere
Source = Callable[[trio.MemorySendChannel[Piece]], Awaitable[None]]
Sink = Callable[[trio.MemoryReceiveChannel[list[Event]]], Awaitable[None]]

DEPTH = 8  # batches in flight between two stages
TRACER_KINDS = ("strace", "ebpf")


class TraceParser(Protocol):
    lines: int
    ended_mid_line: bool

    def feed(self, data: bytes) -> list[Any]: ...
    def close(self) -> list[Any]: ...


class TraceTracker(Protocol):
    root_pid: int | None
    root_status: tuple[int | None, str | None] | None
    unparsed: int

    @property
    def unexited(self) -> int: ...

    def feed(self, records: list[Any]) -> list[Event]: ...
    def close(self) -> list[Event]: ...


@attrs.define
class LiveCount:
    """A tracker's count of live processes, published by the track stage after each batch (the eBPF
    recorder stops its tracer when the whole tree is gone; strace stops by itself)."""

    value: int = 1
    pids: Collection[int] = ()  # the eBPF tracker's live processes (its own set, kept up to date)
    flushed: int = 0  # the eBPF tracker's count of flush barrier markers read (stages/ebpf.py)


def open_parser_tracker(
    kind: str, level: str, tt_origin: float = 0.0, default_ts: float = 0.0, *, ends: bool = False
) -> tuple[TraceParser, TraceTracker]:
    """The parser and tracker for a trace written by tracer `kind` at trace `level`; `ends`: an imported
    log's, whose ends are also read from exit_group and waits (Tracker)."""
    if level not in get_args(Level):
        raise ValueError(f"unknown trace level {level!r}")
    if kind == "ebpf":
        # eBPF's parser and tracker load only for eBPF traces: ~15 ms of every strace recording's start.
        from capsule.parse.ebpf import EbpfParser
        from capsule.track.ebpf import EbpfTracker

        return EbpfParser(), EbpfTracker(level=cast(Level, level))
    if kind != "strace":
        raise ValueError(f"unknown tracer {kind!r}")
    tracker = Tracker(level=cast(Level, level), default_ts=default_ts, ends=ends)
    parser = StraceParser(
        tt_origin=tt_origin, keep=tracker.wanted_syscalls, drop_signals=tracker.dropped_signals
    )
    return parser, tracker


@attrs.define
class TraceStats:
    lines: int = 0
    unparsed: int = 0
    root_pid: int | None = None
    root_status: tuple[int | None, str | None] | None = None
    unexited: int = 0  # processes whose exit the trace never showed
    cut: bool = False  # the trace ends mid-line (strace was killed while writing it)


def exit_status(status: tuple[int | None, str | None] | None, tracer_rc: int) -> tuple[int, str | None]:
    """What capsule exits with for a command whose root ended with `status` (exit code, signal name), or
    whose tracer ended with `tracer_rc` when the trace never showed the root's end."""
    if status is not None:
        code, sig = status
        if sig is not None:
            number = getattr(signal.Signals, sig, None) if sig.startswith("SIG") else None
            return 128 + (int(number) if number is not None else 0), sig
        return code or 0, None
    if tracer_rc < 0:
        return 128 - tracer_rc, signal.Signals(-tracer_rc).name
    return tracer_rc, None


def incompleteness(stats: TraceStats, *, cut: bool, imported: int | None = None) -> str | None:
    """Why a trace stops before the command ended (None when it is whole), with how much is missing.
    `imported`: the processes of an imported log, whose every exit strace may have left out (`-qq`)."""
    if not cut and stats.root_status is not None:
        return None
    why = "the trace ends mid-line (strace was killed)" if cut else "the trace ends before the command exited"
    if not cut and imported and stats.unexited >= imported:
        # Not one exit in the whole log: far likelier strace's quiet flags than a strace stopped so early.
        why = "the log shows no process's exit (strace -qq and -e quiet=exit leave them out)"
    if stats.unexited:
        many = stats.unexited != 1
        why += f"; {stats.unexited} process{'es' if many else ''} ha{'ve' if many else 's'} no recorded exit"
    return why


async def keep_trace_stage(
    receive: trio.MemoryReceiveChannel[Piece],
    send: trio.MemorySendChannel[Piece],
    *,
    trace_fd: int | None,
    redact: bool,
    tracer: str = "strace",
    writeback: bool = False,
) -> None:
    """Redact each chunk, append it to the kept trace, pass it on: the kept trace is what gets parsed.

    `writeback`: start writing each appended range to disk at once (an import's large chunks), so that
    the fsync at the end finds little left to wait for (~20 ms of a 40 MB import otherwise)."""
    redactor = None
    if tracer == "ebpf":
        from capsule.parse.ebpf_redact import EbpfRedactor

        redactor = EbpfRedactor()
    kept = os.lseek(trace_fd, 0, os.SEEK_END) if writeback and trace_fd is not None else 0

    def written(n: int) -> None:
        nonlocal kept
        if writeback and trace_fd is not None:
            # Linux starts the writeback of the range's dirty pages (and drops none that are dirty); a
            # file system that refuses the advice only leaves it all to the fsync.
            with contextlib.suppress(OSError):
                os.posix_fadvise(trace_fd, kept, n, os.POSIX_FADV_DONTNEED)
        kept += n

    async def keep(chunk: bytes) -> None:
        if trace_fd is not None:
            view = memoryview(chunk)
            while view:
                view = view[os.write(trace_fd, view) :]
            written(len(chunk))
        await send.send(chunk)

    part: int | None = None  # the file of a part read elsewhere, and how much of it is appended
    appended = 0
    try:
        async with receive, send:
            async for chunk in receive:
                if isinstance(chunk, ReadElsewhere):
                    if chunk.trace is not None:
                        part = chunk.trace
                    if part is not None and chunk.upto > appended:
                        if trace_fd is not None:
                            _append_range(trace_fd, part, appended, chunk.upto)
                            written(chunk.upto - appended)
                        appended = chunk.upto
                    await send.send(chunk)
                    continue
                if redact:
                    chunk = redactor.feed(chunk) if redactor is not None else redact_bytes(chunk)
                if chunk:
                    await keep(chunk)
            if redact and redactor is not None and (tail := redactor.close()):
                await keep(tail)
    finally:
        if part is not None:
            os.close(part)


def _append_range(fd: int, part: int, start: int, end: int) -> None:
    """Append bytes start..end of the file `part` to `fd` (opened O_APPEND), in the kernel where it can."""
    import fcntl

    done = start
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        # copy_file_range refuses an O_APPEND target: the append is done at the end by hand.
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_APPEND)
        os.lseek(fd, 0, os.SEEK_END)
        while done < end and (n := os.copy_file_range(part, fd, end - done, done)):
            done += n
    except OSError:
        pass  # not between these files: the rest by read and write
    finally:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    while done < end and (data := os.pread(part, min(1 << 20, end - done), done)):
        done += len(data)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]


async def parse_stage(
    receive: trio.MemoryReceiveChannel[Piece],
    send: trio.MemorySendChannel[list[Any]],
    parser: TraceParser,
) -> None:
    async with receive, send:
        async for chunk in receive:
            if isinstance(chunk, ReadElsewhere):
                records = _parse_elsewhere(chunk, cast(StraceParser, parser))
            else:
                records = parser.feed(chunk)
            if records:
                await send.send(records)
        if records := parser.close():
            await send.send(records)


def _parse_elsewhere(part: ReadElsewhere, parser: StraceParser) -> list[Any]:
    records: list[Any] = []
    for chunk in part.chunks:
        parser.feed_selected(Selected(*chunk), records)
    if part.tail:
        records += parser.feed(part.tail)  # no newline: held, and read whole by close()
    return records


async def track_stage(
    receive: trio.MemoryReceiveChannel[list[Any]],
    send: trio.MemorySendChannel[list[Event]],
    tracker: TraceTracker,
    live: LiveCount | None = None,
) -> None:
    async with receive, send:
        async for records in receive:
            events = tracker.feed(records)
            if live is not None:  # only the eBPF tracker counts live processes
                live.value = getattr(tracker, "live", live.value)
                live.pids = getattr(tracker, "alive", live.pids)
                live.flushed = getattr(tracker, "flushed", live.flushed)
            if events:
                await send.send(events)
        if events := tracker.close():
            await send.send(events)


async def run_pipeline(
    source: Source,
    sink: Sink,
    *,
    level: str = "process",
    redact: bool = True,
    trace_fd: int | None = None,
    tt_origin: float = 0.0,
    default_ts: float = 0.0,
    tracer: str = "strace",
    live: LiveCount | None = None,
    writeback: bool = False,
    ends: bool = False,
) -> TraceStats:
    """Run source -> keep trace -> parse -> track -> sink to the end of the trace.

    `tt_origin` is what `-t`/`-tt`/`-r` stamps count from, `default_ts` the time of lines before the first
    stamp (of every line, in a trace without stamps): a session header's `trace_origin` and `ts`.
    `tracer` names what wrote the trace (strace, or ebpf); `live` gets the tracker's live count;
    `writeback`: the kept trace goes to disk as it is written (an import: keep_trace_stage); `ends`: an
    imported log (open_parser_tracker).
    """
    parser, tracker = open_parser_tracker(tracer, level, tt_origin, default_ts, ends=ends)
    raw_send, raw_receive = trio.open_memory_channel[Piece](DEPTH)
    kept_send, kept_receive = trio.open_memory_channel[Piece](DEPTH)
    records_send, records_receive = trio.open_memory_channel[list[Any]](DEPTH)
    events_send, events_receive = trio.open_memory_channel[list[Event]](DEPTH)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(source, raw_send)
            nursery.start_soon(
                lambda: keep_trace_stage(
                    raw_receive,
                    kept_send,
                    trace_fd=trace_fd,
                    redact=redact,
                    tracer=tracer,
                    writeback=writeback,
                )
            )
            nursery.start_soon(parse_stage, kept_receive, records_send, parser)
            nursery.start_soon(track_stage, records_receive, events_send, tracker, live)
            nursery.start_soon(sink, events_receive)
    except BaseExceptionGroup as group:
        # One stage failed and the others were cancelled: raise its error as it raised it, so that
        # callers catch an OSError (a read error, a failed relay) as the OSError it is.
        only = _single(group)
        if only is None:
            raise
        raise only from None
    return TraceStats(
        lines=parser.lines,
        unparsed=tracker.unparsed,
        root_pid=tracker.root_pid,
        root_status=tracker.root_status,
        unexited=tracker.unexited,
        cut=parser.ended_mid_line,
    )


def _single(group: BaseExceptionGroup) -> BaseException | None:
    """The one error inside `group` (nested groups flattened), or None when there are several."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else None


async def collect_stage(receive: trio.MemoryReceiveChannel[list[Event]], into: list[Event]) -> None:
    """A sink that keeps the events in memory (replay --check compares them)."""
    async with receive:
        async for batch in receive:
            into.extend(batch)
