"""`capsule import` of real strace logs in their forms, and `capsule run --timeout`, end to end."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import orjson
import psutil
import pytest

from tests.conftest import CapsuleRunner, one_error_line, report_json

pytestmark = pytest.mark.strace

WORK = "sh -c '/bin/true one; (sleep 0.01; /bin/echo two) >/dev/null; exit 2'"


def _strace(*args: str, cwd: Path) -> None:
    subprocess.run(["strace", *args, "--", "sh", "-c", WORK], cwd=cwd, check=False, capture_output=True)


_one_error_line = one_error_line


def _tree(report: dict) -> list[tuple[object, ...]]:
    by_id = {p["id"]: p for p in report["processes"]}
    return sorted(
        (
            tuple(p["argv"] or ()),
            tuple(by_id[p["parent"]]["argv"] or ()) if p["parent"] is not None else None,
            p["exit_code"],
        )
        for p in report["processes"]
    )


def _plain_and(
    capsule: CapsuleRunner, tmp_path: Path, flags: list[str], work: str = WORK
) -> tuple[dict, dict]:
    """The reports of `work` imported from `strace -f -ttt` and from the same with `flags` (each import
    exits 0 and passes `replay --check`)."""
    reports = []
    for log, extra in (("plain.log", []), ("flagged.log", flags)):
        argv = ["strace", "-f", "-ttt", *extra, "-o", log, "--", "sh", "-c", work]
        subprocess.run(argv, cwd=tmp_path, check=False, capture_output=True)
        done = capsule("import", str(tmp_path / log))
        assert done.returncode == 0, done.stderr
        reports.append(report_json(capsule, done.stdout.strip()))
        check = capsule("replay", "--check", done.stdout.strip())
        assert check.returncode == 0, check.stdout
    return reports[0], reports[1]


def test_ff_folder_and_prefix_import_like_one_log(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """`strace -ff -o PREFIX`: the folder or the prefix imports the same tree as `-f -o FILE`."""
    _strace("-f", "-ttt", "-o", "one.log", cwd=tmp_path)
    (tmp_path / "ff").mkdir()
    _strace("-ff", "-ttt", "-o", "ff/trace", cwd=tmp_path)
    expected = None
    for source in ("one.log", "ff", "ff/trace"):
        done = capsule("import", str(tmp_path / source))
        assert done.returncode == 0, done.stderr
        report = report_json(capsule, done.stdout.strip())
        assert report["session"]["exit_code"] == 2
        assert report["session"]["status"] == "complete"
        assert report["session"]["duration_s"] > 0
        assert not any(p["ppid"] == 0 for p in report["processes"])
        expected = expected or _tree(report)
        assert _tree(report) == expected, source
        check = capsule("replay", "--check", done.stdout.strip())
        assert check.returncode == 0, check.stdout


@pytest.mark.parametrize("flags", [["-Y"], ["-n", "-i"], ["-k"], ["-C"], ["-Y", "-n", "-i", "-k", "-C"]])
def test_decorated_lines_import_like_plain_ones(
    capsule: CapsuleRunner, tmp_path: Path, flags: list[str]
) -> None:
    """-Y (`1234<sh>`), -n, -i, -k stack frames and -C's summary: the plain log's tree, nothing unparsed."""
    plain, decorated = _plain_and(capsule, tmp_path, flags)
    for report in (plain, decorated):
        assert report["session"]["status"] == "complete"
        assert report["session"]["exit_code"] == 2
        assert report["unparsed_lines"] == 0
        assert report["warnings"] == []
    assert _tree(plain) == _tree(decorated)


def test_an_execve_only_log_gets_its_parents_from_sigchld(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """`strace -f -e trace=execve` (no clone lines): each child's parent is the process its SIGCHLD
    went to, so the tree is the plain log's, not a flat list of roots."""
    plain, execs = _plain_and(capsule, tmp_path, ["-e", "trace=execve"])
    assert execs["session"]["exit_code"] == 2
    assert len([p for p in execs["processes"] if p["parent"] is None]) == 1
    assert _tree(plain) == _tree(execs)


