"""The states of an environment's process and the one table of transitions between them.

Theory of operation (as h11's `_state.py`): a process's state changes only by an event, and only along
this table. The fold (`capsule.fold.environment`) looks every event up here; an event that is not a
transition from the current state (a health result landing after the stop, say) changes nothing. The
machine (`capsule.env.machine`) only emits events that are transitions, which its tests check.

    stopped ──svc.starting──▶ starting ──svc.started──▶ starting (health check pending) | running
    starting|running|unhealthy ──svc.ready──▶ ready ──svc.unhealthy──▶ unhealthy
    live ──svc.exited──▶ exited ──svc.restarting──▶ backoff ──svc.starting──▶ starting
                         exited ──svc.gave_up──▶ gave_up
    any ──svc.stopped──▶ stopped          stopped|starting|backoff ──svc.failed──▶ gave_up

`lost` is not a state: it is how status shows a live state whose pid is gone (`with_liveness`).
"""

from __future__ import annotations

from typing import Literal, get_args

State = Literal["stopped", "starting", "running", "ready", "unhealthy", "backoff", "exited", "gave_up"]
STATES: tuple[State, ...] = get_args(State)

# States in which a process of the environment is supposed to exist.
LIVE: frozenset[State] = frozenset({"starting", "running", "ready", "unhealthy"})
# States out of which nothing happens any more unless asked (start, restart).
RESTING: frozenset[State] = frozenset({"stopped", "exited", "gave_up"})

ANY: frozenset[State] = frozenset(STATES)

# event kind -> (the states it may come from, the state it leads to). `svc.started` leads to "starting"
# when there is a health check to pass, else "running": see `next_state`.
TRANSITIONS: dict[str, tuple[frozenset[State], State]] = {
    "svc.starting": (ANY, "starting"),
    "svc.started": (ANY, "running"),
    "svc.adopted": (ANY, "running"),
    "svc.ready": (frozenset({"starting", "running", "ready", "unhealthy"}), "ready"),
    "svc.unhealthy": (LIVE, "unhealthy"),
    "svc.exited": (LIVE, "exited"),
    "svc.restarting": (frozenset({"exited"}), "backoff"),
    "svc.gave_up": (frozenset({"exited", "backoff"}), "gave_up"),
    "svc.failed": (frozenset({"stopped", "starting", "backoff", "exited", "gave_up"}), "gave_up"),
    "svc.stopped": (ANY, "stopped"),
}


def next_state(state: State, kind: str, *, health_check: bool = False) -> State | None:
    """The state after an event of `kind`, or None when it is no transition from `state`."""
    rule = TRANSITIONS.get(kind)
    if rule is None or state not in rule[0]:
        return None
    target = rule[1]
    if kind in ("svc.started", "svc.adopted") and health_check:
        return "starting"
    return target
