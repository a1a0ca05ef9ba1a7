"""The states of a task and of a run, and the one table of how events move a task between them.

Theory of operation (as h11's `_state.py`): a task's state changes only through the events in
`TRANSITIONS`, each allowed from the states listed for it. The fold (`capsule.fold.tasks`) applies the
table to every recorded event; the machine (`capsule.plan.machine`) only emits events the table allows,
which the tests check for every run they drive. The sub-steps of a task that is `queued` (waiting for
dependencies, pre hooks, a slot, a backoff) or `running` (stopping, exited, verifying, deciding) are not
states of their own: they are read from the events of the current attempt.

    queued ──task.started──▶ running ──task.succeeded──▶ succeeded
      ▲  │ │                   │ │ └──task.failed──▶ failed | timed_out | killed | limit_exceeded | denied
      │  │ └─task.failed/skipped └──task.skipped──▶ skipped                         | spawn_failed
      │  └──task.cached──▶ cached (an earlier success with the same spec and inputs: not run)
      └────task.retrying───────┘     (run.resumed: running ──▶ killed; task.queued: any ──▶ queued)

Adding a state: extend the Literal; mypy then points at every `match` below that must handle it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, assert_never, get_args

TaskStatus = Literal[
    "queued",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "killed",
    "limit_exceeded",
    "skipped",
    "denied",
    "spawn_failed",
    "cached",
    "lost",
]
FailedOutcome = Literal["failed", "timed_out", "killed", "limit_exceeded", "denied", "spawn_failed", "lost"]
Outcome = Literal[
    "succeeded", "failed", "timed_out", "killed", "limit_exceeded", "denied", "spawn_failed", "lost"
]
StopReason = Literal["timed_out", "killed", "limit_exceeded", "denied"]
RunStatus = Literal["running", "succeeded", "failed", "aborted"]
Halt = Literal["never", "soon", "now"]

TASK_STATES: Final[tuple[TaskStatus, ...]] = get_args(TaskStatus)
FAILED_OUTCOMES: Final[tuple[FailedOutcome, ...]] = get_args(FailedOutcome)
OUTCOME: Final = "<outcome>"  # a target meaning: the state named by the event's `outcome` field

Target = TaskStatus | Literal["<outcome>"]

# event kind -> {state it may come from: state it leads to}
TRANSITIONS: Final[Mapping[str, Mapping[TaskStatus, Target]]] = {
    "task.queued": dict.fromkeys(TASK_STATES, "queued"),
    "task.started": {"queued": "running"},
    "task.retrying": {"running": "queued"},
    "task.succeeded": {"running": "succeeded"},
    "task.cached": {"queued": "cached"},
    "task.failed": {"queued": OUTCOME, "running": OUTCOME},  # queued: a pre hook or the policy said no
    "task.skipped": {"queued": "skipped", "running": "skipped"},  # running: a post or error hook said skip
    "run.resumed": {"running": "killed"},  # its scheduler died: the attempt is over
}


class InvalidTransition(ValueError):
    """An event that the table does not allow from the task's current state."""


def failed_outcome(value: str) -> FailedOutcome:
    for outcome in FAILED_OUTCOMES:
        if value == outcome:
            return outcome
    raise InvalidTransition(f"{value!r} is not an outcome of a failed task")


def next_state(state: TaskStatus, kind: str, outcome: str = "", *, strict: bool = False) -> TaskStatus:
    """The state after an event of `kind` (with its `outcome`, for task.failed).

    Not strict (folding a recorded session): an event the table does not allow from `state` still moves
    the task where the event says, so a damaged session folds to what it records. Strict (the tests of
    the machine): it raises InvalidTransition.
    """
    targets = TRANSITIONS.get(kind)
    if targets is None:
        return state
    found = targets.get(state)
    if found is None:
        if strict:
            raise InvalidTransition(f"{kind} is not allowed from a task that is {state}")
        found = next(iter(targets.values()))
    match found:
        case "<outcome>":
            return failed_outcome(outcome)
        case None:
            return state
        case _:
            return found


def is_final(state: TaskStatus) -> bool:
    """Will the task do nothing more in this run?"""
    match state:
        case "queued" | "running":
            return False
        case "succeeded" | "failed" | "timed_out" | "killed" | "limit_exceeded" | "skipped" | "denied":
            return True
        case "spawn_failed" | "cached" | "lost":  # lost: the node running it died (a cluster executor)
            return True
        case _:
            assert_never(state)


def is_done(state: TaskStatus) -> bool:
    """Did the task end with a result its dependents can use (run now, or restored from the cache)?"""
    return state in ("succeeded", "cached")


def is_bad(state: TaskStatus) -> bool:
    """Does this final state fail the run? (A skipped task fails it too, but is counted apart.)"""
    match state:
        case "succeeded" | "skipped" | "cached":
            return False
        case "queued" | "running" | "failed" | "timed_out" | "killed" | "limit_exceeded" | "denied":
            return True
        case "spawn_failed" | "lost":  # lost: the node running it died (a cluster executor)
            return True
        case _:
            assert_never(state)


def verdict(states: list[TaskStatus], *, aborted: bool) -> RunStatus:
    """A finished run's word: aborted by a hook, failed when any task did not succeed, else succeeded."""
    if aborted:
        return "aborted"
    if any(is_bad(s) or s == "skipped" for s in states):
        return "failed"
    return "succeeded"


def halt_mode(value: str) -> Halt:
    match value:
        case "never" | "soon" | "now":
            return value
        case _:
            return "never"
