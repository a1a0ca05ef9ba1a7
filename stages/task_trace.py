"""A traced task attempt: the tracer's command line around its command, and the trace followed
through parse -> track into the attempt's own `run` session, every event checked against the policy.

`traced_argv` is the one place the traced command line is built (the guard wraps it): strace around
the command, or (`trace = "ebpf"`) the eBPF tracer's gated stub, which `follow_trace` attaches the eBPF
recorder to and releases, as `capsule run --tracer ebpf` does (stages/ebpf.py: the same `attach`).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import attrs
import trio

from capsule import __version__
from capsule.events import DERIVATION, Event, SessionEnded, SessionStarted, kind_versions
from capsule.events.observed import ObsViolation
from capsule.plan.policy import live_violation
from capsule.plan.spec import Plan, TaskSpec
from capsule.policy.enforce import Enforcement
from capsule.stages.ebpf import POLL_S as EBPF_POLL_S
from capsule.stages.ebpf import Launched, attach, stop_when_tree_gone
from capsule.stages.ebpf_recorder import EbpfTracer, EbpfUnavailable, Gated, gated
from capsule.stages.guard import session_level, trace_level, tracer_flags
from capsule.stages.pipeline import LiveCount, TraceStats, run_pipeline
from capsule.stages.procs import started_at
from capsule.stages.record import SessionWriter
from capsule.stages.spools import Relay, claim_spool, fifo_path, spool_output
from capsule.stages.store import EVENTS, create_session, open_private, spool_path, trace_name
from capsule.stages.trace import POLL_S as TAIL_POLL_S
from capsule.stages.trace import tail_stage
from capsule.stages.tracer import Tracer


@attrs.frozen(kw_only=True)
class TraceFiles:
    """Where one traced attempt's strace writes (`spool`) and where its run session is (`dir`)."""

    session_id: str
    dir: Path
    spool: Path
    writer: SessionWriter
    lock: int  # the spool's claim (stages/spools.py claim_spool), held until the session ends

    def discard(self) -> None:
        """The attempt never started: close the session's writer, drop the spool and its claim."""
        self.writer.close()
        self.spool.unlink(missing_ok=True)
        os.close(self.lock)


def open_trace(home: Path) -> TraceFiles:
    """A new run session for one attempt, and the spool file strace will write."""
    session_id, trace_dir = create_session(home)
    spool = spool_path(home, session_id)
    lock = claim_spool(spool)
    return TraceFiles(
        session_id=session_id, dir=trace_dir, spool=spool, writer=SessionWriter(trace_dir / EVENTS),
        lock=lock,
    )  # fmt: skip


@attrs.frozen
class Traced:
    """The traced command line; for eBPF (`gate`), the stub to spawn with `gate.gate_r` passed down
    (`helper`: the guard lets its exec through). `title`: strace's argv[0], its name in ps and top."""

    argv: list[str]
    gate: Gated | None = None
    title: str | None = None
    relay_of: Path | None = None  # strace's: the spool it writes through a relay (`start_relay`), if any

    @property
    def writable(self) -> list[str]:
        """What the traced command line writes besides the spool (the guard keeps it writable)."""
        return [str(fifo_path(self.relay_of))] if self.relay_of is not None else []

    @property
    def helper(self) -> bool:
        return self.gate is not None

    @property
    def fds(self) -> tuple[int, ...]:
        return () if self.gate is None else (self.gate.gate_r,)


def recorded_level(plan: Plan, tracer: Tracer | EbpfTracer, enforcement: Enforcement | None) -> str:
    """The level an attempt's tracer records at: the plan's, raised as path rules need (stages/guard.py
    `trace_level`: strace at level file, the eBPF recorder at `refused`), so each open the mount
    namespace refused is on record as a `policy.blocked` event of the task, as under `capsule run`."""
    return trace_level(plan.trace_level, enforcement, ebpf=isinstance(tracer, EbpfTracer))


