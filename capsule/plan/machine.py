"""The agent-run machine (architecture §9): `Machine.handle(observation, now) -> (events, effects)`, no I/O.

Theory of operation. The driver (`stages/schedule.py`) feeds what it saw (`capsule.events.observed`);
the machine answers with the events that follow (the run's record) and the effects to perform
(`capsule.plan.effects`). Its state is the fold of the events it emitted (`capsule.fold.tasks.RunState`,
task states per `capsule.plan.states`): each event is folded as it is emitted, so a decision later in the
same step sees it. Nothing else is remembered, which is what makes a recorded run replay exactly
(`capsule.plan.replay`). Randomness (the retry jitter) is a hash of the session id, task and attempt.

One class holds every transition of a run: they read best together, hence the length of this module.
Each step ends in `_settle`: tasks whose last dependency just ended pass their gate (skip, pre hooks,
policy), a failure under `halt = "now"` or an abort stops what runs, free slots go to ready tasks in plan
order, and once every task has ended the succeeded ones are compensated (newest first) and the run
finishes. An effect whose answer is pending is never asked twice: each is asked exactly once, in the step
of the event that made it due (a dispatch is an event of its own, `task.dispatched`).
"""

from __future__ import annotations

import heapq
from collections import Counter

import attrs
import orjson

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
    ObsLost,
    ObsReaped,
    ObsSampled,
    ObsSpawned,
    ObsSpawnFailed,
    ObsVerified,
    ObsViolation,
)
from capsule.events.tasks import (
    HookDecided,
    PolicyViolated,
    RunFinished,
    RunResumed,
    TaskCached,
    TaskCollected,
    TaskCompensated,
    TaskDispatched,
    TaskExited,
    TaskFailed,
    TaskLimitExceeded,
    TaskMembers,
    TaskQueued,
    TaskRetrying,
    TaskSkipped,
    TaskStarted,
    TaskStopping,
    TaskSucceeded,
    TaskVerified,
)
from capsule.fold.tasks import RunState, TaskState
from capsule.plan.config import Config, planned_event
from capsule.plan.dag import dispatch_order
from capsule.plan.decide import (
    Abort,
    AskHook,
    Decision,
    Ended,
    Fail,
    Retry,
    Skip,
    Succeed,
    decide,
    hook_decision,
)
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
    leftovers,
)
from capsule.plan.policy import denied_command
from capsule.plan.retry import jitter
from capsule.plan.spec import Hook, TaskSpec
from capsule.plan.states import StopReason, is_done, verdict

SHELL_TIMEOUT_S = 600.0  # a verify or compensate command that runs longer counts as failed
HALTED = "run halted after a failure"
VERDICTS = (TaskSucceeded, TaskFailed, TaskSkipped, TaskCached)


