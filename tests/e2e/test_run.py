"""`capsule run` end to end, under real strace: exit codes, signals, Ctrl-C, SIGKILL, stdin, redaction."""

from __future__ import annotations

import os
import pty
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.conftest import CapsuleRunner, report_json

pytestmark = pytest.mark.strace


def _by_exe(report: dict) -> dict[str, dict]:
    return {Path(p["exe"]).name: p for p in report["processes"] if p["exe"]}


def test_exit_code_is_the_commands(capsule: CapsuleRunner) -> None:
    """capsule exits with the command's exit code and records it."""
    done = capsule("run", "--", "sh", "-c", "exit 3")
    assert done.returncode == 3
    report = report_json(capsule)
    assert report["session"]["exit_code"] == 3
    assert report["session"]["status"] == "complete"
    assert report["processes"][0]["exit_code"] == 3


@pytest.mark.parametrize("policy", [False, True], ids=["plain", "guarded"])
def test_the_header_is_the_first_line_and_the_only_one(
    capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path, policy: bool
) -> None:
    """One session.started, first, numbered 0 — whether strace was started early (no policy) or by the
    recorder — and the report has no warning about it."""
    args = ["run"]
    if policy:
        (tmp_path / "p.toml").write_text('[policy]\ndeny_commands = ["sudo *"]\n')
        args += ["--policy", str(tmp_path / "p.toml")]
    assert capsule(*args, "--", "sh", "-c", "true").returncode == 0
    (events,) = (capsule_home / "runs").glob("*/events.jsonl")
    lines = [orjson.loads(line) for line in events.read_bytes().splitlines()]
    assert [line["kind"] for line in lines].count("session.started") == 1
    assert lines[0]["kind"] == "session.started"
    assert [line["seq"] for line in lines] == list(range(len(lines)))
    assert report_json(capsule)["warnings"] == []


def test_signal_exit_is_128_plus_n(capsule: CapsuleRunner) -> None:
    """A command killed by signal N makes capsule exit 128+N and records the signal name."""
    done = capsule("run", "--", "sh", "-c", "kill -KILL $$")
    assert done.returncode == 128 + 9
    report = report_json(capsule)
    assert report["session"]["signal"] == "SIGKILL"
    assert report["processes"][0]["signal"] == "SIGKILL"
    assert report["summary"]["signaled"] >= 1


