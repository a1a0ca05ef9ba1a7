"""The spool relay: strace's output reaches the spool file redacted, never in clear (architecture §3 Secrets).

Started by the recorder just before strace (stages/spools.py `start_relay`), in a session of its own, with
its stdin the read end of a FIFO beside the spool, opened without blocking; strace writes the FIFO
(`-o FIFO`). It reads the trace, redacts whole lines and appends them to the spool (created 0600 by the
recorder; opened with O_NOFOLLOW), and ends when strace has closed the FIFO: the recorder waits for it
after strace, so a reader that saw both end has seen every line. If Capsule is SIGKILLed, strace and the
relay go on and the spool stays complete for recovery (the relay holds it open while it writes).
Terminal signals are ignored, as strace ignores them (`-I3`); the shell that starts it sets that before
exec, so there is no window in Python's start-up.

Why not `strace -o '|CMD'`, strace's own pipe to a child: with it strace 6.1 exits as soon as the last
process it knows has exited (strace.c, next_event: it cannot wait for ECHILD while its logger child
lives). A child whose first stop strace has not seen yet is then dropped: `sh -c 'cmd &'`, whose parent
exits at once, left `cmd` running untraced under strace's seccomp filter, where every traced syscall
fails with ENOSYS (its exec said "Function not implemented" and its exit crashed with SIGSEGV).

strace writes (and flushes) every line on its own: a relay that woke for each one spent ~20 us of CPU
per line, on the cores strace and the command need (~1 s of a fork-heavy recording of 5,000 `true`).
So after a small read the relay lets the trace gather in the pipe (widened to 1 MiB) for up to LINGER_S
before reading again; it wakes at once when strace closes the pipe. The bytes wait in the kernel's pipe,
never in the relay: a killed recorder loses nothing, and the spool lags the trace by LINGER_S at most.

    python -m capsule.stages.spool_relay SPOOL
    python -m capsule.stages.spool_relay -      (to stdout: `capsule import` redacting on a second core)

Capsule itself starts it with `python -I -S -c 'import sys; sys.path[:0] = [...]; from
capsule.stages.spool_relay import main; main()'`: the same, without runpy (~3 ms) and without `site`
(~3 ms: the paths of capsule and ahocorasick-rs are given). A live relay takes the parsed secret shapes
from `$CAPSULE_HOME/secret-shapes.cache` (kept with the very bytes of shapes.toml it was parsed from, so
a changed file is parsed again): `re` and `tomllib` then load only for a trace that holds a hint
(~13 ms of each recording's CPU, on the cores the command needs).
"""

from __future__ import annotations

import os
import select
import sys

from capsule import redact
from capsule.redact import redact_bytes

CHUNK = 1 << 20  # a read returns what the pipe holds: large reads only mean fewer redact calls
LINGER_S = 0.01  # a live spool: how long the trace may gather in the pipe after a small read
SMALL = 1 << 16  # a read below this found the pipe drained: wait for more before the next
SHAPES_CACHE = "secret-shapes.cache"  # under $CAPSULE_HOME, beside spool/: marshal of (source, parsed)


def relay(source: int, spool: str) -> None:
    if spool == "-":
        out = os.dup(sys.stdout.fileno())
        linger = None  # a filter of a finished file: the feeder writes as fast as it can
    else:
        out = os.open(spool, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        linger = _linger(source)
        folder = os.path.dirname(spool)
        if os.path.basename(folder) == "spool":  # $CAPSULE_HOME/spool/<id>.strace (store.spool_path)
            _use_kept_shapes(os.path.join(os.path.dirname(folder), SHAPES_CACHE))
    _await_writer(source)
    held = b""
    try:
        while data := os.read(source, CHUNK):
            data = held + data
            cut = data.rfind(b"\n") + 1
            held = data[cut:]
            if cut:
                _write_all(out, redact_bytes(data[:cut]))
            if linger is not None and len(data) < SMALL:
                linger.poll(LINGER_S * 1000)
        if held:
            _write_all(out, redact_bytes(held))
    finally:
        os.close(out)


def _await_writer(source: int) -> None:
    """A FIFO opened without blocking (the live spool's) reads as ended until strace has opened it: wait
    for its first bytes, or for its close (poll reports a hang-up only once a writer has come and gone),
    then read blocking as from a pipe. A blocking source (a pipe) is left as it is."""
    import fcntl

    flags = fcntl.fcntl(source, fcntl.F_GETFL)
    if not flags & os.O_NONBLOCK:
        return
    poller = select.poll()
    poller.register(source, select.POLLIN)
    poller.poll()
    fcntl.fcntl(source, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)


def _linger(source: int) -> select.poll:
    """A poll on `source` for its hang-up alone: new bytes do not end the wait (poll reports POLLHUP and
    POLLERR whatever it is asked for, and a write wakes only the waiters that asked for POLLIN)."""
    import fcntl

    # try, not contextlib.suppress: contextlib and the collections it imports were ~5 ms of the start
    try:  # noqa: SIM105
        fcntl.fcntl(source, fcntl.F_SETPIPE_SZ, CHUNK)
    except OSError:  # the pipe max (/proc/sys/fs/pipe-max-size) may be lower
        pass
    poller = select.poll()
    poller.register(source, 0)
    return poller


def _use_kept_shapes(cache: str) -> None:
    """Give capsule.redact the secret shapes parsed from shapes.toml as it is now: from `cache` when it
    holds them for these very bytes, else parsed here and kept there. The cache sits in the private
    home; unreadable, stale or malformed, it costs a parse, never a failure or other rules."""
    import marshal

    source = redact.shapes_source()
    try:
        with open(cache, "rb") as file:
            # Our own file in the private home (0600), written below: not input from elsewhere.
            kept = marshal.loads(file.read())  # noqa: S302
    except (OSError, EOFError, ValueError, TypeError):
        kept = None
    if isinstance(kept, tuple) and len(kept) == 2 and kept[0] == source and isinstance(kept[1], dict):
        redact.use_shapes(kept[1])
        return
    data = redact.parse_shapes(source)
    redact.use_shapes(data)
    temp = f"{cache}.{os.getpid()}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(marshal.dumps((source, data)))
        os.replace(temp, cache)
    except (OSError, ValueError):
        try:  # noqa: SIM105 (no contextlib here, as in _linger)
            os.unlink(temp)
        except OSError:
            pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    relay(sys.stdin.fileno(), sys.argv[1])


if __name__ == "__main__":
    main()
