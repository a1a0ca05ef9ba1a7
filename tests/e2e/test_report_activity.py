"""What the agent did, end to end through `capsule run` under real strace: every command of a shell's
command line, answers that are not failures, files and network at --level all, sampled memory, names
and live sessions."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CapsuleRunner, report_json

pytestmark = pytest.mark.strace

CHAIN = "grep -q no-such-text /etc/hostname; /bin/ls / >/dev/null && /bin/sh -c 'exit 3'; exec /bin/cat /etc/hostname"


def test_a_bash_chain_shows_every_command_and_counts_only_real_failures(capsule: CapsuleRunner) -> None:
    """bash -c 'A; B && C; exec D': A, B, C and D in the default tree with their exits; grep's 1 is an
    answer, sh's 3 a failure: one failure in the run's summary, the report and the failures list."""
    done = capsule("run", "--", "bash", "-c", CHAIN)
    assert done.returncode == 0, done.stderr
    assert "1 failed" in done.stderr
    text = capsule("report").stdout
    tree = text.split("processes by label")[0]
    assert "→ exec cat /etc/hostname" in tree
    assert "grep -q no-such-text /etc/hostname" in tree
    assert "exit 1 (an answer)" in tree
    assert "ls /" in tree
    assert "sh -c 'exit 3'" in tree
    assert "exit 3" in tree
    failures = text.split("failures")[1].split("\n\n")[0]
    assert "exit 3" in failures
    assert "grep" not in failures
    report = report_json(capsule)
    assert (report["summary"]["failed"], report["summary"]["answered"]) == (1, 1)
    by_exe = {Path(p["exe"]).name: p for p in report["processes"] if p["exe"]}
    assert by_exe["grep"]["failure"] is False
    assert by_exe["grep"]["exit_code"] == 1
    assert by_exe["sh"]["failure"] is True


@pytest.fixture
def server() -> socket.socket:
    """A loopback TCP server the recorded command connects to (connect completes on the backlog)."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        yield srv


def test_level_all_reports_files_changed_and_network(
    capsule: CapsuleRunner, tmp_path: Path, server: socket.socket
) -> None:
    """Creates, writes, renames and deletes under a cd, and a connect to the test's server: JSON files and
    network with absolute paths and pids, and the text sections."""
    port = server.getsockname()[1]
    work = tmp_path / "work"
    work.mkdir()
    script = (
        "mkdir sub && cd sub && echo a > draft.txt && echo b >> draft.txt && mv draft.txt final.txt"
        f" && cat final.txt >/dev/null && rm final.txt && exec 3<>/dev/tcp/127.0.0.1/{port}"
    )
    done = capsule("run", "--level", "all", "--", "bash", "-c", script, cwd=work)
    assert done.returncode == 0, done.stderr
    report = report_json(capsule)
    files = {f["path"]: f for f in report["files"]}
    sub = work / "sub"
    assert "create" in files[str(sub)]["ops"]
    draft = files[str(sub / "draft.txt")]
    assert {"create", "write", "rename"} <= set(draft["ops"])
    assert draft["renamed_to"] == str(sub / "final.txt")
    final = files[str(sub / "final.txt")]
    assert {"read", "delete"} <= set(final["ops"])
    pids = {p["pid"]: p for p in report["processes"]}
    assert any(Path(pids[pid]["exe"]).name == "rm" for pid in final["pids"])
    (peer,) = [n for n in report["network"] if n["port"] == port]
    assert (peer["family"], peer["address"], peer["op"], peer["ok"]) == ("inet", "127.0.0.1", "connect", True)
    # at least this connect (where nscd runs, glibc's lookups also connect to its socket first)
    assert pids[peer["pids"][0]]["network"]["connect"] >= 1
    assert capsule("replay", "--check").returncode == 0  # the cwd is followed from the trace alone
    text = capsule("report").stdout
    assert "files changed" in text
    assert "draft.txt" in text
    assert "rename" in text
    assert "files read" in text
    assert f"127.0.0.1:{port}" in text


def test_a_200_mib_allocation_is_sampled(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """A process holding 200 MiB shows >= 150 MiB peak_rss. It waits, on the session itself, until the
    sampler has seen it that big, then exits: no sleeps in the test, no race with the sampler."""
    program = f"""
import glob, json, os, time
data = b"x" * (200 << 20)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    for path in glob.glob({str(capsule_home / "runs" / "*" / "events.jsonl")!r}):
        for line in open(path):
            event = json.loads(line)
            if event["kind"] == "proc.sampled" and event["pid"] == os.getpid() and event["rss_bytes"] >= 150 << 20:
                raise SystemExit(0)
    time.sleep(0.05)
raise SystemExit("never sampled")
"""
    done = capsule("run", "--sample", "0.1", "--", sys.executable, "-I", "-S", "-c", program)
    assert done.returncode == 0, done.stderr
    report = report_json(capsule)
    python = next(p for p in report["processes"] if p["peak_rss"])
    assert python["peak_rss"] >= 150 << 20
    assert python["cpu_s"] is not None
    assert report["summary"]["resources"]["peak_rss"] >= 150 << 20


def test_sample_zero_turns_the_sampler_off(capsule: CapsuleRunner) -> None:
    """--sample 0: no proc.sampled events, no resources; a negative interval is a usage error."""
    assert capsule("run", "--sample", "0", "--", sys.executable, "-I", "-S", "-c", "pass").returncode == 0
    assert report_json(capsule)["summary"]["resources"]["sampled"] == 0
    bad = capsule("run", "--sample", "-1", "--", "true")
    assert bad.returncode == 2
    assert bad.stderr.startswith("capsule: error: --sample")


def test_a_session_is_found_by_its_name(capsule: CapsuleRunner) -> None:
    """`capsule report NAME` is the newest session of that name; ids still win; ls shows names."""
    assert capsule("run", "--name", "build-a", "--", "true").returncode == 0
    first = report_json(capsule)["session"]["id"]
    assert capsule("run", "--name", "other", "--", "true").returncode == 0
    assert report_json(capsule, "build-a")["session"]["id"] == first
    assert capsule("run", "--name", "build-a", "--", "/bin/echo").returncode == 0
    newest = report_json(capsule)["session"]["id"]
    assert report_json(capsule, "build-a")["session"]["id"] == newest
    assert report_json(capsule, first)["session"]["id"] == first
    ls = capsule("ls").stdout
    assert "build-a" in ls
    assert "other" in ls
    missing = capsule("report", "no-such-name")
    assert missing.returncode == 3


def test_a_live_run_reports_running(capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path) -> None:
    """While the command runs, its report says running (not incomplete) and recovers nothing."""
    stop = tmp_path / "stop"
    started = tmp_path / "started"
    env_cmd = [
        sys.executable,
        "-m",
        "capsule",
        "run",
        "--",
        "sh",
        "-c",
        f"touch {started}; while [ ! -e {stop} ]; do sleep 0.02; done",
    ]
    proc = subprocess.Popen(
        env_cmd,
        env={**os.environ, "CAPSULE_HOME": str(capsule_home), "NO_COLOR": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert time.monotonic() < deadline
            assert proc.poll() is None
            time.sleep(0.02)
        report = report_json(capsule)
        assert report["session"]["status"] == "running"
        assert not any("recovered" in w for w in report["warnings"])
        assert "running" in capsule("report").stdout
    finally:
        stop.touch()
        proc.wait(timeout=60)
    assert report_json(capsule)["session"]["status"] == "complete"
