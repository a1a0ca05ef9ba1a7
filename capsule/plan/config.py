"""What the agent-run machine carries out (a plan, its spec hashes, where it came from), and the one
pure function that turns it into the run's `run.planned` event."""

from __future__ import annotations

import attrs

from capsule.events.tasks import RunPlanned
from capsule.plan.spec import Plan, plan_from_json


@attrs.frozen(kw_only=True)
class Config:
    """What the machine carries out: the plan, each task's spec hash, where the plan came from."""

    plan: Plan
    spec_hashes: tuple[str, ...]
    plan_path: str | None = None

    @classmethod
    def of(cls, plan: Plan, plan_path: str | None = None) -> Config:
        return cls(plan=plan, spec_hashes=tuple(t.spec_hash for t in plan.tasks), plan_path=plan_path)

    @classmethod
    def from_planned(cls, event: RunPlanned) -> Config:
        """The config a recorded `run.planned` was written from (replay)."""
        return cls(plan=plan_from_json(event.plan), spec_hashes=event.spec_hashes, plan_path=event.plan_path)


def planned_event(config: Config, ts: float) -> RunPlanned:
    """The plan as the run's record: the one place a plan becomes an event."""
    plan = config.plan
    return RunPlanned(
        ts=ts,
        name=plan.name,
        plan_path=config.plan_path,
        parallel=plan.parallel,
        halt=plan.halt,
        on_failure=plan.on_failure,
        trace=plan.trace,
        tasks=tuple(t.id for t in plan.tasks),
        spec_hashes=config.spec_hashes,
        depends_on=tuple(" ".join(t.depends_on) for t in plan.tasks),
        plan=plan.to_json(),
    )