def test_stdout_belongs_to_the_command_and_summary_goes_to_stderr(
    capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """stdout carries only the command's output; the summary (id, processes, where it is) is on stderr."""
    done = capsule("run", "--", "sh", "-c", "echo hello; /bin/true")
    assert done.returncode == 0
    assert done.stdout == "hello\n"
    (session,) = (capsule_home / "runs").iterdir()
    assert f"session {session.name} · 2 processes" in done.stderr
    assert str(session) in done.stderr


def test_every_process_appears_once_with_parent_and_argv(capsule: CapsuleRunner) -> None:
    """A shell running three children: four processes, right parents, final argv, exit codes."""
    script = "/bin/echo one >/dev/null; /bin/ls / >/dev/null; /bin/sh -c 'exit 4'; exit 0"
    assert capsule("run", "--", "sh", "-c", script).returncode == 0
    report = report_json(capsule)
    procs = report["processes"]
    root = procs[0]
    assert root["ppid"] is None
    assert root["argv"] == ["sh", "-c", script]
    children = [p for p in procs if p["ppid"] == root["pid"]]
    assert sorted(p["argv"][0] for p in children) == ["/bin/echo", "/bin/ls", "/bin/sh"]
    failing = next(p for p in children if p["argv"][0] == "/bin/sh")
    assert failing["exit_code"] == 4
    assert len({p["pid"] for p in procs}) == len(procs)


def test_a_background_child_of_a_parent_that_exits_at_once_runs_and_is_recorded(
    capsule: CapsuleRunner, tmp_path: Path
) -> None:
    """`sh -c 'job &'`: the shell exits before strace has seen its child's first stop. strace with a pipe
    to a child logger (`-o '|CMD'`) then exits and drops the child, which ran on untraced under strace's
    seccomp filter: its exec failed with ENOSYS ("Function not implemented"), it crashed with SIGSEGV at
    exit, and the record lost it. The relay reads a FIFO instead, so strace waits for the child."""
    marker = tmp_path / "marker"
    done = capsule("run", "--", "sh", "-c", f"sh -c 'sleep 0.2; /bin/echo late > {marker}' & echo started")
    assert done.returncode == 0, done.stderr
    assert "not implemented" not in done.stderr
    assert marker.read_text() == "late\n"  # capsule run ended after the child had
    report = report_json(capsule)
    argvs = {tuple(p["argv"] or ()): p for p in report["processes"]}
    assert argvs[("/bin/echo", "late")]["exit_code"] == 0
    assert argvs[("sleep", "0.2")]["exit_code"] == 0
    assert report["summary"]["failed"] == 0


def test_missing_command_exits_127_and_is_recorded(capsule: CapsuleRunner) -> None:
    """A command that does not exist: one error line, exit 127, and a session that records the attempt."""
    done = capsule("run", "--", "no-such-command-xyz", "--flag")
    assert done.returncode == 127
    assert "Traceback" not in done.stderr
    assert "command not found: no-such-command-xyz" in done.stderr
    assert " · not started · " in done.stderr  # not "0 processes, 1 failed"
    report = report_json(capsule)
    assert report["session"]["exit_code"] == 127
    assert report["processes"] == []
    assert any("no-such-command-xyz" in w for w in report["warnings"])
    text = capsule("report").stdout
    assert "not started: command not found" in text
    assert "processes by label" not in text  # no empty table


def test_a_script_without_shebang_exits_126_with_a_hint(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """An executable text file without `#!` (a shell runs it, strace cannot): one line saying how to run
    it, exit 126 as for any command that cannot execute, and the attempt recorded (ENOEXEC)."""
    script = tmp_path / "no-shebang"
    script.write_text("echo hi\n")
    script.chmod(0o755)
    done = capsule("run", "--", str(script))
    assert done.returncode == 126
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("capsule: error:")]
    assert (
        line == f"capsule: error: cannot execute: {script} (no #! line: run it as `sh {script}`, or add one)"
    )
    assert "Exec format error" not in done.stderr  # strace's own message: it never started
    report = report_json(capsule)
    assert report["session"]["exit_code"] == 126
    assert report["spawn_failures"][0]["errno"] == "ENOEXEC"
    script.write_text("#!/bin/sh\necho hi\n")  # with its line, the same file runs
    assert capsule("run", "--", str(script)).returncode == 0


def test_report_to_a_pipe_has_no_padded_lines(capsule: CapsuleRunner) -> None:
    """rich pads each cell to its column: sent to a pipe, the report's lines end without spaces."""
    assert (
        capsule("run", "--", "sh", "-c", "/bin/true one two three four five six seven; exit 3").returncode
        == 3
    )
    for args in (["report"], ["report", "--full"], ["ls"]):
        text = capsule(*args).stdout
        assert "exit 3" in text
        assert [line for line in text.splitlines() if line.endswith(" ")] == [], args


def test_a_pipeline_member_its_reader_left_did_not_fail(capsule: CapsuleRunner) -> None:
    """`yes | head -1`, what agents type all day (`grep -r x . | head -20`): `yes` dies of SIGPIPE once
    head has what it wanted; that is the pipeline working, not a failure (was: 1 failed)."""
    done = capsule("run", "--", "sh", "-c", "yes | head -1; seq 1 100000 | head -2")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "y\n1\n2\n"
    assert re.search(r"· 5 processes · [\d.]+s · exit 0$", done.stderr, re.M), done.stderr
    report = report_json(capsule)
    assert report["summary"]["failed"] == 0
    piped = [p for p in report["processes"] if p["signal"] == "SIGPIPE"]
    assert sorted(p["argv"][0] for p in piped) == ["seq", "yes"]
    assert not any(p["failure"] for p in piped)
    text = capsule("report").stdout
    assert "SIGPIPE (reader closed)" in text
    assert "failures" not in text
    (row,) = orjson.loads(capsule("ls", "--json").stdout)
    assert row["failed"] == 0


def test_stdin_passes_through(capsule: CapsuleRunner) -> None:
    """A program reading stdin gets capsule's stdin untouched."""
    done = capsule("run", "--", sys.executable, "-c", "print(input().upper())", input="hello\n")
    assert done.returncode == 0
    assert done.stdout == "HELLO\n"


def test_interactive_terminal_passes_through(capsule_home: Path) -> None:
    """On a terminal, the command sees a TTY and can read what is typed."""
    code = "import sys; print('tty', sys.stdin.isatty(), flush=True); print('got', input(), flush=True)"
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes `capsule run` on the pty
        os.environ["CAPSULE_HOME"] = str(capsule_home)
        os.execv(sys.executable, [sys.executable, "-m", "capsule", "run", "--", sys.executable, "-c", code])  # noqa: S606
    output = b""
    deadline = time.monotonic() + 60
    sent = False
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        if b"tty True" in output and not sent:
            os.write(fd, b"typed-line\n")
            sent = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert b"tty True" in output
    assert b"got typed-line" in output
    assert os.waitstatus_to_exitcode(status) == 0


def _start_in_own_group(capsule_home: Path, *cmd: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CAPSULE_HOME": str(capsule_home), "NO_COLOR": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "capsule", "run", "--", *cmd],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def test_ctrl_c_reaches_the_command_and_the_session_closes(
    capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """SIGINT to the foreground group (Ctrl-C) stops the command; capsule drains, closes and exits 130."""
    code = "import time; print('ready', flush=True); time.sleep(60)"
    proc = _start_in_own_group(capsule_home, sys.executable, "-c", code)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    report = report_json(capsule)
    assert report["session"]["status"] == "complete"
    assert report["session"]["signal"] == "SIGINT"


def test_sigkill_of_capsule_leaves_the_command_unharmed_and_report_recovers(
    capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path
) -> None:
    """Capsule SIGKILLed mid-run: the command goes on (forking and exec'ing); report recovers every process."""
    marker = tmp_path / "marker"
    script = f"echo ready; sleep 1; /bin/true; /bin/echo after >/dev/null; touch {marker}"
    proc = _start_in_own_group(capsule_home, "sh", "-c", script)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.kill()
    proc.communicate()
    _wait_for(marker.exists)
    # strace writes the last exit lines and exits: until then the session reads as incomplete
    _wait_for(lambda: report_json(capsule)["session"]["status"] not in ("incomplete", "running"))
    report = report_json(capsule)
    assert report["session"]["status"] == "recovered"
    names = _by_exe(report)
    for exe in ("sh", "sleep", "true", "echo", "touch"):
        assert exe in names, names.keys()
        assert names[exe]["exit_code"] == 0
    assert any("recovered" in w for w in report["warnings"])
    again = report_json(capsule)  # recovery happens once; later reports read the completed session
    assert again["processes"] == report["processes"]
    assert not list((capsule_home / "spool").iterdir())


SECRETS = {
    "sk-ant-api03-AAAABBBBCCCCDDDDEEEEFFFF": "sk-ant-api03-AAAABBBBCCCCDDDDEEEEFFFF",
    "--token=": "tok-value-123456",
    "--password": "hunter2-secret",
    "Authorization: Bearer ": "bearer-value-987654",
    "GITHUB_TOKEN=": "ghp_abcdefghijklmnopqrstuvwxyz0123",
}


def _secret_argv() -> list[str]:
    return [
        "sh",
        "-c",
        '/bin/echo "$@" >/dev/null; env GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123 /bin/true',
        "sh",
        "sk-ant-api03-AAAABBBBCCCCDDDDEEEEFFFF",
        "--token=tok-value-123456",
        "--password",
        "hunter2-secret",
        "Authorization: Bearer bearer-value-987654",
    ]


def _session_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (home / "runs").rglob("*") if p.is_file())


def test_secrets_appear_nowhere_under_the_session(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """Planted secrets in any argv are redacted in events and in the raw trace; nothing is left in spool."""
    done = capsule("run", "--", *_secret_argv())
    assert done.returncode == 0, done.stderr
    stored = _session_bytes(capsule_home) + b"".join(
        p.read_bytes() for p in (capsule_home / "spool").rglob("*") if p.is_file()
    )
    for secret in SECRETS.values():
        assert secret.encode() not in stored, secret
        assert secret not in done.stderr
    assert b"***" in stored
    report = report_json(capsule)
    assert any(p["exe"] and p["exe"].endswith("/true") for p in report["processes"])


def test_no_redact_keeps_the_values(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """--no-redact opts out: the values are recorded as they were."""
    assert capsule("run", "--no-redact", "--", *_secret_argv()).returncode == 0
    stored = _session_bytes(capsule_home)
    assert b"hunter2-secret" in stored
    assert b"tok-value-123456" in stored


def test_session_files_are_private(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """Session directories are 0700 and files 0600."""
    assert capsule("run", "--", "true").returncode == 0
    (session,) = (capsule_home / "runs").iterdir()
    assert stat.S_IMODE(session.stat().st_mode) == 0o700
    files = list(session.iterdir())
    assert {f.name for f in files} >= {"events.jsonl", "trace.strace"}
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_header_records_tracer_flags(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """The header carries the exact strace flags: seccomp-bpf, -f, never -qq."""
    assert capsule("run", "--level", "file", "--name", "flags", "--", "true").returncode == 0
    (session,) = (capsule_home / "runs").iterdir()
    header = orjson.loads((session / "events.jsonl").read_bytes().split(b"\n")[0])
    assert header["kind"] == "session.started"
    assert "--seccomp-bpf" in header["tracer_flags"]
    assert "-f" in header["tracer_flags"]
    assert "-qq" not in header["tracer_flags"]
    assert any(f.startswith("trace=%process,%file") for f in header["tracer_flags"])
    assert "-y" in header["tracer_flags"]  # descriptors with their paths: absolute file paths
    assert header["name"] == "flags"


def test_no_recovery_while_strace_still_writes(
    capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path
) -> None:
    """Capsule killed, its command still running: report says running (strace holds the spool) and
    recovers everything only once the command has finished."""
    marker = tmp_path / "marker"
    go = tmp_path / "go"
    proc = _start_in_own_group(
        capsule_home,
        "sh",
        "-c",
        f"echo ready; while [ ! -e {go} ]; do sleep 0.02; done; /bin/true; touch {marker}",
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        proc.kill()
        proc.wait()  # not communicate(): the command, still running, holds the pipes open
        proc.stdout.close()
        assert proc.stderr is not None
        proc.stderr.close()
        early = report_json(capsule)
        assert early["session"]["status"] == "running"
        assert not any("recovered" in w for w in early["warnings"])
        go.touch()
        _wait_for(marker.exists)
        _wait_for(lambda: report_json(capsule)["session"]["status"] not in ("incomplete", "running"))
        late = report_json(capsule)
        assert late["session"]["status"] == "recovered"
        assert {"sh", "sleep", "true", "touch"} <= set(_by_exe(late))
    finally:
        go.touch()  # whatever failed, the command ends: no strace and loop are left behind


def test_sigterm_before_the_recorder_listens_reaches_the_command(tmp_path: Path) -> None:
    """`capsule run` starts strace before trio loads (stages/launch.py): a SIGTERM to Capsule in that
    window is kept, then relayed to the command once the recorder listens, as it would be later."""
    ready = tmp_path / "ready"
    script = (
        "import os, signal, sys, time\n"
        "from capsule.api import sessions\n"
        f"ready = {str(ready)!r}\n"
        "cmd = ['sh', '-c', f'touch {ready}; exec sleep 60']\n"
        "launched = sessions.launch(cmd)\n"
        "assert launched.early is not None\n"
        "while not os.path.exists(ready):\n"
        "    time.sleep(0.01)\n"
        "os.kill(os.getpid(), signal.SIGTERM)  # before trio, before the recorder listens\n"
        "done = sessions.record(cmd, launched=launched)\n"
        "print(done.signal, done.exit_code)\n"
    )
    env = {**os.environ, "CAPSULE_HOME": str(tmp_path / "home"), "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["SIGTERM", "143"]


def test_an_argv_that_looks_like_style_markup_is_shown_as_text(capsule: CapsuleRunner) -> None:
    """`echo "[/]" "[bold]x"`: ls, report and doctor print it as text (was: rich's MarkupError, a
    traceback, from `ls` and `report`)."""
    assert capsule("run", "--", "echo", "[/]", "[bold]x").returncode == 0
    for args in (("ls",), ("report",), ("report", "--full")):
        done = capsule(*args)
        assert done.returncode == 0, (args, done.stderr)
        assert "echo '[/]' '[bold]x'" in done.stdout, (args, done.stdout)
    assert "Traceback" not in capsule("doctor").stderr
