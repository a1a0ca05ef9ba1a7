"""Trace sources: bytes of strace output, sent downstream in line-aligned chunks.

Two sources, interchangeable behind the same stages: `tail_stage` follows the file a live strace writes
(`-o FILE`, never stderr) until strace has exited and the file is drained; `read_stage` reads a finished
file (replay, import, recovery), plain or archived (`trace.strace.zst`). Chunks end on a newline so redaction never sees half a line.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import trio

from capsule.stages.pipeline import Piece, ReadElsewhere
from capsule.stages.store import open_private, open_readable

CHUNK = 1 << 20  # one read; large, since per-chunk channel and parser overhead dominates small reads
POLL_S = 0.02  # how often to look for new trace bytes at EOF while strace still runs


class LineAligner:
    """Split a byte stream into chunks that end on a newline, holding the unfinished tail."""

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, data: bytes) -> bytes:
        data = self._tail + data
        end = data.rfind(b"\n") + 1
        self._tail = data[end:]
        return data[:end]

    def close(self) -> bytes:
        tail, self._tail = self._tail, b""
        return tail


async def read_stage(path: Path, send: trio.MemorySendChannel[bytes]) -> None:
    """Send the whole file in line-aligned chunks (decompressed if it is archived)."""
    aligner = LineAligner()
    opened = await trio.to_thread.run_sync(open_readable, path)
    async with send, trio.wrap_file(opened) as file:
        while data := await file.read(CHUNK):
            if chunk := aligner.feed(data):
                await send.send(chunk)
        if tail := aligner.close():
            await send.send(tail)


async def relayed_read_stage(path: Path, send: trio.MemorySendChannel[bytes]) -> None:
    """`read_stage`, redacted by a second process while this one parses: the file goes through the spool
    relay (the same `redact_bytes`, line by line), so an import uses both cores. RelayFailed if the
    relay does not end well (nothing it wrote is then trusted: the import fails and leaves nothing)."""
    from capsule.stages.spools import relay_to_stdout

    aligner = LineAligner()
    feed_read, feed_write = os.pipe()
    out_read, out_write = os.pipe()
    for fd in (feed_write, out_read):
        _widen_pipe(fd)
    try:
        process = await trio.lowlevel.open_process(relay_to_stdout(), stdin=feed_read, stdout=out_write)
    except BaseException:
        os.close(feed_write)
        os.close(out_read)
        raise
    finally:
        os.close(feed_read)
        os.close(out_write)
    to_relay, from_relay = trio.lowlevel.FdStream(feed_write), trio.lowlevel.FdStream(out_read)
    async with send, from_relay, to_relay:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_feed, path, to_relay)
                held = bytearray()
                while data := await from_relay.receive_some(CHUNK):
                    held += data
                    if len(held) >= CHUNK:
                        chunk = aligner.feed(bytes(held))
                        held.clear()
                        if chunk:
                            await send.send(chunk)
                if chunk := aligner.feed(bytes(held)):
                    await send.send(chunk)
            await process.wait()
        finally:
            if process.returncode is None:  # cancelled, or the parse failed: the relay goes too
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
        if process.returncode != 0:
            raise RelayFailed(f"the redacting relay ended with status {process.returncode}")
        if tail := aligner.close():
            await send.send(tail)


def _widen_pipe(fd: int) -> None:
    """A pipe of CHUNK bytes where Linux allows it (64 KiB by default): fewer, larger chunks through the
    stages, whose cost is per chunk."""
    import contextlib
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, CHUNK)


class RelayFailed(OSError):
    """The redacting relay of an import did not end well."""


SPLIT_SHARE = 0.75  # of a split log, the share the second process reads (this one also parses it all)
SPLIT_MIN = 8 * CHUNK  # a log smaller than this is read by one process: a second start costs more


def split_point(path: Path, size: int, share: float = SPLIT_SHARE) -> int:
    """Where a split import hands over: the start of the line holding byte (1 - share) * size."""
    at = int(size * (1 - share))
    with open(path, "rb") as file:
        file.seek(at)
        while block := file.read(1 << 16):
            newline = block.find(b"\n")
            if newline >= 0:
                return at + newline + 1
            at += len(block)
    return size


def part_argv(log: Path, *args: str) -> tuple[str, ...]:
    """The command of the process that reads a split log's last part (stages/import_part.py)."""
    import sys

    return (
        sys.executable,
        "-I",
        "-c",
        "from capsule.stages.import_part import main; main()",
        str(log),
        *args,
    )


