"""Re-deriving an `env` session: feed its recorded observations to the machine again, collect what it decides.

`rederive(events)` returns (recorded, derived): the machine's events as the session holds them and as the
machine decides them now from the same observations (each at its recorded time). They are equal when the
machine is deterministic and unchanged; `capsule replay --check` compares them, like Temporal's replayer.
The session header and end are the driver's; what a later command wrote after the supervisor died
(`recover`: the stops and the deactivation it did itself) is not the machine's either and is left out.
"""

from __future__ import annotations

from collections.abc import Sequence

from capsule.env.machine import OBSERVATION_TYPES, activate, handle
from capsule.events import Event, SessionEnded, SessionRecovered, SessionStarted
from capsule.events.env import EnvConfigured, EnvDeactivated, SvcStopped
from capsule.events.policy import EVENTS as POLICY_EVENTS
from capsule.fold.environment import EnvState, apply

# The driver's, and the guard's (what it blocked is a fact about the run, not a decision of the machine).
DRIVER_KINDS = (SessionStarted, SessionEnded, SessionRecovered, *POLICY_EVENTS)
RECOVERY_KINDS = (SvcStopped, EnvDeactivated)  # what `recover` writes for a dead supervisor


def rederive(events: Sequence[Event]) -> tuple[list[Event], list[Event]]:
    """(the machine's events as recorded, the machine's events re-derived from the observations)."""
    state = EnvState()
    recorded: list[Event] = []
    derived: list[Event] = []
    for event in events:
        if isinstance(event, EnvConfigured):
            made, _effects = activate(state, event, event.ts)
            derived.extend(made)
        elif isinstance(event, OBSERVATION_TYPES):
            made, _effects = handle(state, event, event.ts)
            derived.extend(made)
        if not isinstance(event, (*DRIVER_KINDS, *OBSERVATION_TYPES)):
            recorded.append(event)
        apply(state, event)
    ended = next((e for e in reversed(events) if isinstance(e, SessionEnded)), None)
    if ended is not None and ended.error and len(recorded) > len(derived):
        tail = recorded[len(derived) :]
        if all(isinstance(e, RECOVERY_KINDS) for e in tail):
            recorded = recorded[: len(derived)]
    return recorded, derived
