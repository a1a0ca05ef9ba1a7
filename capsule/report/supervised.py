"""env and agents sessions as timelines: each service or task a track of states and runs, for the HTML
report and the Perfetto and OTLP exports.

`fold_supervised(events)` folds the lifecycle events only (svc.*, task.*, run.*, env.*), so it needs
nothing of the supervisor's or scheduler's own state machines. A service's states come from its events
(starting, running, ready, unhealthy, backoff, exited, stopped, gave_up); each start (`svc.started`) or
task attempt (`task.started`) is a run, ending at its exit; restarts, health changes, retries, hooks,
limits and policy violations are marks. A run recorded under strace names its `run` session
(`trace_session`): the shell folds those and passes them in, and their process trees are drawn beneath
the run that started them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from capsule.duration import format_duration
from capsule.events import Event, SessionEnded, SessionStarted
from capsule.events.env import (
    EnvActivated,
    EnvDeactivated,
    EnvIdle,
    SvcExited,
    SvcFailed,
    SvcGaveUp,
    SvcReady,
    SvcRestarting,
    SvcStarted,
    SvcStarting,
    SvcStopped,
    SvcUnhealthy,
)
from capsule.events.placement import TaskPlaced
from capsule.events.policy import PolicyBlocked
from capsule.events.tasks import (
    HookDecided,
    PolicyViolated,
    RunFinished,
    RunPlanned,
    TaskExited,
    TaskFailed,
    TaskLimitExceeded,
    TaskQueued,
    TaskRetrying,
    TaskSkipped,
    TaskStarted,
    TaskSucceeded,
)
from capsule.fold.session import SessionState
from capsule.report import otlp, perfetto
from capsule.report.policy import blocked_row

FAILED_STATES = frozenset(
    {"gave_up", "failed", "timed_out", "killed", "limit_exceeded", "denied", "spawn_failed", "unhealthy"}
)


@attrs.define
class Segment:
    state: str
    start: float
    end: float | None = None


@attrs.define
class UnitRun:
    """One start of a service, or one attempt of a task."""

    number: int
    start: float
    pid: int | None = None
    argv: tuple[str, ...] = ()
    end: float | None = None
    exit_code: int | None = None
    signal: str | None = None
    outcome: str | None = None
    trace_session: str | None = None
    node: str | None = None  # the cluster node it ran on (executor = "ray"); None: this machine

    @property
    def failed(self) -> bool:
        if (
            self.outcome == "stopped"
        ):  # the supervisor stopped it (env down, a reload): its signal is the stop's
            return False
        return self.outcome in FAILED_STATES or self.signal is not None or bool(self.exit_code)


@attrs.define
class Unit:
    """A service of an environment or a task of an agent run."""

    name: str
    kind: str  # service | task
    argv: tuple[str, ...] = ()
    segments: list[Segment] = attrs.Factory(list)
    runs: list[UnitRun] = attrs.Factory(list)
    marks: list[tuple[float, str, str]] = attrs.Factory(list)  # (ts, what, detail)
    restarts: int = 0

    @property
    def state(self) -> str:
        return self.segments[-1].state if self.segments else "queued"

    @property
    def failed(self) -> bool:
        """It ended in a failed state, or gave up (and was stopped after)."""
        return self.state in FAILED_STATES or any(s.state in ("gave_up", "failed") for s in self.segments)

    def enter(self, state: str, ts: float) -> None:
        last = self.segments[-1] if self.segments else None
        if last is not None:
            if last.state == state:
                return
            last.end = ts
        self.segments.append(Segment(state, ts))

    def run_of(self, number: int | None = None) -> UnitRun | None:
        if not self.runs:
            return None
        if number is None:
            return self.runs[-1]
        return next((r for r in reversed(self.runs) if r.number == number), None)


@attrs.define
class Supervised:
    """The timeline of one env or agents session."""

    header: SessionStarted | None = None
    title: str = ""
    units: dict[str, Unit] = attrs.Factory(dict)
    first_ts: float | None = None
    last_ts: float | None = None
    outcome: str | None = None  # run.finished state, env.deactivated reason
    placed: dict[tuple[str, int], str] = attrs.Factory(dict)  # (task, attempt) -> node, from task.placed
    # set by the loader, not by events: the time it found the writer of a session with no end alive
    live_at: float | None = None

    @property
    def live(self) -> bool:
        return self.live_at is not None

    @property
    def final_outcome(self) -> str:
        """The outcome `--json` gives: a session without an end is `running` or, its writer dead, `interrupted`."""
        return self.outcome or ("running" if self.live else "interrupted")

    @property
    def shown_outcome(self) -> str:
        """The outcome as a report says it, with who died when it is interrupted or was recovered."""
        if self.outcome == "recovered":  # env.deactivated by the command that found its supervisor dead
            return "recovered: its supervisor died; a later command stopped what it left running"
        if self.outcome is not None or self.live:
            return self.final_outcome
        writer = "supervisor" if self.kind == "env" else "agents run"
        return f"interrupted: its {writer} died before the session ended"

    @property
    def kind(self) -> str:
        return self.header.session_kind if self.header is not None else "?"

    @property
    def start(self) -> float:
        if self.header is not None:
            return min(self.header.ts, self.first_ts or self.header.ts)
        return self.first_ts or 0.0

    @property
    def end(self) -> float:
        """The last event's time; when the loader found its writer alive, then (its units are up till then)."""
        last = self.last_ts if self.last_ts is not None else self.start
        return last if self.live_at is None else max(last, self.live_at)

    def unit(self, name: str, kind: str) -> Unit:
        unit = self.units.get(name)
        if unit is None:
            unit = self.units[name] = Unit(name=name, kind=kind)
        return unit

    def apply(self, event: Event) -> Supervised:
        ts = event.ts
        self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        if isinstance(event, SessionStarted):
            self.header = event
            self.title = event.name or " ".join(event.argv)
        elif isinstance(event, EnvActivated):
            self.title = event.project
            for name in event.processes:
                self.unit(name, "service")
        elif isinstance(event, SvcStarting):
            unit = self.unit(event.name, "service")
            unit.argv = event.argv
            unit.enter("starting", ts)
        elif isinstance(event, SvcStarted):
            unit = self.unit(event.name, "service")
            unit.runs.append(
                UnitRun(
                    number=len(unit.runs) + 1,
                    start=ts,
                    pid=event.pid,
                    argv=unit.argv,
                    trace_session=event.trace_session,
                )
            )
            unit.enter("running", ts)
        elif isinstance(event, SvcReady):
            self.unit(event.name, "service").enter("ready", ts)
        elif isinstance(event, SvcUnhealthy):
            unit = self.unit(event.name, "service")
            unit.enter("unhealthy", ts)
            unit.marks.append((ts, "unhealthy", event.reason))
        elif isinstance(event, SvcFailed):
            unit = self.unit(event.name, "service")
            unit.enter("failed", ts)
            unit.marks.append((ts, "failed", event.error))
        elif isinstance(event, SvcExited | SvcStopped):
            unit = self.unit(event.name, "service")
            run = unit.run_of()
            if run is not None and run.end is None:
                run.end, run.exit_code, run.signal = ts, event.exit_code, event.signal
                run.outcome = "stopped" if isinstance(event, SvcStopped) else "exited"
            unit.enter("stopped" if isinstance(event, SvcStopped) else "exited", ts)
            if isinstance(event, SvcExited):  # what a restart that follows answers: said before it
                how = event.signal or f"exit {event.exit_code if event.exit_code is not None else '?'}"
                unit.marks.append((ts, "exited", f"{how} after {format_duration(event.ran_s)}"))
        elif isinstance(event, SvcRestarting):
            unit = self.unit(event.name, "service")
            unit.restarts = event.restarts
            unit.enter("backoff", ts)
            unit.marks.append((ts, "restart", f"restart {event.restarts} in {event.delay_s:g} s"))
        elif isinstance(event, SvcGaveUp):
            unit = self.unit(event.name, "service")
            unit.enter("gave_up", ts)
            unit.marks.append((ts, "gave up", event.reason))
        elif isinstance(event, EnvIdle):
            self.outcome = "idle"
        elif isinstance(event, EnvDeactivated):
            self.outcome = event.reason
        elif isinstance(event, RunPlanned):
            self.title = event.name
            for task in event.tasks:
                self.unit(task, "task")
        elif isinstance(event, TaskQueued):
            self.unit(event.task, "task").enter("queued", ts)
        elif isinstance(event, TaskPlaced):
            self.placed[(event.task, event.attempt)] = event.node
        elif isinstance(event, TaskStarted):
            unit = self.unit(event.task, "task")
            unit.argv = event.argv
            unit.runs.append(
                UnitRun(
                    number=event.attempt,
                    start=ts,
                    pid=event.pid,
                    argv=event.argv,
                    trace_session=event.trace_session,
                    node=self.placed.get((event.task, event.attempt)),
                )
            )
            unit.enter("running", ts)
        elif isinstance(event, TaskExited):
            unit = self.unit(event.task, "task")
            run = unit.run_of(event.attempt)
            if run is not None:
                run.end, run.exit_code, run.signal = ts, event.exit_code, event.signal
                run.outcome = event.outcome
        elif isinstance(event, TaskRetrying):
            unit = self.unit(event.task, "task")
            unit.enter("retrying", ts)
            unit.marks.append(
                (ts, "retry", f"attempt {event.attempt} in {event.delay_s:g} s: {event.reason}")
            )
        elif isinstance(event, TaskSucceeded):
            self.unit(event.task, "task").enter("succeeded", ts)
        elif isinstance(event, TaskFailed):
            unit = self.unit(event.task, "task")
            unit.enter(event.outcome, ts)
            unit.marks.append((ts, event.outcome, event.reason))
        elif isinstance(event, TaskSkipped):
            unit = self.unit(event.task, "task")
            unit.enter("skipped", ts)
            unit.marks.append((ts, "skipped", event.reason))
        elif isinstance(event, TaskLimitExceeded):
            self.unit(event.task, "task").marks.append(
                (ts, "limit", f"{event.limit}: {event.measured:g} > {event.allowed:g}")
            )
        elif isinstance(event, HookDecided):
            self.unit(event.task, "task").marks.append((ts, f"hook {event.on}", event.decision))
        elif isinstance(event, PolicyViolated):
            self.unit(event.task, "task").marks.append((ts, "policy", event.rule))
        elif isinstance(event, PolicyBlocked) and (event.task or event.service):
            _, what, rule, by = blocked_row(event)
            unit = self.unit(event.task or event.service or "", "task" if event.task else "service")
            unit.marks.append((ts, "blocked", f"{rule}: {what} ({by})"))
        elif isinstance(event, RunFinished):
            self.outcome = event.state
        elif isinstance(event, SessionEnded) and self.outcome is None:
            self.outcome = "ended"
        return self


