"""Replay of an `agents` session (architecture §9, Temporal's replayer): feed its recorded observations to a
fresh machine and compare what comes out with what was recorded.

Each scheduler's run begins with an observation (`obs.run.begin`, or `obs.run.reaped` for a resume) that is
followed by the `run.planned` it led to; the machine for that run is built from that plan. The session's
own header and trailer are the writer's, not the machine's: they pass through.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from capsule.events import Event, SessionEnded, SessionRecovered, SessionStarted
from capsule.events.observed import EVENTS as OBSERVATIONS
from capsule.events.observed import ObsBegin, Observation, ObsReaped
from capsule.events.policy import EVENTS as POLICY_EVENTS
from capsule.events.tasks import RunPlanned
from capsule.fold.tasks import RunState
from capsule.plan.config import Config
from capsule.plan.machine import Machine

# The writer's, and the guard's (what it blocked is a fact about an attempt, not the machine's decision).
WRITER_EVENTS = (SessionStarted, SessionEnded, SessionRecovered, *POLICY_EVENTS)


@attrs.frozen(kw_only=True)
class Replayed:
    recorded: tuple[Event, ...]  # the session without its observations
    derived: tuple[Event, ...]  # what the machine emits for those observations, with the writer's events

    @property
    def same(self) -> bool:
        return self.recorded == self.derived


def is_observation(event: Event) -> bool:
    return isinstance(event, OBSERVATIONS)


def rederive_agents(events: Sequence[Event]) -> Replayed:
    """Re-derive an agents session's events from its observations."""
    state = RunState()
    machine: Machine | None = None
    derived: list[Event] = []
    for i, event in enumerate(events):
        if isinstance(event, WRITER_EVENTS):
            state.apply(event)
            derived.append(event)
            continue
        if not is_observation(event):
            continue
        obs: Observation = event  # type: ignore[assignment]
        if machine is None or isinstance(obs, ObsBegin | ObsReaped):
            planned = next((e for e in events[i + 1 :] if isinstance(e, RunPlanned)), None)
            if planned is None:
                continue  # a run that never got as far as its plan: nothing to derive
            machine = Machine(Config.from_planned(planned), state)
        derived.extend(machine.handle(obs, obs.ts)[0])
    recorded = tuple(e for e in events if not is_observation(e))
    return Replayed(recorded=recorded, derived=tuple(derived))
