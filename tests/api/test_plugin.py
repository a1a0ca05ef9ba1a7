"""The pytest plugin, used as a user would: a throwaway project with its own tests/, run by a
subprocess pytest that has only Capsule (and pytest) to work with."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.strace

SESSIONS = Path(__file__).resolve().parents[2] / "sessions"
EARLIER = Path(__file__).resolve().parents[1] / "data" / "derived-earlier" / "level-all"

USER_TESTS = """
import pytest
from capsule.testing import assert_never_ran, assert_no_failures, assert_ran, assert_ran_before, assert_touched


def test_passes(capsule_run):
    session = capsule_run(["sh", "-c", "echo building; true; ls /"])
    assert session.exit_code == 0
    assert "building" in session.stdout
    assert_ran(session, "ls *")
    assert_ran_before(session, "sh *", "ls *")
    assert_never_ran(session, "sudo *")


def test_fails_never_ran(capsule_run):
    session = capsule_run(["sh", "-c", "true; curl-like --fetch http://x | cat"])
    assert_never_ran(session, "curl-like *")


def test_fails_ran(capsule_run):
    session = capsule_run(["sh", "-c", "ls / >/dev/null"])
    assert_ran(session, "pytest *")


def test_fails_no_failures(capsule_run):
    session = capsule_run(["sh", "-c", "ls /nonexistent-dir; true"])
    assert_no_failures(session)


def test_touched(capsule_run, tmp_path):
    session = capsule_run(["sh", "-c", "echo x > out.txt"], level="file", cwd=tmp_path)
    assert session.ran("sh *")
    if session.files:  # the report's `files` key (trace level file)
        assert_touched(session, "out.txt", ops={"write"})
"""


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "userproj"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_agent.py").write_text(USER_TESTS)
    (project / "bin").mkdir()
    fake = project / "bin" / "curl-like"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    return project


def _pytest(project: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": f"{project / 'bin'}:{os.environ['PATH']}",
        "HOME": str(home),
        "CAPSULE_HOME": str(home / "not-used"),
        "LANG": "C.UTF-8",
    }
    # `-p no:cacheprovider`, no Capsule conftest: the plugin is found through its entry point alone.
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_a_user_project_asserts_on_recorded_sessions(tmp_path: Path) -> None:
    """The fixture records real commands; failing helpers print readable messages with the tree."""
    project = _project(tmp_path)
    done = _pytest(project, "tests", home=tmp_path)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "2 passed" in out, out
    assert "3 failed" in out, out
    # never_ran: the offending process and its ancestors, not the whole tree
    assert "1 process ran 'curl-like *'" in out, out
    assert "curl-like --fetch http://x  [exit 0]" in out, out
    # ran: what did run instead
    assert "no process ran 'pytest *'" in out, out
    assert "ls /" in out, out
    # no failures: the failed process, marked
    assert "1 process failed" in out, out
    assert "ls /nonexistent-dir  [exit 2]  ✗" in out, out
    assert "Traceback" not in out


def test_committed_sessions_become_tests(tmp_path: Path) -> None:
    """--capsule-sessions: one test per folder; --capsule-bless writes expectations; a changed one fails."""
    project = _project(tmp_path)
    golden = project / "tests" / "sessions"
    for name in ("forks", "exec-chain"):
        shutil.copytree(SESSIONS / name, golden / name, ignore=shutil.ignore_patterns("expected"))
    missing = _pytest(project, "--capsule-sessions", str(golden), "-k", "replay", home=tmp_path)
    assert missing.returncode == 1, missing.stdout
    assert "2 failed" in missing.stdout, missing.stdout
    assert "no expected/report.json yet; run pytest --capsule-bless" in missing.stdout
    blessed = _pytest(
        project, "--capsule-sessions", str(golden), "--capsule-bless", "-k", "replay", home=tmp_path
    )
    assert blessed.returncode == 0, blessed.stdout
    assert "2 passed" in blessed.stdout, blessed.stdout
    ok = _pytest(project, "--capsule-sessions", str(golden), "-k", "replay", home=tmp_path)
    assert ok.returncode == 0, ok.stdout
    assert "2 passed" in ok.stdout, ok.stdout
    report = golden / "forks" / "expected" / "report.json"
    report.write_text(report.read_text().replace('"exit_code": 0', '"exit_code": 9', 1))
    changed = _pytest(project, "--capsule-sessions", str(golden), "-k", "replay", home=tmp_path)
    assert changed.returncode == 1, changed.stdout
    assert "1 failed, 1 passed" in changed.stdout, changed.stdout
    assert "the report differs from expected/report.json" in changed.stdout
    assert '-      "exit_code": 9,' in changed.stdout, changed.stdout


def test_sessions_of_the_ebpf_tracer_and_of_an_older_capsule(tmp_path: Path) -> None:
    """An eBPF session's trace.ebpf is re-derived too; a session an older Capsule derived fails saying so,
    and --capsule-bless re-derives its events.jsonl, after which it passes."""
    project = _project(tmp_path)
    golden = project / "tests" / "sessions"
    shutil.copytree(SESSIONS / "ebpf-forks", golden / "ebpf-forks")
    shutil.copytree(EARLIER, golden / "earlier")
    blessed = _pytest(
        project, "--capsule-sessions", str(golden), "--capsule-bless", "-k", "replay", home=tmp_path
    )
    assert blessed.returncode == 0, blessed.stdout
    assert "2 passed" in blessed.stdout, blessed.stdout
    assert b'"derivation":' in (golden / "earlier" / "events.jsonl").read_bytes().split(b"\n")[0]
    ok = _pytest(project, "--capsule-sessions", str(golden), "-k", "replay", home=tmp_path)
    assert ok.returncode == 0, ok.stdout
    # the session as the older Capsule left it, beside its blessed report: the events differ
    (golden / "earlier" / "events.jsonl").write_bytes((EARLIER / "events.jsonl").read_bytes())
    trace = golden / "ebpf-forks" / "trace.ebpf"
    trace.write_text(trace.read_text().replace("/bin/true", "/bin/edit"))
    changed = _pytest(project, "--capsule-sessions", str(golden), "-k", "replay", home=tmp_path)
    assert changed.returncode == 1, changed.stdout
    assert "2 failed" in changed.stdout, changed.stdout
    assert "the events re-derived from trace.ebpf differ from events.jsonl" in changed.stdout
    assert "it was derived by an older Capsule, which did not name its derivation" in changed.stdout
    assert "pytest --capsule-bless re-derives its events.jsonl" in changed.stdout
    assert "Traceback" not in changed.stdout


def test_replay_finds_a_changed_trace(tmp_path: Path) -> None:
    """replay() re-derives the events from trace.strace, as `capsule replay --check` does."""
    from capsule.testing import replay

    folder = tmp_path / "forks"
    shutil.copytree(SESSIONS / "forks", folder)
    assert replay(folder).events_match is True
    trace = folder / "trace.strace"
    trace.write_text(trace.read_text().replace('"forked"', '"edited"'))
    result = replay(folder)
    assert result.events_match is False
    assert not result.matches
    assert "differ from events.jsonl" in result.explain()
