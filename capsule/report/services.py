"""`capsule report` of an env session: its services over time, from the lifecycle fold
(`report/supervised.py`, the one the HTML report and the exports draw).

An env session's own events are services starting, exiting, restarting and giving up; its processes are
recorded only for traced services, each start in a `run` session of its own. So its report is a table of
the services (state at the end, starts, restarts, last exit, time up), what happened to each (the marks:
unhealthy, failed, restarts, gave up, refusals), and the traced starts' sessions with their totals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from capsule.duration import format_duration
from capsule.fold.session import SessionState
from capsule.report.argv import short_argv
from capsule.report.supervised import FAILED_STATES, Supervised, Unit, UnitRun
from capsule.report.text import format_time

MARKS_SHOWN = 8  # per service, the newest: a crash-looping service restarts hundreds of times


def _last_exit(run: UnitRun | None) -> tuple[str, bool]:
    """How its last run ended, and whether that was a failure: a stop's signal is the supervisor's."""
    if run is None or run.end is None:
        return "", False
    if run.outcome == "stopped":
        return "stopped" + (f" ({run.signal})" if run.signal else ""), False
    if run.signal is not None:
        return run.signal, True
    return ("", False) if run.exit_code is None else (f"exit {run.exit_code}", run.exit_code != 0)


def _up_s(unit: Unit, sup: Supervised) -> float:
    """Time its runs were alive, summed (a run still alive at the session's end counts to it)."""
    return sum((run.end if run.end is not None else sup.end) - run.start for run in unit.runs)


def _traced(run: UnitRun, children: Mapping[str, SessionState]) -> tuple[int, int, int] | None:
    """(processes, failed, stopped) of a traced start's run session; None if it was not traced or its
    session is gone.

    A process that died of a signal from the supervisor, or from the start's own `capsule run` passing
    the supervisor's SIGTERM on, was stopped like the start itself, not failed (`ProcessNode.stopped`,
    set as the run session is loaded)."""
    child = children.get(run.trace_session) if run.trace_session else None
    if child is None:
        return None
    nodes = child.tree.nodes
    return len(nodes), sum(n.failed for n in nodes), sum(n.stopped for n in nodes)


def services_list(sup: Supervised, children: Mapping[str, SessionState]) -> list[dict[str, Any]]:
    """`services` of `capsule report --json` for an env session, beside the keys every report has."""
    return [
        {
            "name": unit.name,
            "argv": list(unit.argv),
            "state": unit.state,
            "failed": unit.failed,
            "restarts": unit.restarts,
            "up_s": round(_up_s(unit, sup), 6),
            "runs": [
                {
                    "number": run.number,
                    "pid": run.pid,
                    "start": run.start,
                    "end": run.end,
                    "exit_code": run.exit_code,
                    "signal": run.signal,
                    "outcome": run.outcome,
                    "trace_session": run.trace_session,
                    **dict(
                        zip(
                            ("processes", "failed", "stopped"),
                            _traced(run, children) or (None, None, None),
                            strict=True,
                        )
                    ),
                }
                for run in unit.runs
            ],
            "marks": [{"ts": ts, "what": what, "detail": detail} for ts, what, detail in unit.marks],
        }
        for unit in sup.units.values()
    ]


def render_services(sup: Supervised, children: Mapping[str, SessionState]) -> RenderableType:
    """The human report of an env session: header, services, what happened to each, traced starts."""
    h = sup.header
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("command", short_argv(h.argv, width=200) if h is not None and h.argv else "?")
    if h is not None:
        grid.add_row("session", f"{h.session_id} ({h.session_kind}) {sup.title}")
    grid.add_row("started", format_time(sup.start))
    grid.add_row("duration", format_duration(sup.end - sup.start))
    grid.add_row("outcome", sup.shown_outcome)
    parts: list[RenderableType] = [grid, Text("")]

    units = list(sup.units.values())
    if not units:
        parts.append(Text("no services recorded"))
        return Group(*parts)
    table = Table(title="services", title_justify="left", show_edge=False)
    for column, justify in (("name", "left"), ("state", "left"), ("starts", "right"), ("restarts", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    table.add_column("last exit")
    table.add_column("up", justify="right")
    for unit in units:
        bad = unit.state in FAILED_STATES
        last, failed = _last_exit(unit.run_of())
        table.add_row(
            unit.name,
            Text(
                unit.state, style="bold red" if bad else "green" if unit.state in ("ready", "running") else ""
            ),
            str(len(unit.runs)),
            str(unit.restarts),
            Text(last, style="bold red" if failed else ""),
            format_duration(_up_s(unit, sup)) if unit.runs else "",
        )
    parts.extend((table, Text("")))

    marked = [unit for unit in units if unit.marks]
    if marked:
        text = Text("what happened\n", style="bold")
        for unit in marked:
            shown = unit.marks[-MARKS_SHOWN:]
            if len(unit.marks) > len(shown):
                text.append(f"  {unit.name}: … {len(unit.marks) - len(shown):,} earlier\n", style="dim")
            for ts, what, detail in shown:
                text.append(f"  +{format_duration(ts - sup.start):>8}  {unit.name}  ")
                text.append(what, style="bold red" if what in ("failed", "gave up", "blocked") else "yellow")
                detail = detail.removeprefix(f"{what} ")  # "restart  2 in 2 s", not "restart  restart 2…"
                text.append(f"  {detail}\n" if detail else "\n")
        parts.append(text)

    traced = [(unit, run) for unit in units for run in unit.runs if run.trace_session]
    if traced:
        table = Table(title="traced starts", title_justify="left", show_edge=False)
        for column in ("service", "start", "session", "processes", "failed", "stopped"):
            table.add_column(column, justify="left" if column in ("service", "session") else "right")
        for unit, run in traced:
            counts = _traced(run, children)
            if counts is None:
                table.add_row(unit.name, str(run.number), run.trace_session or "", "gone", "", "")
                continue
            processes, failures, stopped = counts
            table.add_row(
                unit.name,
                str(run.number),
                run.trace_session or "",
                f"{processes:,}",
                Text(f"{failures:,}", style="bold red" if failures else ""),
                f"{stopped:,}",
            )
        parts.extend((table, Text("`capsule report SESSION` shows a start's process tree", style="dim")))
    return Group(*parts)