def fold_supervised(events: Iterable[Event]) -> Supervised:
    state = Supervised()
    for event in events:
        state.apply(event)
    return state


def trace_sessions(sup: Supervised) -> list[str]:
    """The `run` sessions recorded for its runs, for the shell to load."""
    return [r.trace_session for u in sup.units.values() for r in u.runs if r.trace_session]


def _end(value: float | None, sup: Supervised) -> float:
    return value if value is not None else sup.end


# --- Perfetto --------------------------------------------------------------------------------------------

UNIT_PID_BASE = 1 << 24  # track numbers of services and tasks: above any pid and perfetto's reused-pid base
CHILD_PID_STRIDE = 1 << 22


def supervised_trace(sup: Supervised, children: Mapping[str, SessionState]) -> dict[str, Any]:
    """A Perfetto trace: one process track per service or task (a `state` thread of its states and a
    `runs` thread of its starts or attempts, marks as instants), the traced trees after it."""
    origin = sup.start
    us = perfetto._us
    events: list[dict[str, Any]] = []
    sort = 0
    for index, unit in enumerate(sup.units.values()):
        pid = UNIT_PID_BASE + index
        label = f"{unit.kind} {unit.name}"
        events += [
            {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "ts": 0, "args": {"name": label}},
            {
                "ph": "M",
                "name": "process_sort_index",
                "pid": pid,
                "tid": 0,
                "ts": 0,
                "args": {"sort_index": sort},
            },
            {"ph": "M", "name": "thread_name", "pid": pid, "tid": 1, "ts": 0, "args": {"name": "state"}},
            {"ph": "M", "name": "thread_name", "pid": pid, "tid": 2, "ts": 0, "args": {"name": "runs"}},
        ]
        sort += 1
        for seg in unit.segments:
            start = us(seg.start, origin)
            events.append(
                {
                    "ph": "X",
                    "name": seg.state,
                    "cat": "state",
                    "pid": pid,
                    "tid": 1,
                    "ts": start,
                    "dur": max(0.0, round(us(_end(seg.end, sup), origin) - start, 3)),
                    "args": {unit.kind: unit.name, "state": seg.state},
                }
            )
        for run in unit.runs:
            start = us(run.start, origin)
            events.append(
                {
                    "ph": "X",
                    "name": f"{'start' if unit.kind == 'service' else 'attempt'} {run.number}",
                    "cat": "run",
                    "pid": pid,
                    "tid": 2,
                    "ts": start,
                    "dur": max(0.0, round(us(_end(run.end, sup), origin) - start, 3)),
                    "args": {
                        "pid": run.pid,
                        "argv": list(run.argv),
                        "exit_code": run.exit_code,
                        "signal": run.signal,
                        **({"node": run.node} if run.node else {}),
                        "outcome": run.outcome,
                        "trace_session": run.trace_session,
                    },
                }
            )
        for ts, what, detail in unit.marks:
            events.append(
                {
                    "ph": "i",
                    "s": "t",
                    "name": what,
                    "cat": "mark",
                    "pid": pid,
                    "tid": 1,
                    "ts": us(ts, origin),
                    "args": {"detail": detail},
                }
            )
        for n, run in enumerate(r for r in unit.runs if r.trace_session in children):
            child = children[run.trace_session or ""]
            shift = ((child.timeline_start or origin) - origin) * 1e6
            offset = CHILD_PID_STRIDE * (1 + index * 64 + n)
            for ev in perfetto.trace_events(child)["traceEvents"]:
                ev = {**ev, "pid": ev["pid"] + offset, "tid": ev["tid"] + offset}
                if ev["ph"] == "M" and ev["name"] == "process_sort_index":
                    ev["args"] = {"sort_index": sort}
                    sort += 1
                elif ev["ph"] == "M" and ev["name"] == "process_name":
                    ev["args"] = {"name": f"{unit.name} ▸ {ev['args']['name']}"}
                elif ev["ph"] != "M":
                    ev["ts"] = round(ev["ts"] + shift, 3)
                events.append(ev)
    header = sup.header
    return perfetto.envelope(
        events, header, kind=sup.kind, title=sup.title, started=origin, outcome=sup.outcome
    )


