"""Path rules under the eBPF tracer at level process or net: only the opens the mount namespace refused are
recorded (loader level `refused`), each a `policy.blocked` event; the session says the user's level."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

from capsule.policy.enforce import Enforcement
from capsule.policy.rules import MOUNT, NETNS, SECCOMP, Policy
from capsule.stages.guard import session_level, trace_level
from tests.conftest import CapsuleRunner, report_json
from tests.ebpf.available import needs_ebpf

SCRIPT = "cat plain.txt; cat .env; echo x > frozen/f; cd sub && cat ../.env; cat ../plain.txt"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory with an ordinary file, a protected `.env`, a read-only `frozen/` and a `sub/`."""
    work = tmp_path / "project"
    (work / "frozen").mkdir(parents=True)
    (work / "sub").mkdir()
    (work / "plain.txt").write_text("plain\n")
    (work / ".env").write_text("TOKEN=x\n")
    policy = tmp_path / "p.toml"
    policy.write_text(f'[policy]\nprotect_paths = [".env"]\nread_only_paths = ["{work / "frozen"}"]\n')
    return work


def _session(home: Path) -> tuple[list[dict], bytes]:
    (run,) = sorted((home / "runs").iterdir())
    events = [orjson.loads(line) for line in (run / "events.jsonl").read_bytes().splitlines()]
    return events, (run / "trace.ebpf").read_bytes()


def _run(capsule: CapsuleRunner, project: Path, *level: str, script: str = SCRIPT) -> list[dict]:
    policy = str(project.parent / "p.toml")
    done = capsule(
        "run", "--tracer", "ebpf", *level, "--policy", policy, "--", "sh", "-c", script, cwd=project
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("plain") == 2, done.stdout
    check = capsule("replay", "latest", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "identical" in check.stdout
    return _session(project.parent / "capsule-home")[0]


def _kind(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["kind"] == kind]


REFUSED = ["/project/.env", "/project/frozen/f", "/project/.env"]


@needs_ebpf
@pytest.mark.ebpf
def test_at_level_process_only_the_refused_opens_are_recorded(
    capsule: CapsuleRunner, capsule_home: Path, project: Path
) -> None:
    """Refused opens (a hidden file, relative to a `cd`'d directory too, and a write into a read-only one)
    are `policy.blocked`; `cat plain.txt` is no file.* event and no P record; the header says process."""
    events = _run(capsule, project)
    header = events[0]
    assert header["trace_level"] == "process"
    assert header["tracer_flags"][-1] == "refused"
    blocked = _kind(events, "policy.blocked")
    assert [b["path"].removeprefix(str(project.parent)) for b in blocked] == REFUSED
    assert {b["mechanism"] for b in blocked} == {"mount-namespace"}
    opened = _kind(events, "file.opened")
    assert [(e["ok"], e["errno"]) for e in opened] == [(False, "EACCES"), (False, "EROFS"), (False, "EACCES")]
    assert not [e for e in events if e["kind"].startswith("file.") and "plain" in e.get("path", "")]
    _, trace = _session(capsule_home)
    opens = [line for line in trace.splitlines() if b'"data": "P ' in line]
    assert len(opens) == 3, opens
    report = report_json(capsule)
    assert report["policy"]["blocked_count"] == 3
    assert report["files"] == []  # a refused open is no file read or written


@needs_ebpf
@pytest.mark.ebpf
def test_at_level_file_every_open_is_recorded_as_before(
    capsule: CapsuleRunner, capsule_home: Path, project: Path
) -> None:
    """`--level file` with path rules: the loader records every open, so `cat plain.txt` is an event too."""
    events = _run(capsule, project, "--level", "file")
    assert (events[0]["trace_level"], events[0]["tracer_flags"][-1]) == ("file", "file")
    blocked = _kind(events, "policy.blocked")
    assert [b["path"].removeprefix(str(project.parent)) for b in blocked] == REFUSED
    plain = [e for e in _kind(events, "file.opened") if e["path"].endswith("plain.txt")]
    assert len(plain) == 2
    assert all(e["ok"] for e in plain)


@needs_ebpf
@pytest.mark.ebpf
def test_at_level_net_the_refused_opens_and_the_connects_are_recorded(
    capsule: CapsuleRunner, capsule_home: Path, project: Path
) -> None:
    """`--level net` with path rules: loader level `refused+net`, header net; connects and refusals only."""
    # The real interpreter, not a `python3` on PATH that may be a shim script of many processes.
    connect = f"{sys.executable} -c \"import socket; socket.socket().connect_ex(('127.0.0.1', 9))\""
    events = _run(capsule, project, "--level", "net", script=f"{SCRIPT}; {connect}")
    assert (events[0]["trace_level"], events[0]["tracer_flags"][-1]) == ("net", "refused+net")
    blocked = _kind(events, "policy.blocked")
    assert [b["path"].removeprefix(str(project.parent)) for b in blocked] == REFUSED
    assert all(not e["ok"] for e in _kind(events, "file.opened"))
    # libc's own lookups (the nscd socket, when no HOME is set) are unix connects, rightly recorded too.
    inet = [e["address"] for e in _kind(events, "net.connected") if not e["address"].startswith(("/", "@"))]
    assert inet == ["127.0.0.1:9"]


def _enforcement(enforced: tuple[str, ...], detected: tuple[str, ...] = ()) -> Enforcement:
    return Enforcement(policy=Policy(), enforced=enforced, detected=detected)


@pytest.mark.parametrize(
    ("level", "enforced", "detected", "ebpf", "recorded", "said"),
    [
        ("process", (MOUNT,), (), True, "refused", "process"),
        ("net", (MOUNT, SECCOMP), (), True, "refused+net", "net"),
        ("process", (MOUNT,), (NETNS,), True, "refused+net", "net"),
        ("file", (MOUNT,), (), True, "file", "file"),
        ("all", (MOUNT,), (), True, "all", "all"),
        ("process", (MOUNT,), (), False, "file", "file"),  # strace: unchanged
        ("net", (MOUNT,), (), False, "all", "all"),
        ("process", (), (MOUNT,), True, "file", "file"),  # detected after the fact: every open is needed
        ("process", (SECCOMP,), (), True, "process", "process"),
        ("process", (), (NETNS,), True, "net", "net"),
    ],
)
def test_trace_level_records_refused_opens_only_under_ebpf_with_enforced_path_rules(
    level: str, enforced: tuple[str, ...], detected: tuple[str, ...], ebpf: bool, recorded: str, said: str
) -> None:
    """The loader's level, and the level the session says (the user's, when only refusals are kept)."""
    assert trace_level(level, _enforcement(enforced, detected), ebpf=ebpf) == recorded
    assert session_level(recorded) == said
