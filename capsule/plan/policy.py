"""The scheduler's policy checks: the task's own command before it starts, and (fallback detect, or
when the task is not guarded) what its traced tree did. The matching itself lives in `capsule.policy`."""

from __future__ import annotations

from collections.abc import Sequence

from capsule.events import Event
from capsule.events.tasks import PolicyViolated
from capsule.policy import Policy, denied_command, protected_path
from capsule.policy.commands import command_line_matches
from capsule.policy.enforce import detect_violation

__all__ = ["command_matches", "denied_command", "live_violation", "path_matches", "protected_path"]


def command_matches(pattern: str, argv: Sequence[str]) -> bool:
    """True if the glob matches this process's own command line as a `deny_commands` rule matches one
    (the Python API's `Session.ran` and friends take the same patterns). A shell's `-c` string is not
    looked into: the commands it ran are processes of their own."""
    return command_line_matches(pattern, argv)


def path_matches(glob: str, path: str) -> bool:
    """True if the glob covers the path as a `protect_paths` rule would (whole, suffix or basename)."""
    return protected_path(Policy(protect_paths=(glob,)), path) is not None


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