# --- OTLP ------------------------------------------------------------------------------------------------


def _span_id(session_id: str, what: str) -> str:
    return hashlib.sha256(f"capsule-span\0{session_id}\0{what}".encode()).hexdigest()[:16]


def supervised_request(
    sup: Supervised, children: Mapping[str, SessionState], version: str | None = None
) -> dict[str, Any]:
    """OTLP/JSON: a span for the session, one per service or task, one per start or attempt (marks as
    its events), and the traced processes beneath the attempt that ran them (same trace)."""
    header = sup.header
    session_id = header.session_id if header is not None else "unknown"
    trace = otlp.trace_id(session_id)
    nanos = otlp._nanos
    root_id = _span_id(session_id, "session")
    spans: list[dict[str, Any]] = [
        {
            "traceId": trace,
            "spanId": root_id,
            "name": f"{sup.kind} {sup.title}",
            "kind": otlp.SPAN_KIND_INTERNAL,
            "startTimeUnixNano": nanos(sup.start),
            "endTimeUnixNano": nanos(sup.end),
            "attributes": otlp.attributes({"capsule.outcome": sup.outcome}),
            "status": {"code": otlp.STATUS_UNSET},
        }
    ]
    for unit in sup.units.values():
        unit_id = _span_id(session_id, f"unit\0{unit.name}")
        start = min([s.start for s in unit.segments] + [r.start for r in unit.runs] or [sup.start])
        bad = unit.failed
        spans.append(
            {
                "traceId": trace,
                "spanId": unit_id,
                "parentSpanId": root_id,
                "name": f"{unit.kind} {unit.name}",
                "kind": otlp.SPAN_KIND_INTERNAL,
                "startTimeUnixNano": nanos(start),
                "endTimeUnixNano": nanos(
                    max(start, _end(unit.segments[-1].end if unit.segments else None, sup))
                ),
                "attributes": otlp.attributes(
                    {
                        f"capsule.{unit.kind}": unit.name,
                        "capsule.state": unit.state,
                        "capsule.restarts": unit.restarts,
                        "process.command_args": list(unit.argv) or None,
                    }
                ),
                "events": [
                    {
                        "timeUnixNano": nanos(ts),
                        "name": what,
                        "attributes": otlp.attributes({"detail": detail}),
                    }
                    for ts, what, detail in unit.marks
                ]
                + [
                    {"timeUnixNano": nanos(s.start), "name": f"state {s.state}", "attributes": []}
                    for s in unit.segments
                ],
                "status": {"code": otlp.STATUS_ERROR, "message": unit.state}
                if bad
                else {"code": otlp.STATUS_UNSET},
            }
        )
        for run in unit.runs:
            run_id = _span_id(session_id, f"run\0{unit.name}\0{run.number}")
            spans.append(
                {
                    "traceId": trace,
                    "spanId": run_id,
                    "parentSpanId": unit_id,
                    "name": f"{unit.name} {'start' if unit.kind == 'service' else 'attempt'} {run.number}",
                    "kind": otlp.SPAN_KIND_INTERNAL,
                    "startTimeUnixNano": nanos(run.start),
                    "endTimeUnixNano": nanos(max(run.start, _end(run.end, sup))),
                    "attributes": otlp.attributes(
                        {
                            "process.pid": run.pid,
                            "process.command_args": list(run.argv) or None,
                            "process.exit.code": run.exit_code,
                            "capsule.signal": run.signal,
                            "capsule.outcome": run.outcome,
                            "capsule.trace_session": run.trace_session,
                            "capsule.node": run.node,
                        }
                    ),
                    "status": (
                        {"code": otlp.STATUS_ERROR, "message": run.outcome or "failed"}
                        if run.failed
                        else {"code": otlp.STATUS_UNSET}
                    ),
                }
            )
            child = children.get(run.trace_session or "")
            if child is None:
                continue
            spans.extend(
                {**span, "traceId": trace, "parentSpanId": span.get("parentSpanId", run_id)}
                for rs in otlp.export_request(child, version)["resourceSpans"]
                for ss in rs["scopeSpans"]
                for span in ss["spans"]
            )
    resource = otlp.attributes(
        {
            "service.name": "capsule",
            "service.version": version,
            "capsule.session.id": session_id,
            "capsule.session.kind": sup.kind,
            "host.name": header.host if header is not None and header.host else None,
        }
    )
    scope = {"name": otlp.SCOPE, **({"version": version} if version else {})}
    return {
        "resourceSpans": [
            {"resource": {"attributes": resource}, "scopeSpans": [{"scope": scope, "spans": spans}]}
        ]
    }