class Machine:
    """One agent run's decisions. `state` must already hold the session's header (and, on resume,
    everything recorded before)."""

    def __init__(self, config: Config, state: RunState) -> None:
        self.config = config
        self.state = state
        self.specs = {t.id: t for t in config.plan.tasks}
        order = dispatch_order(config.plan)  # priority, then plan order
        self.rank = {task_id: i for i, task_id in enumerate(order)}
        # Tasks that may be ready, by rank: every task an event concerns, and the dependents of every
        # verdict, enter it; `_dispatch` drops the ones that are not ready. A scan of the whole plan per
        # step made a 10,000-task run quadratic.
        self._candidates: list[tuple[int, str]] = []
        self._considered: set[str] = set()
        self._backoff: set[str] = set()  # retries waiting: ready at the first step past their retry_at
        self.hashes = dict(zip(self.specs, config.spec_hashes, strict=True))
        self.dependents: dict[str, list[str]] = {t.id: [] for t in config.plan.tasks}
        for t in config.plan.tasks:
            for dep in t.depends_on:
                self.dependents[dep].append(t.id)
        self._pre_hooks = len(self._hooks_on("pre"))
        self._events: list[Event] = []
        self._effects: list[Effect] = []
        self._gate: list[str] = []
        self._ended_any = False
        self._now = 0.0

    # -- the one entry point -----------------------------------------------------------------------

    def handle(self, obs: Observation, now: float) -> tuple[list[Event], list[Effect]]:
        """The events that follow `obs` (already folded into `state`) and the effects to perform."""
        self._events, self._effects, self._gate, self._ended_any, self._now = [], [], [], False, now
        if self.state.finished is not None and not isinstance(obs, ObsBegin | ObsReaped):
            return self._step_done()
        match obs:
            case ObsBegin(resume=True):
                self._effects.append(ReapLeftovers(leftovers=leftovers(self.state)))
                return self._step_done()
            case ObsBegin():
                self._plan(resume=False)
            case ObsReaped():
                self._emit(
                    RunResumed(
                        ts=now,
                        scheduler_pid=obs.scheduler_pid,
                        scheduler_started=obs.scheduler_started,
                        reaped=obs.reaped,
                    )
                )
                self._plan(resume=True)
            case ObsSpawned() | ObsSpawnFailed():
                self._started(obs)
            case ObsExited():
                self._exited(obs)
            case ObsLost():
                self._lost(obs)
            case ObsSampled():
                self._sampled(obs)
            case ObsViolation():
                self._violation(obs)
            case ObsHook():
                self._hook(obs)
            case ObsVerified():
                self._verified(obs)
            case ObsCompensated():
                self._compensated(obs)
            case ObsDeadline():
                self._deadline(obs)
            case ObsKill():
                self._kill(obs.task)
            case ObsCacheLooked():
                self._cache_looked(obs)
            case ObsCollected():
                self._collected(obs)
        self._settle()
        return self._step_done()

    def _step_done(self) -> tuple[list[Event], list[Effect]]:
        return self._events, self._effects

    def _emit(self, *events: Event) -> None:
        for event in events:
            self.state.apply(event)
            self._events.append(event)
            task = getattr(event, "task", None)
            if task in self.specs:
                self._consider(task)
            if isinstance(event, VERDICTS):
                self._ended_any = True
                self._gate.extend(self.dependents.get(event.task, ()))
                for child in self.dependents.get(event.task, ()):
                    self._consider(child)

    def _consider(self, task_id: str) -> None:
        if task_id not in self._considered:
            self._considered.add(task_id)
            heapq.heappush(self._candidates, (self.rank[task_id], task_id))

    def _task(self, task_id: str) -> TaskState | None:
        return self.state.tasks.get(task_id) if task_id in self.specs else None

    def _attempt_running(self, task_id: str, attempt: int) -> TaskState | None:
        """The task, if `attempt` is its current attempt and its process has not ended."""
        t = self._task(task_id)
        a = t.current if t is not None else None
        if t is None or a is None or t.state != "running" or a.number != attempt or a.end is not None:
            return None
        return t

    # -- the run -----------------------------------------------------------------------------------

    def _plan(self, *, resume: bool) -> None:
        now = self._now
        self._emit(planned_event(self.config, now))
        todo = []
        for spec in self.config.plan.tasks:
            before = self.state.tasks.get(spec.id)
            if (
                resume
                and before is not None
                and is_done(before.state)
                and before.succeeded_hash == self.hashes[spec.id]
            ):
                continue
            todo.append(spec.id)
        self._emit(*(TaskQueued(ts=now, task=t, spec_hash=self.hashes[t]) for t in todo))
        self._gate.extend(todo)
        self._ended_any = True  # a run with nothing left to do finishes at once
        if self.config.plan.timeout_s is not None:
            at = now + self.config.plan.timeout_s
            self._effects.append(SetDeadline(task="", attempt=0, what="run", at=at))

    def _settle(self) -> None:
        """Gate, halt, dispatch until nothing changes; then compensate or finish."""
        while True:
            gate, self._gate = list(dict.fromkeys(self._gate)), []
            for task_id in gate:
                self._pass_gate(task_id)
            self._halt_now()
            self._dispatch()
            if not self._gate:
                break
        if self._ended_any:
            self._finish_or_compensate()

    def _halt_now(self) -> None:
        s = self.state
        if not (s.aborted or (s.failed_now and s.halt == "now")):
            return
        for t in s.tasks.values():
            if self._attempt_running(t.id, t.current.number if t.current else 0) and t.stopping is None:
                self._stop(t, "killed")

    # -- before an attempt: gate, pre hooks, policy, slots -------------------------------------------

    def _pass_gate(self, task_id: str) -> None:
        t = self.state.tasks[task_id]
        if t.state != "queued" or t.dispatched is not None or t.pre or t.attempts[t.base :]:
            return
        deps = [self.state.tasks[d] for d in t.depends_on]
        if not all(d.final for d in deps):
            return
        bad = [d for d in deps if not is_done(d.state)]
        if bad:
            self._emit(
                TaskSkipped(ts=self._now, task=task_id, reason=f"dependency {bad[0].id} {bad[0].state}")
            )
        elif self.state.halted:
            self._emit(TaskSkipped(ts=self._now, task=task_id, reason=HALTED))
        else:
            self._next_pre_hook(t)

    def _hooks_on(self, on: str) -> list[tuple[int, Hook]]:
        return [(i, h) for i, h in enumerate(self.config.plan.hooks) if h.on == on]

    def _next_pre_hook(self, t: TaskState) -> None:
        hooks = self._hooks_on("pre")
        if len(t.pre) < len(hooks):
            self._ask_hook(t, "pre", *hooks[len(t.pre)])
            return
        spec = self.specs[t.id]
        rule = denied_command(self.config.plan.policy, spec.command)
        if rule is not None:
            self._emit(
                PolicyViolated(ts=self._now, task=t.id, attempt=0, rule=rule, argv=spec.command),
                TaskFailed(
                    ts=self._now,
                    task=t.id,
                    attempt=0,
                    outcome="denied",
                    reason=f"command matches deny rule {rule!r}",
                ),
            )

    def _ask_hook(self, t: TaskState, on: str, index: int, hook: Hook) -> None:
        spec = self.specs[t.id]
        payload = orjson.dumps(
            {
                **attrs.asdict(spec),
                "on": on,
                "state": t.state,
                "attempts": len(t.attempts),
                "exit_code": t.exit_code,
                "run": self.state.session_id,
            }
        )
        self._effects.append(
            RunHook(
                task=t.id, on=on, index=index, command=hook.command, timeout_s=hook.timeout_s, payload=payload
            )
        )

    def _ready(self, t: TaskState) -> bool:
        if t.state != "queued" or t.dispatched is not None:
            return False
        if not all(is_done(self.state.tasks[d].state) for d in t.depends_on):
            return False
        if len(t.pre) != self._pre_hooks or any(h.decision != "continue" for h in t.pre):
            return False
        return t.retry_at is None or self._now >= t.retry_at

    def _dispatch(self) -> None:
        s = self.state
        free = self.config.plan.parallel - len(s.holding)
        if free <= 0 and not s.halted:
            return  # the common case in a big batch: every slot taken
        in_use = Counter(
            r for task_id in s.holding if task_id in self.specs for r in self.specs[task_id].uses
        )
        limits = dict(self.config.plan.resources)
        waiting: list[tuple[int, str]] = []  # ready, but a resource they use is taken
        for task_id in self._backoff:
            self._consider(task_id)
        self._backoff.clear()
        while self._candidates and (free > 0 or s.halted):
            rank, task_id = heapq.heappop(self._candidates)
            self._considered.discard(task_id)
            t, spec = s.tasks[task_id], self.specs[task_id]
            if not self._ready(t):
                if t.retry_at is not None and t.state == "queued" and t.dispatched is None:
                    self._backoff.add(task_id)  # any later step may find it ready: look again then
                continue  # else whatever makes it ready is an event about it
            if s.halted:
                self._emit(TaskSkipped(ts=self._now, task=t.id, reason=HALTED))
                continue
            if any(in_use[r] >= limits[r] for r in spec.uses):
                waiting.append((rank, task_id))
                continue
            attempt = len(t.attempts) + 1
            self._emit(TaskDispatched(ts=self._now, task=t.id, attempt=attempt))
            if (spec.cache and self.config.plan.use_cache) or self._reused(spec.id):
                self._effects.append(LookupCache(task=t.id, attempt=attempt))
            else:
                self._effects.append(Spawn(task=t.id, attempt=attempt))
            free -= 1
            in_use.update(spec.uses)
        for rank, task_id in waiting:
            if task_id not in self._considered:
                self._considered.add(task_id)
                heapq.heappush(self._candidates, (rank, task_id))

    def _reused(self, task_id: str) -> bool:
        """A rerun takes this task's result from the run it reruns (looked up like a cache entry)."""
        plan = self.config.plan
        return plan.reuse_from is not None and task_id not in plan.rerun

    # -- an attempt ----------------------------------------------------------------------------------

    def _started(self, obs: ObsSpawned | ObsSpawnFailed) -> None:
        t = self._task(obs.task)
        if t is None or t.dispatched != obs.attempt:
            if isinstance(obs, ObsSpawned):  # nobody wants this process (any more)
                self._effects.append(
                    StopTree(task=obs.task, attempt=obs.attempt, signal="SIGKILL", grace_s=0.0)
                )
            return
        spec = self.specs[t.id]
        s, now = self.state, self._now
        if isinstance(obs, ObsSpawnFailed):
            self._emit(
                TaskStarted(
                    ts=now, task=t.id, attempt=obs.attempt, pid=0, started=now, pgid=0, argv=spec.command,
                    log_dir=obs.log_dir, scheduler_pid=s.scheduler_pid, scheduler_started=s.scheduler_started,
                ),
                TaskExited(
                    ts=now, task=t.id, attempt=obs.attempt, outcome="spawn_failed", duration_s=0.0,
                    reason=f"cannot start {spec.command[0]}: {obs.error}",
                ),
            )  # fmt: skip
            self._decide(t)
            return
        self._emit(
            TaskStarted(
                ts=now, task=t.id, attempt=obs.attempt, pid=obs.pid, started=obs.started, pgid=obs.pgid,
                argv=spec.command, log_dir=obs.log_dir, trace_session=obs.trace_session,
                scheduler_pid=s.scheduler_pid, scheduler_started=s.scheduler_started,
            )
        )  # fmt: skip
        if spec.timeout_s is not None:
            self._effects.append(
                SetDeadline(task=t.id, attempt=obs.attempt, what="timeout", at=now + spec.timeout_s)
            )

    def _stop(self, t: TaskState, reason: StopReason) -> None:
        a = t.current
        assert a is not None
        hard = reason in ("denied", "limit_exceeded")
        signal, grace = ("SIGKILL", 0.0) if hard else ("SIGTERM", self.specs[t.id].grace_s)
        self._emit(
            TaskStopping(
                ts=self._now, task=t.id, attempt=a.number, reason=reason, signal=signal, grace_s=grace
            )
        )
        self._effects.append(StopTree(task=t.id, attempt=a.number, signal=signal, grace_s=grace))

    def _sampled(self, obs: ObsSampled) -> None:
        t = self._attempt_running(obs.task, obs.attempt)
        if t is None:
            return
        known = t.members.get(obs.attempt, {})
        new = [(p, st) for p, st in zip(obs.pids, obs.starts, strict=True) if known.get(p) != st]
        if new:
            self._emit(
                TaskMembers(
                    ts=self._now,
                    task=t.id,
                    attempt=obs.attempt,
                    pids=tuple(p for p, _ in new),
                    starts=tuple(st for _, st in new),
                )
            )
        if t.stopping is not None:
            return
        spec = self.specs[t.id]
        if spec.memory is not None and obs.rss > spec.memory:
            limit, measured, allowed = "memory", float(obs.rss), float(spec.memory)
        elif spec.cpu_time_s is not None and obs.cpu_s > spec.cpu_time_s:
            limit, measured, allowed = "cpu_time", round(obs.cpu_s, 3), spec.cpu_time_s
        else:
            return
        self._emit(
            TaskLimitExceeded(
                ts=self._now, task=t.id, attempt=obs.attempt, limit=limit, measured=measured, allowed=allowed
            )
        )
        self._stop(t, "limit_exceeded")

    def _violation(self, obs: ObsViolation) -> None:
        t = self._attempt_running(obs.task, obs.attempt)
        if t is None or t.stopping is not None:
            return
        self._emit(
            PolicyViolated(
                ts=self._now, task=t.id, attempt=obs.attempt, rule=obs.rule, argv=obs.argv, path=obs.path,
                pid=obs.pid, live=True,
            )
        )  # fmt: skip
        self._stop(t, "denied")

    def _cache_looked(self, obs: ObsCacheLooked) -> None:
        t = self._task(obs.task)
        if t is None or t.dispatched != obs.attempt:
            return
        if not obs.hit:
            self._effects.append(Spawn(task=t.id, attempt=obs.attempt))
            return
        self._emit(
            TaskCached(
                ts=self._now, task=t.id, spec_hash=self.hashes[t.id], cache_key=obs.cache_key,
                from_run=obs.from_run, outputs=obs.outputs, branch=obs.branch, commit=obs.commit,
            )
        )  # fmt: skip

    def _deadline(self, obs: ObsDeadline) -> None:
        if obs.what == "run":
            if self.state.finished is None:
                self._kill(None, f"run timed out after {self.config.plan.timeout_s}s")
            return
        if obs.what == "timeout":
            t = self._attempt_running(obs.task, obs.attempt)
            if t is not None and t.stopping is None:
                self._stop(t, "timed_out")
        # a retry's backoff has ended: `_dispatch` finds the task ready now (`_backoff`)

    def _kill(self, task_id: str | None, why: str = "run killed") -> None:
        for t in self.state.tasks.values():
            if task_id is not None and t.id != task_id:
                continue
            a = t.current
            if a is not None and self._attempt_running(t.id, a.number) and t.stopping is None:
                self._stop(t, "killed")
            elif (
                task_id is None and t.state == "queued"
            ):  # a dispatched one's process is stopped when it starts
                self._emit(TaskSkipped(ts=self._now, task=t.id, reason=why))

    def _exited(self, obs: ObsExited) -> None:
        t = self._attempt_running(obs.task, obs.attempt)
        if t is None or t.current is None:
            return
        if t.stopping is not None:
            outcome = t.stopping.reason
        elif obs.signal is not None:
            outcome = "killed"
        else:
            outcome = "succeeded" if obs.exit_code == 0 else "failed"
        self._emit(
            TaskExited(
                ts=self._now, task=t.id, attempt=obs.attempt, exit_code=obs.exit_code, signal=obs.signal,
                outcome=outcome, duration_s=round(self._now - t.current.ts, 6),
                cpu_s=None if obs.cpu_s is None else round(obs.cpu_s, 3), peak_rss=obs.peak_rss or None,
            )
        )  # fmt: skip
        # nothing of the task outlives it, even after a clean exit
        self._effects.append(StopTree(task=t.id, attempt=obs.attempt, signal="SIGKILL", grace_s=0.0))
        self._verify_or_decide(t)

    def _lost(self, obs: ObsLost) -> None:
        """The node running the attempt died: the attempt ended `lost` (retried as a failure is), unless
        it was being stopped, which then ends it as it would have."""
        t = self._attempt_running(obs.task, obs.attempt)
        if t is None or t.current is None:
            return
        outcome = t.stopping.reason if t.stopping is not None else "lost"
        self._emit(
            TaskExited(
                ts=self._now, task=t.id, attempt=obs.attempt, outcome=outcome,
                duration_s=round(self._now - t.current.ts, 6),
                reason=f"node {obs.node or '?'} lost: {obs.error}" if outcome == "lost" else "",
            )
        )  # fmt: skip
        self._decide(t)

    # -- after an attempt: verify, post/error hooks, the verdict ---------------------------------------

    def _verify_or_decide(self, t: TaskState) -> None:
        spec = self.specs[t.id]
        done = t.current_verified()
        if (
            t.exited is not None
            and t.exited.outcome == "succeeded"
            and all(v.ok for v in done)
            and len(done) < len(spec.verify)
        ):
            a = t.current
            assert a is not None
            self._effects.append(
                RunVerify(
                    task=t.id, attempt=a.number, index=len(done), command=spec.verify[len(done)],
                    timeout_s=SHELL_TIMEOUT_S,
                )
            )  # fmt: skip
            return
        self._decide(t)

    def _verified(self, obs: ObsVerified) -> None:
        t = self._task(obs.task)
        if t is None or t.exited is None or t.exited.attempt != obs.attempt or t.state != "running":
            return
        spec = self.specs[t.id]
        done = t.current_verified()
        if obs.index != len(done) or obs.index >= len(spec.verify) or not all(v.ok for v in done):
            return
        self._emit(
            TaskVerified(
                ts=self._now,
                task=t.id,
                attempt=obs.attempt,
                command=spec.verify[obs.index],
                ok=obs.exit_code == 0,
                exit_code=obs.exit_code,
            )
        )
        self._verify_or_decide(t)

    def _ended(self, t: TaskState) -> Ended:
        e = t.exited
        assert e is not None
        spec = self.specs[t.id]
        failed_check = next((v for v in t.current_verified() if not v.ok), None)
        if failed_check is not None:
            return Ended(outcome="failed", reason=f"verify failed: {failed_check.command}")
        code = e.exit_code
        reason = {
            "succeeded": "",
            "failed": f"exit code {code}",
            "killed": f"killed by {e.signal or 'the scheduler'}",
            "timed_out": f"timed out after {spec.timeout_s}s",
            "limit_exceeded": "limit exceeded",
            "denied": "policy violation",
            "spawn_failed": e.reason,
            "lost": e.reason,
        }.get(e.outcome, e.outcome)
        return Ended(outcome=e.outcome, exit_code=code, reason=reason)

    def _answers(self, t: TaskState, on: str) -> str | None:
        """The post or error hooks' answer about the current attempt, None while one is still due."""
        answered = [h.decision for h in t.deciding if h.on == on]
        for decision in answered:
            if decision != "continue":
                return decision
        return "continue" if len(answered) == len(self._hooks_on(on)) else None

    def _decide(self, t: TaskState) -> None:
        a = t.current
        assert a is not None
        spec = self.specs[t.id]
        ended = self._ended(t)
        answers: dict[str, str] = {}
        tries = a.number - t.base
        while isinstance(
            step := decide(spec, ended, answers, tries, jitter(self.state.session_id, t.id, a.number)),
            AskHook,
        ):
            answer = self._answers(t, step.on)
            if answer is None:
                asked = [h for h in t.deciding if h.on == step.on]
                self._ask_hook(t, step.on, *self._hooks_on(step.on)[len(asked)])
                return
            answers[step.on] = answer
        self._verdict(t, spec, a.number, step)

    def _verdict(self, t: TaskState, spec: TaskSpec, attempt: int, decision: Decision) -> None:
        now = self._now
        match decision:
            case Succeed() if spec.collects:
                self._effects.append(Collect(task=t.id, attempt=attempt))  # the verdict follows it
            case Succeed():
                self._succeed(t, attempt)
            case Skip():
                self._emit(TaskSkipped(ts=now, task=t.id, reason=decision.reason))
            case Fail() | Abort():
                self._emit(
                    TaskFailed(
                        ts=now, task=t.id, attempt=attempt, outcome=decision.outcome, reason=decision.reason,
                        exit_code=decision.exit_code,
                    )
                )  # fmt: skip
            case Retry():
                self._emit(
                    TaskRetrying(
                        ts=now,
                        task=t.id,
                        attempt=attempt + 1,
                        delay_s=decision.delay_s,
                        reason=decision.reason,
                    )
                )
                self._effects.append(
                    SetDeadline(task=t.id, attempt=attempt + 1, what="retry", at=now + decision.delay_s)
                )
            case AskHook():
                raise AssertionError("a hook is asked, not decided")

    def _collected(self, obs: ObsCollected) -> None:
        t = self._task(obs.task)
        if (
            t is None
            or t.state != "running"
            or t.exited is None
            or t.exited.attempt != obs.attempt
            or (t.collected is not None and t.collected.attempt == obs.attempt)
        ):
            return
        now = self._now
        self._emit(
            TaskCollected(
                ts=now, task=t.id, attempt=obs.attempt, outputs=obs.outputs, workspace=obs.workspace,
                branch=obs.branch, commit=obs.commit, files=obs.files, insertions=obs.insertions,
                deletions=obs.deletions, cache_key=obs.cache_key, error=obs.error,
            )
        )  # fmt: skip
        if obs.error is not None:
            self._emit(TaskFailed(ts=now, task=t.id, attempt=obs.attempt, outcome="failed", reason=obs.error))
            return
        self._succeed(t, obs.attempt)

    def _succeed(self, t: TaskState, attempt: int) -> None:
        self._emit(
            TaskSucceeded(
                ts=self._now, task=t.id, attempt=attempt, duration_s=t.duration_s or 0.0,
                spec_hash=self.hashes[t.id],
            )
        )  # fmt: skip

    def _hook(self, obs: ObsHook) -> None:
        t = self._task(obs.task)
        hooks = self._hooks_on(obs.on)
        if t is None or obs.index >= len(self.config.plan.hooks):
            return
        hook = self.config.plan.hooks[obs.index]
        if obs.on == "pre":
            if t.state != "queued" or len(t.pre) >= len(hooks) or hooks[len(t.pre)][0] != obs.index:
                return
        else:
            asked = [h for h in t.deciding if h.on == obs.on]
            if (
                t.state != "running"
                or t.exited is None
                or self._answers(t, obs.on) is not None
                or hooks[len(asked)][0] != obs.index
            ):
                return
        decision, reason = hook_decision(hook, obs.exit_code, obs.answer)
        self._emit(
            HookDecided(
                ts=self._now, task=t.id, on=obs.on, command=hook.command, decision=decision, reason=reason
            )
        )
        if obs.on != "pre":
            self._decide(t)
        elif decision == "continue":
            self._next_pre_hook(t)
        elif decision == "deny":
            self._emit(
                TaskFailed(ts=self._now, task=t.id, attempt=0, outcome="denied", reason="pre hook said deny")
            )
        else:
            self._emit(TaskSkipped(ts=self._now, task=t.id, reason=f"pre hook said {decision}"))

    # -- the end: compensation, the verdict of the run -------------------------------------------------

    def _to_compensate(self) -> list[TaskState]:
        done = [
            t
            for t in self.state.tasks.values()
            if t.state == "succeeded"
            and t.finished_ts is not None
            and t.id in self.specs
            and self.specs[t.id].compensate is not None
            and t.id not in self.state.compensated_now
        ]
        done.sort(key=lambda t: t.finished_ts or 0.0, reverse=True)
        return done

    def _finish_or_compensate(self) -> None:
        s = self.state
        if s.finished is not None or s.unfinished:
            return
        if self.config.plan.on_failure == "compensate" and (s.failed_now or s.aborted):
            todo = self._to_compensate()
            if todo:
                command = self.specs[todo[0].id].compensate
                assert command is not None
                self._effects.append(
                    RunCompensate(task=todo[0].id, command=command, timeout_s=SHELL_TIMEOUT_S)
                )
                return
        counts = s.counts()
        bad = sum(v for k, v in counts.items() if k not in ("succeeded", "skipped", "cached"))
        state = verdict([t.state for t in s.tasks.values()], aborted=s.aborted)
        self._emit(
            RunFinished(
                ts=self._now,
                state=state,
                succeeded=counts["succeeded"] + counts["cached"],
                failed=bad,
                skipped=counts["skipped"],
                duration_s=round(self._now - (s.planned_ts or self._now), 6),
            )
        )
        self._effects.append(Finish(state=state))

    def _compensated(self, obs: ObsCompensated) -> None:
        todo = self._to_compensate()
        if not todo or todo[0].id != obs.task or self.state.unfinished:
            return
        command = self.specs[obs.task].compensate
        assert command is not None
        self._emit(
            TaskCompensated(
                ts=self._now, task=obs.task, command=command, ok=obs.exit_code == 0, exit_code=obs.exit_code
            )
        )
        self._ended_any = True
