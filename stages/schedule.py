"""The agent-run scheduler: a plan's tasks as trio tasks, within limits, every step an event.

Each task waits for its dependencies, its hooks, a resource slot and a run slot, then runs attempts in a
new session (its own process group). Timeouts, limit violations, policy violations and kills end the whole
group (stop signal, grace, SIGKILL), then sweep any descendant that left the group, matched by pid and
start time. Decisions (retries, policy, state) are the pure functions of `capsule.plan` and
`capsule.fold.tasks`; this module only waits, spawns, samples and writes.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import random
import signal
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import attrs
import orjson
import psutil
import trio

from capsule import __version__
from capsule.events import Event, SessionEnded, SessionStarted, kind_versions
from capsule.events.tasks import (
    HookDecided,
    PolicyViolated,
    RunFinished,
    RunPlanned,
    RunResumed,
    TaskCompensated,
    TaskExited,
    TaskFailed,
    TaskLimitExceeded,
    TaskQueued,
    TaskRetrying,
    TaskSkipped,
    TaskStarted,
    TaskSucceeded,
    TaskVerified,
)
from capsule.fold.tasks import RunState
from capsule.plan.decide import Abort, AskHook, Decision, Ended, Fail, Retry, Skip, Succeed, decide
from capsule.plan.policy import denied_command, live_violation
from capsule.plan.spec import Hook, Plan, TaskSpec
from capsule.policy.enforce import Enforcement
from capsule.stages.guard import Guard, check_events, guarding, tracer_flags
from capsule.stages.pipeline import run_pipeline
from capsule.stages.processes import process_if, returncode_status, started_at
from capsule.stages.record import SessionWriter
from capsule.stages.store import EVENTS, TRACE, create_session, open_private, spool_path
from capsule.stages.trace import tail_stage
from capsule.stages.tracer import Tracer

SAMPLE_S = 0.15  # how often a task's tree is sampled for limits
HOOK_ANSWERS = ("continue", "skip", "deny", "abort")


class Aborted(Exception):
    """A hook answered `abort`."""


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def kill_tree(pgid: int, known: dict[int, float]) -> list[int]:
    """SIGKILL the group and every known descendant still alive with the same start time."""
    killed = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    for pid, started in known.items():
        proc = process_if(pid, started)
        if proc is not None:
            with contextlib.suppress(psutil.Error):
                proc.kill()
                killed.append(pid)
    return killed


@attrs.define
class Attempt:
    """What the shell learns while one attempt runs."""

    pid: int
    pgid: int
    started: float
    known: dict[int, float] = attrs.Factory(dict)  # every descendant seen: pid -> create time
    ending: str | None = None  # why the scheduler ended it: timed_out | limit_exceeded | denied | killed
    peak_rss: int = 0
    cpu_s: float = 0.0
    stop: trio.Event = attrs.Factory(trio.Event)


class Scheduler:
    def __init__(
        self,
        plan: Plan,
        writer: SessionWriter,
        session_dir: Path,
        *,
        home: Path,
        tracer: Tracer | None = None,
        state: RunState | None = None,
        on_event: Callable[[Event, RunState], None] | None = None,
        jitter: Callable[[], float] = random.random,
        enforcement: Enforcement | None = None,
    ) -> None:
        self.plan = plan
        self.enforcement = enforcement  # the plan's [policy], as guard.enforcement_for decided
        self.writer = writer
        self.dir = session_dir
        self.home = home
        self.tracer = tracer
        self.state = state if state is not None else RunState()
        self.on_event = on_event
        self.jitter = jitter
        self.slots = trio.CapacityLimiter(plan.parallel)
        self.resources = {name: trio.Semaphore(count) for name, count in plan.resources}
        self.done = {t.id: trio.Event() for t in plan.tasks}
        self.failed = False
        self.halted = False
        self.aborted = False
        self.running: dict[str, Attempt] = {}
        self.guards: dict[str, Guard] = {}  # per running task: its refusals seen in its trace
        self.me = (os.getpid(), started_at(os.getpid()))

    def emit(self, *events: Event) -> None:
        self.writer.write(list(events))
        for event in events:
            self.state.apply(event)
            if self.on_event is not None:
                self.on_event(event, self.state)

    # -- the run ---------------------------------------------------------------------------------

    async def run(self, *, resume: bool = False, plan_path: str | None = None) -> RunState:
        started = time.time()
        if resume:
            reaped: list[int] = []
            for old in self.state.tasks.values():
                if (a := old.interrupted) is not None:
                    reaped += (
                        kill_tree(a.pgid, {a.pid: a.started})
                        if process_if(a.pid, a.started) is not None
                        else []
                    )
            self.emit(
                RunResumed(
                    ts=time.time(),
                    scheduler_pid=self.me[0],
                    scheduler_started=self.me[1],
                    reaped=tuple(reaped),
                )
            )
        self.emit(
            RunPlanned(
                ts=time.time(),
                name=self.plan.name,
                plan_path=plan_path,
                parallel=self.plan.parallel,
                halt=self.plan.halt,
                on_failure=self.plan.on_failure,
                trace=self.plan.trace,
                tasks=tuple(t.id for t in self.plan.tasks),
                spec_hashes=tuple(t.spec_hash for t in self.plan.tasks),
                depends_on=tuple(" ".join(t.depends_on) for t in self.plan.tasks),
                plan=self.plan.to_json(),
            )
        )
        todo: list[TaskSpec] = []
        for task in self.plan.tasks:
            before = self.state.tasks.get(task.id)
            if (
                resume
                and before is not None
                and before.state == "succeeded"
                and before.succeeded_hash == task.spec_hash
            ):
                self.done[task.id].set()
                continue
            todo.append(task)
        self.emit(*(TaskQueued(ts=time.time(), task=t.id, spec_hash=t.spec_hash) for t in todo))
        async with trio.open_nursery() as nursery:
            for task in todo:
                nursery.start_soon(self._task, task)
        if self.failed and self.plan.on_failure == "compensate":
            await self._compensate()
        counts = self.state.counts()
        bad = sum(v for k, v in counts.items() if k not in ("succeeded", "skipped"))
        verdict = "aborted" if self.aborted else ("failed" if bad or counts["skipped"] else "succeeded")
        self.emit(
            RunFinished(
                ts=time.time(),
                state=verdict,
                succeeded=counts["succeeded"],
                failed=bad,
                skipped=counts["skipped"],
                duration_s=round(time.time() - started, 6),
            )
        )
        return self.state

    def _halt_after_failure(self) -> None:
        self.failed = True
        if self.plan.halt in ("soon", "now"):
            self.halted = True
        if self.plan.halt == "now":
            for attempt in self.running.values():
                self._end(attempt, "killed")

    def _end(self, attempt: Attempt, why: str) -> None:
        """Stop an attempt now: SIGTERM its group (the waiter escalates to SIGKILL after the grace)."""
        if attempt.ending is None:
            attempt.ending = why
        attempt.stop.set()
        sig = signal.SIGKILL if why in ("denied", "limit_exceeded") else signal.SIGTERM
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(attempt.pgid, sig)

    async def _task(self, task: TaskSpec) -> None:
        try:
            await self._task_inner(task)
        except Aborted:
            self.aborted = self.halted = self.failed = True
            for attempt in self.running.values():
                self._end(attempt, "killed")
        finally:
            self.done[task.id].set()

    async def _task_inner(self, task: TaskSpec) -> None:
        for dep in task.depends_on:
            await self.done[dep].wait()
        bad = [d for d in task.depends_on if self.state.tasks[d].state != "succeeded"]
        if bad:
            self.emit(
                TaskSkipped(
                    ts=time.time(),
                    task=task.id,
                    reason=f"dependency {bad[0]} {self.state.tasks[bad[0]].state}",
                )
            )
            return
        if self.halted:
            self.emit(TaskSkipped(ts=time.time(), task=task.id, reason="run halted after a failure"))
            return
        decision = await self._hooks("pre", task)
        if decision == "abort":
            raise Aborted
        if decision == "skip":
            self.emit(TaskSkipped(ts=time.time(), task=task.id, reason="pre hook said skip"))
            return
        if decision == "deny":
            self.emit(
                TaskFailed(
                    ts=time.time(), task=task.id, attempt=0, outcome="denied", reason="pre hook said deny"
                )
            )
            self._halt_after_failure()
            return
        rule = denied_command(self.plan.policy, task.command)
        if rule is not None:
            self.emit(
                PolicyViolated(ts=time.time(), task=task.id, attempt=0, rule=rule, argv=task.command),
                TaskFailed(
                    ts=time.time(),
                    task=task.id,
                    attempt=0,
                    outcome="denied",
                    reason=f"command matches deny rule {rule!r}",
                ),
            )
            self._halt_after_failure()
            return
        prior = self.state.tasks.get(task.id)
        attempt = len(prior.attempts) if prior is not None else 0
        first = attempt + 1
        while True:
            attempt += 1
            if self.halted:
                self.emit(TaskSkipped(ts=time.time(), task=task.id, reason="run halted after a failure"))
                return
            after = await self._attempt_with_slot(task, attempt, attempt - first + 1)
            if not isinstance(after, Retry):
                return
            self.emit(
                TaskRetrying(
                    ts=time.time(),
                    task=task.id,
                    attempt=attempt + 1,
                    delay_s=after.delay_s,
                    reason=after.reason,
                )
            )
            await trio.sleep(after.delay_s)

    async def _attempt_with_slot(self, task: TaskSpec, attempt: int, tries: int) -> Decision:
        """One attempt, its verify commands and the decision after it (hooks included), all within the
        task's slot: a failure halts the run before the slot is free for the next task to start."""
        async with _acquire_all([self.resources[r] for r in sorted(task.uses)]), self.slots:
            if self.halted:
                self.emit(TaskSkipped(ts=time.time(), task=task.id, reason="run halted after a failure"))
                return Skip(reason="run halted after a failure")
            ended = await self._attempt(task, attempt)
            if ended.outcome == "succeeded":
                for command in task.verify:
                    ok, vcode = await self._shell(command, task)
                    self.emit(
                        TaskVerified(
                            ts=time.time(),
                            task=task.id,
                            attempt=attempt,
                            command=command,
                            ok=ok,
                            exit_code=vcode,
                        )
                    )
                    if not ok:
                        ended = Ended(outcome="failed", reason=f"verify failed: {command}")
                        break
            answers: dict[str, str] = {}
            jitter = self.jitter()
            while isinstance(decision := decide(task, ended, answers, tries, jitter), AskHook):
                answers[decision.on] = await self._hooks(decision.on, task)
            self._execute(task, attempt, decision)
            return decision

    def _execute(self, task: TaskSpec, attempt: int, decision: Decision) -> None:
        """Record a final decision (a retry is the caller's: it waits outside the slot)."""
        now = time.time()
        match decision:
            case Succeed():
                self.emit(
                    TaskSucceeded(
                        ts=now,
                        task=task.id,
                        attempt=attempt,
                        duration_s=self.state.tasks[task.id].duration_s or 0.0,
                        spec_hash=task.spec_hash,
                    )
                )
            case Skip():
                self.emit(TaskSkipped(ts=now, task=task.id, reason=decision.reason))
            case Fail() | Abort():
                self.emit(
                    TaskFailed(
                        ts=now,
                        task=task.id,
                        attempt=attempt,
                        outcome=decision.outcome,
                        reason=decision.reason,
                        exit_code=decision.exit_code,
                    )
                )
                self._halt_after_failure()
                if isinstance(decision, Abort):
                    raise Aborted

    # -- one attempt -----------------------------------------------------------------------------

    async def _attempt(self, task: TaskSpec, attempt: int) -> Ended:
        """One attempt, inside the plan's guard (a no-op without a policy)."""

        def deny() -> None:
            if (run := self.running.get(task.id)) is not None:
                self._end(run, "denied")

        where = {"task": task.id, "attempt": attempt}
        cwd = Path(task.cwd) if task.cwd else None
        with guarding(
            self.enforcement, emit=lambda evs: self.emit(*evs), kill=deny, where=where, cwd=cwd
        ) as guard:
            self.guards[task.id] = guard
            try:
                return await self._guarded_attempt(task, attempt, guard)
            finally:
                del self.guards[task.id]

    async def _guarded_attempt(self, task: TaskSpec, attempt: int, guard: Guard) -> Ended:
        logs = self.dir / "tasks" / task.id
        logs.mkdir(mode=0o700, parents=True, exist_ok=True)
        out = open_private(logs / f"{attempt}.out", append=False)
        err = open_private(logs / f"{attempt}.err", append=False)
        env = {**os.environ, **dict(task.env), "CAPSULE_TASK": task.id, "CAPSULE_ATTEMPT": str(attempt)}
        argv = list(task.command)
        trace: tuple[str, Path, Path, SessionWriter] | None = None
        if self.plan.trace and self.tracer is not None:
            trace_id, trace_dir = create_session(self.home)
            spool = spool_path(self.home, trace_id)
            os.close(open_private(spool, append=False))
            flags = tracer_flags(self.tracer.flags(self.plan.trace_level), self.enforcement)
            argv = [self.tracer.path, *flags, "-o", str(spool), "--", *argv]
            trace = (trace_id, trace_dir, spool, SessionWriter(trace_dir / EVENTS))
        argv, fds = guard.wrap(argv, writable=[str(trace[2])] if trace else [])
        t0 = time.time()
        try:
            process = await trio.lowlevel.open_process(
                argv,
                pass_fds=fds,
                cwd=task.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        except OSError as exc:
            reason = f"cannot start {task.command[0]}: {exc.strerror or exc}"
            self.emit(
                TaskStarted(
                    ts=t0,
                    task=task.id,
                    attempt=attempt,
                    pid=0,
                    started=t0,
                    pgid=0,
                    argv=task.command,
                    log_dir=str(logs),
                ),
                TaskExited(
                    ts=time.time(), task=task.id, attempt=attempt, outcome="spawn_failed", duration_s=0.0
                ),
            )
            return Ended(outcome="spawn_failed", reason=reason)
        finally:
            os.close(out)
            os.close(err)
        guard.spawned()
        run = Attempt(pid=process.pid, pgid=process.pid, started=started_at(process.pid))
        run.known[process.pid] = run.started
        self.running[task.id] = run
        self.emit(
            TaskStarted(
                ts=t0,
                task=task.id,
                attempt=attempt,
                pid=process.pid,
                started=run.started,
                pgid=process.pid,
                argv=task.command,
                log_dir=str(logs),
                trace_session=trace[0] if trace else None,
                scheduler_pid=self.me[0],
                scheduler_started=self.me[1],
            )
        )
        try:
            async with trio.open_nursery() as nursery:
                if trace is not None:
                    nursery.start_soon(self._follow_trace, task, attempt, run, process, trace)
                async with trio.open_nursery() as inner:
                    inner.start_soon(self._sample, task, attempt, run)
                    inner.start_soon(self._watchdog, task, run, process)
                    await process.wait()
                    inner.cancel_scope.cancel()
            kill_tree(run.pgid, run.known)  # nothing of the task outlives it, even after a clean exit
        finally:
            self.running.pop(task.id, None)
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    kill_tree(run.pgid, run.known)
                    await process.wait()
        code, sig = returncode_status(process.returncode)
        duration = round(time.time() - t0, 6)
        if run.ending is not None:
            outcome = run.ending
        elif sig is not None:
            outcome = "killed"
        elif code == 0:
            outcome = "succeeded"
        else:
            outcome = "failed"
        self.emit(
            TaskExited(
                ts=time.time(),
                task=task.id,
                attempt=attempt,
                exit_code=code,
                signal=sig,
                outcome=outcome,
                duration_s=duration,
                cpu_s=round(run.cpu_s, 3),
                peak_rss=run.peak_rss or None,
            )
        )
        reason = {
            "succeeded": "",
            "failed": f"exit code {code}",
            "killed": f"killed by {sig or 'the scheduler'}",
            "timed_out": f"timed out after {task.timeout_s}s",
            "limit_exceeded": "limit exceeded",
            "denied": "policy violation",
        }.get(outcome, outcome)
        return Ended(outcome=outcome, exit_code=code, reason=reason)

    async def _watchdog(self, task: TaskSpec, run: Attempt, process: trio.Process) -> None:
        """End the attempt at its timeout or when asked (`_end`): stop signal, grace, then SIGKILL."""
        with trio.move_on_after(task.timeout_s if task.timeout_s is not None else math.inf):
            await run.stop.wait()
        if process.returncode is not None:
            return
        self._end(run, "timed_out")
        with trio.move_on_after(task.grace_s):
            await process.wait()
        kill_tree(run.pgid, run.known)

    async def _sample(self, task: TaskSpec, attempt: int, run: Attempt) -> None:
        while True:
            rss = 0
            cpu = 0.0
            for proc in _tree(run.pid):
                try:
                    with proc.oneshot():
                        run.known.setdefault(proc.pid, proc.create_time())
                        rss += proc.memory_info().rss
                        t = proc.cpu_times()
                        cpu += (
                            t.user
                            + t.system
                            + (t.children_user + t.children_system if proc.pid == run.pid else 0)
                        )
                except psutil.Error:
                    pass
            run.peak_rss = max(run.peak_rss, rss)
            run.cpu_s = max(run.cpu_s, cpu)
            if run.ending is None:
                if task.memory is not None and rss > task.memory:
                    self.emit(
                        TaskLimitExceeded(
                            ts=time.time(),
                            task=task.id,
                            attempt=attempt,
                            limit="memory",
                            measured=rss,
                            allowed=task.memory,
                        )
                    )
                    self._end(run, "limit_exceeded")
                elif task.cpu_time_s is not None and cpu > task.cpu_time_s:
                    self.emit(
                        TaskLimitExceeded(
                            ts=time.time(),
                            task=task.id,
                            attempt=attempt,
                            limit="cpu_time",
                            measured=round(cpu, 3),
                            allowed=task.cpu_time_s,
                        )
                    )
                    self._end(run, "limit_exceeded")
            await trio.sleep(SAMPLE_S)

    async def _follow_trace(
        self,
        task: TaskSpec,
        attempt: int,
        run: Attempt,
        process: trio.Process,
        trace: tuple[str, Path, Path, SessionWriter],
    ) -> None:
        """The attempt's strace output through parse -> track into its `run` session, checked live."""
        trace_id, trace_dir, spool, writer = trace
        assert self.tracer is not None
        writer.write(
            [
                SessionStarted(
                    ts=time.time(),
                    capsule_version=__version__,
                    session_id=trace_id,
                    session_kind="run",
                    name=f"{self.plan.name}/{task.id}#{attempt}",
                    argv=task.command,
                    cwd=task.cwd,
                    host=platform.node(),
                    tracer=self.tracer.path,
                    tracer_version=self.tracer.version,
                    tracer_flags=tracer_flags(self.tracer.flags(self.plan.trace_level), self.enforcement),
                    trace_level=self.plan.trace_level,
                    recorder_pid=self.me[0],
                    recorder_started=self.me[1],
                    parent=self.dir.name,
                    tracer_pid=run.pid,
                    tracer_started=run.started,
                    kinds=kind_versions(),
                )
            ]
        )
        tracer_done = trio.Event()
        policy = self.plan.policy

        async def wait() -> None:
            await process.wait()
            tracer_done.set()

        async def sink(receive: trio.MemoryReceiveChannel[list[Event]]) -> None:
            async with receive:
                async for batch in receive:
                    writer.write(batch)
                    if (guard := self.guards.get(task.id)) is not None and (
                        blocked := check_events(guard, batch)
                    ):
                        self.emit(*blocked)
                    for event in batch:
                        if run.ending is not None:
                            break
                        violation = live_violation(policy, event, task=task.id, attempt=attempt)
                        if violation is not None:
                            self._end(run, "denied")
                            self.emit(violation)

        trace_fd = open_private(trace_dir / TRACE)
        t0 = time.time()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait)
                stats = await run_pipeline(
                    partial(tail_stage, spool, tracer_done),
                    sink,
                    level=self.plan.trace_level,
                    trace_fd=trace_fd,
                )
        finally:
            os.close(trace_fd)
        code, sig = stats.root_status if stats.root_status is not None else (None, None)
        t = writer.tally
        writer.write(
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
        writer.close()
        spool.unlink(missing_ok=True)

    # -- hooks, verify, compensate -----------------------------------------------------------------

    async def _shell(
        self, command: str, task: TaskSpec, stdin: bytes = b"", limit_s: float = 600.0
    ) -> tuple[bool, int | None]:
        ok, code, _out = await self._capture(command, task, stdin, limit_s)
        return ok, code

    async def _capture(
        self, command: str, task: TaskSpec, stdin: bytes, limit_s: float
    ) -> tuple[bool, int | None, bytes]:
        env = {**os.environ, **dict(task.env), "CAPSULE_TASK": task.id}
        result: list[subprocess_result] = []

        async def go() -> None:
            done = await trio.run_process(
                ["sh", "-c", command],
                cwd=task.cwd,
                env=env,
                stdin=stdin,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                start_new_session=True,
            )
            result.append((done.returncode, done.stdout))

        with trio.move_on_after(limit_s):
            await go()
        if not result:
            return False, None, b""
        code, out = result[0]
        return code == 0, code, out

    async def _hooks(self, on: str, task: TaskSpec) -> str:
        """Run every hook for `on`; the first answer other than continue decides."""
        for hook in self.plan.hooks:
            if hook.on != on:
                continue
            decision, reason = await self._hook(hook, task)
            self.emit(
                HookDecided(
                    ts=time.time(),
                    task=task.id,
                    on=on,
                    command=hook.command,
                    decision=decision,
                    reason=reason,
                )
            )
            if decision != "continue":
                return decision
        return "continue"

    async def _hook(self, hook: Hook, task: TaskSpec) -> tuple[str, str]:
        state = self.state.tasks.get(task.id)
        payload = orjson.dumps(
            {
                **attrs.asdict(task),
                "on": hook.on,
                "state": state.state if state else "queued",
                "attempts": len(state.attempts) if state else 0,
                "exit_code": state.exit_code if state else None,
                "run": self.state.session_id,
            }
        )
        ok, code, out = await self._capture(hook.command, task, payload, hook.timeout_s)
        if code is None:
            return "deny", f"hook timed out after {hook.timeout_s}s"
        answer = out.decode(errors="replace").strip().split()
        word = answer[0].lower() if answer else ""
        if not ok:
            return "deny", f"hook exited with {code}"
        if word not in HOOK_ANSWERS:
            return "deny", f"hook answered {word!r}, not one of {', '.join(HOOK_ANSWERS)}"
        return word, ""

    async def _compensate(self) -> None:
        """Undo succeeded tasks, newest first."""
        done = [t for t in self.state.tasks.values() if t.state == "succeeded" and t.finished_ts is not None]
        done.sort(key=lambda t: t.finished_ts or 0.0, reverse=True)
        for state in done:
            task = self.plan.task(state.id)
            if task.compensate is None:
                continue
            ok, code = await self._shell(task.compensate, task)
            self.emit(
                TaskCompensated(ts=time.time(), task=task.id, command=task.compensate, ok=ok, exit_code=code)
            )


subprocess_result = tuple[int, bytes]


class _acquire_all:
    """Acquire semaphores in a fixed (sorted) order, so two tasks never deadlock on two resources."""

    def __init__(self, sems: list[trio.Semaphore]) -> None:
        self.sems = sems
        self.held: list[trio.Semaphore] = []

    async def __aenter__(self) -> None:
        for sem in self.sems:
            await sem.acquire()
            self.held.append(sem)

    async def __aexit__(self, *exc: object) -> None:
        for sem in reversed(self.held):
            sem.release()
        self.held.clear()


def open_run(home: Path, plan: Plan, argv: tuple[str, ...]) -> tuple[str, Path, SessionWriter]:
    """A new `agents` session with its header written."""
    session_id, path = create_session(home)
    writer = SessionWriter(path / EVENTS)
    me = psutil.Process()
    writer.write(
        [
            SessionStarted(
                ts=time.time(),
                capsule_version=__version__,
                session_id=session_id,
                session_kind="agents",
                name=plan.name,
                argv=argv,
                cwd=os.getcwd(),
                host=platform.node(),
                recorder_pid=me.pid,
                recorder_started=me.create_time(),
                kinds=kind_versions(),
            )
        ]
    )
    return session_id, path, writer


def reopen_run(path: Path, events: int) -> SessionWriter:
    """Append to a session whose writer died: cut a torn last line first."""
    file = path / EVENTS
    data = file.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(file, "r+b") as f:
            f.truncate(end)
    return SessionWriter(file, next_seq=events)


def close_run(writer: SessionWriter, started: float, state: RunState) -> None:
    code = 0 if state.state == "succeeded" else 1
    writer.write(
        [
            SessionEnded(
                ts=time.time(),
                exit_code=code,
                duration_s=round(time.time() - started, 6),
                events=writer.tally.events,
            )
        ]
    )
    writer.close()
