"""A traced task attempt: the strace command line around its command, and its strace output followed
through parse -> track into the attempt's own `run` session, every event checked against the policy.

`traced_argv` is the one place the traced command line is built (the guard wraps it).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import attrs
import trio

from capsule import __version__
from capsule.events import Event, SessionEnded, SessionStarted, kind_versions
from capsule.events.observed import ObsViolation
from capsule.plan.policy import live_violation
from capsule.plan.spec import Plan, TaskSpec
from capsule.policy.enforce import Enforcement
from capsule.stages.guard import tracer_flags
from capsule.stages.pipeline import run_pipeline
from capsule.stages.record import SessionWriter
from capsule.stages.spools import spool_output
from capsule.stages.store import EVENTS, TRACE, create_session, open_private, spool_path
from capsule.stages.trace import tail_stage
from capsule.stages.tracer import Tracer


@attrs.frozen(kw_only=True)
class TraceFiles:
    """Where one traced attempt's strace writes (`spool`) and where its run session is (`dir`)."""

    session_id: str
    dir: Path
    spool: Path
    writer: SessionWriter


def open_trace(home: Path) -> TraceFiles:
    """A new run session for one attempt, and the spool file strace will write."""
    session_id, trace_dir = create_session(home)
    spool = spool_path(home, session_id)
    os.close(open_private(spool, new=True))
    return TraceFiles(
        session_id=session_id, dir=trace_dir, spool=spool, writer=SessionWriter(trace_dir / EVENTS)
    )


def traced_argv(
    tracer: Tracer, level: str, spool: Path, command: tuple[str, ...], enforcement: Enforcement | None = None
) -> list[str]:
    """The command line that runs `command` under strace, writing its trace to `spool` through the
    redacting relay: the spool of a live task holds no secret in clear."""
    flags = tracer_flags(tracer.flags(level), enforcement)  # the guard answers execs: no --seccomp-bpf
    return [tracer.path, *flags, *spool_output(spool, redact=True), "--", *command]


async def follow_trace(
    files: TraceFiles,
    *,
    plan: Plan,
    tracer: Tracer,
    task: TaskSpec,
    attempt: int,
    process: trio.Process,
    parent: str,
    recorder: tuple[int, float],
    tracer_started: float,
    observe: Callable[[ObsViolation], None],
    enforcement: Enforcement | None = None,
    checked: Callable[[list[Event]], None] | None = None,
) -> None:
    """Record the attempt's process tree into its run session until strace exits; violations observed.
    `checked` hears each batch of trace events (the guard turns refused opens into `policy.blocked`)."""
    files.writer.write(
        [
            SessionStarted(
                ts=time.time(),
                capsule_version=__version__,
                session_id=files.session_id,
                session_kind="run",
                name=f"{plan.name}/{task.id}#{attempt}",
                argv=task.command,
                cwd=task.cwd,
                host=platform.node(),
                tracer=tracer.path,
                tracer_version=tracer.version,
                tracer_flags=tracer_flags(tracer.flags(plan.trace_level), enforcement),
                trace_level=plan.trace_level,
                recorder_pid=recorder[0],
                recorder_started=recorder[1],
                parent=parent,
                tracer_pid=process.pid,
                tracer_started=tracer_started,
                kinds=kind_versions(),
            )
        ]
    )
    tracer_done = trio.Event()

    async def wait() -> None:
        await process.wait()
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

    trace_fd = open_private(files.dir / TRACE)
    t0 = time.time()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            stats = await run_pipeline(
                partial(tail_stage, files.spool, tracer_done), sink, level=plan.trace_level, trace_fd=trace_fd
            )
    finally:
        os.close(trace_fd)
    code, sig = stats.root_status if stats.root_status is not None else (None, None)
    t = files.writer.tally
    files.writer.write(
        [
            SessionEnded(
                ts=time.time(),
                exit_code=code,
                signal=sig,
                duration_s=round(time.time() - t0, 6),
                lines=stats.lines,
                events=t.events,
                processes=t.processes,
                failed=t.failed,
                unparsed=stats.unparsed,
            )
        ]
    )
    files.writer.close()
    files.spool.unlink(missing_ok=True)
