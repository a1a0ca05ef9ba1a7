"""Access and the spool: an unsafe $CAPSULE_HOME is refused, planted symlinks are never followed, what
Capsule writes is 0600, and the spool of a live recording never holds a secret in clear."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from capsule.stages.store import open_private, private_output
from tests.conftest import CapsuleRunner, report_json
from tests.e2e.test_run import _wait_for

NOBODY = 65534


def _start(capsule_home: Path, *args: str) -> subprocess.Popen[bytes]:
    """`capsule ARGS` in the background, its stderr kept for the assertion message."""
    env = {**os.environ, "CAPSULE_HOME": str(capsule_home), "NO_COLOR": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "capsule", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("capsule: error: "), done.stderr
    return lines[0]


@pytest.mark.parametrize("command", [("ls",), ("run", "--", "true"), ("report",), ("env", "ls")])
def test_home_owned_by_another_user_is_refused(
    capsule: CapsuleRunner, capsule_home: Path, command: tuple[str, ...]
) -> None:
    """A home that another user owns: every command refuses with one line and exit 5, runs nothing."""
    capsule_home.mkdir(mode=0o700)
    os.chown(capsule_home, NOBODY, NOBODY)
    done = capsule(*command)
    assert done.returncode == 5, done.stderr
    assert "owned by uid 65534" in _one_error_line(done)
    assert not (capsule_home / "runs").exists()


def test_group_or_world_writable_home_or_folder_is_refused(
    capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """Group- or world-writable: the home itself, or its runs/ folder."""
    capsule_home.mkdir(mode=0o700)
    os.chmod(capsule_home, 0o770)  # noqa: S103 (the unsafe home under test)
    done = capsule("run", "--", "true")
    assert done.returncode == 5
    assert "writable by group or others (mode 770)" in _one_error_line(done)
    os.chmod(capsule_home, 0o700)
    (capsule_home / "runs").mkdir(mode=0o700)
    os.chmod(capsule_home / "runs", 0o777)  # noqa: S103 (likewise)
    done = capsule("ls")
    assert done.returncode == 5
    assert "runs is writable by group or others" in _one_error_line(done)


def test_doctor_says_the_home_is_unsafe(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """`capsule doctor` runs and reports the unsafe home as a failed check (exit 5)."""
    capsule_home.mkdir(mode=0o700)
    os.chown(capsule_home, NOBODY, NOBODY)
    done = capsule("doctor", "--json")
    assert done.returncode == 5
    checks = {c["check"]: c for c in orjson.loads(done.stdout)["checks"]}
    assert not checks["$CAPSULE_HOME"]["ok"]
    assert "owned by uid 65534" in checks["$CAPSULE_HOME"]["detail"]


def test_open_private_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    """A symlink where Capsule writes: refused (ELOOP), its target neither truncated nor appended to."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    link = tmp_path / "events.jsonl"
    link.symlink_to(victim)
    for kwargs in ({"append": True}, {"append": False}, {"new": True}):
        with pytest.raises(OSError, match=r"Too many levels of symbolic links|File exists") as caught:
            open_private(link, **kwargs)  # type: ignore[arg-type]
        assert caught.value.errno in (errno.ELOOP, errno.EEXIST)
    assert victim.read_bytes() == b"precious"
    fresh = tmp_path / "fresh"
    os.close(open_private(fresh, new=True))
    with pytest.raises(FileExistsError):
        open_private(fresh, new=True)


def test_outputs_replace_a_planted_symlink_and_are_0600(
    capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path
) -> None:
    """`export -o` and `report --html` onto a planted symlink: the link is replaced, its target untouched,
    and the file written is 0600 whatever the umask."""
    assert capsule("run", "--", "true").returncode == 0
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    for fmt in ("perfetto", "otlp", "jsonl"):
        out = tmp_path / f"out.{fmt}"
        out.symlink_to(victim)
        done = capsule("export", "-f", fmt, "-o", str(out))
        assert done.returncode == 0, done.stderr
        assert not out.is_symlink()
        assert stat.S_IMODE(out.stat().st_mode) == 0o600, fmt
    html = tmp_path / "report.html"
    html.symlink_to(victim)
    done = capsule("report", "--html", str(html))
    assert done.returncode == 0, done.stderr
    assert not html.is_symlink()
    assert stat.S_IMODE(html.stat().st_mode) == 0o600
    assert victim.read_bytes() == b"precious"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_private_output_leaves_nothing_when_writing_fails(tmp_path: Path) -> None:
    """An output whose writer fails leaves neither a partial file nor its temporary."""
    target = tmp_path / "out.json"

    def write_half() -> None:
        with private_output(target) as out:
            out.write(b"half")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_half()
    assert list(tmp_path.iterdir()) == []


