"""Recorded env sessions (sessions/env/*/) replayed: the machine re-derives every decision from the observations."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import orjson
import pytest

from capsule.env.replay import rederive
from capsule.events import Event
from capsule.fold.environment import fold
from tests import golden
from tests.conftest import CapsuleRunner

ENV_SESSIONS = sorted(path.parent for path in (golden.SESSIONS_DIR / "env").glob(f"*/{golden.EVENTS}"))


def test_env_sessions_are_found() -> None:
    """The five recorded scenarios are there."""
    names = {s.name for s in ENV_SESSIONS}
    assert names >= {"restart-backoff", "give-up", "health-flapping", "dependency-failure", "leftovers"}


@pytest.fixture(params=ENV_SESSIONS, ids=[s.name for s in ENV_SESSIONS])
def session(request: pytest.FixtureRequest) -> Path:
    """One recorded env session."""
    return cast(Path, request.param)


def kinds(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if kind == e.KIND]


def test_replay_rederives_every_decision(session: Path) -> None:
    """Re-feeding the recorded observations gives exactly the recorded events."""
    recorded, derived = rederive(golden.load_events(session))
    assert len(recorded) > 5
    assert derived == recorded


def test_fold_prefix_then_rest(session: Path) -> None:
    """Folding any prefix, then the rest, equals folding the whole session."""
    events = golden.load_events(session)
    whole = fold(events)
    for cut in range(0, len(events), 3):
        assert fold(events[cut:], fold(events[:cut])) == whole
    assert whole.deactivated == "down"
    assert whole.requests == {}


def test_each_session_shows_its_story() -> None:
    """What each scenario was recorded for is in it."""
    by_name = {s.name: golden.load_events(s) for s in ENV_SESSIONS}
    delays = [e.delay_s for e in kinds(by_name["restart-backoff"], "svc.restarting")]  # type: ignore[attr-defined]
    assert delays == [0.2, 0.4]
    (gave_up,) = kinds(by_name["give-up"], "svc.gave_up")
    assert "last stderr: config missing" in gave_up.reason  # type: ignore[attr-defined]
    flapping = [e.KIND for e in by_name["health-flapping"] if e.KIND in ("svc.ready", "svc.unhealthy")]
    assert flapping == ["svc.ready", "svc.unhealthy", "svc.ready"]
    failed = {e.name: e.error for e in kinds(by_name["dependency-failure"], "svc.failed")}  # type: ignore[attr-defined]
    assert failed["web"] == "dependency 'db' did not come up"
    leftovers = [e.reason for e in kinds(by_name["leftovers"], "svc.stopping")]  # type: ignore[attr-defined]
    assert leftovers[0] == "leftovers"


def test_replay_check_cli_on_an_env_session(capsule: CapsuleRunner) -> None:
    """`capsule replay --check` works for env sessions: exit 0, matches."""
    done = capsule("replay", str(golden.SESSIONS_DIR / "env" / "give-up"), "--check", "--json")
    assert done.returncode == 0, done.stderr
    data = orjson.loads(done.stdout)
    assert data["matches"] is True
    assert data["events"] > 10


def test_replay_check_fails_on_a_changed_decision(tmp_path: Path, capsule: CapsuleRunner) -> None:
    """A session whose recorded decision differs from the machine's fails the check with a diff."""
    lines = (golden.SESSIONS_DIR / "env" / "restart-backoff" / golden.EVENTS).read_bytes().splitlines()
    changed = []
    for line in lines:
        record = orjson.loads(line)
        if record["kind"] == "svc.restarting" and record["restarts"] == 2:
            record["delay_s"] = 99.0
        changed.append(orjson.dumps(record))
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / golden.EVENTS).write_bytes(b"\n".join(changed) + b"\n")
    done = capsule("replay", str(tmp_path / "s"), "--check")
    assert done.returncode == 1
    assert "99.0" in done.stdout
