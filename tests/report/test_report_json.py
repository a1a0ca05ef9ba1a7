"""The JSON report: its stable shape and what each field holds."""

from __future__ import annotations

import orjson

from capsule.fold import fold_session
from capsule.report import report_dict
from tests.fold.builders import T0, Script, packaged_rules
from tests.fold.test_fold_agents import agent_session

SESSION_KEYS = {
    "id",
    "kind",
    "argv",
    "cwd",
    "started",
    "ended",
    "duration_s",
    "exit_code",
    "signal",
    "status",
}
PROCESS_KEYS = {
    "pid",
    "ppid",
    "argv",
    "exe",
    "label",
    "workflow",
    "start",
    "end",
    "duration_s",
    "exit_code",
    "signal",
    "execs",
}
SUMMARY_KEYS = {"processes", "failed", "signaled", "labels", "workflows", "tools"}


def mixed_session() -> Script:
    s = Script().start("sh", "-c", "work")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh", "-c", "work")
    s.spawn(2, 1).fail_exec(2, "/usr/local/bin/git", "git", "status").exec(2, "/usr/bin/git", "git", "status")
    s.exit(2)
    s.run(3, 1, "/usr/bin/git", "git", "log", code=128)
    s.spawn(4, 1).exec(4, "/usr/bin/sleep", "sleep", "9").exit(4, signal="SIGKILL")
    s.spawn(5, 1).fail_exec(5, "/usr/bin/nosuch", "nosuch").exit(5, 127)
    s.exit(1, 137).end(137)
    return s


def test_shape_is_stable() -> None:
    """Every documented key is present, at every level."""
    report = report_dict(fold_session(mixed_session().events, packaged_rules()))
    assert set(report) >= {"session", "processes", "summary", "agents", "unparsed_lines", "warnings"}
    assert set(report["session"]) >= SESSION_KEYS
    assert all(set(p) >= PROCESS_KEYS for p in report["processes"])
    assert set(report["summary"]) >= SUMMARY_KEYS
    assert all(
        set(t) >= {"name", "count", "self_s", "wall_s", "total_s", "failed"}
        for t in report["summary"]["tools"]
    )
    orjson.dumps(report)  # JSON-able as it is


def test_session_block() -> None:
    """The session block comes from the header and the end event."""
    report = report_dict(fold_session(mixed_session().events, packaged_rules()))
    session = report["session"]
    assert session["id"] == "20251121-043000-abcd"
    assert session["kind"] == "run"
    assert session["argv"] == ["sh", "-c", "work"]
    assert session["cwd"] == "/work/project"
    assert session["started"] == T0
    assert session["exit_code"] == 137
    assert session["signal"] is None
    assert session["status"] == "complete"
    assert isinstance(session["ended"], float)


def test_processes_one_each_ordered_by_start() -> None:
    """One entry per process, by start; argv is the last good exec, failed attempts stay in execs."""
    report = report_dict(fold_session(mixed_session().events, packaged_rules()))
    procs = report["processes"]
    assert [p["pid"] for p in procs] == [1, 2, 3, 4, 5]
    assert [p["start"] for p in procs] == sorted(p["start"] for p in procs)
    by_pid = {p["pid"]: p for p in procs}
    assert by_pid[1]["ppid"] is None
    assert by_pid[2]["ppid"] == 1
    assert list(by_pid[2]["argv"]) == ["git", "status"]  # a tuple: orjson writes it as an array
    assert [e["ok"] for e in by_pid[2]["execs"]] == [False, True]
    assert by_pid[2]["execs"][0]["errno"] == "ENOENT"
    assert by_pid[3]["exit_code"] == 128
    assert (by_pid[4]["exit_code"], by_pid[4]["signal"]) == (None, "SIGKILL")
    assert by_pid[5]["argv"] is None
    assert by_pid[5]["exe"] is None
    assert by_pid[2]["label"] == "tool"
    assert by_pid[2]["workflow"] == "vcs"


def test_summary() -> None:
    """Counts of failures, signals, labels, workflows and tools."""
    summary = report_dict(fold_session(mixed_session().events, packaged_rules()))["summary"]
    assert summary["processes"] == 5
    assert summary["failed"] == 4  # root exit 137, git log 128, sleep SIGKILL, nosuch not found
    assert summary["signaled"] == 1
    assert summary["labels"] == {"tool": 3, "system": 1, "unknown": 1}  # sleep is system, nosuch unknown
    assert summary["workflows"]["vcs"] == 2
    git = summary["tools"][0]
    assert (git["name"], git["count"], git["failed"]) == ("git", 2, 1)
    assert git["total_s"] == git["wall_s"]
    counts = [t["count"] for t in summary["tools"]]
    assert counts == sorted(counts, reverse=True)


def test_agents_block() -> None:
    """An agent run lists its phases and calls."""
    agents = report_dict(fold_session(agent_session().events, packaged_rules()))["agents"]
    (agent,) = agents
    assert agent["name"] == "claude-code"
    assert agent["tool_calls"] == 6
    assert agent["failed_tool_calls"] == 1
    assert [p["workflow"] for p in agent["phases"]] == ["explore", "edit", "test", "vcs"]
    assert agent["calls"][0]["name"] == "rg"


def test_incomplete_and_recovered_status() -> None:
    """status is incomplete without an end, recovered after a session.recovered."""
    s = Script().start("x")
    s.spawn(1, None, via="root").exec(1, "/bin/x", "x")
    report = report_dict(fold_session(s.events))
    assert report["session"]["status"] == "incomplete"
    assert report["session"]["ended"] is None
    assert report["processes"][0]["end"] is None
    assert report["processes"][0]["duration_s"] is None
    s.exit(1).recovered().end()
    assert report_dict(fold_session(s.events))["session"]["status"] == "recovered"


def test_unparsed_lines_counted() -> None:
    """unparsed_lines counts trace.unparsed events."""
    s = Script().start("x").unparsed(1).unparsed(2).end()
    assert report_dict(fold_session(s.events))["unparsed_lines"] == 2