def test_the_live_spool_never_holds_a_secret(capsule_home: Path, tmp_path: Path) -> None:
    """While the command runs, the spool already holds the redacted trace (strace writes through the
    redacting relay); the relay's descriptor is not leaked into the command."""
    ready, go, fds = tmp_path / "ready", tmp_path / "go", tmp_path / "fds"
    secret = "planted-live-spool-secret"  # noqa: S105 (planted)
    script = (
        f"/bin/echo --token={secret} >/dev/null; ls /proc/self/fd > {fds}; touch {ready};"
        f" while [ ! -e {go} ]; do sleep 0.02; done"
    )
    proc = _start(capsule_home, "run", "--", "sh", "-c", script)
    try:
        _wait_for(ready.exists)
        (spool,) = (capsule_home / "spool").glob("*.strace")
        (fifo,) = (capsule_home / "spool").glob("*.fifo")  # what strace writes, the relay reads
        assert stat.S_ISFIFO(fifo.stat().st_mode)
        assert stat.S_IMODE(fifo.stat().st_mode) == 0o600
        _wait_for(lambda: b"/bin/echo" in spool.read_bytes() and b"/bin/ls" in spool.read_bytes())
        data = spool.read_bytes()
        assert secret.encode() not in data
        assert b"--token=***" in data
        assert stat.S_IMODE(spool.stat().st_mode) == 0o600
        assert sorted(fds.read_text().split()) == ["0", "1", "2", "3"]  # 3: ls's own listing
    finally:
        go.touch()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert list((capsule_home / "spool").iterdir()) == []


def test_sigkilled_recorder_spool_is_redacted_and_recovered_by_any_command(
    capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path
) -> None:
    """Capsule SIGKILLed: strace and its relay go on writing the redacted spool; the next command of any
    kind (`capsule ls`) recovers the session from it and removes it."""
    marker = tmp_path / "marker"
    secret = "planted-after-kill-secret"  # noqa: S105 (planted)
    env = {**os.environ, "CAPSULE_HOME": str(capsule_home), "NO_COLOR": "1"}
    script = f"echo ready; sleep 0.5; /bin/echo --password={secret} >/dev/null; touch {marker}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "capsule", "run", "--", "sh", "-c", script],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    _wait_for(marker.exists)
    (spool,) = (capsule_home / "spool").glob("*.strace")
    _wait_for(lambda: b"+++ exited with 0 +++" in spool.read_bytes().splitlines()[-1])
    assert secret.encode() not in spool.read_bytes()
    # the relay exits with strace; `ls` then finds the spool orphaned
    _wait_for(lambda: capsule("ls").returncode == 0 and not spool.exists())
    assert list((capsule_home / "spool").iterdir()) == []  # the relay's FIFO too
    everything = b"".join(p.read_bytes() for p in capsule_home.rglob("*") if p.is_file())
    assert secret.encode() not in everything
    report = report_json(capsule)
    assert report["session"]["status"] == "recovered"
    assert any(p["exe"] and p["exe"].endswith("/echo") for p in report["processes"])


