"""The second process of a split import: it reads the last part of a log, redacts it, writes the redacted
bytes to a file of its own and chooses, chunk by chunk, the lines the parser needs (capsule/parse/wanted.py).

`capsule import` of a large `-ttt` log reads the head itself and this process reads the rest on the other
core (stages/trace.py `split_read_stage`); the importer then appends the redacted part to the kept trace and
parses the chosen lines after its own. What it writes is the importer's to trust or drop: a part whose
process did not end with status 0, or stopped before its last frame, fails the import.

    python -I -c 'from capsule.stages.import_part import main; main()' TRACE_FD

starts, loads what it needs and waits for its job on stdin: LOG, START, END, REDACT and LEVEL separated
by NUL bytes (no job, only the end of stdin: it exits 0). It reads bytes START to END of LOG
(START and END on line starts, END may be the size), redacts them if REDACT is 1 and writes them to the
file TRACE_FD (an unnamed private file, O_TMPFILE, opened by the importer). The choice goes to stdout as it
is made, one frame a chunk (8 bytes of length, then marshal of a `Selected` as a tuple followed by the bytes
written to TRACE_FD so far, all of them final: the importer may copy them at once), then a last frame
holding a 1-tuple: the part's redacted unfinished last line (or b""). The lines chosen are those the
tracker of LEVEL may need (its wanted syscalls and ignored signals).

`capsule import` starts it first thing (`prestart`, before the importer loads its own modules) with the job
its arguments imply, so that it works while the importer starts up; the importer uses it if that is the
job it needs (else it stops it and starts another). It runs in a process group of its own (Ctrl-C is the importer's to handle: it kills this
process); if the importer dies, this process stops at its next chunk or write.
"""

from __future__ import annotations

import marshal
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable
    from typing import Any

SPLIT_SHARE = 0.9  # of a split log, the share the second process reads (the importer also parses it all)
SPLIT_MIN = 8 << 20  # a log smaller than this is read by one process: a second start costs more


Job = tuple[str, int, int, bool, str]  # log (absolute), start, end, redact, level


class Part:
    """A started second process and the job it was given (None: waiting for one)."""

    def __init__(self, process: subprocess.Popen[bytes], job: int, frames: int, trace: int) -> None:
        self.process, self.frames, self.trace = process, frames, trace
        self.job: Job | None = None
        self._job = job

    def begin(self, job: Job) -> None:
        log, start, end, redact, level = job
        self.job = job
        try:
            _write_all(
                self._job, "\0".join((log, str(start), str(end), "1" if redact else "0", level)).encode()
            )
        except BrokenPipeError:
            pass  # it is gone already: its status and its missing frames will say so
        finally:
            self._close_job()

    def _close_job(self) -> None:
        if self._job >= 0:
            os.close(self._job)
            self._job = -1

    def close(self) -> None:
        """Stop it if it still runs (an unused or interrupted part), reap it, close what it wrote to."""
        self._close_job()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for fd in (self.frames, self.trace):
            if fd >= 0:
                os.close(fd)
        self.frames = self.trace = -1


def split_point(path: str, size: int, share: float = SPLIT_SHARE) -> int:
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


def job_for(log: str, size: int, *, redact: bool, level: str) -> Job:
    """The job of the second process of a split import of `log` (`size` bytes)."""
    return (os.path.abspath(log), split_point(log, size), size, redact, level)


def part_argv(trace: int) -> tuple[str, ...]:
    """The command of the second process, writing the redacted part to its fd `trace`."""
    return (sys.executable, "-I", "-c", "from capsule.stages.import_part import main; main()", str(trace))


def start(scratch: str) -> Part:
    """Start a second process, its redacted part going to an unnamed private file in the folder `scratch`
    (gone with the last descriptor: nothing to tidy, whatever happens to either process)."""
    import subprocess

    trace = _unnamed_file(scratch)
    fds = [trace]
    try:
        job_read, job = os.pipe()
        fds += [job_read, job]
        frames, frames_write = os.pipe()
        fds += [frames, frames_write]
        _widen_pipe(frames)
        process = subprocess.Popen(
            part_argv(trace),
            stdin=job_read,
            stdout=frames_write,
            pass_fds=(trace,),
            process_group=0,
        )
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    os.close(job_read)
    os.close(frames_write)
    return Part(process, job, frames, trace)