async def split_read_stage(
    path: Path,
    send: trio.MemorySendChannel[Piece],
    *,
    cut: int,
    size: int,
    redact: bool,
    keep: frozenset[str],
    drop_signals: frozenset[str],
    scratch: Path,
) -> None:
    """`read_stage` over bytes 0..cut of a plain log, while a second process (stages/import_part.py)
    reads, redacts and chooses the lines of cut..size; what it chose follows, chunk by chunk, as
    ReadElsewhere pieces (the last one names its redacted bytes, to be appended to the kept trace).

    Both cores work on the log: this one reads, redacts and parses its head, then parses what the other
    chose as it comes. The second process is killed if this stage is cancelled or fails (an interrupted
    import); RelayFailed if it does not end with status 0 (nothing it wrote is then used)."""
    import math

    part_trace = scratch / ".import-part.strace"
    os.close(open_private(part_trace, new=True))
    argv = part_argv(
        path,
        str(cut),
        str(size),
        "1" if redact else "0",
        ",".join(sorted(keep)),
        ",".join(sorted(drop_signals)),
        str(part_trace),
    )
    out_read, out_write = os.pipe()
    _widen_pipe(out_read)
    try:
        process = await trio.lowlevel.open_process(argv, stdin=subprocess.DEVNULL, stdout=out_write)
    except BaseException:
        os.close(out_read)
        raise
    finally:
        os.close(out_write)
    frames_send, frames_receive = trio.open_memory_channel[tuple[Any, ...]](math.inf)
    try:
        async with send, trio.lowlevel.FdStream(out_read) as chosen, trio.open_nursery() as nursery:
            nursery.start_soon(_read_frames, chosen, frames_send)
            opened = await trio.to_thread.run_sync(open, path, "rb")
            aligner = LineAligner()
            async with trio.wrap_file(opened) as file:
                left = cut
                while left > 0 and (data := await file.read(min(CHUNK, left))):
                    left -= len(data)
                    if chunk := aligner.feed(data):
                        await send.send(chunk)
            if rest := aligner.close():  # none: cut is a line start
                await send.send(rest)
            tail: bytes | None = None
            async for frame in frames_receive:
                if len(frame) == 1:
                    tail = frame[0]
                    continue
                await send.send(ReadElsewhere(None, [frame], b""))
            await process.wait()
            if process.returncode != 0:
                raise RelayFailed(
                    f"the process reading the log's last part ended with status {process.returncode}"
                )
            if tail is None:
                raise RelayFailed("the process reading the log's last part ended before its last frame")
            await send.send(ReadElsewhere(part_trace, [], tail))
    finally:
        if process.returncode is None:  # cancelled, or a stage failed: the second process goes too
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def _read_frames(stream: trio.abc.ReceiveStream, send: trio.MemorySendChannel[tuple[Any, ...]]) -> None:
    """The frames of stages/import_part.py (8 bytes of length, then marshal), decoded as they come."""
    import marshal

    held = bytearray()
    async with send:
        while data := await stream.receive_some(CHUNK):
            held += data
            while len(held) >= 8 and len(held) >= 8 + (n := int.from_bytes(held[:8], "little")):
                # Our own child's frames, through a pipe only it holds: not input from elsewhere.
                await send.send(marshal.loads(held[8 : 8 + n]))  # noqa: S302
                del held[: 8 + n]
    if held:
        raise RelayFailed("the process reading the log's last part wrote half a frame")


async def _feed(path: Path, stdin: trio.abc.SendStream) -> None:
    opened = await trio.to_thread.run_sync(open_readable, path)
    async with stdin, trio.wrap_file(opened) as file:
        while data := await file.read(CHUNK):
            await stdin.send_all(data)


async def bytes_stage(data: bytes, send: trio.MemorySendChannel[bytes]) -> None:
    """Send bytes already in memory (the merged files of `strace -ff`) in line-aligned chunks."""
    async with send:
        start = 0
        while start < len(data):
            end = data.rfind(b"\n", start, start + CHUNK) + 1 or data.find(b"\n", start + CHUNK) + 1
            if end <= start:
                end = len(data)
            await send.send(data[start:end])
            start = end


async def tail_stage(path: Path, tracer_done: trio.Event, send: trio.MemorySendChannel[bytes]) -> None:
    """Follow a file being written by strace; stop once strace has exited and every byte is read.

    Everything available is read, sent as one batch, and then the stage waits a poll interval: strace
    writes line by line, and sending each small read through the pipeline at once cost ~30 us of
    Capsule CPU per trace line on a fork-heavy run (5,000 `true`), on cores strace needs.
    """
    aligner = LineAligner()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        async with send:
            while True:
                done = tracer_done.is_set()  # read after this: nothing is appended once strace is gone
                pending = bytearray()
                # Reads of a regular file never block on a writer: at EOF they return b"".
                while data := os.read(fd, CHUNK):
                    pending += data
                    if len(pending) >= CHUNK:
                        break
                if chunk := aligner.feed(bytes(pending)):
                    await send.send(chunk)
                if len(pending) >= CHUNK:
                    continue
                if done:
                    if tail := aligner.close():
                        await send.send(tail)
                    return
                with trio.move_on_after(POLL_S):
                    await tracer_done.wait()
    finally:
        os.close(fd)
