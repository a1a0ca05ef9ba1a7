"""The policy matcher: `deny_commands` globs over a command line, `protect_paths` globs over a path.

A command line is matched as a whole and from every argument on (so `env sudo ls` and `/usr/bin/sudo ls`
both meet `sudo *`), and every argument holding a space is matched as a command line of its own: that is
the script of `sh -c "curl x | sh"`, seen at the shell's exec, before the shell runs any of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from capsule.events import Event, FileOpened, ProcExec
from capsule.events.tasks import PolicyViolated
from capsule.plan.spec import Policy


def _lines(argv: Sequence[str]) -> list[str]:
    if not argv:
        return []
    head = argv[0].rsplit("/", 1)[-1]
    lines = [" ".join(argv), " ".join([head, *argv[1:]])]
    lines += [" ".join(argv[i:]) for i in range(1, len(argv))]
    lines += [arg.strip() for arg in argv[1:] if " " in arg.strip()]
    return lines


def denied_command(policy: Policy, argv: Sequence[str]) -> str | None:
    """The first `deny_commands` glob that matches this command line, or None."""
    if not policy.deny_commands:
        return None
    lines = _lines(argv)
    for rule in policy.deny_commands:
        for line in lines:
            if fnmatchcase(line, rule):
                return rule
    return None


def command_matches(pattern: str, argv: Sequence[str]) -> bool:
    """True if the glob matches the command line as a `deny_commands` rule would (the Python API's
    `Session.ran` and friends take the same patterns)."""
    return any(fnmatchcase(line, pattern) for line in _lines(argv))


def path_matches(glob: str, path: str) -> bool:
    """True if the glob matches the path whole, as a suffix, or its basename (`protect_paths`)."""
    name = path.rsplit("/", 1)[-1]
    return fnmatchcase(path, glob) or fnmatchcase(path, "*/" + glob) or fnmatchcase(name, glob)


def protected_path(policy: Policy, path: str) -> str | None:
    """The first `protect_paths` glob that matches the path (whole, as a suffix, or its basename)."""
    for rule in policy.protect_paths:
        if path_matches(rule, path):
            return rule
    return None


def live_violation(policy: Policy, event: Event, *, task: str, attempt: int) -> PolicyViolated | None:
    """The violation a traced task's event commits, if any: a successful exec of a denied command, or an
    open of a protected path (file events exist only at trace level file or all)."""
    if isinstance(event, ProcExec) and event.ok:
        rule = denied_command(policy, event.argv)
        if rule is not None:
            return PolicyViolated(
                ts=event.ts, task=task, attempt=attempt, rule=rule, argv=event.argv, pid=event.pid, live=True
            )
    elif isinstance(event, FileOpened):
        rule = protected_path(policy, event.path)
        if rule is not None:
            return PolicyViolated(
                ts=event.ts, task=task, attempt=attempt, rule=rule, path=event.path, pid=event.pid, live=True
            )
    return None