def test_an_orphaned_clear_spool_is_redacted_on_the_next_command(
    capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """A spool left in clear (an older capsule, a recorder killed before the relay) is recovered into its
    session, redacted, by the next command; a spool with no session is removed."""
    assert capsule("run", "--", "true").returncode == 0
    (session,) = (capsule_home / "runs").iterdir()
    events = (session / "events.jsonl").read_bytes().splitlines(keepends=True)
    header = orjson.loads(events[0])
    header["recorder_pid"], header["recorder_started"] = 1, 1.0  # a recorder long gone
    (session / "events.jsonl").write_bytes(orjson.dumps(header) + b"\n")
    secret = "planted-orphan-spool-secret"  # noqa: S105 (planted)
    trace = (session / "trace.strace").read_bytes()
    pid = trace.split(b" ", 1)[0]
    clear = trace.replace(
        b"+++ exited with 0 +++",
        b"+++ exited with 0 +++\n"
        + pid
        + b' 1.0 execve("/bin/echo", ["echo", "--token='
        + secret.encode()
        + b'"], 0x1 /* 1 vars */) = 0',
        1,
    )
    spool = capsule_home / "spool" / f"{session.name}.strace"
    spool.write_bytes(clear)
    stray = capsule_home / "spool" / "20000101-000000-000aa.strace"
    stray.write_bytes(b'1 1.0 execve("/bin/x", ["x", "--token=' + secret.encode() + b'"], 0x1) = 0\n')
    done = capsule("ls", "--json")
    assert done.returncode == 0, done.stderr
    assert not spool.exists()
    assert not stray.exists()
    everything = b"".join(p.read_bytes() for p in capsule_home.rglob("*") if p.is_file())
    assert secret.encode() not in everything
    assert b"--token=***" in (session / "trace.strace").read_bytes()


def test_a_claimed_spool_is_left_to_its_recorder(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """A recorder that has created its spool but not yet its session's header (traced services starting
    together) holds it: another command's tidying leaves it; once the claim is let go it is tidied."""
    from capsule.stages.spools import claim_spool

    capsule_home.mkdir(mode=0o700, exist_ok=True)
    (capsule_home / "spool").mkdir(mode=0o700)
    (capsule_home / "runs" / "20000101-000000-000bb").mkdir(parents=True, mode=0o700)  # no header yet
    spool = capsule_home / "spool" / "20000101-000000-000bb.strace"
    claim = claim_spool(spool)
    try:
        done = capsule("ls", "--json")
        assert done.returncode == 0, done.stderr
        assert spool.exists()
    finally:
        os.close(claim)
    assert capsule("ls", "--json").returncode == 0
    assert not spool.exists()


def test_the_live_spool_of_a_traced_task_never_holds_a_secret(capsule_home: Path, tmp_path: Path) -> None:
    """`capsule agents` with `trace = true`: the task's spool goes through the same relay."""
    ready, go = tmp_path / "ready", tmp_path / "go"
    secret = "planted-task-spool-secret"  # noqa: S105 (planted)
    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[run]\nname = "spool"\ntrace = true\n[[task]]\nid = "t"\n'
        f'command = "/bin/echo --token={secret} >/dev/null; touch {ready}; '
        f'while [ ! -e {go} ]; do sleep 0.02; done"\n'
    )
    proc = _start(capsule_home, "agents", "run", str(plan))
    try:
        _wait_for(ready.exists)
        (spool,) = (capsule_home / "spool").glob("*.strace")
        _wait_for(lambda: b"/bin/echo" in spool.read_bytes())
        assert secret.encode() not in spool.read_bytes()
        assert b"--token=***" in spool.read_bytes()
    finally:
        go.touch()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_a_spool_that_cannot_be_recovered_is_redacted_and_never_stops_a_command(
    capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """Recovery fails (a header naming an unknown trace level): the command still runs, with one
    warning line, and the spool left behind is redacted."""
    assert capsule("run", "--", "true").returncode == 0
    (session,) = (capsule_home / "runs").iterdir()
    header = orjson.loads((session / "events.jsonl").read_bytes().splitlines()[0])
    header["recorder_pid"], header["recorder_started"], header["trace_level"] = 1, 1.0, "bogus"
    (session / "events.jsonl").write_bytes(orjson.dumps(header) + b"\n")
    secret = b"planted-unrecoverable-secret"
    spool = capsule_home / "spool" / f"{session.name}.strace"
    spool.write_bytes(b'1 1.0 execve("/bin/x", ["x", "--token=' + secret + b'"], 0x1 /* 1 vars */) = 0\n')
    done = capsule("ls")
    assert done.returncode == 0, done.stderr
    assert "could not be recovered" in done.stderr
    assert secret not in spool.read_bytes()
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600
