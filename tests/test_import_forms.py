"""The `import-*` golden sessions: one workload recorded by plain strace in every common form, imported.

Every form must give the same exact tree (parents, final argv, exit codes); what differs is only what the
form cannot say (times without stamps, argv with `-s 0`, exits after the cut). The times of every golden
session run forward: no negative duration, no process spawned after its first exec.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from capsule.events import ProcExec, ProcSpawned, SessionStarted
from capsule.fold import SessionState
from capsule.fold.process_tree import ProcessNode
from capsule.report import report_dict
from tests import golden

FORMS = (
    "import-none",
    "import-t",
    "import-tt",
    "import-s0",
    "import-r",
    "import-stderr",
    "import-ff",
    "import-decorated",
    "import-qq",
)
ALL_FORMS = (*FORMS, "import-cut")


def state_of(slug: str) -> SessionState:
    return golden.fold(golden.load_events(golden.SESSIONS_DIR / slug), golden.packaged_rules())


def shape(state: SessionState, node: ProcessNode, *, argv: bool = True) -> tuple[object, ...]:
    """A process and its subtree without pids or times: argv (or exe), exit, children in order."""
    own = node.argv if argv else (node.exe,)
    kids = tuple(shape(state, child, argv=argv) for child in state.tree.children(node))
    return (own, node.exec_ok, node.exit_code, node.signal, kids)


EXPECTED_TREE = (
    ("sh", "-c", "./threads >/dev/null; /bin/echo "),
    True,
    3,
    None,
    (
        # ./threads: a thread forks `true from-thread`; then another thread execs /bin/echo
        (("echo", "exec-from-thread"), True, 0, None, ((("true", "from-thread"), True, 0, None, ()),)),
        (None, False, 0, None, ()),  # $(printf ...): a subshell fork
        (("/bin/echo", "\ufffd\ufffd", "hi"), True, 0, None, ()),  # \377\376: not UTF-8
        (None, False, 0, None, ((("sleep", "0.01"), True, 0, None, ()),)),  # (sleep &): an orphan
    ),
)


@pytest.mark.parametrize("slug", [f for f in FORMS if f != "import-s0"])
def test_every_form_gives_the_exact_tree(slug: str) -> None:
    """-o FILE with any clock, stderr with attach notes and program output, -ff: one and the same tree."""
    state = state_of(slug)
    assert state.root is not None
    assert len(state.tree.roots) == 1
    assert shape(state, state.root) == EXPECTED_TREE
    assert state.status == "complete"
    assert state.exit_code == 3


def test_s0_argv_is_unknown_not_empty() -> None:
    """`-s 0` shows `[...]` for every argv: null and truncated, the executables still known."""
    state = state_of("import-s0")
    report = report_dict(state)
    execd = [p for p in report["processes"] if p["exe"] is not None]
    assert execd
    assert all(p["argv"] is None and p["argv_truncated"] for p in execd)
    assert [p["exe"] for p in execd][:2] == ["/usr/bin/sh", "/bin/echo"]  # ./threads became echo


def test_argv_cut_by_s_is_marked() -> None:
    """The default -s 32 cut the shell's command string: marked in JSON and with … in the text."""
    state = state_of("import-tt")
    root = report_dict(state)["processes"][0]
    assert root["argv_truncated"] is True
    assert list(root["argv"]) == ["sh", "-c", "./threads >/dev/null; /bin/echo "]
    assert "/bin/echo ' …" in golden.render_text(state).decode()


def test_untimed_log_has_null_durations() -> None:
    """No timestamps: every duration is null, not 0, and the report says why."""
    for slug in ("import-none", "import-stderr"):
        report = report_dict(state_of(slug))
        assert report["session"]["duration_s"] is None
        assert all(p["duration_s"] is None for p in report["processes"])
        assert "the log has no timestamps: durations are unknown" in report["warnings"]


@pytest.mark.parametrize("slug", ["import-t", "import-tt", "import-r"])
def test_dateless_clocks_are_anchored_with_a_warning(slug: str) -> None:
    """-t/-tt take their date, -r its anchor, from the log's mtime; a warning says so; times are real."""
    state = state_of(slug)
    header = state.header
    assert header is not None
    assert header.trace_clock == {"import-r": "relative"}.get(slug, "time-of-day")
    assert header.trace_origin is not None
    report = report_dict(state)
    assert any("modification time" in w for w in report["warnings"])
    started, ended = report["session"]["started"], report["session"]["ended"]
    assert 1.7e9 < started <= ended < started + 60  # a real date, seconds long
    assert report["session"]["duration_s"] == pytest.approx(ended - started, abs=1e-6)


def test_epoch_import_starts_at_its_first_stamp() -> None:
    """An import's `started` is its trace's first timestamp and `ended` its last, never the import time."""
    events = golden.load_events(golden.SESSIONS_DIR / "import-ff")
    header = events[0]
    assert isinstance(header, SessionStarted)
    trace_ts = [e.ts for e in events[1:-1]]
    assert header.ts == min(trace_ts)
    report = report_dict(state_of("import-ff"))
    assert report["session"]["ended"] == max(trace_ts)


def test_cut_log_is_incomplete_and_unexited_processes_have_no_end() -> None:
    """A log cut mid-line: status incomplete, a warning with what is missing, no invented exits."""
    state = state_of("import-cut")
    report = report_dict(state)
    assert report["session"]["status"] == "incomplete"
    assert report["session"]["exit_code"] is None
    unexited = [p for p in report["processes"] if p["end"] is None]
    assert unexited
    assert all(p["exit_code"] is None and p["signal"] is None for p in unexited)
    (warning,) = [w for w in report["warnings"] if w.startswith("the log does not show the command's end")]
    assert "mid-line" in warning
    assert f"{len(unexited)} processes have no recorded exit" in warning


@pytest.mark.parametrize("session", golden.discover(), ids=lambda p: p.name)
def test_time_runs_forward(session: Path) -> None:
    """In every golden session no duration is negative and no process is spawned after its first exec."""
    events = golden.load_events(session)
    spawned: dict[int, float] = {}
    for event in events:
        if isinstance(event, ProcSpawned):
            spawned[event.pid] = event.ts
        elif isinstance(event, ProcExec) and event.pid in spawned:
            assert spawned.pop(event.pid) <= event.ts, event
    report = report_dict(golden.fold(events, golden.packaged_rules()))
    assert (report["session"]["duration_s"] or 0.0) >= 0.0
    assert all((p["duration_s"] or 0.0) >= 0.0 for p in report["processes"])
    # (ebpf-argv-quoting plants the literal text \x41 on purpose)
    assert all(
        p["argv"] is None or all("\\x" not in a or a == "\\x41" for a in p["argv"])
        for p in report["processes"]
    )


def test_forms_are_all_recorded() -> None:
    """Each form named here is a committed golden session."""
    assert {p.name for p in golden.discover()} >= set(ALL_FORMS)
