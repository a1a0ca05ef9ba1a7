"""The report of an `agents` session: the DAG by levels, a timeline of attempts, each task's process tree
(from its traced attempt's `run` session, handed in as rows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from capsule.fold.tasks import RunState
from capsule.report.argv import short_argv

WIDTH = 50


def _levels(run: RunState) -> list[list[str]]:
    depth: dict[str, int] = {}
    pending = list(run.order)
    while pending:
        rest = []
        for task_id in pending:
            deps = run.tasks[task_id].depends_on
            if all(d in depth for d in deps):
                depth[task_id] = 1 + max((depth[d] for d in deps), default=-1)
            else:
                rest.append(task_id)
        if len(rest) == len(pending):
            break
        pending = rest
    out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for task_id in run.order:
        if task_id in depth:
            out[depth[task_id]].append(task_id)
    return out


def report_dict(run: RunState, state: str, trees: Mapping[str, Sequence[tuple[int, str]]]) -> dict[str, Any]:
    from capsule.fold.tasks import status_dict

    data = status_dict(run, state)
    data["levels"] = _levels(run)
    data["timeline"] = [
        {"task": t.id, "attempt": a.number, "start": a.ts, "end": a.end, "outcome": a.outcome, "pid": a.pid}
        for t in (run.tasks[i] for i in run.order)
        for a in t.attempts
    ]
    data["trees"] = {k: [{"depth": d, "process": line} for d, line in v] for k, v in trees.items()}
    return data


def render_agents(run: RunState, state: str, trees: Mapping[str, Sequence[tuple[int, str]]]) -> str:
    lines = [f"agents run {run.name} · {run.session_id} · {state}"]
    counts = ", ".join(f"{v} {k}" for k, v in run.counts().items() if v)
    lines.append(f"tasks: {len(run.tasks)} ({counts})")
    lines.append("")
    lines.append("DAG")
    for i, level in enumerate(_levels(run)):
        shown = [f"{name} [{run.tasks[name].state}]" for name in level[:10]]
        more = f" … +{len(level) - 10}" if len(level) > 10 else ""
        lines.append(f"  level {i}: {', '.join(shown)}{more}")
        for name in level[:10]:
            deps = run.tasks[name].depends_on
            if deps:
                lines.append(f"    {name} <- {', '.join(deps)}")
    attempts = [(t, a) for t in (run.tasks[i] for i in run.order) for a in t.attempts]
    if attempts:
        start = min(a.ts for _, a in attempts)
        end = max((a.end or run.last_ts) for _, a in attempts)
        span = max(end - start, 1e-6)
        lines.append("")
        lines.append(f"timeline ({span:.2f}s)")
        name_w = min(24, max(len(t.id) for t, _ in attempts) + 3)
        for t, a in attempts[:60]:
            left = int((a.ts - start) / span * WIDTH)
            right = max(left + 1, int(((a.end or run.last_ts) - start) / span * WIDTH))
            bar = " " * left + "█" * (right - left)
            dur = f"{(a.end or run.last_ts) - a.ts:.2f}s"
            lines.append(
                f"  {(t.id + '#' + str(a.number))[:name_w]:<{name_w}} |{bar:<{WIDTH}}| {dur} {a.outcome or 'running'}"
            )
        if len(attempts) > 60:
            lines.append(f"  … {len(attempts) - 60} more attempts")
    lines.append("")
    lines.append("tasks")
    for t in (run.tasks[i] for i in run.order[:100]):
        last = t.current
        exit_text = "" if t.exit_code is None else f" exit {t.exit_code}"
        reason = f" — {t.reason}" if t.reason else ""
        where = f" on {t.node}" if t.node else ""  # a cluster node (executor = "ray")
        lines.append(f"  {t.id}: {t.state}{exit_text}, {len(t.attempts)} attempt(s){where}{reason}")
        lines += [
            f"    policy: {v.rule!r} matched {short_argv(v.argv, width=200) if v.argv else v.path}"
            for v in t.violations
        ]
        lines += [
            f"    blocked: {short_argv(b.argv, width=200) if b.argv else b.path} ({b.rule!r}, {b.mechanism}{', killed' if b.action == 'kill' else ''})"
            for b in t.blocked[:20]
        ]
        lines += [f"    limit: {x.limit} measured {x.measured:g} > {x.allowed:g}" for x in t.limits]
        if t.id in trees:
            for depth, row in trees[t.id][:30]:
                lines.append("    " + "  " * depth + row)
        elif last is not None:
            lines.append(f"    pid {last.pid}: {short_argv(last.argv, width=100)} (untraced)")
    return "\n".join(lines)
