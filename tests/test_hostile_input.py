"""Hostile input (issue 11): mutated real traces and sessions never make a command escape with a traceback.

Hypothesis draws structured mutations (`tests/hostile.py`) of real traces and real sessions; each input
goes through import, report (JSON, text, HTML), replay --check and every export, in-process. Every failure
must be one line; every import accepted must replay identically. The large campaign is
`python -m tests.bench.fuzz` (not part of the default suite).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import golden, hostile

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def _mutations(names: list[str]) -> st.SearchStrategy[list[hostile.Mutation]]:
    return st.lists(st.tuples(st.sampled_from(names), st.integers(0, 10**6)), min_size=1, max_size=4)


def _check(outcome: hostile.Outcome) -> None:
    assert outcome.escaped == []
    assert not outcome.replay_failed, "an accepted import did not replay identically"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(hostile.TRACE_SEEDS),
    mutations=_mutations(sorted(hostile.TRACE_MUTATIONS)),
)
def test_mutated_traces_never_escape(seed: Path, mutations: list[hostile.Mutation]) -> None:
    """A mutated real trace is imported (or refused in one line); what is accepted reports and replays."""
    data = hostile.mutate_trace(seed.read_bytes(), mutations)
    with tempfile.TemporaryDirectory() as work:
        _check(hostile.feed_trace(data, Path(work)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(hostile.SESSION_SEEDS),
    mutations=_mutations(sorted(hostile.SESSION_MUTATIONS)),
)
def test_mutated_sessions_never_escape(seed: Path, mutations: list[hostile.Mutation]) -> None:
    """A corrupted events.jsonl is reported with warnings or refused in one line, never a traceback."""
    events = hostile.mutate_session((seed / golden.EVENTS).read_bytes(), mutations)
    with tempfile.TemporaryDirectory() as work:
        _check(hostile.feed_session(events, (seed / golden.TRACE).read_bytes(), Path(work)))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"kind":"proc.exited","v":1,"seq":3,"ts":null,"pid":1,"exit_code":0}', "ts: not a number"),
        (
            b'{"kind":"proc.exec","v":2,"seq":3,"ts":1.0,"pid":1,"path":"x","argv":[1],"ok":true}',
            "argv: not a list of strings",
        ),
        (b'{"kind":"proc.exited","v":99,"seq":3,"ts":1.0,"pid":1}', "newer capsule"),
    ],
)
def test_named_corruptions_are_one_line(line: bytes, expected: str, tmp_path: Path) -> None:
    """The corruptions issue 11 names: `"ts": null`, `"argv": [1]`, `"v": 99` in replay --check."""
    seed = golden.SESSIONS_DIR / "forks"
    lines = (seed / golden.EVENTS).read_bytes().split(b"\n")
    lines[3] = line
    outcome = hostile.feed_session(b"\n".join(lines), (seed / golden.TRACE).read_bytes(), tmp_path)
    assert outcome.escaped == []
    if b'"v":99' in line:
        assert any(expected in e for e in outcome.errors), outcome.errors
        return
    # a report skips the line with a warning naming what is wrong
    from typer.testing import CliRunner

    from capsule.cli import app

    with hostile.capsule_home(tmp_path / "home"):
        result = CliRunner().invoke(app, ["report", str(tmp_path / "home/runs/20260101-000000-000aa")])
    assert result.exception is None, result.exception
    assert expected in " ".join(result.output.split())


def test_out_of_range_numbers_become_unparsed_facts(tmp_path: Path) -> None:
    """A pid or exit code no kernel produces is a trace.unparsed fact, and the rest imports."""
    data = (
        b'7  1795239818.1 execve("/bin/sh", ["sh"], 0x1 /* 1 vars */) = 0\n'
        b'99999999999999999999999  1795239818.2 execve("/bin/x", ["x"], 0x1 /* 1 vars */) = 0\n'
        b"7  1795239818.3 clone(child_stack=NULL, flags=SIGCHLD) = 99999999999999999999999\n"
        b"7  1795239818.4 +++ exited with 99999999999999999999999 +++\n"
        b"7  1795239818.5 +++ exited with 0 +++\n"
    )
    outcome = hostile.feed_trace(data, tmp_path)
    _check(outcome)
    assert outcome.imported
    from capsule.stages.reader import iter_events

    (session,) = (tmp_path / "home" / "runs").iterdir()
    events = list(iter_events(session))
    reasons = [e.reason for e in events if e.KIND == "trace.unparsed"]  # type: ignore[attr-defined]
    assert reasons == [
        "pid out of range",
        "out of range: clone returned pid 99999999999999999999999",
        "exit code out of range",
    ]
    assert [e.exit_code for e in events if e.KIND == "proc.exited"] == [0]  # type: ignore[attr-defined]


def test_newer_end_line_is_one_error_not_a_recovery(tmp_path: Path) -> None:
    """A `session.ended` of a newer version hides the end: the report refuses in one line, never recovers
    (found by the mutation test: recovery read the newer line and raised)."""
    seed = golden.SESSIONS_DIR / "forks"
    lines = (seed / golden.EVENTS).read_bytes().rstrip(b"\n").split(b"\n")
    lines[-1] = re.sub(rb'"v":\d+', b'"v":99', lines[-1], count=1)
    outcome = hostile.feed_session(b"\n".join(lines) + b"\n", (seed / golden.TRACE).read_bytes(), tmp_path)
    assert outcome.escaped == []
    assert any("newer capsule" in e for e in outcome.errors), outcome.errors