# --- HTML rows -------------------------------------------------------------------------------------------


def supervised_rows(sup: Supervised, children: Mapping[str, dict[str, Any]]) -> tuple[list[list[Any]], float]:
    """Timeline rows in the HTML page's columns (capsule.report.html.COLUMNS): a row per service or task
    (its whole life, `workflow` = its last state), a row per start or attempt beneath it, and each traced
    process beneath the attempt that ran it (`children`: the page data of each traced run session, by
    id). Returns (rows, span in seconds)."""
    origin = sup.start
    rows: list[list[Any]] = []
    next_key = 0

    def key() -> int:
        nonlocal next_key
        next_key += 1
        return next_key - 1

    for unit in sup.units.values():
        ukey = key()
        start = min([s.start for s in unit.segments] + [r.start for r in unit.runs] or [origin])
        end = unit.segments[-1].end if unit.segments else None
        if end is None and unit.state in ("running", "ready", "starting", "unhealthy", "backoff"):
            end = None  # still going at the session's end
        elif end is None:
            end = unit.segments[-1].start if unit.segments else start
        last = unit.run_of()
        rows.append(
            [
                ukey,
                None,
                last.pid if last is not None and last.pid is not None else 0,
                0,
                round(start - origin, 6),
                None if end is None else round(end - origin, 6),
                last.exit_code if last is not None else None,
                last.signal if last is not None else None,
                "agent" if unit.kind == "task" else "system",
                unit.state,
                1 if unit.failed else 0,
                [f"{unit.kind}:{unit.name}", *unit.argv],
                f"{unit.restarts} restarts" if unit.restarts else None,
            ]
        )
        for run in unit.runs:
            rkey = key()
            rows.append(
                [
                    rkey,
                    ukey,
                    run.pid or 0,
                    1,
                    round(run.start - origin, 6),
                    None if run.end is None else round(run.end - origin, 6),
                    run.exit_code,
                    run.signal,
                    "tool",
                    run.outcome or "running",
                    1 if run.failed else 0,
                    [f"{unit.name}#{run.number}", *run.argv],
                    None,
                ]
            )
            data = children.get(run.trace_session or "")
            if data is None:
                continue
            shift = data["session"]["started"] - origin
            base = next_key
            for row in data["procs"]:
                row = list(row)
                row[0] = base + row[0]
                row[1] = rkey if row[1] is None else base + row[1]
                row[3] = row[3] + 2
                row[4] = round(row[4] + shift, 6)
                row[5] = None if row[5] is None else round(row[5] + shift, 6)
                rows.append(row)
            next_key = base + 1 + max((r[0] for r in data["procs"]), default=-1)
    span = max([sup.end - origin] + [r[5] for r in rows if r[5] is not None] + [r[4] for r in rows])
    return rows, round(max(span, 0.0), 6)
