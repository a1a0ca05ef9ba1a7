"""The scheduler's policy checks: the task's own command before it starts, and (fallback detect, or
when the task is not guarded) what its traced tree did. The matching itself lives in `capsule.policy`."""

from __future__ import annotations

from capsule.events import Event
from capsule.events.tasks import PolicyViolated
from capsule.policy import Policy, denied_command, protected_path
from capsule.policy.enforce import detect_violation

__all__ = ["denied_command", "live_violation", "protected_path"]


def live_violation(policy: Policy, event: Event, *, task: str, attempt: int) -> PolicyViolated | None:
    """The violation a traced task's event commits, if any: a successful exec of a denied command, or an
    open of a protected path (file events exist only at trace level file or all)."""
    found = detect_violation(policy, event)
    if found is None:
        return None
    return PolicyViolated(
        ts=event.ts,
        task=task,
        attempt=attempt,
        rule=found.rule,
        argv=found.argv,
        path=None if found.argv else found.path,
        pid=found.pid,
        live=True,
    )
