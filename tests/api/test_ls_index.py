"""The derived index of `capsule ls` (stages/listing.py): rows of finished sessions, never changing them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import orjson
import pytest

from capsule.api import sessions
from capsule.stages import listing
from tests.golden import SESSIONS_DIR, discover


@pytest.fixture
def home(capsule_home: Path) -> Path:
    """Every golden session copied into a fresh $CAPSULE_HOME, one of them without its end."""
    runs = capsule_home / "runs"
    runs.mkdir(parents=True, mode=0o700)
    for golden in discover():
        shutil.copytree(golden, runs / golden.name, ignore=shutil.ignore_patterns("expected"))
    cut = runs / "forks" / "events.jsonl"
    cut.write_bytes(b"".join(cut.read_bytes().splitlines(keepends=True)[:-1]))
    return capsule_home


def _rows(**kw: object) -> tuple[sessions.SessionRow, ...]:
    return sessions.list_sessions(limit=1000, **kw)  # type: ignore[arg-type]


def test_rows_from_the_index_equal_rows_read_from_the_sessions(home: Path) -> None:
    """With and without the index, with and without children: the same rows."""
    for children in (False, True):
        (home / listing.INDEX).unlink(missing_ok=True)
        unindexed = _rows(include_children=children)
        assert (home / listing.INDEX).is_file()
        assert _rows(include_children=children) == unindexed
    assert (home / listing.INDEX).stat().st_mode & 0o777 == 0o600


def test_only_finished_sessions_are_indexed(home: Path) -> None:
    """A session without session.ended (running or cut short) is read every time, never cached."""
    _rows()
    index = listing.load_index(home)
    assert "forks" not in index
    assert "argv-quoting" in index
    assert next(r for r in _rows() if r.id == "forks").status == "incomplete"


def _tamper(home: Path, session_id: str) -> None:
    data = orjson.loads((home / listing.INDEX).read_bytes())
    data["rows"][session_id][1]["argv"] = ["tampered"]
    (home / listing.INDEX).write_bytes(orjson.dumps(data))


def test_an_unchanged_session_is_served_from_the_index(home: Path) -> None:
    """The row comes from the index while the events file is unchanged (the index is used)."""
    _rows()
    _tamper(home, "argv-quoting")
    assert next(r for r in _rows() if r.id == "argv-quoting").argv == ("tampered",)


@pytest.mark.parametrize("change", ["touched", "archived", "format", "capsule version"])
def test_a_stale_row_or_index_is_read_again(home: Path, change: str) -> None:
    """Events file changed or archived, another index format or Capsule: the session is read again."""
    _rows()
    _tamper(home, "argv-quoting")
    events = home / "runs" / "argv-quoting" / "events.jsonl"
    if change == "touched":
        st = events.stat()
        os.utime(events, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    elif change == "archived":
        import zstandard

        (events.parent / "events.jsonl.zst").write_bytes(
            zstandard.ZstdCompressor().compress(events.read_bytes())
        )
        events.unlink()
    else:
        data = orjson.loads((home / listing.INDEX).read_bytes())
        data["format" if change == "format" else "capsule"] = "another"
        (home / listing.INDEX).write_bytes(orjson.dumps(data))
    row = next(r for r in _rows() if r.id == "argv-quoting")
    assert row.argv != ("tampered",)
    assert row == next(r for r in _rows() if r.id == "argv-quoting")


def test_a_broken_index_is_ignored(home: Path) -> None:
    """An unreadable index is a cache miss, not an error."""
    (home / listing.INDEX).write_bytes(b"{not json")
    assert _rows()
    assert listing.load_index(home)  # and it was rewritten


def test_sessions_dir_order_is_newest_first(home: Path) -> None:
    """session_keys lists what session_dirs lists, in the same order."""
    from capsule.stages.store import session_dirs

    assert [name for name, _key in listing.session_keys(home)] == [p.name for p in session_dirs(home)]
    assert SESSIONS_DIR.is_dir()


def test_rows_of_removed_sessions_leave_the_index(home: Path) -> None:
    """A session pruned since the last full listing is dropped from the index by the next one."""
    _rows()
    shutil.rmtree(home / "runs" / "argv-quoting")
    assert "argv-quoting" not in {r.id for r in _rows()}
    assert "argv-quoting" not in listing.load_index(home)
