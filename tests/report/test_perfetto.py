"""The Perfetto export: the trace-event JSON subset it emits, checked against a schema, on every golden session."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import orjson
import pytest

from capsule.report.perfetto import REUSED_PID_BASE, trace_events
from tests.fold.builders import Script, packaged_rules
from tests.golden import discover, fold, load_events

_COMMON = {
    "name": {"type": "string", "minLength": 1},
    "pid": {"type": "integer", "minimum": 0},
    "tid": {"type": "integer", "minimum": 0},
    "ts": {"type": "number", "minimum": 0},
    "cat": {"type": "string"},
    "args": {"type": "object"},
}
# The Trace Event Format (JSON object form) for the phases Capsule emits: M (metadata), X (complete),
# i (instant), s/f (flow start and end: a parent spawning a child). ts and dur are microseconds.
TRACE_SCHEMA = {
    "type": "object",
    "required": ["traceEvents"],
    "properties": {
        "traceEvents": {
            "type": "array",
            "items": {
                "oneOf": [
                    {
                        "type": "object",
                        "required": ["ph", "name", "pid", "tid", "args"],
                        "properties": {
                            **_COMMON,
                            "ph": {"const": "M"},
                            "name": {
                                "enum": [
                                    "process_name",
                                    "thread_name",
                                    "process_sort_index",
                                    "thread_sort_index",
                                ]
                            },
                        },
                    },
                    {
                        "type": "object",
                        "required": ["ph", "name", "pid", "tid", "ts", "dur"],
                        "properties": {
                            **_COMMON,
                            "ph": {"const": "X"},
                            "dur": {"type": "number", "minimum": 0},
                        },
                    },
                    {
                        "type": "object",
                        "required": ["ph", "name", "pid", "tid", "ts", "s"],
                        "properties": {**_COMMON, "ph": {"const": "i"}, "s": {"enum": ["g", "p", "t"]}},
                    },
                    {
                        "type": "object",
                        "required": ["ph", "name", "cat", "id", "pid", "tid", "ts"],
                        "properties": {
                            **_COMMON,
                            "ph": {"enum": ["s", "f"]},
                            "id": {"type": "integer"},
                            "bp": {"const": "e"},
                        },
                    },
                ]
            },
        },
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "otherData": {"type": "object"},
    },
}


@pytest.mark.parametrize("session", discover(), ids=lambda p: p.name)
def test_golden_sessions_export_valid_traces(session: Path) -> None:
    """Every golden session exports a trace the schema accepts, one X slice per process."""
    state = fold(load_events(session), packaged_rules())
    trace = orjson.loads(orjson.dumps(trace_events(state)))
    jsonschema.validate(trace, TRACE_SCHEMA)
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(slices) == len(state.tree.nodes)
    tracks = {(e["pid"], e["tid"]) for e in slices}
    assert len(tracks) == len(slices), "one track per process"
    assert len({pid for pid, _ in tracks}) <= 1, "the session is one trace process: one view"
    names = {e["tid"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {tid for _, tid in tracks}
    flows = [e for e in trace["traceEvents"] if e["ph"] in "sf"]
    assert len(flows) == 2 * sum(n.parent is not None for n in state.tree.nodes)


def test_failures_and_signals_are_instant_events() -> None:
    """A non-zero exit, a killing signal and a failed exec each get an instant event on their track."""
    s = Script().start("sh", "-c", "x")
    s.spawn(10, None, via="root").exec(10, "/bin/sh", "sh", "-c", "x")
    s.spawn(11, 10).exec(11, "/usr/bin/false", "false").exit(11, 1)
    s.spawn(12, 10).exec(12, "/usr/bin/sleep", "sleep", "9").signaled(12, "SIGTERM").exit(
        12, signal="SIGTERM"
    )
    s.spawn(13, 10).fail_exec(13, "/usr/bin/nope", "nope").exit(13, 127)
    s.exit(10, 0).end()
    state = fold(s.events, packaged_rules())
    trace = trace_events(state)
    jsonschema.validate(trace, TRACE_SCHEMA)
    instants = {(e["tid"], e["cat"], e["name"]) for e in trace["traceEvents"] if e["ph"] == "i"}
    assert (11, "failure", "exit 1") in instants
    assert (12, "signal", "SIGTERM") in instants
    assert (12, "failure", "killed by SIGTERM") in instants
    assert (13, "failure", "exit 127") in instants
    assert not any(pid == 10 for pid, _, _ in instants)
    order = [e["tid"] for e in trace["traceEvents"] if e["ph"] == "X"]
    assert order == [10, 11, 12, 13], "parents come before their children"
    root = next(e for e in trace["traceEvents"] if e["ph"] == "X" and e["tid"] == 10)
    assert root["ts"] >= 0
    for e in trace["traceEvents"]:
        if e["ph"] == "X" and e["tid"] != 10:
            assert root["ts"] <= e["ts"]
            assert e["ts"] + e["dur"] <= root["ts"] + root["dur"] + 1e-3


def test_a_reused_pid_gets_its_own_track() -> None:
    """Two processes with the same pid are two tracks; the real pid stays in args."""
    s = Script().start("sh")
    s.spawn(10, None, via="root").exec(10, "/bin/sh", "sh")
    s.spawn(11, 10).exec(11, "/bin/true", "true").exit(11, 0)
    s.spawn(11, 10).exec(11, "/bin/ls", "ls").exit(11, 0)
    s.exit(10, 0).end()
    trace = trace_events(fold(s.events, packaged_rules()))
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert [e["tid"] for e in slices][:2] == [10, 11]
    assert slices[2]["tid"] >= REUSED_PID_BASE
    assert slices[2]["args"]["pid"] == 11


def test_trace_lines_before_the_header_never_give_negative_times() -> None:
    """An imported log's trace predates its header: every ts is still >= 0, from the earliest moment."""
    from capsule.events import ProcExec, ProcExited, ProcSpawned, SessionStarted
    from capsule.fold import fold_session
    from capsule.report.perfetto import trace_events

    events = [
        SessionStarted(ts=1000.0, capsule_version="0", session_id="x", session_kind="import"),
        ProcSpawned(ts=10.0, pid=1, ppid=None, via="root"),
        ProcExec(ts=10.0, pid=1, path="/bin/sh", argv=("sh",), ok=True),
        ProcExited(ts=12.0, pid=1, exit_code=0),
    ]
    trace = trace_events(fold_session(events))
    jsonschema.validate(trace, TRACE_SCHEMA)
    (root,) = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert root["ts"] == 0
    assert root["dur"] == 2_000_000
