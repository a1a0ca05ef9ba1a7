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
import itertools
import os
import shlex
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from capsule.stages.home import runs_dir
from capsule.stages.store import is_session, open_private

# Ignored before exec, so inherited by Python (which then installs no SIGINT handler of its own).
_IGNORE = "trap '' INT TERM HUP QUIT"


def spool_output(spool: Path, *, redact: bool) -> tuple[str, ...]:
    """strace's `-o` argument for `spool`: through the redacting relay, or the file itself."""
    if not redact:
        return ("-o", str(spool))
    command = shlex.join(_relay_argv(spool))
    return ("-o", f"|{_IGNORE}; exec {command}")


def relay_execs(strace_argv: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """The execs strace itself makes to start the relay named in `strace_argv` (none when it writes a
    file): `/bin/sh -c '...'` (strace popens the `-o |CMD` command with sh, strace.c open_output_file)
    and the shell's exec of Python. The guard lets exactly these through (stages/guard.py)."""
    for flag, value in itertools.pairwise(strace_argv):
        if flag == "-o" and value.startswith(f"|{_IGNORE}; exec "):
            command = value[1:]
            spool = Path(shlex.split(command.partition("; exec ")[2])[-1])
            return [("/bin/sh", ("sh", "-c", command)), (sys.executable, _relay_argv(spool))]
    return []


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
    return recovered


def _redact_in_place(spool: Path) -> None:
    """Replace `spool` by its redacted copy (a new 0600 file renamed over it)."""
    from capsule.redact import redact_bytes
    from capsule.stages.store import private_output

    data = spool.read_bytes()
    with private_output(spool) as out:
        out.write(redact_bytes(data))
