"""Trace sources: bytes of strace output, sent downstream in line-aligned chunks.

Two sources, interchangeable behind the same stages: `tail_stage` follows the file a live strace writes
(`-o FILE`, never stderr) until strace has exited and the file is drained; `read_stage` reads a finished
file (replay, import, recovery), plain or archived (`trace.strace.zst`). Chunks end on a newline so redaction never sees half a line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import trio

from capsule.stages.pipeline import Piece, ReadElsewhere
from capsule.stages.store import open_readable

CHUNK = 1 << 20  # one read; large, since per-chunk channel and parser overhead dominates small reads
POLL_S = 0.02  # how often to look for new trace bytes at EOF while strace still runs
# The same for a recording no guard kills on: each look at a busy trace sends its bytes through every
# stage, whose cost is mostly per batch once caches are cold (the recorder wakes beside strace and the
# command): a fork-heavy run (5,000 `true`) took ~0.85 CPU-s of the recorder at 20 ms, ~0.73 at 50 ms.
# The spool then lags the trace by 60 ms at most (with the relay's linger), far within the 1 s bound.
POLL_UNGUARDED_S = 0.05
# A quiet trace (a command busy with syscalls it does not trace) is looked at less and less often, up to
# this: each look costs ~0.1 ms of CPU (~0.7 % of a core at POLL_S), on the cores the command needs.
POLL_IDLE_S = 0.16


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


async def split_read_stage(
    path: Path,
    send: trio.MemorySendChannel[Piece],
    *,
    size: int,
    redact: bool,
    level: str,
    scratch: Path,
) -> None:
    """`read_stage` over bytes 0..cut of a plain log, while a second process (stages/import_part.py,
    started by `capsule import` first thing, or now) reads, redacts and chooses the lines of cut..size;
    what it chose follows, chunk by chunk, as ReadElsewhere pieces (with the file of its redacted bytes,
    appended to the kept trace as it grows).

    Both cores work on the log: this one reads, redacts and parses its head, then parses what the other
    chose as it comes. The second process is killed if this stage is cancelled or fails (an interrupted
    import); RelayFailed if it does not end with status 0 (nothing it wrote is then used)."""
    import math

    from capsule.stages import import_part

    job = import_part.job_for(str(path), size, redact=redact, level=level)
    cut = job[1]
    part = import_part.take(str(path))
    if part is not None and part.job != job:
        part.close()  # started for another job (the log changed, or its arguments were not understood)
        part = None
    if part is None:
        part = import_part.start(str(scratch))
        try:
            part.begin(job)
        except BaseException:
            part.close()
            raise
    try:
        frames_send, frames_receive = trio.open_memory_channel[tuple[Any, ...]](math.inf)
        chosen = trio.lowlevel.FdStream(os.dup(part.frames))
        async with send, chosen, trio.open_nursery() as nursery:
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
            wrong = None
            given = False  # whether the file of the part went downstream (with the first piece)
            async for frame in frames_receive:
                if len(frame) == 1:
                    tail = frame[0]
                elif len(frame) == 2:
                    wrong = frame[1]
                else:
                    await send.send(
                        ReadElsewhere(None if given else os.dup(part.trace), [frame[:3]], b"", frame[3])
                    )
                    given = True
            status = part.process.wait()  # its stdout is closed: it has ended, or is ending
            if status != 0:
                raise RelayFailed(f"the process reading the log's last part ended with status {status}")
            if wrong is not None or tail is None:
                raise RelayFailed(
                    f"the process reading the log's last part {wrong or 'ended before its last frame'}"
                )
            size = os.fstat(part.trace).st_size
            await send.send(ReadElsewhere(None if given else os.dup(part.trace), [], tail, size))
    finally:
        part.close()  # killed first if it still runs: cancelled, or a stage failed


async def _read_frames(stream: trio.abc.ReceiveStream, send: trio.MemorySendChannel[tuple[Any, ...]]) -> None:
    """The frames of stages/import_part.py (8 bytes of length, then marshal), decoded as they come: a
    chunk's `Selected` and the part's bytes written as a 4-tuple, the last frame as a 1-tuple; what is not a frame ends the stream
    with a 2-tuple saying what was wrong (the stage raises one error, after the process's status)."""
    import marshal

    held = bytearray()
    async with send:
        while data := await stream.receive_some(CHUNK):
            held += data
            while len(held) >= 8 and len(held) >= 8 + (n := int.from_bytes(held[:8], "little")):
                try:
                    # Our own child's frames, through a pipe only it holds: not input from elsewhere.
                    frame = marshal.loads(held[8 : 8 + n])  # noqa: S302
                except (EOFError, ValueError, TypeError):
                    frame = None
                if not _is_frame(frame):
                    await send.send(("!", "wrote what is not a frame"))
                    return
                await send.send(frame)
                del held[: 8 + n]
        if held:
            await send.send(("!", "wrote half a frame"))


def _is_frame(frame: object) -> bool:
    if not isinstance(frame, tuple):
        return False
    if len(frame) == 1:
        return isinstance(frame[0], bytes)
    return (
        len(frame) == 4
        and isinstance(frame[0], int)
        and isinstance(frame[1], list)
        and isinstance(frame[2], list)
        and isinstance(frame[3], int)
    )


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


async def tail_stage(
    path: Path,
    tracer_done: trio.Event,
    send: trio.MemorySendChannel[bytes],
    *,
    poll_s: float = POLL_S,
    idle_poll: float | None = None,
) -> None:
    """Follow a file being written by strace; stop once strace has exited and every byte is read.

    Everything available is read, sent as one batch, and then the stage waits a poll interval: strace
    writes line by line, and sending each small read through the pipeline at once cost ~30 us of
    Capsule CPU per trace line on a fork-heavy run (5,000 `true`), on cores strace needs. After a look
    that found nothing the interval doubles, up to `idle_poll` (`poll_s` again as soon as bytes come);
    strace's exit ends any wait at once. A guard that kills on what the trace shows keeps `poll_s`, and
    so does the eBPF recorder's (5 ms: the end of its tree is seen by reading the trace).
    """
    aligner = LineAligner()
    interval = poll_s
    most = poll_s if idle_poll is None else idle_poll
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
                interval = poll_s if pending else min(interval * 2, most)
                with trio.move_on_after(interval):
                    await tracer_done.wait()
    finally:
        os.close(fd)
