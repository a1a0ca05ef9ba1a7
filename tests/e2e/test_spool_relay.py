"""The spool relay of a live recording, as the recorder starts it (`spool_output`: strace writes a FIFO
the relay reads): fed line by line, it lets the trace gather before it reads again, yet every line
reaches the spool while the writer is still open, redacted exactly as `redact_bytes` redacts the whole,
and the relay ends when the writer closes, or, when none ever came, once it is released."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from capsule.redact import redact_bytes
from capsule.stages.spools import spool_output, start_relay
from capsule.stages.store import open_private
from tests.e2e.test_run import _wait_for


def _start_relay(spool: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The relay, started as the recorder starts it; a writer's end of its FIFO, opened as strace does."""
    os.close(open_private(spool, new=True))
    flag, target = spool_output(spool, redact=True)
    relay = start_relay(spool)
    assert flag == "-o"
    assert target == str(relay.fifo)
    write = os.open(target, os.O_WRONLY | os.O_CLOEXEC)  # at once: the relay's end is open already
    relay.fifo.unlink()
    return relay.process, write


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


def _relay_all(spool: Path, data: bytes) -> bytes:
    """Send `data` through a live relay into `spool` (new) and return what the spool kept."""
    spool.unlink(missing_ok=True)
    relay, pipe = _start_relay(spool)
    try:
        os.write(pipe, data)
    finally:
        os.close(pipe)
    assert relay.wait(timeout=60) == 0
    return spool.read_bytes()


def test_a_live_relay_keeps_the_parsed_shapes_and_parses_them_again_when_they_differ(tmp_path: Path) -> None:
    """The relay of a home's spool keeps shapes.toml parsed beside spool/; a cache of other bytes, or
    one that is no cache at all, is parsed again and rewritten, and the redaction is the same each time."""
    import marshal

    from capsule import redact
    from capsule.stages.spool_relay import SHAPES_CACHE

    def kept() -> object:
        return marshal.loads(cache.read_bytes())  # noqa: S302 (the relay's own file, in this test's folder)

    (tmp_path / "spool").mkdir()
    spool = tmp_path / "spool" / "x.strace"
    cache = tmp_path / SHAPES_CACHE
    source = redact.shapes_source()
    sent = b'7 1700000000.000001 execve("/bin/x", ["x", "--password=hunter2x", "-H", "X-Api-Key: abcdef123456"], 0x1) = 0\n'
    expected = redact_bytes(sent)
    assert b"hunter2x" not in expected

    assert _relay_all(spool, sent) == expected
    assert kept() == (source, redact.parse_shapes(source))
    assert (cache.stat().st_mode & 0o777) == 0o600

    assert _relay_all(spool, sent) == expected  # from the cache

    # kept for other bytes (a shapes.toml since changed): those rules are not used, the file is parsed
    cache.write_bytes(marshal.dumps((b"# another shapes.toml", {"names": {}, "rule": []})))
    assert _relay_all(spool, sent) == expected
    assert kept()[0] == source  # type: ignore[index]

    cache.write_bytes(b"not marshal at all")
    assert _relay_all(spool, sent) == expected
    assert kept()[0] == source  # type: ignore[index]


def test_a_relay_outside_a_home_keeps_no_cache(tmp_path: Path) -> None:
    """A spool that is not in a home's spool/ (a test's, a tool's) leaves no cache beside it."""
    from capsule.stages.spool_relay import SHAPES_CACHE

    sent = b'7 1700000000.000001 execve("/bin/x", ["x", "--password=hunter2x"], 0x1) = 0\n'
    assert _relay_all(tmp_path / "live.strace", sent) == redact_bytes(sent)
    assert not (tmp_path / SHAPES_CACHE).exists()
    assert not (tmp_path.parent / SHAPES_CACHE).exists()


async def test_a_relay_whose_strace_never_came_ends_when_released(tmp_path: Path) -> None:
    """strace failed before it opened the FIFO: the relay, waiting for a writer (an empty FIFO reads as
    ended until one comes), ends once released, the spool empty; released again, nothing happens."""
    spool = tmp_path / "live.strace"
    os.close(open_private(spool, new=True))
    relay = start_relay(spool)
    wchan = Path(f"/proc/{relay.process.pid}/wchan")
    _wait_for(lambda: relay.process.poll() is not None or wchan.read_text().startswith("poll"))
    assert relay.process.poll() is None  # waiting in poll for a writer, not ended by the empty FIFO
    await relay.finish()
    assert relay.process.returncode == 0
    assert spool.read_bytes() == b""
    assert not relay.fifo.exists()
    relay.release()
