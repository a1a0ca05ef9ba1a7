"""The parser's `keep` filter drops only what the tracker ignores: same events with and without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from capsule.events import Event
from capsule.parse import StraceParser
from capsule.track import Tracker

ROOT = Path(__file__).resolve().parents[2]
TRACES = sorted([*(ROOT / "tests/data/traces").glob("*.strace"), *(ROOT / "sessions").glob("*/trace.strace")])
LEVELS = ("process", "file", "net", "all")


def _events(data: bytes, level: str, *, filtered: bool) -> list[Event]:
    tracker = Tracker(level=level)  # type: ignore[arg-type]
    parser = StraceParser(
        keep=tracker.wanted_syscalls if filtered else None,
        drop_signals=tracker.ignored_signals if filtered else frozenset(),
    )
    events = tracker.feed(parser.feed(data))
    events += tracker.feed(parser.close())
    return events + tracker.close()


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("trace", TRACES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_keep_filter_changes_no_event(trace: Path, level: str) -> None:
    """Every recorded trace, at every level, tracks to identical events with the filter on."""
    data = trace.read_bytes()
    assert _events(data, level, filtered=True) == _events(data, level, filtered=False)


def test_keep_filter_drops_most_records_of_a_full_trace() -> None:
    """At the process level most lines of an every-syscall trace never become records."""
    data = (ROOT / "tests/data/traces/full.strace").read_bytes()
    kept = StraceParser(keep=Tracker(level="process").wanted_syscalls).feed(data)
    everything = StraceParser().feed(data)
    assert len(kept) < len(everything) / 3


def test_keep_filter_never_drops_an_untimestamped_exec() -> None:
    """Without timestamps the pre-check must not mistake an argument for the call's name."""
    data = b'7 write(1, "x", 1) = 1\n7 execve("/bin/ls", ["ls", "a (b"], 0x1 /* 1 vars */) = 0\n7 +++ exited with 0 +++\n'
    assert _events(data, "process", filtered=True) == _events(data, "process", filtered=False)
    data = b'7  1.5 write(1, "x", 1) = 1\n7  1.6 execve("/bin/ls", ["ls", "a (b"], 0x1 /* 1 vars */) = 0\n'
    assert _events(data, "process", filtered=True) == _events(data, "process", filtered=False)


def test_keep_filter_keeps_exit_lines_with_parentheses() -> None:
    """`+++ killed by SIGABRT (core dumped) +++` has a `(` but is no call: it must reach the tracker."""
    data = b'9  1.0 execve("/bin/x", ["x"], 0x1 /* 1 vars */) = 0\n9  1.1 getpid() = 9\n9  1.2 +++ killed by SIGABRT (core dumped) +++\n'
    events = _events(data, "process", filtered=True)
    assert events == _events(data, "process", filtered=False)
    assert events[-1].signal == "SIGABRT"  # type: ignore[attr-defined]
