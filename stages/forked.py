"""Work done beside the main one, in a forked child of this process: a second core for big reports.

A report is one pass that cannot be split (the fold is sequential), but its pieces can be pipelined:
- `iter_events_forked`: a child reads and checks the lines (`capsule.codec.flat.flatten_lines`: JSON
  parsing and type checks, ~60 % of decoding) while this process builds the records and folds them;
  what crosses the pipe is `marshal` of flat tuples (~0.3 us per event both ends); every HERE_EVERY-th
  frame crosses as its raw lines, flattened here, as the child's share was the longer one;
- `forked_chunks`: a child makes the end of some output from the state this process holds
  (copy-on-write: nothing is sent) while this process writes its beginning.

fork, not a fresh interpreter: the child starts in under a millisecond with everything imported. Either
child only reads files and writes its pipe or file, then leaves with `os._exit` (no atexit, no buffered stdout
written twice). When a child fails, the work is done here instead: a reader resumes in-process from the
last whole batch it was sent, a computation is redone. A child never outlives its use: killed and reaped
on every way out; if this process is killed, its next write fails (EPIPE) and it exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import marshal
import os
import signal
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from capsule.codec import LineDecoder
from capsule.codec.flat import BUILDERS as builders
from capsule.codec.flat import flatten_lines
from capsule.events import Event
from capsule.report.json_stream import Chunk
from capsule.stages.store import EVENTS, open_session_file

if TYPE_CHECKING:
    from capsule.fold import SessionState

CHUNK = 1 << 20
# What the decoding child reads per frame: small enough that the pipe holds several frames, so that
# neither side waits on the other at each one when the machine is busy and a wake-up takes a while.
FRAME_READ = 1 << 17
PIPE_SIZE = 1 << 20  # fewer wake-ups than the default 64 KiB; the kernel may refuse (pipe-max-size)
_F_SETPIPE_SZ = 1031
_LENGTH = 8  # each frame: its length (little-endian), then marshal.dumps of (consumed, line_no, items, tail)
# Every HERE_EVERY-th frame the child sends unread, for this process to flatten: on 1,000,000 events the
# child's flattening took ~1.7 s of CPU and this process's building and folding ~1.2 s, so this side
# waited on the pipe; a fifth of the lines here evens the two.
HERE_EVERY = 5


def worth_forking() -> bool:
    """A second CPU to run on: otherwise the child would only take turns with this process."""
    try:
        return len(os.sched_getaffinity(0)) > 1
    except OSError:
        return False


def iter_events_forked(session_dir: Path, decoder: LineDecoder) -> Iterator[Event]:
    """The events of `iter_events(session_dir, decoder)`, the same ones with the same notes in
    `decoder`, decoded half in a child process."""
    for flat, batch in forked_batches(session_dir, decoder):
        if not flat:
            yield from batch
            continue
        for item in batch:
            if type(head := item[0]) is str:
                yield builders[head](item)
            elif (decoded := decoder.decode(item[0], item[1])) is not None:
                yield decoded[1]


def fold_forked(session_dir: Path, decoder: LineDecoder, state: SessionState) -> None:
    """Fold the events of `iter_events(session_dir, decoder)` into `state`, a batch at a time: the
    lines are read and checked in a child process, the records built and folded here (the common kinds
    folded without a record: `SessionState.apply_flat`)."""
    apply = state.apply
    for flat, batch in forked_batches(session_dir, decoder):
        if flat:
            state.apply_flat(batch, decoder.decode)
        else:
            for event in batch:
                apply(event)


def forked_batches(session_dir: Path, decoder: LineDecoder) -> Iterator[tuple[bool, list[Any]]]:
    """The session's lines in batches, in order: `(True, items)`, the flat lines of one frame of the
    child (`flatten_line`'s tuples, or `(line_no, line)` for `decoder.decode`), `decoder.line_no` set
    after each; or `(False, events)`, decoded here (after the child died: from the end of the last whole
    frame it sent). `decoder` has the torn tail and notes of `iter_events(session_dir, decoder)` at the
    end."""
    read_end, write_end = os.pipe()
    _widen(write_end)
    pid = os.fork()
    if pid == 0:  # the child: flatten every line into the pipe, then leave
        code = 1
        try:
            os.close(read_end)
            with os.fdopen(write_end, "wb") as out:
                _flatten_into(session_dir, out.write)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    consumed, line_no, done = 0, 0, False
    try:
        with os.fdopen(read_end, "rb", buffering=CHUNK) as pipe:
            while len(head := pipe.read(_LENGTH)) == _LENGTH:
                size = int.from_bytes(head, "little")
                if len(payload := pipe.read(size)) < size:
                    break  # the child died mid-frame
                before = line_no
                consumed, line_no, items, tail = marshal.loads(payload)  # noqa: S302 (our own child's)
                if items is None:
                    decoder.line_no, decoder.torn_tail, done = line_no, tail, True
                    break
                if type(items) is bytes:  # a frame's raw lines, left to this process (HERE_EVERY)
                    items = flatten_lines(items.split(b"\n"), before)[0]
                yield True, items
                decoder.line_no = line_no
    finally:
        _end(pid)
    if not done:  # the child died: read the rest here, from the end of the last whole batch it sent
        yield from _resume(session_dir, decoder, consumed)


def _flatten_into(session_dir: Path, write: Callable[[bytes], object]) -> None:
    """The child's loop: frame by frame, each the flat lines of one read (a malformed or unusual line
    travels as `(line_no, bytes)`, for the parent's decoder and its error notes)."""
    buffer = b""
    consumed = line_no = frames = 0
    with open_session_file(session_dir, EVENTS) as file:
        while data := file.read(FRAME_READ):
            data = buffer + data
            end = data.rfind(b"\n")
            if end < 0:
                buffer = data
                continue
            buffer = data[end + 1 :]
            frames += 1
            if frames % HERE_EVERY == 0:  # the lines as they are (as many as split would make)
                lines: bytes | list[Any] = data[:end]
                line_no += data.count(b"\n", 0, end) + 1
            else:
                lines, line_no = flatten_lines(data[:end].split(b"\n"), line_no)
            consumed += end + 1
            _frame(write, (consumed, line_no, lines, b""))
    _frame(write, (consumed, line_no, None, buffer))


def _frame(write: Callable[[bytes], object], value: tuple[Any, ...]) -> None:
    payload = marshal.dumps(value)
    write(len(payload).to_bytes(_LENGTH, "little") + payload)


def _resume(session_dir: Path, decoder: LineDecoder, consumed: int) -> Iterator[tuple[bool, list[Any]]]:
    with open_session_file(session_dir, EVENTS) as file:
        skip = consumed
        while skip > 0 and (data := file.read(min(skip, CHUNK))):  # archived sessions cannot seek
            skip -= len(data)
        while data := file.read(CHUNK):
            yield False, [event for _seq, event in decoder.feed(data)]
    decoder.close()


@contextlib.contextmanager
def forked_chunks(
    produce: Callable[[], Iterable[Chunk]], where: Path
) -> Iterator[Callable[[], Iterator[Chunk]]]:
    """Start drawing `produce()` in a child, into a nameless file in the folder `where`; the block gets
    a function giving those chunks back once the child is done (drawn here instead if it failed).

    The child sees this process's memory as it was at the fork (nothing is sent to it) and writes as it
    goes, so it holds one chunk at a time: a pipe would stall it until this process reads, and one
    bytes object of it all would cost its size in memory twice."""
    try:
        spill = tempfile.TemporaryFile(dir=where)  # noqa: SIM115 (closed on the way out, below)
    except OSError:  # a read-only folder: all of it here
        yield lambda: iter(produce())
        return
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for chunk in produce():
                spill.write(chunk)
            spill.flush()
            code = 0
        finally:
            os._exit(code)

    def result() -> Iterator[Chunk]:
        _, status = os.waitpid(pid, 0)
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            yield from produce()
            return
        spill.seek(0)
        while data := spill.read(CHUNK):
            yield data

    try:
        yield result
    finally:
        spill.close()
        _end(pid)


def _widen(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)


def _end(pid: int) -> None:
    """Kill the child if it is still at work (this side stopped early), and reap it."""
    with contextlib.suppress(ProcessLookupError, ChildProcessError):
        pid_done, _status = os.waitpid(pid, os.WNOHANG)
        if pid_done == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