def test_a_raw_log_keeps_its_tree(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """`-e raw=all`: pids in hex (`= 0x4485`) still make the tree; a path that is a pointer is no path."""

    def shape(report: dict) -> list[tuple[int, int | None]]:
        depth: dict[int, int] = {}
        for p in report["processes"]:  # ordered by start: a parent before its children
            depth[p["id"]] = 0 if p["parent"] is None else depth[p["parent"]] + 1
        return sorted((depth[p["id"]], p["exit_code"]) for p in report["processes"])

    plain, raw = _plain_and(capsule, tmp_path, ["-e", "raw=all"])
    assert raw["session"]["exit_code"] == 2
    assert all(p["exe"] in ("", None) and p["argv"] is None for p in raw["processes"])
    assert shape(plain) == shape(raw)


@pytest.mark.parametrize("flags", [["-qq"], ["-e", "quiet=exit"], ["-e", "signal=none"]])
def test_ends_strace_left_out_are_read_from_exit_group_and_wait(
    capsule: CapsuleRunner, tmp_path: Path, flags: list[str]
) -> None:
    """-qq and quiet=exit drop every `+++ exited` line, signal=none the `+++ killed by` ones: each
    process's end comes from its exit_group or its parent's wait, as in the plain log."""
    work = "/bin/true one; sleep 5 & kill -TERM $!; wait; (sleep 0.01; /bin/echo two) >/dev/null; exit 2"
    trees = []
    for report in _plain_and(capsule, tmp_path, flags, work):
        assert report["session"]["status"] == "complete", report["warnings"]
        assert report["session"]["exit_code"] == 2
        assert report["warnings"] == []
        trees.append(
            sorted((tuple(p["argv"] or ()), p["exit_code"], p["signal"]) for p in report["processes"])
        )
    assert trees[0] == trees[1]
    assert ((), None, "SIGTERM") in trees[1] or (("sleep", "5"), None, "SIGTERM") in trees[1]


def test_a_log_without_any_end_says_which_flag_left_them_out(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """-qq with signal=none, and the one process killed: nothing says how it ended, and the warning says
    why (not that strace died)."""
    log = tmp_path / "quiet.log"
    quiet = ["-qq", "-e", "signal=none"]
    subprocess.run(
        ["strace", "-f", "-ttt", *quiet, "-o", str(log), "--", "sh", "-c", "kill -KILL $$"], check=False
    )
    done = capsule("import", str(log))
    assert done.returncode == 0, done.stderr
    report = report_json(capsule, done.stdout.strip())
    assert report["session"]["status"] == "incomplete"
    (warning,) = [w for w in report["warnings"] if "-qq" in w]
    assert warning.startswith("the log does not show the command's end: the log shows no process's exit")


def test_single_per_pid_file_is_refused_with_a_hint(
    capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path
) -> None:
    """One file of an -ff set is refused in one line naming the prefix to import; no session is left."""
    _strace("-ff", "-o", "trace", cwd=tmp_path)
    files = sorted(tmp_path.glob("trace.*"))
    assert len(files) >= 3
    done = capsule("import", str(files[0]))
    assert done.returncode == 4
    line = _one_error_line(done)
    assert f"capsule import {tmp_path / 'trace'}" in line
    assert not (capsule_home / "runs").exists() or not list((capsule_home / "runs").iterdir())


def test_tt_import_is_dated_from_mtime_and_replays(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """A -tt log takes its date from the file's mtime (a warning says so); replay --check passes."""
    _strace("-f", "-tt", "-o", "tt.log", cwd=tmp_path)
    mtime = (tmp_path / "tt.log").stat().st_mtime
    done = capsule("import", str(tmp_path / "tt.log"))
    assert done.returncode == 0, done.stderr
    report = report_json(capsule)
    assert mtime - 60 < report["session"]["started"] <= report["session"]["ended"] <= mtime + 1
    assert any("modification time" in w for w in report["warnings"])
    check = capsule("replay", "--check")
    assert check.returncode == 0, check.stdout


def test_failed_import_leaves_no_session(capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path) -> None:
    """Junk, or a log whose numbers no kernel produces, is one error line (exit 4) and leaves nothing."""
    junk = tmp_path / "junk.log"
    junk.write_bytes(b'hello\n99999999999999999999999 execve("/bin/x", ["x"], 0x1 /* 1 vars */) = 0\n')
    done = capsule("import", str(junk))
    assert done.returncode == 4
    _one_error_line(done)
    assert not list((capsule_home / "runs").iterdir())
    assert capsule("ls", "--json").stdout.strip() == "[]"


def test_timeout_stops_the_whole_tree_and_says_why(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """--timeout: TERM to every process, KILL to what ignores it (an orphan too); the session says so."""
    pidfile = tmp_path / "orphan.pid"
    script = (
        f"(trap '' TERM; exec sleep 300) & echo $! > {pidfile}; "
        "exec python3 -c 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)'"
    )
    done = capsule("run", "--timeout", "3s", "--", "sh", "-c", script, timeout=120)
    # Both ignore SIGTERM once started, so SIGKILL ends them (on a machine slow enough to deliver SIGTERM
    # before python ignores it, SIGTERM does).
    assert done.returncode == 124, done.stderr  # timeout(1)'s code; the command's own is recorded
    assert "timed out after 3s · SIG" in done.stderr  # why it stopped, in `capsule run`'s own line
    orphan = int(pidfile.read_text())
    assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE
    report = report_json(capsule)
    (warning,) = [w for w in report["warnings"] if w.startswith("timed out")]
    assert "after 3 s" in warning
    events = [orjson.loads(line) for line in _events(capsule).splitlines()]
    (timed_out,) = [e for e in events if e["kind"] == "session.timed_out"]
    # python and the subshell's sleep, exactly: strace's spool relay is not the command's (it was counted)
    assert timed_out["terminated"] == 2, timed_out
    assert (timed_out["limit_s"], timed_out["grace_s"]) == (3.0, 2.0)
    assert capsule("replay", "--check").returncode == 0
    assert re.search(r"^status +complete · timed out after 3\.00 s · SIG", capsule("report").stdout, re.M)
    # `ls` reads only the session's ends, where session.ended says it timed out (session.timed_out may be
    # far above): it is not shown as an ordinary SIGKILL
    (row,) = orjson.loads(capsule("ls", "--json").stdout)
    assert (row["timed_out_s"], row["status"]) == (3.0, "complete")
    assert re.search(r" timed out \(SIG(KILL|TERM)\) +complete$", capsule("ls").stdout, re.M)


def test_a_command_that_exits_0_on_sigterm_still_timed_out(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """A command that traps SIGTERM and exits 0 when --timeout stops it: capsule exits 124, not 0; the
    session keeps the exit 0 it made, and says it timed out."""
    ready = tmp_path / "ready"
    script = f"trap 'exit 0' TERM; touch {ready}; while :; do sleep 0.05; done"
    done = capsule("run", "--timeout", "3s", "--", "sh", "-c", script, timeout=120)
    assert ready.exists()
    assert done.returncode == 124, done.stderr
    assert "timed out after 3s · exit 0" in done.stderr
    (row,) = orjson.loads(capsule("ls", "--json").stdout)
    assert (row["exit_code"], row["timed_out_s"]) == (0, 3.0)


def test_timeout_must_be_a_duration(capsule: CapsuleRunner) -> None:
    """A bad --timeout is a usage error in one line."""
    done = capsule("run", "--timeout", "soon", "--", "true")
    assert done.returncode == 2
    assert "--timeout" in _one_error_line(done)


def _events(capsule: CapsuleRunner) -> str:
    done = capsule("export", "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    return done.stdout
