"""An in-memory world for the agent-run machine: effects are performed on a virtual clock by a script.

`Sim(plan, ...)` plays the driver's part without processes: a spawn starts a fake process whose exit
(code, signal, after how long) comes from the script, hooks answer from a function, a stop ends the
process (SIGTERM obeyed unless the script says it is ignored, then SIGKILL after the grace). Everything
recorded is what the real driver would write: each observation that led to events, then those events.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

import attrs

from capsule.events import Event, SessionStarted
from capsule.events.observed import (
    ObsBegin,
    ObsCacheLooked,
    ObsCollected,
    ObsCompensated,
    ObsDeadline,
    Observation,
    ObsExited,
    ObsHook,
    ObsReaped,
    ObsSampled,
    ObsSpawned,
    ObsSpawnFailed,
    ObsVerified,
)
from capsule.fold.tasks import RunState
from capsule.plan.config import Config
from capsule.plan.effects import (
    Collect,
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
from capsule.plan.machine import Machine
from capsule.plan.spec import Plan

T0 = 1_700_000_000.0


@attrs.frozen(kw_only=True)
class Run:
    """How one attempt of a fake process behaves."""

    code: int | None = 0  # exit code; None: it never exits by itself
    after: float = 1.0  # seconds until it exits
    ignores_term: bool = False
    rss: int = 0  # each sample reports this
    cpu_per_s: float = 0.0
    spawn_error: str | None = None


Script = Callable[[str, int], Run]  # (task, attempt) -> how it runs
Answer = Callable[[str, str, int], tuple[int | None, str]]  # (task, on, hook index) -> (exit code, answer)


def header(session_id: str = "20260101-000000-000-ab", ts: float = T0) -> SessionStarted:
    return SessionStarted(
        ts=ts,
        capsule_version="test",
        session_id=session_id,
        session_kind="agents",
        argv=("capsule", "agents", "run"),
        cwd="/",
        host="sim",
        recorder_pid=1,
        recorder_started=T0 - 10,
    )


class Sim:
    def __init__(
        self,
        plan: Plan,
        script: Script | None = None,
        *,
        answer: Answer | None = None,
        verify: Callable[[str, int], int | None] | None = None,
        compensate: Callable[[str], int | None] = lambda _task: 0,
        cached: Callable[[str], bool] = lambda _task: False,
        collect_error: Callable[[str], str | None] = lambda _task: None,
        hook_s: float = 0.1,
        sample_s: float | None = None,
        state: RunState | None = None,
        start: float = T0,
    ) -> None:
        self.plan = plan
        self.script = script or (lambda _t, _a: Run())
        self.answer = answer or (lambda _t, _on, _i: (0, "continue"))
        self.verify = verify or (lambda _t, _i: 0)
        self.compensate = compensate
        self.cached = cached
        self.collect_error = collect_error
        self.hook_s = hook_s
        self.sample_s = sample_s
        if state is None:
            state = RunState()
            state.apply(header())
            self.recorded: list[Event] = [header()]
        else:
            self.recorded = []
        self.machine = Machine(Config.of(plan), state)
        self.now = self.start = start
        self._heap: list[tuple[float, int, Observation]] = []
        self._seq = itertools.count()
        self._pids = itertools.count(100)
        self.live: dict[tuple[str, int], dict[str, Any]] = {}  # running fake processes
        self.finished: str | None = None
        self.effects: list[Any] = []
        self.max_holding = 0
        self.max_resource: dict[str, int] = {}

    @property
    def state(self) -> RunState:
        return self.machine.state

    def at(self, when: float, obs: Observation) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), obs))

    def feed(self, obs: Observation) -> list[Event]:
        events, effects = self.machine.handle(obs, obs.ts)
        if events:
            self.recorded.extend([obs, *events])
        holding = [t for t in self.state.tasks.values() if t.holds_slot()]
        assert set(self.state.holding) == {t.id for t in holding}  # the fold's index agrees
        self.max_holding = max(self.max_holding, len(holding))
        for name, _count in self.plan.resources:
            used = sum(name in self.plan.task(t.id).uses for t in holding)
            self.max_resource[name] = max(self.max_resource.get(name, 0), used)
        for effect in effects:
            self.effects.append(effect)
            self.perform(effect)
        return events

    def perform(self, effect: object) -> None:
        now = self.now
        match effect:
            case Spawn(task=task, attempt=attempt):
                run = self.script(task, attempt)
                if run.spawn_error is not None:
                    self.feed(ObsSpawnFailed(ts=now, task=task, attempt=attempt, error=run.spawn_error))
                    return
                pid = next(self._pids)
                self.live[(task, attempt)] = {"run": run, "start": now, "gen": 0}
                self.feed(
                    ObsSpawned(
                        ts=now, task=task, attempt=attempt, pid=pid, started=now, pgid=pid, log_dir="/l"
                    )
                )
                if run.code is not None:
                    self.at(now + run.after, ObsExited(ts=0, task=task, attempt=attempt, exit_code=run.code))
                if self.sample_s is not None:
                    self.at(now + self.sample_s, ObsSampled(ts=0, task=task, attempt=attempt, rss=0, cpu_s=0))
            case StopTree(task=task, attempt=attempt, signal=signal, grace_s=grace):
                proc = self.live.get((task, attempt))
                if proc is None:
                    return
                if signal == "SIGTERM" and proc["run"].ignores_term:
                    when, sig = now + grace, "SIGKILL"
                else:
                    when, sig = now + 0.01, signal
                self.at(when, ObsExited(ts=0, task=task, attempt=attempt, signal=sig))
            case RunHook(task=task, on=on, index=index):
                code, word = self.answer(task, on, index)
                self.at(
                    now + self.hook_s,
                    ObsHook(ts=0, task=task, on=on, index=index, exit_code=code, answer=word),
                )
            case RunVerify(task=task, attempt=attempt, index=index):
                code = self.verify(task, index)
                self.at(
                    now + 0.05, ObsVerified(ts=0, task=task, attempt=attempt, index=index, exit_code=code)
                )
            case RunCompensate(task=task):
                self.at(now + 0.05, ObsCompensated(ts=0, task=task, exit_code=self.compensate(task)))
            case SetDeadline(task=task, attempt=attempt, what=what, at=when):
                self.at(when, ObsDeadline(ts=0, task=task, attempt=attempt, what=what))
            case LookupCache(task=task, attempt=attempt):
                hit = self.cached(task)
                self.feed(
                    ObsCacheLooked(
                        ts=now, task=task, attempt=attempt, cache_key=f"k-{task}", hit=hit,
                        from_run="earlier" if hit else "", outputs=("stdout",) if hit else (),
                    )
                )  # fmt: skip
            case Collect(task=task, attempt=attempt):
                error = self.collect_error(task)
                self.at(
                    now + 0.02,
                    ObsCollected(ts=0, task=task, attempt=attempt, outputs=("stdout",), error=error),
                )
            case ReapLeftovers(leftovers=leftovers):
                reaped = tuple(x.pid for x in leftovers if x.interrupted)
                self.feed(ObsReaped(ts=now, scheduler_pid=2, scheduler_started=now - 1, reaped=reaped))
            case Finish(state=state):
                self.finished = state

    def step(self) -> bool:
        """Deliver the next observation; False when nothing is left."""
        if not self._heap:
            return False
        when, _seq, obs = heapq.heappop(self._heap)
        self.now = max(self.now, when)
        key = (getattr(obs, "task", ""), getattr(obs, "attempt", 0))
        if isinstance(obs, ObsExited):
            proc = self.live.pop(key, None)
            if proc is None:
                return True  # already ended (a stop overtook its own exit)
            elapsed = self.now - proc["start"]
            obs = attrs.evolve(obs, cpu_s=round(proc["run"].cpu_per_s * elapsed, 3), peak_rss=proc["run"].rss)
        elif isinstance(obs, ObsSampled):
            proc = self.live.get(key)
            if proc is None:
                return True
            run = proc["run"]
            obs = attrs.evolve(obs, rss=run.rss, cpu_s=round(run.cpu_per_s * (self.now - proc["start"]), 3))
            assert self.sample_s is not None
            self.at(self.now + self.sample_s, attrs.evolve(obs, ts=0))
        self.feed(attrs.evolve(obs, ts=self.now))
        return True

    def run(self, *, resume: bool = False, until: Callable[[Sim], bool] | None = None) -> Sim:
        self.feed(ObsBegin(ts=self.now, resume=resume))
        while self.finished is None and self.step():
            if until is not None and until(self):
                break
            assert self.now < self.start + 100_000, "the run never ends"
        return self

    # -- reading the record -----------------------------------------------------------------------

    def kinds(self, kind: str, task: str | None = None) -> list[Any]:
        return [
            e
            for e in self.recorded
            if kind == type(e).KIND and (task is None or getattr(e, "task", None) == task)
        ]

    def outcome(self, task: str) -> str:
        return self.state.tasks[task].state
