"""The second process of a split import: it reads the last part of a log, redacts it, writes the redacted
bytes to a file of its own and chooses, chunk by chunk, the lines the parser needs (`select_wanted`).

`capsule import` of a large `-ttt` log reads the head itself and this process reads the rest on the other
core (stages/trace.py `split_read_stage`); the importer then appends the redacted part to the kept trace and
parses the chosen lines after its own. What it writes is the importer's to trust or drop: a part whose
process did not end with status 0 fails the import.

    python -I -c 'from capsule.stages.import_part import main; main()' LOG START END REDACT KEEP DROP TRACE

reads bytes START to END of LOG (START and END on line starts, END may be the size), redacts them if
REDACT is 1 and writes them to TRACE (created private by the importer, opened with O_NOFOLLOW). The
choice goes to stdout as it is made, one frame a chunk (8 bytes of length, then marshal of a `Selected`
as a tuple), then a last frame holding a 1-tuple: the part's redacted unfinished last line (or b"").
KEEP and DROP are the tracker's wanted syscalls and ignored signals, comma-separated. SIGINT is the
importer's to handle (it kills this process); if the importer dies, this process stops at its next chunk.
"""

from __future__ import annotations

import marshal
import os
import signal
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

CHUNK = 1 << 20


def part(
    log: str,
    start: int,
    end: int,
    *,
    redact: bool,
    keep: frozenset[str],
    drop_signals: frozenset[str],
    trace: int,
    out: int,
) -> None:
    """Write bytes start..end of `log` (redacted) to fd `trace` and the frames of the lines chosen from
    each chunk, then of the unfinished last line, to fd `out`."""
    from capsule.parse.grammar import wanted_lines
    from capsule.parse.parser import select_wanted

    redactor: Callable[[bytes], bytes] | None = None
    if redact:
        from capsule.redact import redact_bytes

        redactor = redact_bytes
    wanted = wanted_lines(keep, drop_signals)
    parent = os.getppid()
    seen: set[str] = set()
    held = b""
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
            chosen = select_wanted(block.decode("utf-8", "replace"), wanted, seen)
            seen.update(chosen.new_pids)
            _frame(out, tuple(chosen))
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


def _open_out(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log, start, end, redact, keep, drop, trace_path = sys.argv[1:8]
    trace = _open_out(trace_path)
    try:
        part(
            log,
            int(start),
            int(end),
            redact=redact == "1",
            keep=frozenset(keep.split(",")),
            drop_signals=frozenset(drop.split(",")) - {""},
            trace=trace,
            out=sys.stdout.fileno(),
        )
    finally:
        os.close(trace)


if __name__ == "__main__":
    main()
