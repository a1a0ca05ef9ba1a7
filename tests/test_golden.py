"""Golden sessions (sessions/*/) replayed at the three levels of architecture §7, plus their secrets check.

1. re-parse: trace.strace parsed whole, byte by byte and in random splits gives the same records, which
   track into the trace-derived events of events.jsonl;
2. re-fold: events.jsonl folds into expected/report.json and expected/report.txt exactly, stably, and
   by prefix-then-rest;
3. the real trio pipeline from the replay source derives the same events again, and re-deriving a whole
   session (the bless step after a DERIVATION bump) gives the session back.
Expected reports change only through `just bless` (python -m tests.golden bless), reviewed in the diff;
so do the events, re-derived from each trace, after a bump of `capsule.events.DERIVATION`.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest

from capsule.events import DERIVATION, Event, SessionEnded, SessionStarted
from capsule.fold.labels import RuleSet
from capsule.parse import Record, StraceParser
from capsule.parse.ebpf import EbpfParser
from capsule.redact import redact_bytes
from capsule.stages.derive import clock_of, from_trace, rederive, rederive_session
from capsule.stages.pipeline import collect_stage, run_pipeline
from capsule.stages.trace import read_stage
from capsule.track import Tracker
from capsule.track.ebpf import EbpfTracker
from capsule.track.tracker import Level
from tests import golden

SESSIONS = golden.discover()
SPLITS = 5  # random splittings of each trace

# Planted by sessions/record.sh in the `redaction` session; none may survive anywhere under sessions/.
PLANTED_SECRETS = (
    b"ghp_0123456789abcdefghijABCDEFGHIJ",
    b"hunter2",
    b"s3cr3t-value",
    b"abc.def.ghi",
    b"sk-ant-0123456789abcdefXYZ",
)


def test_sessions_are_found() -> None:
    """The scan finds the committed golden sessions, each with its trace and expected reports."""
    assert len(SESSIONS) >= 8
    for session in SESSIONS:
        assert golden.trace_file(session).is_file(), session
        assert {p.name for p in (session / golden.EXPECTED).iterdir()} == {"report.json", "report.txt"}


@pytest.fixture(params=SESSIONS, ids=[s.name for s in SESSIONS])
def session(request: pytest.FixtureRequest) -> Path:
    """One golden session directory."""
    return cast(Path, request.param)


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    """The packaged rules, as the goldens were blessed with."""
    return golden.packaged_rules()


@pytest.fixture
def events(session: Path) -> list[Event]:
    """The recorded events of the session."""
    return golden.load_events(session)


def header_of(events: list[Event]) -> SessionStarted:
    assert isinstance(events[0], SessionStarted)
    return events[0]


def parse_chunks(chunks: Iterator[bytes], tracer: str = "strace") -> list[Record]:
    parser: Any = EbpfParser() if tracer == "ebpf" else StraceParser()
    records: list[Record] = []
    for chunk in chunks:
        records += parser.feed(chunk)
    return records + parser.close()


def random_splits(data: bytes, rng: random.Random) -> Iterator[bytes]:
    """`data` cut at random places, chunks from 1 byte to a few kilobytes (lines cut mid-way)."""
    start = 0
    while start < len(data):
        end = start + rng.choice((1, 2, 7, rng.randint(1, 200), rng.randint(1, 5000)))
        yield data[start:end]
        start = end


# 1. re-parse


def test_reparse_whole_bytewise_and_split(session: Path) -> None:
    """The raw trace parses to the same records whole, one byte at a time and in random splits."""
    data = golden.trace_file(session).read_bytes()
    tracer = golden.tracer_of(session)
    whole = parse_chunks(iter([data]), tracer)
    assert bool(whole) == bool(data)  # `not-found` never started strace: its trace is empty
    assert parse_chunks((data[i : i + 1] for i in range(len(data))), tracer) == whole
    rng = random.Random(session.name)
    for _ in range(SPLITS):
        assert parse_chunks(random_splits(data, rng), tracer) == whole


def test_reparse_tracks_into_recorded_events(session: Path, events: list[Event]) -> None:
    """The trace's records, tracked at the session's level, are exactly its trace-derived events."""
    clock = clock_of(header_of(events))
    tracer = golden.tracer_of(session)
    data = golden.trace_file(session).read_bytes()
    level = cast(Level, header_of(events).trace_level)
    parser: Any = EbpfParser() if tracer == "ebpf" else StraceParser(tt_origin=clock.get("tt_origin", 0.0))
    records = parser.feed(data) + parser.close()
    tracker: Any = (
        EbpfTracker(level=level)
        if tracer == "ebpf"
        else Tracker(
            level=level,
            default_ts=clock.get("default_ts", 0.0),
            ends=header_of(events).session_kind == "import",
        )
    )
    derived = tracker.feed(records) + tracker.close()
    assert derived == from_trace(events)


# 2. re-fold


def test_fold_gives_expected_reports(session: Path, events: list[Event], rules: RuleSet) -> None:
    """Folding events.jsonl gives expected/report.json and report.txt byte for byte (`just bless`)."""
    state = golden.fold(events, rules)
    expected = session / golden.EXPECTED
    assert golden.render_json(state).decode() == (expected / "report.json").read_text()
    assert golden.render_text(state).decode() == (expected / "report.txt").read_text()


def test_fold_is_stable(events: list[Event], rules: RuleSet) -> None:
    """Two folds of the same events, and two renderings of one state, give the same reports."""
    first = golden.fold(events, rules)
    second = golden.fold(events, rules)
    once = (golden.render_json(first), golden.render_text(first))
    assert (golden.render_json(first), golden.render_text(first)) == once
    assert (golden.render_json(second), golden.render_text(second)) == once


def test_fold_prefix_then_rest(session: Path, events: list[Event], rules: RuleSet) -> None:
    """A fold of a prefix, reported and snapshotted, then continued with the rest, equals the whole fold."""
    whole = golden.fold(events, rules)
    expected = (golden.render_json(whole), golden.render_text(whole))
    rng = random.Random(session.name)
    for cut in sorted({0, 1, len(events) // 2, len(events) - 1, rng.randrange(len(events) + 1)}):
        prefix = golden.fold(events[:cut], rules)
        golden.render_json(prefix)  # reporting a prefix (a live session) must not disturb the fold
        golden.render_text(prefix)
        resumed = golden.fold(events[cut:], rules, copy.deepcopy(prefix))
        assert (golden.render_json(resumed), golden.render_text(resumed)) == expected, cut


@pytest.fixture
def far_timezone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process runs in UTC+14 for the test, as if on a machine far away."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_timezone")
def test_reports_do_not_depend_on_local_timezone(session: Path, events: list[Event], rules: RuleSet) -> None:
    """The reports read the same on a machine in another timezone."""
    state = golden.fold(events, rules)
    assert golden.render_text(state) == (session / golden.EXPECTED / "report.txt").read_bytes()
    assert golden.render_json(state) == (session / golden.EXPECTED / "report.json").read_bytes()


# 3. the real trio pipeline


async def test_pipeline_rederives_recorded_events(session: Path, events: list[Event]) -> None:
    """The trio pipeline from the replay source derives the recorded events and line counts."""
    header = header_of(events)
    derived, stats = await rederive(
        golden.trace_file(session), level=header.trace_level, header=header, tracer=golden.tracer_of(session)
    )
    assert derived == from_trace(events)
    ended = events[-1]
    assert isinstance(ended, SessionEnded)
    assert (stats.lines, stats.unparsed) == (ended.lines, ended.unparsed)


async def test_pipeline_with_redaction_is_unchanged(session: Path, events: list[Event]) -> None:
    """Redacting the already-redacted trace again changes nothing: the pipeline still agrees."""
    derived: list[Event] = []
    await run_pipeline(
        partial(read_stage, golden.trace_file(session)),
        partial(collect_stage, into=derived),
        level=header_of(events).trace_level,
        redact=True,
        **clock_of(header_of(events)),  # type: ignore[arg-type]
        tracer=golden.tracer_of(session),
        ends=header_of(events).session_kind == "import",
    )
    assert derived == from_trace(events)


async def test_rederiving_the_session_gives_it_back(session: Path, events: list[Event]) -> None:
    """`rederive_session` (the bless step after a DERIVATION bump) of a session of this derivation is the
    session itself: samples, decisions and the end stay where the recorder wrote them."""
    assert await rederive_session(session, header_of(events), answers=golden.packaged_rules()) == events


def test_goldens_name_this_derivation(events: list[Event]) -> None:
    """Every golden names the DERIVATION it re-derives with, so a change of derived events cannot be
    blessed without a bump (python -m tests.golden bless refuses it)."""
    assert header_of(events).derivation == DERIVATION, "after a DERIVATION bump: python -m tests.golden bless"


# secrets


def test_no_secret_looking_value_survives(session: Path) -> None:
    """The recorded files are already redacted (redacting again changes nothing); no planted secret shows."""
    for path in (session / golden.EVENTS, golden.trace_file(session)):
        data = path.read_bytes()
        assert redact_bytes(data) == data, path.name
    # The reports are shell-quoted text, not strace's quoting: checked for the planted values only.
    for path in sorted(p for p in session.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for secret in PLANTED_SECRETS:
            assert secret not in data, (path, secret)


def test_planted_secrets_were_recorded_redacted() -> None:
    """The `redaction` session ran with planted secrets, and shows only their masks."""
    data = (golden.SESSIONS_DIR / "redaction" / golden.TRACE).read_bytes()
    assert data.count(b"***") >= 5
