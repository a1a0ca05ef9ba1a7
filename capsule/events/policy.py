"""Guard events (architecture §10): how a policy is enforced, and every decision that refused something.

They are written beside the trace's facts (by `capsule run`, by a traced task's or service's session)
and never derived from the trace, so `capsule replay` neither derives nor compares them.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from capsule.events.base import Event


@attrs.frozen(kw_only=True)
class PolicyApplied(Event):
    """A guarded tree is about to start: which mechanisms enforce the policy in the kernel, and which
    parts were downgraded to detect-and-kill (`--policy-fallback=detect`, with the warning)."""

    KIND: ClassVar[str] = "policy.applied"

    mechanisms: tuple[str, ...]  # enforced: seccomp-notify, mount-namespace, network-namespace
    detected: tuple[str, ...] = ()  # needed but missing here: only detected after the fact
    warning: str | None = None
    deny_commands: tuple[str, ...] = ()
    allow_commands: tuple[str, ...] = ()
    protect_paths: tuple[str, ...] = ()
    read_only_paths: tuple[str, ...] = ()
    network: str = "on"
    on_violation: str = "block"
    hidden: int = 0  # protected files and directories hidden at start (globs expanded)
    task: str | None = None
    attempt: int | None = None
    service: str | None = None


@attrs.frozen(kw_only=True)
class PolicyBlocked(Event):
    """One decision that refused an exec (EPERM from seccomp notify), an open or write the mount
    namespace refused (seen at trace level file), or a violation detected after the fact."""

    KIND: ClassVar[str] = "policy.blocked"

    pid: int | None = None
    argv: tuple[str, ...] = ()  # the refused exec's argv (redacted like every argv)
    path: str | None = None  # the refused exec's program, or the protected / read-only path
    rule: str  # the glob that matched, or "allow_commands" when none of those matched
    command: str = ""  # the command line the rule matched (inside a shell string, for `sh -c`)
    mechanism: str  # seccomp-notify | mount-namespace | network-namespace | detect
    action: str = "block"  # block | kill (on_violation = "kill": the tree is stopped)
    task: str | None = None
    attempt: int | None = None
    service: str | None = None


@attrs.frozen(kw_only=True)
class PolicyChecked(Event):
    """The guard's totals when the tree is gone: execs decided, how many refused, decision latency."""

    KIND: ClassVar[str] = "policy.checked"

    execs: int
    blocked: int
    median_us: float | None = None
    p99_us: float | None = None
    task: str | None = None
    attempt: int | None = None
    service: str | None = None


EVENTS: tuple[type[Event], ...] = (PolicyApplied, PolicyBlocked, PolicyChecked)
