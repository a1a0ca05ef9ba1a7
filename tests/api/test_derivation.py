"""Sessions derived by another Capsule: what `replay --check` says of them, and `rederive`'s rewrite.

The fixture is a real session an earlier Capsule recorded (tests/data/derived-earlier/README.md): its
trace re-derives differently today, as every kept session's would after a tracker changed.
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import attrs
import pytest

from capsule.api import sessions
from capsule.api.errors import CheckFailed, UsageError
from capsule.codec import LineDecoder, encode_lines
from capsule.events import DERIVATION, ProcSpawned, SessionEnded, SessionStarted
from capsule.stages.derive import from_trace
from capsule.stages.reader import iter_events
from tests.conftest import CapsuleRunner

EARLIER = Path(__file__).resolve().parents[1] / "data" / "derived-earlier" / "level-all"
SESSIONS = Path(__file__).resolve().parents[2] / "sessions"


@pytest.fixture
def earlier(tmp_path: Path) -> Path:
    folder = tmp_path / "level-all"
    shutil.copytree(EARLIER, folder)
    return folder


def events_of(folder: Path) -> list:
    return list(iter_events(folder, LineDecoder()))


def test_replay_names_the_older_derivation(earlier: Path, capsule: CapsuleRunner) -> None:
    """The difference is shown, and said to be what an older Capsule's derivation explains."""
    replayed = sessions.replay(earlier)
    assert not replayed.matches
    assert (replayed.recorded_derivation, replayed.derivation) == (None, DERIVATION)
    assert "an older Capsule, which did not name its derivation" in replayed.derived_elsewhere
    done = capsule("replay", "--check", str(earlier))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("replay: events.jsonl does not match its re-derivation")
    assert lines[1].startswith("replay: it was derived by an older Capsule")
    assert f"this one derives with {DERIVATION}" in lines[1]
    assert any(line.startswith('+{"kind":"net.socket"') for line in lines), done.stdout


def test_a_changed_file_of_this_derivation_is_not_excused(tmp_path: Path, capsule: CapsuleRunner) -> None:
    """A session naming this derivation that differs gets the plain verdict, no excuse."""
    folder = tmp_path / "forks"
    shutil.copytree(SESSIONS / "forks", folder, ignore=shutil.ignore_patterns("expected"))
    events = events_of(folder)
    assert events[0].derivation == DERIVATION
    spawned = next(i for i, e in enumerate(events) if isinstance(e, ProcSpawned) and e.via != "root")
    events[spawned] = attrs.evolve(events[spawned], ppid=1)
    (folder / "events.jsonl").write_bytes(encode_lines(0, events))
    replayed = sessions.replay(folder)
    assert not replayed.matches
    assert replayed.derived_elsewhere == ""
    done = capsule("replay", "--check", str(folder))
    assert done.returncode == 1
    assert "derived by" not in done.stdout
    with pytest.raises(CheckFailed, match="both name derivation"):
        sessions.rederive(folder)
    assert events_of(folder) == events  # refused: nothing written


def test_rederive_rewrites_an_earlier_session(earlier: Path) -> None:
    """Its events as this Capsule derives them; what the trace does not hold kept; then it replays."""
    trace = (earlier / "trace.strace").read_bytes()
    before = events_of(earlier)
    done = sessions.rederive(earlier)
    assert (done.written, done.recorded_derivation, done.derivation) == (True, None, DERIVATION)
    after = events_of(earlier)
    assert sessions.replay(earlier).matches
    header, ended = after[0], after[-1]
    assert isinstance(header, SessionStarted)
    assert isinstance(ended, SessionEnded)
    assert header.derivation == DERIVATION
    assert attrs.evolve(header, derivation=None, kinds=before[0].kinds) == before[0]  # nothing else
    old_end = before[-1]
    assert (ended.exit_code, ended.duration_s, ended.lines) == (
        old_end.exit_code,
        old_end.duration_s,
        old_end.lines,
    )
    assert ended.events == len(after) - 1
    assert len(from_trace(after)) == len(from_trace(before)) + 2  # bind and listen, now derived
    assert (earlier / "trace.strace").read_bytes() == trace
    assert stat.S_IMODE((earlier / "events.jsonl").stat().st_mode) == 0o600
    assert not list(earlier.glob(".*.tmp"))
    again = sessions.rederive(earlier)
    assert not again.written  # it names this derivation now, and holds its events


def test_rederive_refuses_an_env_session(tmp_path: Path) -> None:
    """An env session's events are its machine's decisions: there is no trace to re-derive them from."""
    folder = tmp_path / "give-up"
    shutil.copytree(SESSIONS / "env" / "give-up", folder)
    with pytest.raises(UsageError, match="re-record it"):
        sessions.rederive(folder)


def test_recovery_of_a_session_an_older_capsule_began(earlier: Path) -> None:
    """Its recorder died (no end, the last events missing) and this Capsule recovers it: what the older
    one wrote stays, nothing is written twice, the rest of the trace is appended, and the recovery
    says why it could not simply continue the prefix."""
    from capsule.events import ProcExited, SessionRecovered

    events_file = earlier / "events.jsonl"
    lines = events_file.read_bytes().splitlines(keepends=True)
    events_file.write_bytes(b"".join(lines[:-12]))  # the end and the last 11 events never written
    kept = events_of(earlier)
    sessions.report(earlier)  # recovers: the recorder of 2026-11-21 is long gone
    after = events_of(earlier)
    assert after[: len(kept)] == kept
    (recovered,) = [e for e in after if isinstance(e, SessionRecovered)]
    assert "derived by another Capsule (derivation unnamed)" in recovered.reason
    assert recovered.events_added > 0
    added = after[len(kept) : -2]  # before the recovery's note and the end
    assert len(added) == recovered.events_added
    assert not [e for e in added if e in kept]  # nothing the older Capsule wrote is written again
    spawns = [e.pid for e in after if isinstance(e, ProcSpawned)]
    exits = [e.pid for e in after if isinstance(e, ProcExited)]
    assert len(spawns) == len(set(spawns))
    assert sorted(exits) == sorted(set(spawns))  # every process ends, once
    assert isinstance(after[-1], SessionEnded)
