"""The derived report snapshot (stages/snapshot.py): a cache of `report --json` that never changes it."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import orjson
import pytest

from capsule.api import sessions
from capsule.stages import snapshot
from tests.golden import SESSIONS_DIR, discover

RUN_AND_IMPORT = [
    s for s in discover() if b'"session_kind":"agents"' not in (s / "events.jsonl").read_bytes()[:2000]
]


@pytest.fixture(autouse=True)
def every_session_gets_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The golden sessions are small: lower the threshold so each of them gets a snapshot."""
    monkeypatch.setattr(snapshot, "MIN_EVENTS", 0)


def _copy(golden: Path, home: Path) -> Path:
    path = home / "runs" / golden.name
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copytree(golden, path, ignore=shutil.ignore_patterns("expected"))
    return path


def _report(path: Path) -> bytes:
    out = io.BytesIO()
    sessions.write_report_json(path, out)
    return out.getvalue()


def _folded(path: Path) -> bytes:
    """The report with no snapshot at all (the old path: fold, then print)."""
    snapshot.drop_snapshot(path)
    data = _report(path)
    snapshot.drop_snapshot(path)
    return data


@pytest.mark.parametrize("golden", RUN_AND_IMPORT, ids=lambda p: p.name)
def test_snapshot_report_equals_folded_report(golden: Path, capsule_home: Path) -> None:
    """The first report writes the snapshot; the report read from it is byte for byte the folded one."""
    path = _copy(golden, capsule_home)
    folded = _folded(path)
    first = _report(path)
    assert (path / snapshot.SNAPSHOT).is_file()
    assert (path / snapshot.SNAPSHOT).stat().st_mode & 0o777 == 0o600
    second = _report(path)
    assert first == folded == second
    assert orjson.loads(second)["session"]  # the bytes are a whole JSON report


def _tamper(path: Path) -> bytes:
    """Keep the snapshot's key, replace its report: what a report prints shows whether it was used."""
    snap = path / snapshot.SNAPSHOT
    key = snap.read_bytes().split(b"\n", 1)[0]
    snap.write_bytes(key + b"\n" + b"".join(snapshot.packed([b'{"tampered": true}\n'])))
    return b'{"tampered": true}\n'


def test_a_fresh_snapshot_is_served_and_replay_check_ignores_it(capsule_home: Path) -> None:
    """A fresh snapshot is what `report --json` prints; `replay --check` still re-derives from the trace."""
    path = _copy(SESSIONS_DIR / "forks", capsule_home)
    _report(path)
    tampered = _tamper(path)
    assert _report(path) == tampered
    assert sessions.replay(path).matches


