"""`capsule run`: CMD under strace, the trace tailed through the pipeline into a new session.

The command keeps the terminal (stdin, stdout, stderr pass through untouched). strace writes its trace
to a spool file, never stderr. Ctrl-C from the terminal reaches the command directly (same process
group) and strace, run as `strace -o FILE PROG`, blocks fatal signals (its default `-I3`), so Capsule
ignores SIGINT and keeps recording until the command is gone, then drains and closes the session.
If Capsule is SIGKILLed, strace keeps tracing into the spool and the command is unharmed; a later
`capsule report` recovers the session from the spool.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import attrs
import psutil
import trio

from capsule import __version__
from capsule.events import ProcSpawnFailed, SessionEnded, SessionStarted, kind_versions
from capsule.fold.tally import Tally
from capsule.redact import redact_argv
from capsule.stages.pipeline import run_pipeline
from capsule.stages.record import SessionWriter, record_stage
from capsule.stages.store import EVENTS, TRACE, create_session, open_private, spool_path
from capsule.stages.trace import tail_stage
from capsule.stages.tracer import Tracer

EXIT_RECORDER_FAILED = 125  # like env(1) and timeout(1): the wrapper itself failed
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


@attrs.frozen
class RunOutcome:
    session_id: str
    path: Path
    exit_code: int  # what capsule exits with: the command's code, 128+N for signal N, or 125-127
    signal: str | None
    duration_s: float
    tally: Tally
    error: str | None = None


def resolve_command(
    name: str, cwd: str | None = None, env: dict[str, str] | None = None
) -> tuple[str | None, str | None]:
    """(path, None) if `name` can be executed, else (None, errno name) as execvp would fail (from
    `cwd`, with `env`'s PATH when they are given)."""
    if "/" in name:
        where = os.path.join(cwd, name) if cwd is not None else name
        if not os.path.exists(where):
            return None, "ENOENT"
        if os.path.isdir(where) or not os.access(where, os.X_OK):
            return None, "EACCES"
        return name, None
    found = shutil.which(name, path=None if env is None else env.get("PATH", os.defpath))
    return (found, None) if found else (None, "ENOENT")


def _exit_status(status: tuple[int | None, str | None] | None, tracer_rc: int) -> tuple[int, str | None]:
    if status is not None:
        code, sig = status
        if sig is not None:
            number = getattr(signal.Signals, sig, None) if sig.startswith("SIG") else None
            return 128 + (int(number) if number is not None else 0), sig
        return code or 0, None
    if tracer_rc < 0:
        return 128 - tracer_rc, signal.Signals(-tracer_rc).name
    return tracer_rc, None


def _header(
    session_id: str, argv: tuple[str, ...], name: str | None, started: float, **fields: object
) -> SessionStarted:
    # `started` is taken before strace is spawned, so the header never postdates the trace's first line.
    cwd = fields.pop("cwd", None)
    return SessionStarted(
        ts=started,
        capsule_version=__version__,
        session_id=session_id,
        session_kind="run",
        name=name,
        argv=argv,
        cwd=os.path.abspath(str(cwd or ".")),
        host=platform.node(),
        recorder_pid=os.getpid(),
        recorder_started=psutil.Process().create_time(),
        kinds=kind_versions(),
        **fields,  # type: ignore[arg-type]
    )


async def _relay_signals(strace_pid: int, signals: AsyncIterator[int]) -> None:
    """SIGTERM aimed at Capsule goes to the command; terminal signals already reached it."""
    async for signum in signals:
        if signum != signal.SIGTERM:
            continue
        try:
            for child in psutil.Process(strace_pid).children():
                child.send_signal(signum)
        except psutil.Error:
            pass


async def _kill_after(strace_pid: int, after_s: float, grace: float = 2.0) -> None:
    """The command ran out of time: TERM its whole tree, KILL what is left after `grace`.

    strace -f waits for every traced process, orphans included, so the tree goes, not just the root."""
    await trio.sleep(after_s)
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0.0)):
        try:
            tree = psutil.Process(strace_pid).children(recursive=True)
        except psutil.Error:
            return
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signum)
        await trio.sleep(wait)


