"""The pipeline: source -> keep trace (redact, write trace.strace) -> parse -> track -> sink.

Stages are trio tasks joined by bounded memory channels carrying batches: backpressure, never loss.
Each stage owns the channel ends it is given and closes them; end of stream travels downstream.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import cast, get_args

import attrs
import trio

from capsule.events import Event
from capsule.parse import Record, StraceParser
from capsule.redact import redact_bytes
from capsule.track import Tracker
from capsule.track.tracker import Level

Source = Callable[[trio.MemorySendChannel[bytes]], Awaitable[None]]
Sink = Callable[[trio.MemoryReceiveChannel[list[Event]]], Awaitable[None]]

DEPTH = 8  # batches in flight between two stages


@attrs.define
class TraceStats:
    lines: int = 0
    unparsed: int = 0
    root_pid: int | None = None
    root_status: tuple[int | None, str | None] | None = None
    unexited: int = 0  # processes whose exit the trace never showed
    cut: bool = False  # the trace ends mid-line (strace was killed while writing it)


async def keep_trace_stage(
    receive: trio.MemoryReceiveChannel[bytes],
    send: trio.MemorySendChannel[bytes],
    *,
    trace_fd: int | None,
    redact: bool,
) -> None:
    """Redact each chunk, append it to trace.strace, pass it on: the kept trace is what gets parsed."""
    async with receive, send:
        async for chunk in receive:
            if redact:
                chunk = redact_bytes(chunk)
            if trace_fd is not None:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(trace_fd, view) :]
            await send.send(chunk)


async def parse_stage(
    receive: trio.MemoryReceiveChannel[bytes],
    send: trio.MemorySendChannel[list[Record]],
    parser: StraceParser,
) -> None:
    async with receive, send:
        async for chunk in receive:
            if records := parser.feed(chunk):
                await send.send(records)
        if records := parser.close():
            await send.send(records)


async def track_stage(
    receive: trio.MemoryReceiveChannel[list[Record]],
    send: trio.MemorySendChannel[list[Event]],
    tracker: Tracker,
) -> None:
    async with receive, send:
        async for records in receive:
            if events := tracker.feed(records):
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
) -> TraceStats:
    """Run source -> keep trace -> parse -> track -> sink to the end of the trace.

    `tt_origin` is what `-t`/`-tt`/`-r` stamps count from, `default_ts` the time of lines before the first
    stamp (of every line, in a trace without stamps): a session header's `trace_origin` and `ts`.
    """
    if level not in get_args(Level):
        raise ValueError(f"unknown trace level {level!r}")
    tracker = Tracker(level=cast(Level, level), default_ts=default_ts)
    parser = StraceParser(
        tt_origin=tt_origin, keep=tracker.wanted_syscalls, drop_signals=tracker.ignored_signals
    )
    raw_send, raw_receive = trio.open_memory_channel[bytes](DEPTH)
    kept_send, kept_receive = trio.open_memory_channel[bytes](DEPTH)
    records_send, records_receive = trio.open_memory_channel[list[Record]](DEPTH)
    events_send, events_receive = trio.open_memory_channel[list[Event]](DEPTH)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(source, raw_send)
        nursery.start_soon(lambda: keep_trace_stage(raw_receive, kept_send, trace_fd=trace_fd, redact=redact))
        nursery.start_soon(parse_stage, kept_receive, records_send, parser)
        nursery.start_soon(track_stage, records_receive, events_send, tracker)
        nursery.start_soon(sink, events_receive)
    return TraceStats(
        lines=parser.lines,
        unparsed=tracker.unparsed,
        root_pid=tracker.root_pid,
        root_status=tracker.root_status,
        unexited=tracker.unexited,
        cut=parser.ended_mid_line,
    )


async def collect_stage(receive: trio.MemoryReceiveChannel[list[Event]], into: list[Event]) -> None:
    """A sink that keeps the events in memory (replay --check compares them)."""
    async with receive:
        async for batch in receive:
            into.extend(batch)
