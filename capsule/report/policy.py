"""The report's policy section: what the guard enforced and every decision that refused something.
Present only when the session had a policy (so reports of unguarded runs do not change)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import RenderableType

from capsule.events.policy import PolicyBlocked
from capsule.fold.session import SessionState
from capsule.report.argv import full_argv, short_argv, visible

SHOWN = 20  # refusals listed in the text report; the JSON report has them all (up to MAX_BLOCKED)


def blocked_dict(b: PolicyBlocked) -> dict[str, Any]:
    """One refusal, as the JSON report, `agents result --json` and MCP show it."""
    return {
        "ts": b.ts,
        "pid": b.pid,
        "argv": list(b.argv),
        "path": b.path,
        "rule": b.rule,
        "command": b.command,
        "mechanism": b.mechanism,
        "action": b.action,
        "task": b.task,
        "attempt": b.attempt,
        "service": b.service,
    }


def policy_dict(state: SessionState) -> dict[str, Any] | None:
    applied = state.policy
    if applied is None and not state.blocked:
        return None
    checked = state.checked
    return {
        "mechanisms": list(applied.mechanisms) if applied else [],
        "detected": list(applied.detected) if applied else [],
        "warning": applied.warning if applied else None,
        "blocked_count": state.blocked_count,
        "blocked": [blocked_dict(b) for b in state.blocked],
        "execs_checked": checked.execs if checked else None,
        "decision_median_us": checked.median_us if checked else None,
        "decision_p99_us": checked.p99_us if checked else None,
    }


def _what(argv: tuple[str, ...], path: str | None, command: str) -> str:
    """What was refused, as a person reads it; the command inside a shell string when it was that."""
    shown = full_argv(argv) if argv else visible(path or "")
    if command and command != " ".join(argv):
        shown += f"  (inside: {visible(command)})"
    return shown


def refusal_line(b: PolicyBlocked) -> str:
    """One refusal on one line, as `capsule run`'s summary names it: what, the rule, and in what."""
    what = visible(b.command) if b.command else full_argv(b.argv) if b.argv else visible(b.path or "?")
    line = f"{what} · rule {b.rule!r}"
    if b.pid is not None:
        line += f" · pid {b.pid}"
    if b.argv and b.command and b.command != " ".join(b.argv):  # a shell string: the exec it was in
        line += f" {short_argv(b.argv)}"
    if b.action == "kill":
        line += " · tree stopped"
    return line


def policy_title(state: SessionState) -> str | None:
    """The section's title: how the policy was enforced and how much it refused (None: no policy)."""
    applied = state.policy
    if applied is None and not state.blocked:
        return None
    how = ", ".join(applied.mechanisms) if applied and applied.mechanisms else "nothing in the kernel"
    if applied and applied.detected:
        how += f"; detected only: {', '.join(applied.detected)}"
    title = f"policy · enforced by {how} · {state.blocked_count} blocked"
    if state.checked is not None and state.checked.median_us is not None:
        title += f" · {state.checked.execs:,} execs checked (median {state.checked.median_us:.0f} µs)"
    return title


def blocked_row(b: PolicyBlocked) -> tuple[str, str, str, str]:
    """pid, what was refused, the rule, and by what (and whether the tree was killed)."""
    by = b.mechanism + (" · killed" if b.action == "kill" else "")
    where = f"task {b.task}" if b.task else f"service {b.service}" if b.service else ""
    return (str(b.pid or ""), _what(b.argv, b.path, b.command), b.rule, f"{by} · {where}" if where else by)


def policy_table(state: SessionState) -> RenderableType | None:
    title = policy_title(state)
    if title is None:
        return None
    from rich.console import Group  # here: the JSON report (policy_dict) does without rich
    from rich.table import Table
    from rich.text import Text

    # The title above the table, not in it: rich folds a table's title to the table's width, and a
    # table of one short path is narrower than "enforced by seccomp-notify, mount-namespace, …".
    table = Table(show_edge=False)
    for column in ("pid", "blocked", "rule", "by"):
        table.add_column(column, overflow="fold")
    for b in state.blocked[:SHOWN]:
        pid, what, rule, by = blocked_row(b)
        table.add_row(pid, what, Text(rule, style="red"), by)
    if state.blocked_count > SHOWN:
        table.add_row("", Text(f"… {state.blocked_count - SHOWN:,} more", style="dim"), "", "")
    return Group(Text(title, style="bold"), table) if state.blocked else Text(title, style="bold")
