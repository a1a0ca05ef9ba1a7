"""env and agents sessions as timelines, in memory: states, runs and marks folded from lifecycle events,
and the traced run session of a start drawn beneath it."""

from __future__ import annotations

from capsule.events import SessionStarted
from capsule.fold import fold_session
from capsule.report.html import render_supervised_html
from capsule.report.supervised import fold_supervised, supervised_request, supervised_trace, trace_sessions
from capsule.stages.assets import html_assets
from tests.agents.samples import task_samples
from tests.env.samples import env_samples
from tests.fold.builders import T0, Script, packaged_rules

TRACED = "20261121-143005-123ab"


def header(kind: str) -> SessionStarted:
    return SessionStarted(
        ts=T0,
        capsule_version="0.1.0",
        session_id=f"20261121-143000-{kind}",
        session_kind=kind,
        argv=("capsule", kind),
        cwd="/p",
        host="h",
    )


def traced_run() -> Script:
    s = Script().start("postgres", session_id=TRACED)
    s.spawn(1, None, via="root").exec(1, "/usr/bin/postgres", "postgres").exit(1, 1).end(1)
    return s


def test_env_states_runs_and_marks() -> None:
    """A service's states in order, its start as a run ended by its exit, restarts and give-up as marks."""
    sup = fold_supervised([header("env"), *env_samples(T0 + 0.01)])
    db = sup.units["db"]
    assert [s.state for s in db.segments] == [
        "starting",
        "running",
        "ready",
        "unhealthy",
        "exited",
        "backoff",
        "gave_up",
        "stopped",
    ]
    (run,) = db.runs
    assert (run.pid, run.exit_code, run.trace_session) == (900, 1, TRACED)
    assert {m[1] for m in db.marks} >= {"unhealthy", "restart", "gave up"}
    assert sup.units["web"].state == "failed"
    assert sup.outcome == "idle"
    assert trace_sessions(sup) == [TRACED]


def test_a_stopped_run_is_not_a_failure_but_a_crash_is() -> None:
    """`env down`'s SIGTERM ends a run `stopped`, not failed (the HTML drew it red); an exit 4 or a
    signal the supervisor did not send is a failure."""
    from capsule.events.env import SvcExited, SvcStarted, SvcStopped

    def started(name: str, pid: int, at: float) -> SvcStarted:
        return SvcStarted(ts=T0 + at, name=name, pid=pid, started=T0 + at, pgid=pid)

    sup = fold_supervised(
        [
            header("env"),
            started("db", 10, 0.1),
            started("crash", 11, 0.1),
            started("oom", 12, 0.1),
            SvcExited(ts=T0 + 0.2, name="crash", pid=11, exit_code=4),
            SvcExited(ts=T0 + 0.3, name="oom", pid=12, signal="SIGKILL"),
            SvcStopped(ts=T0 + 1, name="db", pid=10, signal="SIGTERM", reason="down"),
        ]
    )
    runs = {name: unit.runs[-1] for name, unit in sup.units.items()}
    assert (runs["db"].outcome, runs["db"].failed) == ("stopped", False)
    assert runs["crash"].failed
    assert runs["oom"].failed
    assert not sup.units["db"].failed


def test_exports_put_the_traced_tree_beneath_its_start() -> None:
    """Perfetto: the traced run gets a track after its service's; OTLP: its span's parent is the start."""
    sup = fold_supervised([header("env"), *env_samples(T0 + 0.01)])
    children = {TRACED: fold_session(traced_run().events, packaged_rules())}
    names = [
        e["args"]["name"]
        for e in supervised_trace(sup, children)["traceEvents"]
        if e["ph"] == "M" and e["name"] == "process_name"
    ]
    # the traced run is one Perfetto process (its processes are its threads, pid as tid), after its service
    assert names[:2] == ["service db", f"db ▸ capsule {TRACED}: postgres"]
    spans = supervised_request(sup, children)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    by_name = {s["name"]: s for s in spans}
    assert by_name["postgres"]["parentSpanId"] == by_name["db start 1"]["spanId"]
    assert by_name["db start 1"]["parentSpanId"] == by_name["service db"]["spanId"]
    assert by_name["service db"]["status"]["code"] == 2  # gave up


def test_agents_attempts_and_page() -> None:
    """Tasks get their attempts; the HTML page embeds a row per task and per attempt."""
    sup = fold_supervised([header("agents"), *task_samples(T0 + 0.01)])
    assert sup.units
    assert any(u.runs for u in sup.units.values())
    page = render_supervised_html(sup, {}, html_assets())
    assert "Tasks" in page
    assert "capsule-data" in page