def traced_argv(
    tracer: Tracer | EbpfTracer,
    level: str,
    spool: Path,
    command: tuple[str, ...],
    enforcement: Enforcement | None = None,
    resolved: str | None = None,
    title: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Traced:
    """The command line that runs `command` under strace, writing its trace to `spool` through the
    redacting relay (the spool of a live task holds no secret in clear); under eBPF, the gated stub
    that execs `resolved` (the command's program, found on PATH) once the recorder is attached. strace is
    Capsule's own process for the task: it carries `title` (the stub becomes the command: no title)."""
    if isinstance(tracer, EbpfTracer):
        gate = gated(tracer, resolved or command[0], command)
        return Traced(argv=list(gate.argv), gate=gate)
    flags = tracer_flags(tracer.flags(level), enforcement)  # the guard answers execs: no --seccomp-bpf
    if title is not None and env is not None and "SHLVL" not in env:
        flags = (*flags, "-E", "SHLVL")  # naming it may go through bash, which adds one (procs.BASH)
    output = spool_output(spool, redact=True)
    return Traced(argv=[tracer.path, *flags, *output, "--", *command], title=title, relay_of=spool)


async def follow_trace(
    files: TraceFiles,
    *,
    plan: Plan,
    tracer: Tracer | EbpfTracer,
    task: TaskSpec,
    attempt: int,
    process: trio.Process,
    parent: str,
    recorder: tuple[int, float],
    tracer_started: float,
    observe: Callable[[ObsViolation], None],
    enforcement: Enforcement | None = None,
    checked: Callable[[list[Event]], None] | None = None,
    gate: Gated | None = None,
    on_released: Callable[[], None] | None = None,
    on_tree_gone: Callable[[], None] | None = None,
    relay: Relay | None = None,
) -> None:
    """Record the attempt's process tree into its run session until the tracer exits; violations
    observed. `checked` hears each batch of trace events (the guard turns refused opens into
    `policy.blocked`). Under eBPF (`gate`: the stub `process` is, or runs under the guard's wrappers),
    the recorder is attached first; the session starts when its programs are, and the trace ends when the
    whole tree has. `on_released` is called once the stub is let go (or attaching failed and it was
    killed): the scheduler observes the spawn then, so the recorder's start-up is not the task's time;
    `on_tree_gone` once the whole tree has ended, before the recorder is stopped (its detach is slow too)."""
    recorded = recorded_level(plan, tracer, enforcement)
    header = partial(
        _header, files, plan=plan, tracer=tracer, task=task, attempt=attempt, parent=parent,
        recorder=recorder, enforcement=enforcement, recorded=recorded,
    )  # fmt: skip
    launched: Launched | None = None
    if gate is None:
        header(tracer_pid=process.pid, tracer_started=tracer_started)
    else:
        assert isinstance(tracer, EbpfTracer)
        try:
            ready: list[float] = []  # when the recorder followed the stub (and let it go)
            try:
                launched = await attach(
                    tracer, process, gate, spool=files.spool, level=recorded, cwd=task.cwd,
                    on_ready=ready.append,
                )  # fmt: skip
            except EbpfUnavailable as exc:  # the attempt was killed: it fails, its session says why
                header(tracer_pid=None, tracer_started=None)
                _ended(files, None, error=str(exc))
                return
            header(
                tracer_pid=launched.tracer.pid, tracer_started=started_at(launched.tracer.pid), ts=ready[0]
            )
        finally:  # the session's header comes first, then the task's start
            if on_released is not None:
                on_released()
    tracer_done = trio.Event()
    live = LiveCount()

    async def wait() -> None:
        if launched is not None:
            await stop_when_tree_gone(launched, live, on_gone=on_tree_gone)
        else:
            await process.wait()
            if relay is not None:  # the last lines strace wrote, in the spool
                await relay.finish()
        tracer_done.set()

    async def sink(receive: trio.MemoryReceiveChannel[list[Event]]) -> None:
        async with receive:
            async for batch in receive:
                files.writer.write(batch)
                if checked is not None:
                    checked(batch)
                for event in batch:
                    found = live_violation(plan.policy, event, task=task.id, attempt=attempt)
                    if found is not None:
                        observe(
                            ObsViolation(
                                ts=time.time(), task=task.id, attempt=attempt, rule=found.rule,
                                argv=found.argv, path=found.path, pid=found.pid,
                            )
                        )  # fmt: skip

    trace_fd = open_private(files.dir / trace_name(tracer.path))
    t0 = time.time()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            stats = await run_pipeline(
                partial(
                    tail_stage,
                    files.spool,
                    tracer_done,
                    poll_s=TAIL_POLL_S if launched is None else EBPF_POLL_S,
                ),
                sink,
                level=session_level(recorded),
                trace_fd=trace_fd,
                tracer="strace" if launched is None else "ebpf",
                live=live,
            )
    finally:
        os.close(trace_fd)
    _ended(files, stats, duration=time.time() - t0)


def _header(
    files: TraceFiles,
    *,
    plan: Plan,
    tracer: Tracer | EbpfTracer,
    task: TaskSpec,
    attempt: int,
    parent: str,
    recorder: tuple[int, float],
    enforcement: Enforcement | None,
    recorded: str,
    tracer_pid: int | None,
    tracer_started: float | None,
    ts: float | None = None,
) -> None:
    files.writer.write(
        [
            SessionStarted(
                ts=time.time() if ts is None else ts,
                capsule_version=__version__,
                session_id=files.session_id,
                session_kind="run",
                name=f"{plan.name}/{task.id}#{attempt}",
                argv=task.command,
                cwd=task.cwd,
                host=platform.node(),
                tracer=tracer.path,
                tracer_version=tracer.version,
                tracer_flags=tracer_flags(tracer.flags(recorded), enforcement),
                trace_level=session_level(recorded),
                recorder_pid=recorder[0],
                recorder_started=recorder[1],
                parent=parent,
                tracer_pid=tracer_pid,
                tracer_started=tracer_started,
                kinds=kind_versions(),
                derivation=DERIVATION,
            )
        ]
    )


def _ended(
    files: TraceFiles, stats: TraceStats | None, *, duration: float = 0.0, error: str | None = None
) -> None:
    """The attempt's run session ends: its root's exit as the trace showed it, and the tallies."""
    code, sig = stats.root_status if stats is not None and stats.root_status is not None else (None, None)
    t = files.writer.tally
    files.writer.write(
        [
            SessionEnded(
                ts=time.time(),
                exit_code=code,
                signal=sig,
                duration_s=round(duration, 6),
                lines=stats.lines if stats is not None else 0,
                events=t.events,
                processes=t.processes,
                failed=t.failed,
                unparsed=stats.unparsed if stats is not None else 0,
                error=error,
            )
        ]
    )
    files.writer.close()
    files.spool.unlink(missing_ok=True)
    os.close(files.lock)
