"""The spool of a live recording (`$CAPSULE_HOME/spool/<id>.strace`): how strace writes it, and tidying
the spools that no live recorder owns.

A redacting recording sends strace's output through the relay (`capsule.stages.spool_relay`), so the
spool holds redacted lines only. A spool left behind (the recorder was killed, or an older capsule or a
`--no-redact` run wrote it in clear) is recovered into its session on the next capsule command of any
kind, and removed; a spool with no session, or whose session is complete, is removed. A spool its
recorder still holds (`claim_spool`) is left alone.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import subprocess
import sys
from functools import partial
from pathlib import Path

import attrs

from capsule.stages.home import runs_dir
from capsule.stages.store import is_session, open_private

# Ignored before exec, so inherited by Python (which then installs no SIGINT handler of its own).
_IGNORE = "trap '' INT TERM HUP QUIT"


def spool_output(spool: Path, *, redact: bool) -> tuple[str, ...]:
    """strace's `-o` argument for `spool`: with `redact`, the FIFO its relay reads (`start_relay`, just
    before strace; see stages/spool_relay.py for why not `-o '|CMD'`), else the file itself."""
    return ("-o", str(fifo_path(spool) if redact else spool))


def fifo_path(spool: Path) -> Path:
    """The FIFO strace writes a redacted spool through (beside it, not a spool's name)."""
    return spool.with_suffix(".fifo")


@attrs.define
class Relay:
    """The redacting relay of one live spool, Capsule's child in a session of its own. When strace has
    ended (or never started), `release` lets it end; `finish` does so and waits until it has, when the
    spool holds every line."""

    fifo: Path
    process: subprocess.Popen[bytes]

    def release(self) -> None:
        """strace is gone: a relay still waiting for it to open the FIFO sees a writer come and go (its
        end), and the FIFO's name goes (the open ends stay)."""
        try:
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # ENXIO: no reader left, the relay has ended; or the name is gone
            pass
        else:
            os.close(fd)
        self.fifo.unlink(missing_ok=True)

    async def finish(self) -> None:
        from capsule.stages.launch import MainThreadProcess  # (it imports this module)

        self.release()
        await MainThreadProcess(self.process).wait()


def start_relay(spool: Path) -> Relay:
    """Make the FIFO beside `spool` (0600) and start the relay reading it. Its read end is opened here
    without blocking, so strace's open for writing does not wait for the relay's Python to start."""
    fifo = fifo_path(spool)
    fifo.unlink(missing_ok=True)  # a dead recording's, by the same id: not possible, but never reused
    os.mkfifo(fifo, 0o600)
    read = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        process = subprocess.Popen(
            ["/bin/sh", "-c", f"{_IGNORE}; exec {shlex.join(_relay_argv(spool))}"],
            stdin=read,
            start_new_session=True,  # a stop of the command's group (a task's) never reaches it
        )
    except BaseException:
        fifo.unlink(missing_ok=True)
        raise
    finally:
        os.close(read)
    return Relay(fifo=fifo, process=process)


def _relay_argv(spool: Path | str) -> tuple[str, ...]:
    # -c rather than -m: runpy was ~3 ms of the relay's start, which every recording waits for; -S
    # (no site, ~3 ms) with the paths it needs given: capsule's and ahocorasick-rs's (capsule.redact).
    import ahocorasick_rs

    import capsule

    paths = [os.path.dirname(os.path.dirname(m.__file__ or "")) for m in (capsule, ahocorasick_rs)]
    code = f"import sys; sys.path[:0] = {list(dict.fromkeys(paths))!r}; from capsule.stages.spool_relay import main; main()"
    return (sys.executable, "-I", "-S", "-c", code, str(spool))


def relay_to_stdout() -> tuple[str, ...]:
    """The relay as a filter, stdin to stdout (redacting a finished trace on another core)."""
    return _relay_argv("-")


def claim_spool(spool: Path) -> int:
    """Create the spool (0600, new) and hold it: an exclusive flock on a descriptor the recorder keeps
    until the recording ends (close it then). Between the spool's creation and the session's header,
    another capsule's tidying would find a spool no session owns yet and remove it (seen with eight
    traced services starting at once); it leaves a held spool alone. The lock dies with its holder."""
    claiming = spool.with_name(spool.name + ".claim")  # not a spool's name: no tidying looks at it
    fd = open_private(claiming, new=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.link(claiming, spool)  # it appears already held (and, as O_EXCL would, only if it was not there)
    except BaseException:
        os.close(fd)
        raise
    finally:
        claiming.unlink(missing_ok=True)
    return fd


def _held(spool: Path) -> bool:
    """Is the spool claimed by a live recorder (or gone already)?"""
    try:
        fd = os.open(spool, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def tidy_spools(home: Path) -> list[str]:
    """Recover or remove every spool no live recorder owns; the ids of the sessions recovered."""
    import trio

    from capsule.stages.derive import recover
    from capsule.stages.reader import glance, recorder_alive

    recovered = []
    for spool in sorted((home / "spool").glob("*.strace")):
        if _held(spool):
            continue
        session = runs_dir(home) / spool.name.removesuffix(".strace")
        try:
            seen = glance(session) if is_session(session) else None
        except OSError:
            continue
        if seen is None or seen.header is None or seen.ended is not None:
            spool.unlink(missing_ok=True)
            continue
        if recorder_alive(seen.header):
            continue
        try:
            trio.run(partial(recover, session, seen.header, home=home))
        except Exception as exc:  # housekeeping before every command must never stop one
            if seen.header.redacted:
                _redact_in_place(spool)
            print(
                f"capsule: warning: session {session.name} could not be recovered from its spool ({exc}); "
                "the spool was redacted and kept",
                file=sys.stderr,
            )
            continue
        recovered.append(session.name)
    for fifo in (home / "spool").glob("*.fifo"):  # a relay's, whose recording has gone
        if not fifo.with_suffix(".strace").exists():
            fifo.unlink(missing_ok=True)
    return recovered


def _redact_in_place(spool: Path) -> None:
    """Replace `spool` by its redacted copy (a new 0600 file renamed over it)."""
    from capsule.redact import redact_bytes
    from capsule.stages.store import private_output

    data = spool.read_bytes()
    with private_output(spool) as out:
        out.write(redact_bytes(data))
