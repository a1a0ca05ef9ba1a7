"""The agent-run scheduler's driver (architecture §9): what it sees goes to `capsule.plan.machine`, what the
machine says goes to the session and gets done.

The loop: take an observation, hand it to `Machine.handle`, write it with the events it led to (none: it
is not written), perform the effects, whose results come back as observations. This module holds
handles only (trio processes, trees, cgroups); every decision is the machine's. The scheduler is a child
subreaper, each attempt runs in its own session, cgroup (where available) and with its unit marker
(`capsule.stages.task_units`), and every stop goes through `capsule.stages.procs`.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import attrs
import trio

from capsule.events import Event
from capsule.events.observed import (
    ObsBegin,
    ObsCacheLooked,
    ObsCollected,
    ObsCompensated,
    ObsDeadline,
    Observation,
    ObsExited,
    ObsHook,
    ObsKill,
    ObsReaped,
    ObsSampled,
    ObsSpawned,
    ObsSpawnFailed,
    ObsVerified,
    ObsViolation,
)
from capsule.fold.tasks import RunState
from capsule.plan.config import Config
from capsule.plan.effects import (
    Collect,
    Effect,
    Finish,
    LookupCache,
    ReapLeftovers,
    RunCompensate,
    RunHook,
    RunVerify,
    SetDeadline,
    Spawn,
    StopTree,
)
from capsule.plan.executor import ExecutorSpec
from capsule.plan.machine import Machine
from capsule.plan.spec import Plan, TaskSpec, fill_inputs
from capsule.policy.enforce import Enforcement
from capsule.stages import procs
from capsule.stages.agents_session import close_run, open_run, reopen_run
from capsule.stages.ebpf_recorder import EbpfTracer, Gated, note_refusals
from capsule.stages.executors import Executor, open_executor
from capsule.stages.guard import Guard, check_events, open_guard
from capsule.stages.launch import resolve_command
from capsule.stages.record import SessionWriter
from capsule.stages.spools import Relay, start_relay
from capsule.stages.store import open_private
from capsule.stages.task_trace import TraceFiles, follow_trace, open_trace, recorded_level, traced_argv
from capsule.stages.task_units import cgroup_name, marker, measure
from capsule.stages.task_workspace import (
    OUTPUTS,
    CacheHit,
    Workspace,
    WorkspaceError,
    cache_key,
    cache_lookup,
    cache_store,
    inputs_dir,
    open_workspace,
    reuse_result,
)
from capsule.stages.tracer import Tracer

__all__ = ["Scheduler", "close_run", "open_run", "reopen_run"]  # the session file's, kept here for callers

SAMPLE_S = 0.15  # how often a task's tree is sampled for limits and members


@attrs.define
class Attempt:
    """The handles of one attempt: its process, its tree, and what sampling measured of it."""

    process: trio.Process
    tree: procs.Tree
    cgroup: procs.Cgroup | None
    guard: Guard
    gate: Gated | None = None  # eBPF: the stub waiting for the recorder (task_trace.follow_trace releases it)
    relay: Relay | None = None  # strace's redacting relay (task_trace.follow_trace finishes it)
    on_released: Callable[[], None] | None = None  # eBPF: observes the spawn once the stub is let go
    on_tree_gone: Callable[[], None] | None = None  # eBPF: observes the exit before the recorder detaches
    seen: dict[int, float] = attrs.Factory(dict)  # every member sampled: pid -> start time
    cpu_s: float | None = None  # None: never sampled (it ended within the first interval)
    peak_rss: int = 0

    def full_tree(self) -> procs.Tree:
        seen = tuple(procs.Member(pid=p, started=s) for p, s in self.seen.items())
        return attrs.evolve(self.tree, members=seen)

    def sweep_tree(self) -> procs.Tree:
        """After the leader ended: where a cgroup holds all that is left, no scan of every process."""
        tree = self.full_tree()
        return tree if self.cgroup is None else attrs.evolve(tree, marker=None, pgid=None)

    def sample_tree(self) -> procs.Tree:
        """What to sample: no marker scan, and no group scan when a cgroup holds every member."""
        pgid = None if self.cgroup is not None else self.tree.pgid
        return attrs.evolve(self.full_tree(), marker=None, pgid=pgid)


class Scheduler:
    def __init__(
        self,
        plan: Plan,
        writer: SessionWriter,
        session_dir: Path,
        *,
        home: Path,
        tracer: Tracer | EbpfTracer | None = None,
        state: RunState | None = None,
        on_event: Callable[[Event, RunState], None] | None = None,
        enforcement: Enforcement | None = None,
        reuse: dict[str, CacheHit] | None = None,
        executor: ExecutorSpec | None = None,
    ) -> None:
        self.plan = plan
        self.specs = {t.id: t for t in plan.tasks}  # Plan.task scans: a 10,000-task plan asks per spawn
        self.reuse = reuse or {}  # a rerun: the earlier run's results of the tasks it does not rerun
        self.enforcement = enforcement  # the plan's [policy], as guard_probe.enforcement_for decided
        self.writer = writer
        self.dir = session_dir
        self.home = home
        self.tracer = tracer
        self.state = state if state is not None else RunState()
        self.on_event = on_event
        self.attempts: dict[tuple[str, int], Attempt] = {}
        self.me = (os.getpid(), procs.started_at(os.getpid()))
        self._send, self._receive = trio.open_memory_channel[Observation](math.inf)
        self._finished = False
        self.workspaces: dict[str, Workspace] = {}  # the current attempt's, by task
        self.bases: dict[Path, str] = {}  # repository -> the base commit its worktrees start from
        self.cache_keys: dict[str, str] = {}  # task -> the key its cache lookup found no entry for
        self.executor_spec = executor or ExecutorSpec()  # who performs the attempts (stages/executors)
        self.executor: Executor

    async def run(self, *, resume: bool = False, plan_path: str | None = None) -> RunState:
        procs.become_subreaper()  # orphans of a task come back here, and are stopped with its tree
        procs.set_title(f"capsule: scheduler {self.state.session_id}")
        self.machine = Machine(Config.of(self.plan, plan_path), self.state)
        self.executor = open_executor(self.executor_spec, self)
        try:
            await self._loop(resume)
        finally:
            self.executor.close()
        return self.state

    async def _loop(self, resume: bool) -> None:
        async with trio.open_nursery() as work:
            self._work = work
            async with trio.open_nursery() as timers:
                self._timers = timers
                timers.start_soon(self._signals)
                await self._observe(ObsBegin(ts=time.time(), resume=resume))
                while not self._finished:
                    await self._observe(await self._receive.receive())
                timers.cancel_scope.cancel()

    async def _observe(self, obs: Observation) -> None:
        events, effects = self.machine.handle(obs, obs.ts)
        if events:
            self.writer.write([obs, *events])
            for event in events:
                if self.on_event is not None:
                    self.on_event(event, self.state)
        for effect in effects:
            await self._perform(effect)

    async def _perform(self, effect: Effect) -> None:
        match effect:
            case Spawn():  # locally at once: its answer comes before any other observation
                await self.executor.spawn(self.specs[effect.task], effect.attempt)
            case StopTree():
                self._work.start_soon(self.executor.stop, effect)
            case RunHook():
                self._work.start_soon(self._hook, effect)
            case RunVerify() | RunCompensate():
                self._work.start_soon(self._check, effect)
            case SetDeadline():
                self._timers.start_soon(self._deadline, effect)
            case LookupCache():  # at once, as a spawn: a miss is answered by one
                await self._lookup(effect)
            case Collect():
                self._work.start_soon(self._collect, effect)
            case ReapLeftovers():
                reaped = await self.executor.reap(effect.leftovers)
                await self._observe(
                    ObsReaped(
                        ts=time.time(), scheduler_pid=self.me[0], scheduler_started=self.me[1], reaped=reaped
                    )
                )
            case Finish():
                await self._close_workspaces()
                self._finished = True

    # -- attempts -----------------------------------------------------------------------------------

    def _here(self, task_id: str) -> TaskSpec:
        """The task as it runs now: in its workspace, its `{inputs.…}` filled."""
        task = fill_inputs(self.specs[task_id], str(self.dir / OUTPUTS))
        ws = self.workspaces.get(task_id)
        return task if ws is None else attrs.evolve(task, cwd=str(ws.cwd))

    async def _spawn(self, task: TaskSpec, attempt: int) -> None:
        logs = self.dir / "tasks" / task.id
        logs.mkdir(mode=0o700, parents=True, exist_ok=True)
        if task.isolate is not None:
            try:
                self.workspaces[task.id] = await open_workspace(
                    self.home, self.state.session_id, self.plan, task, self.bases
                )
            except (WorkspaceError, OSError, ValueError) as exc:
                error = f"no workspace: {exc}"
                await self._observe(
                    ObsSpawnFailed(
                        ts=time.time(), task=task.id, attempt=attempt, error=error, log_dir=str(logs)
                    )
                )
                return
        task = self._here(task.id)
        unit = marker(self.state.session_id, task.id, attempt)
        env = {
            **os.environ,
            **dict(task.env),
            "CAPSULE_RUN": self.state.session_id,
            "CAPSULE_TASK": task.id,
            "CAPSULE_ATTEMPT": str(attempt),
            procs.MARKER: unit,
        }
        if task.depends_on:
            env["CAPSULE_INPUTS"] = str(inputs_dir(self.dir, task))
        cgroup = procs.open_cgroup(cgroup_name(self.state.session_id, task.id, attempt))
        found: str | None = None
        if (self.enforcement is not None or self.plan.trace or cgroup is not None) and task.command:
            # Wrapped (guard, strace, the cgroup's join), a missing program would start the wrapper and
            # fail inside it: it is a spawn failure, as it is unwrapped.
            found, missing = resolve_command(task.command[0], task.cwd, env)
            if missing is not None:
                error = (
                    f"cannot start {task.command[0]}: {os.strerror(getattr(errno, missing, errno.ENOENT))}"
                )
                if cgroup is not None:
                    cgroup.remove()
                await self._observe(
                    ObsSpawnFailed(
                        ts=time.time(), task=task.id, attempt=attempt, error=error, log_dir=str(logs)
                    )
                )
                return
        trace = open_trace(self.home) if self.plan.trace and self.tracer is not None else None
        traced = None
        if trace is not None and self.tracer is not None:
            traced = traced_argv(
                self.tracer, recorded_level(self.plan, self.tracer, self.enforcement), trace.spool,
                task.command, self.enforcement, found,
                title=f"capsule: task {task.id}", env=env,
            )  # fmt: skip
        key = (task.id, attempt)
        # The guard's decisions are facts about the attempt, written beside the machine's events (replay
        # leaves them out); on_violation = "kill" reaches the machine as a violation it stops the tree for.
        guard = open_guard(
            self.enforcement,
            emit=self.writer.write,
            kill=lambda: self._send.send_nowait(
                ObsViolation(ts=time.time(), task=task.id, attempt=attempt, rule="on_violation = kill")
            ),
            where={"task": task.id, "attempt": attempt},
            cwd=Path(task.cwd) if task.cwd else None,
        )
        if traced is not None and traced.gate is not None and trace is not None and guard.notify:
            guard.on_refused = note_refusals(trace.spool)  # eBPF: a refused exec's attempt, in the trace
        title = traced.title if traced is not None else None
        argv, fds = guard.wrap(
            traced.argv if traced is not None else list(task.command),
            writable=[str(trace.spool), *(traced.writable if traced is not None else ())]
            if trace is not None
            else [],
            helper=traced is not None and traced.helper,
            argv0=title,
        )
        gate = traced.gate if traced is not None else None
        if guard.launches:
            title = None  # the launcher gave it
        executable = None
        if cgroup is not None:
            argv = cgroup.joining(argv, env, argv0=title)
        elif title is not None:
            executable, argv = argv[0], [title, *argv[1:]]
        out = open_private(logs / f"{attempt}.out", append=False)
        err = open_private(logs / f"{attempt}.err", append=False)
        relay = start_relay(traced.relay_of) if traced is not None and traced.relay_of is not None else None
        try:
            process = await trio.lowlevel.open_process(
                argv,
                executable=executable,
                cwd=task.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                pass_fds=(*fds, *(traced.fds if traced is not None else ())),
                start_new_session=True,
            )  # no preexec_fn: it would make the spawn a fork of the whole scheduler (procs.Cgroup.joining)
        except OSError as exc:
            if gate is not None:
                gate.abandon()
            if relay is not None:
                relay.release()  # it ends, finding no writer
            guard.close()
            if cgroup is not None:
                cgroup.remove()
            if trace is not None:
                trace.discard()
            error = exc.strerror or str(exc)
            await self._observe(
                ObsSpawnFailed(ts=time.time(), task=task.id, attempt=attempt, error=error, log_dir=str(logs))
            )
            return
        except BaseException:
            if relay is not None:
                relay.release()
            raise
        finally:
            os.close(out)
            os.close(err)
            if gate is not None:
                gate.spawned()
        started = procs.started_at(process.pid)
        tree = procs.Tree(
            pid=process.pid, started=started, pgid=process.pid, cgroup=str(cgroup.path) if cgroup else None,
            marker=f"{procs.MARKER}={unit}",
        )  # fmt: skip
        guard.spawned()
        handle = self.attempts[key] = Attempt(
            process=process,
            tree=tree,
            cgroup=cgroup,
            guard=guard,
            gate=gate,
            relay=relay,
        )
        spawned = partial(
            ObsSpawned, task=task.id, attempt=attempt, pid=process.pid, started=started, pgid=process.pid,
            log_dir=str(logs), trace_session=trace.session_id if trace else None,
        )  # fmt: skip
        if gate is None:
            await self._observe(spawned(ts=time.time()))
        else:  # eBPF: the task starts (its timeout runs) once the recorder is attached and lets it go
            handle.on_released = lambda: self._send.send_nowait(spawned(ts=time.time()))
        self._work.start_soon(self._watch, task, attempt, handle, trace)

    async def _watch(self, task: TaskSpec, attempt: int, handle: Attempt, trace: TraceFiles | None) -> None:
        """Until the attempt's process (and its trace) ended: sample it; then observe the exit."""
        process = handle.process
        told = False

        def exited() -> None:
            """Observe the exit, once: when the trace has ended, or under eBPF as soon as the tracker has
            seen the whole tree end (the recorder then takes a while to detach, which is not the
            task's time and must not run into its timeout)."""
            nonlocal told
            if told:
                return
            told = True
            code, sig = procs.returncode_status(process.returncode)
            self._send.send_nowait(
                ObsExited(
                    ts=time.time(), task=task.id, attempt=attempt, exit_code=code, signal=sig,
                    cpu_s=handle.cpu_s, peak_rss=handle.peak_rss,
                )
            )  # fmt: skip

        handle.on_tree_gone = exited
        try:
            async with trio.open_nursery() as nursery:
                if trace is not None and self.tracer is not None:
                    nursery.start_soon(self._follow, task, attempt, handle, trace)
                async with trio.open_nursery() as sampling:
                    sampling.start_soon(self._sample, task, attempt, handle)
                    await process.wait()
                    sampling.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:  # the scheduler itself is going down
                    await procs.stop_async(handle.full_tree(), signal.SIGKILL, 0.0, keep_leader=True)
                    await process.wait()
        handle.guard.close()
        exited()

    async def _follow(self, task: TaskSpec, attempt: int, handle: Attempt, trace: TraceFiles) -> None:
        assert self.tracer is not None
        await follow_trace(
            trace, plan=self.plan, tracer=self.tracer, task=task, attempt=attempt, process=handle.process,
            parent=self.dir.name, recorder=self.me, tracer_started=handle.tree.started or 0.0,
            observe=self._send.send_nowait, enforcement=self.enforcement,
            checked=lambda batch: self.writer.write(found) if (found := check_events(handle.guard, batch)) else None,
            gate=handle.gate, on_released=handle.on_released, on_tree_gone=handle.on_tree_gone,
            relay=handle.relay,
        )  # fmt: skip

    async def _sample(self, task: TaskSpec, attempt: int, handle: Attempt) -> None:
        """Every SAMPLE_S while the attempt's leader lives, the first one SAMPLE_S after the spawn: at once,
        it would only see the command being exec'd (nothing of it to limit, no member but the leader,
        which task.started records), and it cost a third of the scheduler's time per trivial task."""
        while True:
            await trio.sleep(SAMPLE_S)
            rss, cpu = measure(handle.sample_tree(), handle.seen)
            handle.peak_rss, handle.cpu_s = max(handle.peak_rss, rss), max(handle.cpu_s or 0.0, cpu)
            pids = tuple(handle.seen)
            self._send.send_nowait(
                ObsSampled(
                    ts=time.time(), task=task.id, attempt=attempt, rss=rss, cpu_s=cpu, pids=pids,
                    starts=tuple(handle.seen[p] for p in pids),
                )
            )  # fmt: skip

    async def _stop(self, effect: StopTree) -> None:
        handle = self.attempts.get((effect.task, effect.attempt))
        if handle is None:
            return
        signum = signal.Signals[effect.signal]
        tree = handle.full_tree() if handle.process.returncode is None else handle.sweep_tree()
        await procs.stop_async(tree, signum, effect.grace_s, keep_leader=True)
        if handle.process.returncode is not None and (effect.task, effect.attempt) in self.attempts:
            del self.attempts[(effect.task, effect.attempt)]
            procs.reap([procs.Member(pid=p, started=s) for p, s in handle.seen.items()])
            if handle.cgroup is not None:
                handle.cgroup.remove()

    # -- hooks, verify, compensate, deadlines, signals ----------------------------------------------------

    async def _hook(self, effect: RunHook) -> None:
        code, out = await self.executor.shell(
            effect.command, self._here(effect.task), effect.payload, effect.timeout_s, None
        )
        words = out.decode(errors="replace").split()
        answer = words[0][:100] if words else ""
        self._send.send_nowait(
            ObsHook(
                ts=time.time(),
                task=effect.task,
                on=effect.on,
                index=effect.index,
                exit_code=code,
                answer=answer,
            )
        )

    async def _check(self, effect: RunVerify | RunCompensate) -> None:
        attempt = effect.attempt if isinstance(effect, RunVerify) else None  # verify: where it ran
        code, _out = await self.executor.shell(
            effect.command, self._here(effect.task), b"", effect.timeout_s, attempt
        )
        now = time.time()
        if isinstance(effect, RunVerify):
            self._send.send_nowait(
                ObsVerified(
                    ts=now, task=effect.task, attempt=effect.attempt, index=effect.index, exit_code=code
                )
            )
        else:
            self._send.send_nowait(ObsCompensated(ts=now, task=effect.task, exit_code=code))

    # -- workspaces, outputs, the cache -----------------------------------------------------------------

    async def _lookup(self, effect: LookupCache) -> None:
        task = self.specs[effect.task]
        key = cache_key(self.dir, task)
        if self.plan.reuse_from is not None and task.id not in self.plan.rerun:
            hit = reuse_result(self.home, self.plan.reuse_from, self.dir, task.id, self.reuse)
        else:
            hit = cache_lookup(self.home, key, self.dir, task)
        self.cache_keys[task.id] = key
        obs = ObsCacheLooked(
            ts=time.time(), task=task.id, attempt=effect.attempt, cache_key=key, hit=hit is not None
        )
        if hit is not None:
            obs = attrs.evolve(
                obs, from_run=hit.from_run, outputs=hit.outputs, branch=hit.branch, commit=hit.commit
            )
        await self._observe(obs)

    async def _collect(self, effect: Collect) -> None:
        """Keep what the attempt left (outputs, then the workspace's commit: where the attempt ran), then
        its cache entry here."""
        task = self._here(effect.task)
        found, still_open = await self.executor.keep(task, effect.attempt, self.workspaces.get(task.id))
        if not still_open:
            self.workspaces.pop(task.id, None)
        if task.cache and "error" not in found:
            try:
                key = self.cache_keys.get(task.id) or cache_key(self.dir, task)
                meta = {k: found.get(k) for k in ("outputs", "branch", "commit")}
                cache_store(self.home, key, self.state.session_id, self.dir, task, meta)
                found["cache_key"] = key
            except OSError as exc:
                found["error"] = f"could not keep the result: {exc}"
        self._send.send_nowait(ObsCollected(ts=time.time(), task=task.id, attempt=effect.attempt, **found))

    async def _close_workspaces(self) -> None:
        """At the end: the workspaces of tasks that succeeded go (unless kept); failed ones stay."""
        for task_id, ws in list(self.workspaces.items()):
            t = self.state.tasks.get(task_id)
            if t is not None and t.state == "succeeded" and not self.specs[task_id].keep_worktree:
                await self.executor.close_workspace(task_id, ws)
                del self.workspaces[task_id]

    async def _deadline(self, effect: SetDeadline) -> None:
        # the wall clock, which the machine compares `at` with: trio's clock may run apart from it
        while (left := effect.at - time.time()) > 0:  # noqa: ASYNC110 (a clock, not an event)
            await trio.sleep(left)
        self._send.send_nowait(
            ObsDeadline(ts=time.time(), task=effect.task, attempt=effect.attempt, what=effect.what)
        )

    async def _signals(self) -> None:
        """SIGINT or SIGTERM: the run is killed (tasks stopped, the rest skipped); a second one is final."""
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            async for _signum in received:
                if self.state.finished is not None:
                    continue
                self._send.send_nowait(ObsKill(ts=time.time()))
                break
            async for _signum in received:
                raise KeyboardInterrupt
