"""`capsule run`: CMD under strace, the trace tailed through the pipeline into a new session.

The command keeps the terminal (stdin, stdout, stderr pass through untouched). strace writes its trace
to a spool file, never stderr, through a relay that redacts it first (`capsule.stages.spool_relay`). Ctrl-C from the terminal reaches the command directly (same process
group) and strace, run as `strace -o FILE PROG`, blocks fatal signals (its default `-I3`), so Capsule
ignores SIGINT and keeps recording until the command is gone, then drains and closes the session.
If Capsule is SIGKILLed, strace keeps tracing into the spool and the command is unharmed; a later
`capsule report` recovers the session from the spool.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import psutil
import trio

from capsule.events import (
    Event,
    ProcSpawnFailed,
    SessionEnded,
    SessionTimedOut,
)
from capsule.fold.tally import Tally
from capsule.policy.enforce import Enforcement
from capsule.stages.guard import (
    guard_record_stage,
    guarding,
    kill_guarded_tree,
    session_level,
    trace_level,
    tracer_flags,
    tracer_of,
)
from capsule.stages.launch import (
    Early,
    MainThreadProcess,
    header,
    open_recording,
    resolve_command,
    shown_argv,
    traced_header,
)
from capsule.stages.record import SessionWriter
from capsule.stages.spools import Relay, claim_spool, spool_output, start_relay
from capsule.stages.store import spool_path
from capsule.stages.tracer import Tracer

if TYPE_CHECKING:
    from capsule.fold.labels import RuleSet
    from capsule.stages.ebpf_recorder import EbpfTracer

EXIT_RECORDER_FAILED = 125  # like env(1) and timeout(1): the wrapper itself failed
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
# Why a command could not start, by the errno `resolve_command` gave (exit 127 for ENOENT, else 126).
_SPAWN_FAILURES = {"ENOENT": "command not found", "EACCES": "permission denied", "ENOEXEC": "cannot execute"}


@attrs.frozen
class RunOutcome:
    session_id: str
    path: Path
    exit_code: int  # what capsule exits with: the command's code, 128+N for signal N, or 125-127
    signal: str | None
    duration_s: float
    tally: Tally
    error: str | None = None
    timed_out: SessionTimedOut | None = None  # `time_limit` ran out: the tree was stopped


def _command_of(top_pid: int, is_command: bool) -> list[psutil.Process]:
    """The command's root process: `top_pid` itself (eBPF), or strace's child."""
    try:
        top = psutil.Process(
            top_pid if is_command else tracer_of(top_pid)
        )  # strace, inside any guard wrapper
        return [top] if is_command else top.children()
    except psutil.Error:
        return []


async def _relay_signals(top_pid: int, signals: AsyncIterator[int], *, is_command: bool = False) -> None:
    """SIGTERM aimed at Capsule goes to the command; terminal signals already reached it."""
    async for signum in signals:
        if signum != signal.SIGTERM:
            continue
        for proc in _command_of(top_pid, is_command):
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signum)


GRACE_S = 2.0  # `--timeout`: between SIGTERM and SIGKILL


def _traced(top_pid: int, *, is_command: bool = False) -> dict[int, psutil.Process]:
    """Every process of the command's tree: what strace traces (TracerPid), its descendants and orphans
    re-parented away from it, not strace's own spool relay; under the eBPF tracer (`is_command`), the
    command itself and its descendants."""
    found: dict[int, psutil.Process] = {}
    if is_command:
        with contextlib.suppress(psutil.Error):
            top = psutil.Process(top_pid)
            found = {p.pid: p for p in top.children(recursive=True)}
            found[top.pid] = top
        return found
    top_pid = tracer_of(top_pid)  # strace itself, inside the guard's wrappers when there is a policy
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", "rb") as status:
                tracer = next((line for line in status if line.startswith(b"TracerPid:")), b"")
            if tracer.split()[1:] == [str(top_pid).encode()]:
                found[int(entry.name)] = psutil.Process(int(entry.name))
        except (OSError, IndexError, psutil.Error):
            continue
    return found


def _signal_tree(processes: dict[int, psutil.Process], signum: int) -> int:
    """Send `signum` to each process still running (psutil checks it is the same process); how many."""
    sent = 0
    for proc in processes.values():
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signum)
            sent += 1
    return sent


async def _kill_after(
    top_pid: int,
    after_s: float,
    writer: SessionWriter,
    tracer_done: trio.Event,
    grace: float = GRACE_S,
    *,
    is_command: bool = False,
    since: float = 0.0,
    fired: list[SessionTimedOut] | None = None,
) -> None:
    """The command ran out of time: TERM its whole tree, KILL what is left after `grace`, and record it
    (in `fired` too, for the run's outcome).

    strace -f waits for every traced process, orphans included, so the tree goes, not just the root;
    a process is stopped only if it is the one seen (pid and start time: psutil checks both). `since`:
    how long the command has run already."""
    await trio.sleep(max(0.0, after_s - since))
    at = time.time()
    tree = _traced(top_pid, is_command=is_command)
    terminated = _signal_tree(tree, signal.SIGTERM)
    with trio.move_on_after(grace):
        await tracer_done.wait()
    killed = 0
    if not tracer_done.is_set():
        # The tree as it was (a process dying of SIGTERM orphans its children) and as it is now.
        killed = _signal_tree({**tree, **_traced(top_pid, is_command=is_command)}, signal.SIGKILL)
    timed_out = SessionTimedOut(ts=at, limit_s=after_s, grace_s=grace, terminated=terminated, killed=killed)
    writer.write([timed_out])
    if fired is not None:
        fired.append(timed_out)


async def record_run(
    argv: list[str],
    *,
    home: Path,
    tracer: Tracer | EbpfTracer,
    level: str = "process",
    name: str | None = None,
    redact: bool = True,
    parent: str | None = None,
    stdio: tuple[int | None, int | None, int | None] = (None, None, None),
    time_limit: float | None = None,
    cwd: str | None = None,
    answers: RuleSet | None = None,
    sample_interval: float = 0.0,
    enforcement: Enforcement | None = None,
    env: dict[str, str] | None = None,
    early: Early | None = None,
) -> RunOutcome:
    """Record `argv` as a new session. `stdio` (stdin, stdout, stderr; None inherits) lets a server keep
    its own streams; after `time_limit` seconds the command's whole tree is killed (TERM, then KILL);
    `cwd` is the directory it runs in (default: this process's). `answers` (exit rules) keep `grep` 1
    out of the failure count; `sample_interval` > 0 samples the tree's CPU and memory that often
    (`proc.sampled`); `enforcement` (from `guard.enforcement_for`) guards the tree with a policy (see
    stages/guard.py); `env` (None: Capsule's own) is the command's environment. `early`: strace was
    started already (`launch.start`: no policy, strace, Capsule's own streams and environment), or
    the eBPF recorder and the command's stub (`launch.start_ebpf`)."""
    recorded = trace_level(level, enforcement, ebpf=not isinstance(tracer, Tracer))  # the tracer's
    level = session_level(recorded)  # the header's and the tracker's
    shown = shown_argv(argv, redact)
    if early is not None:
        started, session_id, path = early.started, early.session_id, early.path
        writer, trace_fd, spool_claim = early.writer, early.trace_fd, early.spool_claim
    else:
        started = time.time()
        session_id, path, writer, trace_fd = open_recording(
            home, started, tracer.path, answers=answers, redact=redact
        )
        spool_claim = None
    error: str | None = None
    try:
        resolved, failure = (argv[0], None) if early else resolve_command(argv[0], cwd, env)
        if resolved is None:
            assert failure is not None
            message = _SPAWN_FAILURES.get(failure, "permission denied")
            writer.write(
                [
                    header(
                        session_id,
                        shown,
                        name,
                        started,
                        trace_level=level,
                        redacted=redact,
                        parent=parent,
                        cwd=cwd,
                    ),
                    ProcSpawnFailed(
                        ts=time.time(), path=shown[0], argv=shown, errno=failure, message=message
                    ),
                ]
            )
            code = EXIT_NOT_FOUND if failure == "ENOENT" else EXIT_NOT_EXECUTABLE
            error = f"{message}: {shown[0]}"
            if failure == "ENOEXEC":  # a shell would have run it: say how
                error += f" (no #! line: run it as `sh {shown[0]}`, or add one)"
            _close(writer, started, code, None, 0, 0, error)
            return RunOutcome(session_id, path, code, None, time.time() - started, writer.tally, error)

        if early is not None:
            spool, flags = early.spool, early.flags
        else:
            spool = spool_path(home, session_id)
            spool_claim = claim_spool(spool)  # 0600 before strace (or its relay) opens it; held to the end
            flags = tracer_flags(tracer.flags(recorded), enforcement)
        pid: list[int] = []  # what the guard's kill starts from: strace's wrapper, or the command (eBPF)
        ebpf = not isinstance(tracer, Tracer)
        if ebpf:
            from capsule.stages import ebpf as bpf  # (and the pipeline, which strace loads once it runs)
            from capsule.stages.ebpf_recorder import EbpfUnavailable, note_refusals
        live: LiveCount | None = None  # the pipeline's count of live processes (eBPF's kill reads it)
        # The guard's events wait for the header (eBPF writes it when its probes are attached, after the
        # guard's `policy.applied`): a session's first event is its header.
        # (`launch.start` wrote strace's before it spawned strace: a guard made there emits at once)
        before_header: list[Event] | None = None if early is not None and early.ebpf is None else []

        def emit(events: list[Event]) -> None:
            if before_header is None:
                writer.write(events)
            else:
                before_header.extend(events)

        def kill_tree() -> None:  # on_violation = "kill" (called once `pid` has the tree's top)
            if ebpf:
                bpf.kill_tree(pid[0], list(live.pids if live else ()))
            else:
                kill_guarded_tree(pid[0])

        with (
            trio.open_signal_receiver(
                signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT
            ) as signals,
            guarding(
                enforcement,
                emit=emit,
                kill=kill_tree,
                redact=redact,
                cwd=Path(cwd) if cwd else None,
                made=early.guard if early is not None else None,
            ) as guard,
        ):
            # The header is on disk before strace starts: the command may run (and Capsule be killed) at
            # once, and a session without its header could not be recovered. strace's pid is not in it;
            # while the recorder is dead, a live strace is known by its open spool (reader.recorder_alive).
            def write_header(at: float) -> None:
                nonlocal before_header
                writer.write(
                    [
                        traced_header(session_id, shown, name, at, tracer, flags, level, redact, parent, cwd),
                        *(before_header or ()),
                    ]
                )
                before_header = None

            if early is None and not ebpf:
                write_header(started)
            stdin, stdout, stderr = stdio
            command: trio.Process | MainThreadProcess | None = None
            process: trio.Process | MainThreadProcess
            relay: Relay | None = None
            if ebpf:
                assert not isinstance(tracer, Tracer)
                # the recorder takes a while to start (tens of ms; a second when it is first built):
                # the session starts when its programs are attached, just before the command is let go
                # (so its header still comes first, and a duration is the command's, not the tracer's).
                ready: list[float] = []

                def on_ready(at: float) -> None:  # the recorder's own time of it
                    ready.append(at)
                    write_header(at)

                if guard.notify:
                    guard.on_refused = note_refusals(spool)
                try:
                    if early is not None:
                        assert early.ebpf is not None
                        launched = await bpf.take_over(early.ebpf, early.process, spool, on_ready)
                        for signum in early.signals:  # what arrived before the recorder listened
                            signal.raise_signal(signum)
                    else:
                        launched = await bpf.launch(
                            tracer,
                            resolved,
                            argv,
                            spool=spool,
                            level=recorded,
                            stdio=stdio,
                            on_ready=on_ready,
                            cwd=cwd,
                            env=env,
                            wrap=partial(guard.wrap, helper=True) if enforcement is not None else None,
                            on_spawn=lambda _process: guard.spawned(),
                        )
                    pid.append(launched.root)
                    if early is not None and early.guard is not None:
                        guard.bind(emit, kill_tree)  # what it decided meanwhile, the tree's top known
                    started = ready[0]
                except EbpfUnavailable as exc:
                    if not ready:
                        write_header(started)
                    _close(writer, started, EXIT_RECORDER_FAILED, None, 0, 0, str(exc))
                    spool.unlink(missing_ok=True)
                    elapsed = time.time() - started
                    return RunOutcome(
                        session_id, path, EXIT_RECORDER_FAILED, None, elapsed, writer.tally, str(exc)
                    )
                process, command = launched.tracer, launched.process
            elif early is not None:
                process = early.process
                relay = early.relay
                pid.append(process.pid)
                if early.guard is not None:
                    guard.bind(emit, kill_tree)  # what it decided meanwhile, the tree's top known
                guard.spawned()
                for signum in early.signals:  # what arrived before the recorder listened: as if now
                    signal.raise_signal(signum)
            else:
                output = spool_output(spool, redact=redact)
                wrapped, fds = guard.wrap([tracer.path, *flags, *output, "--", *argv], writable=[output[-1]])
                relay = start_relay(spool) if redact else None
                try:
                    process = await trio.lowlevel.open_process(
                        wrapped, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env, pass_fds=fds
                    )
                except BaseException:
                    if relay is not None:
                        relay.release()
                    raise
                pid.append(process.pid)
                guard.spawned()
            # Loaded here, not with this module: under strace they load while strace and its relay
            # start on the other core (~10 ms of each recording's start).
            from capsule.stages.pipeline import LiveCount, exit_status, incompleteness, run_pipeline
            from capsule.stages.sample import sample_stage
            from capsule.stages.trace import POLL_IDLE_S, POLL_S, POLL_UNGUARDED_S, tail_stage

            live = LiveCount()
            tracer_done = trio.Event()

            async def wait_tracer() -> None:
                if ebpf:  # the recorder does not end by itself: stopped once the whole tree has
                    await bpf.stop_when_tree_gone(launched, live)
                else:
                    await process.wait()
                    if relay is not None:  # the last lines strace wrote, in the spool
                        await relay.finish()
                tracer_done.set()

            top = launched.root if ebpf else process.pid
            fired: list[SessionTimedOut] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_tracer)
                nursery.start_soon(partial(_relay_signals, top, signals, is_command=ebpf))
                if time_limit is not None:
                    # from the spawn: strace started early ran a little before this
                    since = time.monotonic() - early.spawned if early is not None else 0.0
                    nursery.start_soon(
                        partial(
                            _kill_after,
                            top,
                            time_limit,
                            writer,
                            tracer_done,
                            is_command=ebpf,
                            since=since,
                            fired=fired,
                        )
                    )
                if sample_interval > 0:
                    nursery.start_soon(
                        partial(sample_stage, top, writer.write, sample_interval, include_root=ebpf)
                    )
                # A trace is looked at less often, and a quiet one less still, unless a guard kills on
                # it or (eBPF) the end of the tree is seen in it: strace's own exit ends the wait at once.
                unguarded = enforcement is None and not ebpf
                idle_poll = POLL_IDLE_S if unguarded else None
                poll_s = bpf.POLL_S if ebpf else (POLL_UNGUARDED_S if unguarded else POLL_S)
                stats = await run_pipeline(
                    partial(tail_stage, spool, tracer_done, poll_s=poll_s, idle_poll=idle_poll),
                    partial(guard_record_stage, writer=writer, guard=guard),
                    level=level,
                    redact=redact and ebpf,  # strace: its relay redacted the spool already
                    trace_fd=trace_fd,
                    tracer="ebpf" if ebpf else "strace",
                    live=live,
                )
                nursery.cancel_scope.cancel()
        error = None
        if command is not None and not launched.wrapped:
            # The command is Capsule's own child here: its wait status is exact, whatever the trace lost.
            await command.wait()
            from capsule.stages.exits import returncode_status  # (eBPF only; not stages.procs: ~3.5 ms)

            exit_code, sig = returncode_status(command.returncode)
            code = 128 + _signal_number(sig) if sig is not None else (exit_code or 0)
        elif command is not None:
            # Inside the guard's wrappers: the trace has the command's own exit (bubblewrap's is a copy).
            await command.wait()
            assert command.returncode is not None
            code, sig = exit_status(stats.root_status, command.returncode)
        elif stats.lines == 0 and process.returncode != 0 and enforcement is not None:
            # the sandbox (bubblewrap, the seccomp launcher) may have failed, not strace: not "ptrace?"
            error = (
                f"strace or the policy's sandbox around it exited with {process.returncode} before the "
                "command started (its message is above; `capsule doctor` checks both)"
            )
            code, sig = EXIT_RECORDER_FAILED, None
        elif stats.lines == 0 and process.returncode != 0:
            error = (
                f"strace exited with {process.returncode} before the command started "
                "(is ptrace permitted? run `capsule doctor`)"
            )
            code, sig = EXIT_RECORDER_FAILED, None
        else:
            assert process.returncode is not None  # strace: waited for
            code, sig = exit_status(stats.root_status, process.returncode)
        if sig is None and error is None and (failure := writer.tally.root_exec_failure) is not None:
            # The command never ran (the guard refused it; it vanished after it was resolved): the exit
            # the trace has is strace's own ("exec: …", 1). Say it as a shell would, as above.
            code = EXIT_NOT_FOUND if failure == "ENOENT" else EXIT_NOT_EXECUTABLE
        # the recorder is stopped a little after the tree is gone; the trace says when that was.
        ended = writer.tally.last_ts if command is not None else None
        _close(
            writer,
            started,
            code if sig is None else None,
            sig,
            stats.lines,
            stats.unparsed,
            error,
            incomplete=incompleteness(stats, cut=stats.cut) if stats.lines else None,
            ended=ended,
            timed_out_s=fired[0].limit_s if fired else None,
        )
        spool.unlink(missing_ok=True)
        duration = (ended or time.time()) - started
        timed_out = fired[0] if fired else None
        return RunOutcome(session_id, path, code, sig, duration, writer.tally, error, timed_out)
    finally:
        writer.close()
        os.fsync(trace_fd)
        os.close(trace_fd)
        if spool_claim is not None:
            os.close(spool_claim)


def _signal_number(name: str) -> int:
    number = getattr(signal.Signals, name, None)
    return int(number) if number is not None else 0


def _close(
    writer: SessionWriter,
    started: float,
    code: int | None,
    sig: str | None,
    lines: int,
    unparsed: int,
    error: str | None,
    incomplete: str | None = None,
    ended: float | None = None,
    timed_out_s: float | None = None,
) -> None:
    tally = writer.tally
    now = time.time()
    writer.write(
        [
            SessionEnded(
                ts=now,
                exit_code=code,
                signal=sig,
                duration_s=round((ended or now) - started, 6),
                lines=lines,
                events=tally.events,
                processes=tally.processes,
                failed=tally.failed,
                unparsed=unparsed,
                error=error,
                incomplete=incomplete,
                timed_out_s=timed_out_s,
            )
        ]
    )
