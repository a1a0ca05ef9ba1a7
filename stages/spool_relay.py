"""The spool relay: strace's output reaches the spool file redacted, never in clear (architecture §3 Secrets).

Run by strace itself (`strace -o '|CMD'`): it reads the trace from the pipe strace writes, redacts whole
lines and appends them to the spool (created 0600 by the recorder; opened with O_NOFOLLOW). strace waits
for it before exiting, so a reader that saw strace end has seen every line. It is strace's child, not the
recorder's: if Capsule is SIGKILLed, strace and the relay go on and the spool stays complete for
recovery. Terminal signals are ignored, as strace ignores them (`-I3`); the shell that starts it sets
that before exec, so there is no window in Python's start-up.

    python -m capsule.stages.spool_relay SPOOL
    python -m capsule.stages.spool_relay -      (to stdout: `capsule import` redacting on a second core)

Capsule itself starts it with `python -I -c 'from capsule.stages.spool_relay import main; main()'`:
the same, without runpy (~3 ms of each recording, which waits for the relay to end).
"""

from __future__ import annotations

import os
import sys

from capsule.redact import redact_bytes

CHUNK = 1 << 20  # a read returns what the pipe holds: large reads only mean fewer redact calls


def relay(source: int, spool: str) -> None:
    if spool == "-":
        out = os.dup(sys.stdout.fileno())
    else:
        out = os.open(spool, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
    held = b""
    try:
        while data := os.read(source, CHUNK):
            data = held + data
            cut = data.rfind(b"\n") + 1
            held = data[cut:]
            if cut:
                _write_all(out, redact_bytes(data[:cut]))
        if held:
            _write_all(out, redact_bytes(held))
    finally:
        os.close(out)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    relay(sys.stdin.fileno(), sys.argv[1])


if __name__ == "__main__":
    main()
