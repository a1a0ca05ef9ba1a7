"""Capsule in your tests: replay committed sessions, and assert on what a recorded command did.

    from capsule.testing import assert_ran, assert_never_ran, replay

    def test_build(capsule_run):                       # the pytest plugin's fixture
        session = capsule_run(["make", "test"])
        assert_ran(session, "pytest *")
        assert_never_ran(session, "curl *")

    def test_golden():
        result = replay("tests/sessions/fix-lint")     # a session folder you committed
        assert result.matches, result.explain()

The pytest plugin (capsule/testing/plugin.py, loaded automatically) adds the `capsule_run` fixture and
`--capsule-sessions DIR`, which turns every session folder under DIR into a test of `replay`.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if "pytest" in sys.modules:
    # Before the helpers are imported: their `assert`s are rewritten like those of a test, so a failing
    # helper shows the values it compared (pytest loads this package early, from its pytest11 plugin).
    import pytest

    pytest.register_assert_rewrite("capsule.testing.assertions")

from capsule.testing.assertions import (
    assert_exit,
    assert_never_ran,
    assert_no_failures,
    assert_ran,
    assert_ran_before,
    assert_touched,
)

if TYPE_CHECKING:
    from capsule.api.session import Session
    from capsule.fold.labels import RuleSet

__all__ = [
    "Replay",
    "assert_exit",
    "assert_never_ran",
    "assert_no_failures",
    "assert_ran",
    "assert_ran_before",
    "assert_touched",
    "bless",
    "replay",
]

EVENTS = "events.jsonl"
EXPECTED = "expected/report.json"
RULES = "rules.toml"


@attrs.frozen(kw_only=True)
class Replay:
    """What `replay` found: the events re-derived from the raw trace against `events.jsonl`
    (`capsule replay --check`), and the report against the stored `expected/report.json`."""

    path: Path
    session: Session
    events_match: bool | None  # None: the folder has no raw trace to re-derive
    events_diff: tuple[str, ...]
    source: str  # what the events were re-derived from: trace.strace, trace.ebpf, its observations
    derived_elsewhere: str  # when they differ and the session names another derivation: that, said
    report_match: bool | None  # None: no expected/report.json stored yet (`--capsule-bless` writes it)
    report_diff: tuple[str, ...]

    @property
    def matches(self) -> bool:
        return self.events_match is not False and self.report_match is not False

    def explain(self, limit: int = 40) -> str:
        """Why it does not match, as a few diff lines (empty when it does)."""
        parts: list[str] = []
        if self.events_match is False:
            parts.append(f"{self.path}: the events re-derived from {self.source} differ from {EVENTS}:")
            if self.derived_elsewhere:
                parts.append(f"({self.derived_elsewhere}; pytest --capsule-bless re-derives its {EVENTS})")
            parts += self.events_diff[:limit]
        if self.report_match is False:
            parts.append(f"{self.path}: the report differs from {EXPECTED} (- stored, + now):")
            parts += self.report_diff[:limit]
        return "\n".join(parts)


def _rules(path: Path) -> RuleSet:
    from capsule.api.session import load_rules as load

    extra = path / RULES if (path / RULES).is_file() else path.parent / RULES
    return load(None, extra if extra.is_file() else None)


def _report_bytes(session: Session) -> bytes:
    import orjson

    return orjson.dumps(session.report, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def replay(path: str | Path) -> Replay:
    """Re-derive a committed session folder (events.jsonl, its raw trace or recorded observations,
    expected/report.json) and compare. The rules are Capsule's packaged ones plus a `rules.toml` in the
    folder or beside it: your `$CAPSULE_HOME` never changes a replay."""
    from capsule.api import sessions
    from capsule.api.errors import BadInput
    from capsule.api.session import from_state
    from capsule.codec import CodecError, LineDecoder
    from capsule.fold import SessionState
    from capsule.stages.reader import glance, iter_events
    from capsule.stages.store import session_file, trace_name

    path = Path(path)
    header = glance(path).header
    if header is None:
        raise BadInput(f"{path}: not a capsule session (no {EVENTS} with a session.started header)")
    state = SessionState.new(_rules(path))
    try:
        for event in iter_events(path, LineDecoder()):
            state.apply(event)
    except CodecError as exc:
        raise BadInput(f"{path / EVENTS}: {exc}") from exc
    session = from_state(state, path)

    # What `capsule replay --check` compares: a run's raw trace (trace.strace or trace.ebpf), or an env
    # or agents session's recorded observations.
    events_match: bool | None = None
    events_diff: tuple[str, ...] = ()
    derived_elsewhere = ""
    source = trace_name(header.tracer)
    if header.session_kind in ("env", "agents") or session_file(path, source) is not None:
        replayed = sessions.replay(path)
        events_match, events_diff, source = replayed.matches, replayed.diff, replayed.source
        derived_elsewhere = "" if replayed.matches else replayed.derived_elsewhere
    report_match: bool | None = None
    report_diff: list[str] = []
    expected = path / EXPECTED
    if expected.is_file():
        now = _report_bytes(session)
        stored = expected.read_bytes()
        report_match = now == stored
        if not report_match:
            report_diff = list(
                difflib.unified_diff(
                    stored.decode().splitlines(), now.decode().splitlines(), "stored", "now", lineterm="", n=1
                )
            )
    return Replay(
        path=path,
        session=session,
        events_match=events_match,
        events_diff=events_diff,
        source=source,
        derived_elsewhere=derived_elsewhere,
        report_match=report_match,
        report_diff=tuple(report_diff),
    )


def bless(path: str | Path) -> Path:
    """Write the folder's expected/report.json from the current code (review it in the diff). A session
    an older Capsule derived, whose trace this one derives differently, first has its events.jsonl
    re-derived from its raw trace (`capsule.api.sessions.rederive`); one that names this Capsule's own
    derivation and differs is refused (`CheckFailed`): its file changed."""
    result = replay(path)
    if result.events_match is False:
        from capsule.api.sessions import rederive

        rederive(Path(path))
        result = replay(path)
    target = Path(path) / EXPECTED
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(_report_bytes(result.session))
    return target
