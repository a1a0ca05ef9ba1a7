"""The spool relay: strace's output reaches the spool file redacted, never in clear (architecture §3 Secrets).

Run by strace itself (`strace -o '|CMD'`): it reads the trace from the pipe strace writes, redacts whole
lines and appends them to the spool (created 0600 by the recorder; opened with O_NOFOLLOW). strace waits
for it before exiting, so a reader that saw strace end has seen every line. It is strace's child, not the
recorder's: if Capsule is SIGKILLed, strace and the relay go on and the spool stays complete for
recovery. Terminal signals are ignored, as strace ignores them (`-I3`); the shell that starts it sets
that before exec, so there is no window in Python's start-up.

strace writes (and flushes) every line on its own: a relay that woke for each one spent ~20 us of CPU
per line, on the cores strace and the command need (~1 s of a fork-heavy recording of 5,000 `true`).
So after a small read the relay lets the trace gather in the pipe (widened to 1 MiB) for up to LINGER_S
before reading again; it wakes at once when strace closes the pipe. The bytes wait in the kernel's pipe,
never in the relay: a killed recorder loses nothing, and the spool lags the trace by LINGER_S at most.

    python -m capsule.stages.spool_relay SPOOL
    python -m capsule.stages.spool_relay -      (to stdout: `capsule import` redacting on a second core)

Capsule itself starts it with `python -I -c 'from capsule.stages.spool_relay import main; main()'`:
the same, without runpy (~3 ms of each recording, which waits for the relay to end).
"""

from __future__ import annotations

import os
import select
import sys

from capsule.redact import redact_bytes

CHUNK = 1 << 20  # a read returns what the pipe holds: large reads only mean fewer redact calls
LINGER_S = 0.01  # a live spool: how long the trace may gather in the pipe after a small read
SMALL = 1 << 16  # a read below this found the pipe drained: wait for more before the next


def relay(source: int, spool: str) -> None:
    if spool == "-":
        out = os.dup(sys.stdout.fileno())
        linger = None  # a filter of a finished file: the feeder writes as fast as it can
    else:
        out = os.open(spool, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        linger = _linger(source)
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


def _linger(source: int) -> select.poll:
    """A poll on `source` for its hang-up alone: new bytes do not end the wait (poll reports POLLHUP and
    POLLERR whatever it is asked for, and a write wakes only the waiters that asked for POLLIN)."""
    import contextlib
    import fcntl

    with contextlib.suppress(OSError):  # the pipe max (/proc/sys/fs/pipe-max-size) may be lower
        fcntl.fcntl(source, fcntl.F_SETPIPE_SZ, CHUNK)
    poller = select.poll()
    poller.register(source, 0)
    return poller


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    relay(sys.stdin.fileno(), sys.argv[1])


if __name__ == "__main__":
    main()
