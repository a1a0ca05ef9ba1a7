"""Recordings broken from outside (issue 11): Capsule and strace both killed; a start killed at once."""

from __future__ import annotations

import contextlib
import re
import signal
from pathlib import Path

import orjson
import psutil
import pytest

from tests.conftest import CapsuleRunner, report_json
from tests.e2e.test_run import _start_in_own_group, _wait_for

pytestmark = pytest.mark.strace


def test_capsule_and_strace_killed_report_says_recording_stopped_early(
    capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path
) -> None:
    """Both killed mid-run: the report is `recovered` and says the recording stopped before the command
    ended, with how many processes have no recorded exit; nothing pretends the tree is whole."""
    proc = _start_in_own_group(capsule_home, "sh", "-c", "echo ready; /bin/true; exec sleep 60")
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    recorder = psutil.Process(proc.pid)
    (strace,) = [c for c in recorder.children() if c.name() == "strace"]
    command = strace.children(recursive=True)
    spool = next((capsule_home / "spool").glob("*.strace"))
    # The exec of sleep, whole: strace writes a call's arguments on entry and ` = 0` on return, so a kill
    # between the two would leave it cut (and rightly unrecorded as an exec).
    _wait_for(lambda: re.search(rb'\["sleep", "60"\].*\) += 0\n', spool.read_bytes()) is not None)
    try:
        recorder.kill()
        strace.kill()
        proc.communicate()
        strace.wait(10)
        report = report_json(capsule)
    finally:
        for child in command:
            with contextlib.suppress(psutil.Error):
                child.send_signal(signal.SIGKILL)
    assert report["session"]["status"] == "recovered"
    (warning,) = [w for w in report["warnings"] if w.startswith("recording stopped before the command ended")]
    assert "1 process has no recorded exit" in warning
    sleeper = next(p for p in report["processes"] if p["argv"] and p["argv"][0] == "sleep")
    assert (sleeper["end"], sleeper["exit_code"], sleeper["signal"]) == (None, None, None)
    true = next(p for p in report["processes"] if p["argv"] == ["/bin/true"])
    assert true["exit_code"] == 0


def test_a_start_killed_at_once_leaves_no_session(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """A `capsule run` killed between creating its directory and writing its header leaves nothing `ls`
    shows, and `report` (latest) still reports the last real session."""
    done = capsule("run", "--name", "real", "--", "true")
    assert done.returncode == 0, done.stderr
    runs = capsule_home / "runs"
    (real,) = runs.iterdir()
    # What create_session and the writer leave before the header line is written, newer than `real`.
    (runs / "29991231-235959-999ff").mkdir(mode=0o700)
    (runs / "29991231-235959-999fe").mkdir(mode=0o700)
    (runs / "29991231-235959-999fe" / "events.jsonl").touch(mode=0o600)
    listed = report_json(capsule, "latest")
    assert listed["session"]["id"] == real.name
    done = capsule("ls", "--json")
    assert done.returncode == 0, done.stderr
    assert [row["id"] for row in orjson.loads(done.stdout)] == [real.name]
