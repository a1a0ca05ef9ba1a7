"""`capsule prune` and `capsule archive`: archived sessions read the same; live sessions are never touched."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import orjson
import psutil
import pytest

from capsule.codec import encode_line
from capsule.events import SessionEnded, SessionStarted, kind_versions
from tests.conftest import CapsuleRunner

DAY = 86400.0


def fake_session(home: Path, session_id: str, started: float, *, live: bool = False) -> Path:
    """A minimal session started at `started`; `live` makes this test process its (running) recorder."""
    me = psutil.Process()
    header = SessionStarted(
        ts=started,
        capsule_version="0.1.0",
        session_id=session_id,
        session_kind="run",
        argv=("true",),
        cwd="/",
        host="test-host",
        kinds=kind_versions(),
        recorder_pid=me.pid if live else None,
        recorder_started=me.create_time() if live else None,
    )
    path = home / "runs" / session_id
    path.mkdir(parents=True, mode=0o700)
    lines = encode_line(0, header)
    if not live:
        lines += encode_line(1, SessionEnded(ts=started + 1, exit_code=0, duration_s=1.0))
    (path / "events.jsonl").write_bytes(lines)
    return path


def ids(home: Path) -> set[str]:
    return {p.name for p in (home / "runs").iterdir()}


@pytest.mark.strace
def test_archived_session_reads_the_same(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """report, ls, replay --check and every export give the same output before and after archiving."""
    done = capsule("run", "--", "sh", "-c", 'ls / >/dev/null; sh -c "exit 3"; true')
    assert done.returncode == 0, done.stderr
    commands = [
        ("report", "latest", "--json"),
        ("report", "latest"),
        ("ls", "--json"),
        ("replay", "latest", "--check", "--json"),
        ("export", "latest", "-f", "perfetto"),
        ("export", "latest", "-f", "otlp"),
        ("export", "latest", "-f", "jsonl"),
    ]
    before = [capsule(*c) for c in commands]
    assert all(d.returncode == 0 for d in before), [d.stderr for d in before]
    session = next((capsule_home / "runs").iterdir())
    done = capsule("archive", "latest", "--json")
    assert done.returncode == 0, done.stderr
    (row,) = orjson.loads(done.stdout)["archived"]
    assert row["files"] == ["events.jsonl", "trace.strace"]
    assert 0 < row["bytes_after"] < row["bytes_before"]
    assert sorted(p.name for p in session.iterdir()) == ["events.jsonl.zst", "trace.strace.zst"]
    for p in session.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    after = [capsule(*c) for c in commands]
    for command, b, a in zip(commands, before, after, strict=True):
        assert a.returncode == 0, (command, a.stderr)
        assert a.stdout == b.stdout, command
    assert orjson.loads(after[3].stdout)["matches"] is True


def test_archive_is_idempotent_and_skips_live_sessions(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """Archiving twice changes nothing the second time; a running session is skipped (exit 1 when named)."""
    now = time.time()
    old = fake_session(capsule_home, "20200101-000000-000aa", now - 40 * DAY)
    live = fake_session(capsule_home, "20200101-000001-000bb", now - 40 * DAY, live=True)
    first = orjson.loads(capsule("archive", "--older-than", "30d", "--json").stdout)
    assert [r["id"] for r in first["archived"]] == [old.name]
    assert first["skipped"] == [{"id": live.name, "reason": "running"}]
    archived = (old / "events.jsonl.zst").read_bytes()
    second = orjson.loads(capsule("archive", old.name, "--json").stdout)
    assert second["archived"][0]["already_archived"] is True
    assert (old / "events.jsonl.zst").read_bytes() == archived
    assert (live / "events.jsonl").is_file()
    assert not (live / "events.jsonl.zst").exists()
    assert capsule("archive", live.name).returncode == 1


def test_archive_finishes_after_a_crash_between_rename_and_unlink(
    capsule: CapsuleRunner, capsule_home: Path
) -> None:
    """Both forms present (a crash after the rename): readers use either, archive removes the plain one."""
    path = fake_session(capsule_home, "20200101-000000-000aa", time.time() - 40 * DAY)
    plain = (path / "events.jsonl").read_bytes()
    assert capsule("archive", path.name).returncode == 0
    (path / "events.jsonl").write_bytes(plain)
    report = capsule("report", path.name, "--json")
    assert report.returncode == 0, report.stderr
    assert capsule("archive", path.name).returncode == 0
    assert not (path / "events.jsonl").exists()
    assert capsule("report", path.name, "--json").stdout == report.stdout


def test_prune_keeps_the_newest_and_never_a_live_session(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """--older-than with --keep deletes only old, finished sessions beyond the N newest; archived ones too."""
    now = time.time()
    for i, age in enumerate((50, 45, 40, 35, 1)):
        fake_session(capsule_home, f"2020010{i + 1}-000000-000aa", now - age * DAY)
    live = fake_session(capsule_home, "20190101-000000-000cc", now - 99 * DAY, live=True)
    assert capsule("archive", "20200101-000000-000aa").returncode == 0
    dry = capsule("prune", "--older-than", "30d", "--keep", "2", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = orjson.loads(dry.stdout)
    assert planned["dry_run"] is True
    assert [r["id"] for r in planned["deleted"]] == [
        "20200103-000000-000aa",
        "20200102-000000-000aa",
        "20200101-000000-000aa",
    ]
    assert planned["running_skipped"] == [live.name]
    assert len(ids(capsule_home)) == 6, "--dry-run deletes nothing"
    done = capsule("prune", "--older-than", "30d", "--keep", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert ids(capsule_home) == {"20200105-000000-000aa", "20200104-000000-000aa", live.name}
    assert (live / "events.jsonl").is_file()


def test_prune_usage_errors(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """No criterion, or a bad age, is a usage error (exit 2) in one line."""
    assert capsule("prune").returncode == 2
    done = capsule("prune", "--older-than", "soon")
    assert done.returncode == 2
    assert "capsule: error: --older-than: not a duration: 'soon'" in done.stderr
    assert capsule("archive").returncode == 2
    assert capsule("archive", "nope").returncode == 3


def test_prune_removes_a_dead_recorders_spool(capsule: CapsuleRunner, capsule_home: Path) -> None:
    """A pruned session's kept spool file goes with it."""
    path = fake_session(capsule_home, "20200101-000000-000aa", time.time() - 40 * DAY)
    spool = capsule_home / "spool" / f"{path.name}.strace"
    spool.parent.mkdir(mode=0o700)
    spool.write_bytes(b"")
    os.chmod(spool, 0o600)
    assert capsule("prune", "--older-than", "30d").returncode == 0
    assert not path.exists()
    assert not spool.exists()
