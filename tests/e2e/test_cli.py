"""Every CLI command, bad input included: one clear line and a documented exit code, never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest

from tests.conftest import CapsuleRunner, one_error_line, report_json

pytestmark = pytest.mark.strace


_one_error_line = one_error_line


def _session(home: Path) -> Path:
    (session,) = (home / "runs").iterdir()
    return session


def test_report_text_shows_header_tree_and_summary(capsule: CapsuleRunner) -> None:
    """The text report names the command, the processes and the failures."""
    capsule("run", "--", "sh", "-c", "/bin/ls / >/dev/null; /bin/false; exit 0")
    done = capsule("report")
    assert done.returncode == 0, done.stderr
    assert "/bin/false" in done.stdout
    assert "/bin/ls" in done.stdout


def test_report_by_id_prefix_and_path(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """SESSION may be an id, a unique prefix, a directory, or `latest`."""
    capsule("run", "--", "true")
    session = _session(capsule_home)
    for ref in (session.name, session.name[:17], str(session), str(session / "events.jsonl"), "latest"):
        assert report_json(capsule, ref)["session"]["id"] == session.name


def test_report_unknown_session_exits_3(capsule: CapsuleRunner) -> None:
    """An unknown session id: one line, exit 3."""
    done = capsule("report", "nope-not-a-session")
    assert done.returncode == 3
    assert "nope-not-a-session" in _one_error_line(done)


def test_report_with_no_sessions_exits_3(capsule: CapsuleRunner) -> None:
    """`latest` with nothing recorded yet says how to record one."""
    done = capsule("report")
    assert done.returncode == 3
    assert "capsule run" in _one_error_line(done)


def test_report_tolerates_a_torn_last_line(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """A torn last line is ignored with a warning; everything before it is reported."""
    capsule("run", "--", "sh", "-c", "/bin/true")
    events = _session(capsule_home) / "events.jsonl"
    with events.open("ab") as f:
        f.write(b'{"kind":"proc.exec","v":1,"se')
    report = report_json(capsule)
    assert len(report["processes"]) == 2
    assert any("torn" in w for w in report["warnings"])
    assert events.read_bytes().endswith(b'"se')  # recorded data is never rewritten by a report


def test_report_skips_a_malformed_middle_line(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """A corrupt line in the middle is skipped and named; the rest is still reported."""
    capsule("run", "--", "sh", "-c", "/bin/true")
    events = _session(capsule_home) / "events.jsonl"
    lines = events.read_bytes().split(b"\n")
    lines.insert(2, b"{this is not json")
    events.write_bytes(b"\n".join(lines))
    report = report_json(capsule)
    assert len(report["processes"]) == 2
    assert any("line 3" in w for w in report["warnings"])


def test_report_refuses_a_newer_format(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """A session written by a newer capsule: one clear line, exit 4."""
    capsule("run", "--", "true")
    events = _session(capsule_home) / "events.jsonl"
    lines = events.read_bytes().split(b"\n")
    header = orjson.loads(lines[0])
    header["format"] = 99
    lines[0] = orjson.dumps(header)
    events.write_bytes(b"\n".join(lines))
    done = capsule("report", "--json")
    assert done.returncode == 4
    assert "newer" in _one_error_line(done)
    header["format"], header["v"] = 1, 99  # a newer header: said so by every reader (was: "not a session")
    lines[0] = orjson.dumps(header)
    events.write_bytes(b"\n".join(lines))
    for args in (("report",), ("report", "--json"), ("replay", "--check"), ("export", "--format", "otlp")):
        done = capsule(*args)
        assert done.returncode == 4, (args, done.stderr)
        assert "session.started v99 was written by a newer capsule" in _one_error_line(done), args
        assert "upgrade capsule" in done.stderr


def test_broken_user_rules_exit_4(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """A broken rules.toml names the file; exit 4."""
    capsule("run", "--", "true")
    (capsule_home / "rules.toml").write_text("[[label]\nthis is = not toml")
    done = capsule("report")
    assert done.returncode == 4
    assert "rules.toml" in _one_error_line(done)


def test_ls_lists_sessions_newest_first(capsule: CapsuleRunner) -> None:
    """ls shows id, kind, command, processes, exit and status, newest first; --limit caps it."""
    capsule("run", "--name", "first", "--", "true")
    capsule("run", "--name", "second", "--", "sh", "-c", "exit 2")
    rows = orjson.loads(capsule("ls", "--json").stdout)
    assert [r["name"] for r in rows] == ["second", "first"]
    assert rows[0]["exit_code"] == 2
    assert rows[0]["status"] == "complete"
    assert rows[0]["kind"] == "run"
    assert rows[0]["processes"] == 1
    assert len(orjson.loads(capsule("ls", "--json", "--limit", "1").stdout)) == 1
    text = capsule("ls")
    assert text.returncode == 0
    assert "exit 2" in text.stdout or "2" in text.stdout


def test_ls_with_no_sessions(capsule: CapsuleRunner) -> None:
    """ls on an empty home says so and exits 0."""
    done = capsule("ls")
    assert done.returncode == 0
    assert "no sessions" in done.stdout


def test_import_a_foreign_log(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """An `strace -f -tt -T -y` log recorded elsewhere becomes a session; its id goes to stdout."""
    log = tmp_path / "foreign.strace"
    subprocess.run(
        [
            "strace",
            "-f",
            "-tt",
            "-T",
            "-y",
            "-o",
            str(log),
            "--",
            "sh",
            "-c",
            "/bin/true; /bin/ls / >/dev/null",
        ],
        check=True,
    )
    done = capsule("import", str(log), "--name", "foreign")
    assert done.returncode == 0, done.stderr
    session_id = done.stdout.strip()
    report = report_json(capsule, session_id)
    assert report["session"]["kind"] == "import"
    exes = sorted(Path(p["exe"]).name for p in report["processes"] if p["exe"])
    assert exes == ["ls", "sh", "true"]


def test_import_bad_input(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """A missing file or a file that is not a strace log: one line, exit 4."""
    done = capsule("import", str(tmp_path / "missing.log"))
    assert done.returncode == 4
    _one_error_line(done)
    junk = tmp_path / "junk.log"
    junk.write_text("hello\nthis is not strace\n")
    done = capsule("import", str(junk))
    assert done.returncode == 4
    assert "strace" in _one_error_line(done)


def test_replay_check_passes_then_detects_tampering(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """replay --check re-derives the events; an edited events.jsonl is caught with a diff."""
    capsule("run", "--", "sh", "-c", "/bin/true; /bin/echo hi >/dev/null")
    done = capsule("replay", "--check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "identical" in done.stdout
    events = _session(capsule_home) / "events.jsonl"
    events.write_bytes(events.read_bytes().replace(b'"/bin/true"', b'"/bin/TRUE"'))
    done = capsule("replay", "--check")
    assert done.returncode == 1
    assert "/bin/TRUE" in done.stdout
    # a line that is no event at all (the reader skips it, with a warning): a difference too, not identical
    lines = events.read_bytes().replace(b'"/bin/TRUE"', b'"/bin/true"').splitlines(keepends=True)
    events.write_bytes(b"".join([*lines, b"[1, 2, 3]\n"]))
    done = capsule("replay", "--check")
    assert done.returncode == 1, done.stdout
    assert f"line {len(lines) + 1}: not an event (a session line must be a JSON object)" in done.stdout


def test_doctor_reports_a_working_setup(capsule: CapsuleRunner) -> None:
    """doctor finds strace, seccomp-bpf and ptrace here, and a writable home."""
    done = capsule("doctor", "--json")
    assert done.returncode == 0, done.stdout
    checks = {c["check"]: c for c in orjson.loads(done.stdout)["checks"]}
    assert checks["strace"]["ok"]
    assert checks["ptrace"]["ok"]
    assert checks["--seccomp-bpf"]["ok"]


def test_doctor_fails_without_strace(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """With no strace on PATH, doctor says how to install it and exits 5; run exits 125."""
    import os
    import sys

    env_path = str(Path(sys.executable).parent)
    done = capsule("doctor", env={**os.environ, "PATH": env_path, "CAPSULE_HOME": str(tmp_path / "h")})
    assert done.returncode == 5
    assert "apt-get install strace" in done.stdout
    done = capsule(
        "run", "--", "/bin/true", env={**os.environ, "PATH": env_path, "CAPSULE_HOME": str(tmp_path)}
    )
    assert done.returncode == 125
    assert "apt-get install strace" in _one_error_line(done)


def test_run_unknown_level_is_a_usage_error(capsule: CapsuleRunner) -> None:
    """A bad --level is a usage error (exit 2) in one line."""
    done = capsule("run", "--level", "everything", "--", "true")
    assert done.returncode == 2
    assert "--level" in _one_error_line(done)


def test_ls_limit_below_one_is_a_usage_error(capsule: CapsuleRunner) -> None:
    """`ls --limit 0` (or -1) said "no sessions yet — record one" beside sessions it did not show."""
    assert capsule("run", "--", "true").returncode == 0
    for limit in ("0", "-1"):
        done = capsule("ls", "--limit", limit)
        assert done.returncode == 2, done
        assert "--limit" in _one_error_line(done)
    assert len(orjson.loads(capsule("ls", "--json", "-n", "1").stdout)) == 1


def test_ls_shows_a_command_as_one_types_it_and_never_sends_its_control_characters(
    capsule: CapsuleRunner,
) -> None:
    """`ls` printed shlex's `sh -c 'echo '"'"'a'"'"''`, and an argv's escape sequence raw to the terminal."""
    assert capsule("run", "--", "sh", "-c", "echo 'a'").returncode == 0
    assert capsule("run", "--", "echo", "\x1b[31mred").returncode == 0
    shown = capsule("ls").stdout
    assert "\x1b" not in shown
    assert "echo '\\x1b[31mred'" in shown, shown
    assert "sh -c \"echo 'a'\"" in shown, shown


def test_help_lists_every_command(capsule: CapsuleRunner) -> None:
    """--help works and names each command."""
    done = capsule("--help")
    assert done.returncode == 0
    for command in ("run", "report", "ls", "import", "replay", "doctor", "export", "prune", "archive"):
        assert command in done.stdout


def test_session_ids_sort_by_time_within_a_second(capsule_home: Path) -> None:
    """Ids created in the same second still sort in creation order, and never collide."""
    from capsule.stages.store import create_session

    ids = [create_session(capsule_home, 1_800_000_000.0 + i / 1000)[0] for i in range(20)]
    assert ids == sorted(ids)
    same_ms = {create_session(capsule_home, 1_800_000_001.0)[0] for _ in range(50)}
    assert len(same_ms) == 50


def _fake_strace(directory: Path) -> Path:
    """An `strace` that answers -V but cannot trace, as in a container without SYS_PTRACE."""
    directory.mkdir()
    fake = directory / "strace"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-V" ]; then echo "strace -- version 6.1"; exit 0; fi\n'
        'echo "strace: test_ptrace_get_syscall_info: PTRACE_TRACEME: Operation not permitted" >&2\n'
        "exit 1\n"
    )
    fake.chmod(0o755)
    return directory


def test_ptrace_denied(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """When strace cannot trace: run exits 125 with a line pointing at doctor; doctor exits 5 naming ptrace."""
    import os

    fake_dir = _fake_strace(tmp_path / "fakebin")
    env = {"PATH": f"{fake_dir}:{os.environ['PATH']}"}
    done = capsule("run", "--", "true", env=env)
    assert done.returncode == 125
    assert "Traceback" not in done.stderr
    assert "ptrace" in done.stderr
    assert "capsule doctor" in done.stderr
    report = report_json(capsule)
    assert report["session"]["status"] == "complete"
    doctor = capsule("doctor", "--json", env=env)
    assert doctor.returncode == 5
    checks = {c["check"]: c for c in orjson.loads(doctor.stdout)["checks"]}
    assert not checks["ptrace"]["ok"]
    assert "Operation not permitted" in checks["ptrace"]["detail"]


def test_user_rules_extend_the_packaged_ones(
    capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path
) -> None:
    """A rule in $CAPSULE_HOME/rules.toml labels a home-made agent and wins over the packaged rules."""
    agent = tmp_path / "my-agent"
    agent.write_text("#!/bin/sh\n/bin/ls / >/dev/null\ngit --version >/dev/null\n")
    agent.chmod(0o755)
    assert capsule("run", "--", str(agent)).returncode == 0
    (capsule_home / "rules.toml").write_text(
        '[[label]]\nname = "my-agent"\nlabel = "agent"\nagent = "my-agent"\nexe = ["my-agent"]\n'
    )
    report = report_json(capsule)
    root = report["processes"][0]
    assert root["label"] == "agent"
    assert [a["name"] for a in report["agents"]] == ["my-agent"]
    tools = {t["name"] for t in report["summary"]["tools"]}
    assert {"ls", "git"} <= tools


def test_child_sessions_stay_out_of_ls_and_latest(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """A run recorded for another session (a traced task or service) is hidden from ls and `latest`."""
    assert capsule("run", "--name", "own", "--", "true").returncode == 0
    own = orjson.loads(capsule("ls", "--json").stdout)[0]["id"]
    assert capsule("run", "--parent", own, "--name", "child", "--", "true").returncode == 0
    assert [r["name"] for r in orjson.loads(capsule("ls", "--json").stdout)] == ["own"]
    everything = orjson.loads(capsule("ls", "--json", "--all").stdout)
    assert [(r["name"], r["parent"]) for r in everything] == [("child", own), ("own", None)]
    assert report_json(capsule)["session"]["id"] == own


def test_ls_says_which_sessions_it_could_not_read(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """A damaged session is not listed, and `ls` says so on stderr (was: left out without a word)."""
    capsule("run", "--", "true")
    good = _session(capsule_home)
    bad = good.parent / "20260101-000000-0dead"
    bad.mkdir()
    (bad / "events.jsonl").write_bytes(b"\x00garbage, no header\n")
    for args in (("ls",), ("ls", "--json")):
        done = capsule(*args)
        assert done.returncode == 0, done.stderr
        assert good.name in done.stdout
        assert bad.name not in done.stdout
        assert done.stderr == (
            f"capsule: 1 session could not be read ({bad.name}); `capsule report ID` says why\n"
        ), done.stderr