async def record_run(
    argv: list[str],
    *,
    home: Path,
    tracer: Tracer,
    level: str = "process",
    name: str | None = None,
    redact: bool = True,
    parent: str | None = None,
    stdio: tuple[int | None, int | None, int | None] = (None, None, None),
    time_limit: float | None = None,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> RunOutcome:
    """Record `argv` as a new session. `stdio` (stdin, stdout, stderr; None inherits) lets a server keep
    its own streams; after `time_limit` seconds the command's whole tree is killed (TERM, then KILL).
    `cwd` and `env` (None: Capsule's own) are the command's working directory and environment."""
    started = time.time()
    session_id, path = create_session(home, started)
    shown_argv = redact_argv(argv) if redact else tuple(argv)
    writer = SessionWriter(path / EVENTS)
    trace_fd = open_private(path / TRACE)
    error: str | None = None
    try:
        resolved, failure = resolve_command(argv[0], cwd, env)
        if resolved is None:
            assert failure is not None
            message = "command not found" if failure == "ENOENT" else "permission denied"
            writer.write(
                [
                    _header(
                        session_id,
                        shown_argv,
                        name,
                        started,
                        trace_level=level,
                        redacted=redact,
                        parent=parent,
                        cwd=cwd,
                    ),
                    ProcSpawnFailed(
                        ts=time.time(), path=shown_argv[0], argv=shown_argv, errno=failure, message=message
                    ),
                ]
            )
            code = EXIT_NOT_FOUND if failure == "ENOENT" else EXIT_NOT_EXECUTABLE
            error = f"{message}: {shown_argv[0]}"
            _close(writer, started, code, None, 0, 0, error)
            return RunOutcome(session_id, path, code, None, time.time() - started, writer.tally, error)

        spool = spool_path(home, session_id)
        os.close(open_private(spool, append=False))  # 0600 before strace opens it (it truncates, keeps mode)
        flags = tracer.flags(level)
        with trio.open_signal_receiver(
            signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT
        ) as signals:
            # The header is on disk before strace starts: the command may run (and Capsule be killed) at
            # once, and a session without its header could not be recovered. strace's pid is not in it;
            # while the recorder is dead, a live strace is known by its open spool (reader.recorder_alive).
            writer.write(
                [
                    _header(
                        session_id,
                        shown_argv,
                        name,
                        started,
                        tracer=tracer.path,
                        tracer_version=tracer.version,
                        tracer_flags=flags,
                        trace_level=level,
                        redacted=redact,
                        parent=parent,
                        cwd=cwd,
                    )
                ]
            )
            stdin, stdout, stderr = stdio
            process = await trio.lowlevel.open_process(
                [tracer.path, *flags, "-o", str(spool), "--", *argv],
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                cwd=cwd,
                env=env,
            )
            tracer_done = trio.Event()

            async def wait_tracer() -> None:
                await process.wait()
                tracer_done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_tracer)
                nursery.start_soon(_relay_signals, process.pid, signals)
                if time_limit is not None:
                    nursery.start_soon(_kill_after, process.pid, time_limit)
                stats = await run_pipeline(
                    partial(tail_stage, spool, tracer_done),
                    partial(record_stage, writer=writer),
                    level=level,
                    redact=redact,
                    trace_fd=trace_fd,
                )
                nursery.cancel_scope.cancel()
        assert process.returncode is not None
        error = None
        if stats.lines == 0 and process.returncode != 0:
            error = (
                f"strace exited with {process.returncode} before the command started "
                "(is ptrace permitted? run `capsule doctor`)"
            )
            code, sig = EXIT_RECORDER_FAILED, None
        else:
            code, sig = _exit_status(stats.root_status, process.returncode)
        _close(writer, started, code if sig is None else None, sig, stats.lines, stats.unparsed, error)
        spool.unlink(missing_ok=True)
        return RunOutcome(session_id, path, code, sig, time.time() - started, writer.tally, error)
    finally:
        writer.close()
        os.fsync(trace_fd)
        os.close(trace_fd)


def _close(
    writer: SessionWriter,
    started: float,
    code: int | None,
    sig: str | None,
    lines: int,
    unparsed: int,
    error: str | None,
) -> None:
    tally = writer.tally
    writer.write(
        [
            SessionEnded(
                ts=time.time(),
                exit_code=code,
                signal=sig,
                duration_s=round(time.time() - started, 6),
                lines=lines,
                events=tally.events,
                processes=tally.processes,
                failed=tally.failed,
                unparsed=unparsed,
                error=error,
            )
        ]
    )