@pytest.mark.parametrize("change", ["events touched", "events grew", "rules", "capsule version", "format"])
def test_a_stale_snapshot_is_rebuilt(change: str, capsule_home: Path) -> None:
    """Events changed, other rules, another Capsule or snapshot format: the snapshot is not used."""
    path = _copy(SESSIONS_DIR / "forks", capsule_home)
    _report(path)
    tampered = _tamper(path)
    snap = path / snapshot.SNAPSHOT
    events = path / "events.jsonl"
    if change == "events touched":
        st = events.stat()
        os.utime(events, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    elif change == "events grew":
        with open(events, "ab") as out:
            out.write(b"\n")
    elif change == "rules":
        (capsule_home / "rules.toml").write_text("")
    else:
        key = orjson.loads(snap.read_bytes().split(b"\n", 1)[0])
        key["capsule" if change == "capsule version" else "format"] = "another"
        snap.write_bytes(orjson.dumps(key) + b"\n" + tampered)
    rebuilt = _report(path)
    assert rebuilt != tampered
    assert rebuilt == _folded(path)
    _report(path)
    assert _report(path) == rebuilt  # and the rebuilt snapshot is fresh again


def test_snapshot_after_recovery_leaves_out_the_recovery_note(capsule_home: Path) -> None:
    """The report that recovers a session writes its snapshot; later reports (from it) say what a fold of
    the recovered session says: no `recovered: the recorder died` line, status recovered."""
    path = _copy(SESSIONS_DIR / "forks", capsule_home)
    events = path / "events.jsonl"
    lines = events.read_bytes().splitlines(keepends=True)
    assert b'"session.ended"' in lines[-1]
    events.write_bytes(b"".join(lines[:-1]))
    first = orjson.loads(_report(path))
    assert any(w.startswith("recovered: the recorder died") for w in first["warnings"])
    assert (path / snapshot.SNAPSHOT).is_file()
    later = _report(path)
    assert not any(w.startswith("recovered: the recorder died") for w in orjson.loads(later)["warnings"])
    assert orjson.loads(later)["session"]["status"] == "recovered"
    assert later == _folded(path)


def test_small_sessions_get_no_snapshot(capsule_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Below MIN_EVENTS a report folds every time and writes nothing beside the events."""
    monkeypatch.setattr(snapshot, "MIN_EVENTS", 10**9)
    path = _copy(SESSIONS_DIR / "forks", capsule_home)
    _report(path)
    assert not (path / snapshot.SNAPSHOT).exists()


def test_snapshot_written_at_close(capsule_home: Path) -> None:
    """What `capsule run` and `capsule import` call once the session is closed writes the snapshot."""
    path = _copy(SESSIONS_DIR / "forks", capsule_home)
    sessions.snapshot_after_close(path)
    assert snapshot.fresh_snapshot(path, sessions.rules_digest(sessions.rule_sources())) is not None
    assert _report(path) == _folded(path)


@pytest.mark.strace
def test_a_recorded_run_gets_its_snapshot_and_a_small_one_is_not_read_again(
    capsule_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sessions.record (what `capsule run` does) keeps the snapshot of a big enough session at its
    close; below MIN_EVENTS it decides from the recorder's own count, without reading the session
    (its footer's decoding cost ~40 ms of the close of every run past 640 KB)."""
    big = sessions.record(["sh", "-c", "true"])
    assert big.events is not None
    assert big.events > 0
    assert (big.path / snapshot.SNAPSHOT).is_file()  # MIN_EVENTS is 0 here

    monkeypatch.setattr(snapshot, "MIN_EVENTS", big.events + 1)
    import capsule.stages.reader as reader

    def no_glance(_path: Path) -> None:
        raise AssertionError("the session was read again to learn its size")

    monkeypatch.setattr(reader, "glance", no_glance)
    small = sessions.record(["sh", "-c", "true"])
    assert small.events == big.events
    assert not (small.path / snapshot.SNAPSHOT).exists()


def test_a_snapshot_that_cannot_be_written_leaves_the_report_whole(
    capsule_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full or read-only at the first report: the report still goes out whole, no snapshot and no
    temporary file stay behind."""
    path = _copy(SESSIONS_DIR / "forks", capsule_home)
    folded = _folded(path)

    def full(*_args: object, **_kw: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshot, "open_private", full)
    assert _report(path) == folded
    assert sorted(p.name for p in path.iterdir()) == ["events.jsonl", "trace.strace"]


def test_archive_drops_the_snapshot_and_the_archived_session_gets_its_own(capsule_home: Path) -> None:
    """`capsule archive` removes the (now stale) snapshot; the next report reads the .zst and keys a new
    snapshot on it, with the same bytes as before."""
    from capsule.stages.retention import archive_session

    path = _copy(SESSIONS_DIR / "forks", capsule_home)
    before = _report(path)
    assert (path / snapshot.SNAPSHOT).is_file()
    archive_session(path)
    assert not (path / snapshot.SNAPSHOT).exists()
    assert _report(path) == before
    key = orjson.loads((path / snapshot.SNAPSHOT).read_bytes().split(b"\n", 1)[0])
    assert key["events"] == "events.jsonl.zst"
    assert _report(path) == before


def test_the_snapshot_stores_the_report_compressed(capsule_home: Path) -> None:
    """After its key line the snapshot holds the report as one zstd frame, smaller than the report."""
    path = _copy(SESSIONS_DIR / "forks", capsule_home)
    folded = _folded(path)
    _report(path)
    stored = (path / snapshot.SNAPSHOT).read_bytes().split(b"\n", 1)[1]
    assert stored.startswith(b"\x28\xb5\x2f\xfd")  # zstd's frame magic number
    assert len(stored) < len(folded)
    out = io.BytesIO()
    snapshot.copy_report(path / snapshot.SNAPSHOT, out)
    assert out.getvalue() == folded


def test_a_damaged_snapshot_is_one_clear_error(capsule_home: Path) -> None:
    """A fresh key over a report that does not decompress (edited by hand): BadInput naming the file,
    no traceback; without the snapshot the report folds again."""
    from capsule.api.errors import BadInput

    path = _copy(SESSIONS_DIR / "forks", capsule_home)
    folded = _folded(path)
    _report(path)
    snap = path / snapshot.SNAPSHOT
    key = snap.read_bytes().split(b"\n", 1)[0]
    snap.write_bytes(key + b"\n" + b"not zstd at all\n")
    with pytest.raises(BadInput, match=r"report\.snapshot"):
        _report(path)
    snapshot.drop_snapshot(path)
    assert _report(path) == folded