def _unnamed_file(folder: str) -> int:
    """A private file in `folder` that no name reaches (O_TMPFILE; where the file system has none, a new
    file unlinked at once)."""
    try:
        return os.open(folder, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:
        import secrets

        path = os.path.join(folder, f".import-part-{os.getpid()}-{secrets.token_hex(4)}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.unlink(path)
        return fd


def _widen_pipe(fd: int) -> None:
    """A pipe of a MiB where Linux allows it (64 KiB by default): fewer wake-ups of the reader."""
    import contextlib
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, CHUNK)


_prestarted: dict[str, Part] = {}


def prestart(log: str, home: str, runs: str, *, redact: bool, level: str) -> None:
    """Start the second process of `capsule import LOG` now, with the job its arguments imply, if LOG is a
    file big enough to be split (its part is written in the folder `runs` of `home`, made 0700 if missing,
    as the import would make it); the import takes it (`take`) if it is the job it needs."""
    if level not in ("process", "file", "net", "all"):
        return
    try:
        size = os.stat(log).st_size
        if size < SPLIT_MIN:
            return
        for folder in (home, runs):
            if not os.path.isdir(folder):
                os.mkdir(folder, 0o700)
        part = start(runs)
    except (OSError, ValueError):
        return  # the import will say what is wrong, or start its second process itself
    _prestarted[os.path.abspath(log)] = part
    try:
        part.begin(job_for(log, size, redact=redact, level=level))
    except OSError:
        discard()  # the log went away, or cannot be read: the import will say so
    except BaseException:
        discard()  # interrupted already
        raise


def take(log: str) -> Part | None:
    """The second process started for `log` (and not yet taken), if there is one."""
    return _prestarted.pop(os.path.abspath(log), None)


def discard() -> None:
    """Stop every second process started and not taken (the import did not split its log)."""
    while _prestarted:
        _prestarted.popitem()[1].close()


CHUNK = 1 << 20


def part(
    log: str,
    start: int,
    end: int,
    *,
    redact: bool,
    level: str,
    trace: int,
    out: int,
) -> None:
    """Write bytes start..end of `log` (redacted) to fd `trace` and the frames of the lines chosen from
    each chunk, then of the unfinished last line, to fd `out`."""
    from capsule.parse.wanted import Wanted

    redactor: Callable[[bytes], bytes] | None = None
    if redact:
        from capsule.redact import redact_bytes

        redactor = redact_bytes
    from capsule.track.levels import level_parts, wanted_syscalls

    wanted = Wanted(wanted_syscalls(*level_parts(level), ends=True))  # an import's (Tracker's `ends`)
    parent = os.getppid()
    seen: set[str] = set()
    held = b""
    written = 0
    fd = os.open(log, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.lseek(fd, start, os.SEEK_SET)
        left = end - start
        while left > 0 and (data := os.read(fd, min(CHUNK, left))):
            if os.getppid() != parent:
                raise SystemExit(1)  # the importer is gone: nobody will read what this writes
            left -= len(data)
            data = held + data
            cut = data.rfind(b"\n") + 1
            held = data[cut:]
            if not cut:
                continue
            block = data[:cut]
            if redactor is not None:
                block = redactor(block)
            _write_all(trace, block)
            written += len(block)
            chosen = wanted.select(block, seen)
            seen.update(chosen.new_pids)
            _frame(out, (*chosen, written))
    finally:
        os.close(fd)
    if held:
        if redactor is not None:
            held = redactor(held)
        _write_all(trace, held)
    _frame(out, (held,))


def _frame(fd: int, value: tuple[Any, ...]) -> None:
    data = marshal.dumps(value)
    _write_all(fd, len(data).to_bytes(8, "little") + data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    trace = int(sys.argv[1])
    # Loaded while the job is on its way (the importer is still starting up itself).
    import capsule.parse.wanted
    import capsule.redact
    import capsule.track.levels  # noqa: F401

    job = _read_all(sys.stdin.fileno())
    if not job:
        return  # not needed after all
    log, first, end, redact, level = job.decode().split("\0")
    try:
        _part_or_gone(
            log,
            int(first),
            int(end),
            redact=redact == "1",
            level=level,
            trace=trace,
            out=sys.stdout.fileno(),
        )
    finally:
        os.close(trace)


def _part_or_gone(*args: Any, **kwargs: Any) -> None:
    try:
        part(*args, **kwargs)
    except BrokenPipeError:
        raise SystemExit(1) from None  # the importer is gone (interrupted): nobody reads what this writes


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 1 << 16):
        data += chunk
    return data


if __name__ == "__main__":
    main()
