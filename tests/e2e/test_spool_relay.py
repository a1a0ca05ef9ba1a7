"""The spool relay of a live recording, as strace runs it (`-o '|sh -c …'`): fed line by line through a
pipe, it lets the trace gather before it reads again, yet every line reaches the spool while the writer
is still open, redacted exactly as `redact_bytes` redacts the whole, and the relay ends when the pipe
closes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from capsule.redact import redact_bytes
from capsule.stages.spools import spool_output
from capsule.stages.store import open_private
from tests.e2e.test_run import _wait_for


def _start_relay(spool: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The relay, started as strace starts it (its shell command from `spool_output`); our end of its pipe."""
    os.close(open_private(spool, new=True))
    flag, target = spool_output(spool, redact=True)
    assert flag == "-o"
    assert target.startswith("|")
    read, write = os.pipe()
    try:
        relay = subprocess.Popen(["/bin/sh", "-c", target[1:]], stdin=read)
    finally:
        os.close(read)
    return relay, write


def test_lines_reach_the_spool_while_the_writer_is_open_and_redacted(tmp_path: Path) -> None:
    spool = tmp_path / "live.strace"
    relay, pipe = _start_relay(spool)
    sent = b""
    try:
        for i in range(40):
            # strace's way: a line per write, some cut in two (a secret across the cut included)
            line = f'{100 + i} 1700000000.{i:06d} execve("/bin/x", ["x", "--password=hunter{i}x"], 0x1) = 0\n'
            data = line.encode()
            cut = len(data) // 2 if i % 3 == 0 else len(data)
            for piece in (data[:cut], data[cut:]):
                if piece:
                    os.write(pipe, piece)
            sent += data
            if i % 10 == 9:  # the relay lingers, but never holds what it has been sent
                lines = sent.count(b"\n")
                _wait_for(lambda lines=lines: spool.read_bytes().count(b"\n") == lines)
                assert spool.read_bytes() == redact_bytes(sent)
        os.write(pipe, b"999 1700000001.000000 +++ exited with 0 +++")  # a last line without its newline
        sent += b"999 1700000001.000000 +++ exited with 0 +++"
    finally:
        os.close(pipe)
    assert relay.wait(timeout=60) == 0  # ends when the pipe closes, lingering or not
    kept = spool.read_bytes()
    assert kept == redact_bytes(sent)
    assert b"hunter" not in kept
