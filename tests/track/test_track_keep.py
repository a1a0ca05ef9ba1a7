"""The parser's `keep` filter drops only what the tracker ignores: same events with and without it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsule.events import Event
from capsule.parse import StraceParser
from capsule.track import Tracker

ROOT = Path(__file__).resolve().parents[2]
TRACES = sorted([*(ROOT / "tests/data/traces").glob("*.strace"), *(ROOT / "sessions").glob("*/trace.strace")])
LEVELS = ("process", "file", "net", "all")


def _events(data: bytes, level: str, *, filtered: bool, size: int | None = None) -> list[Event]:
    """The events of `data` (fed whole, or in pieces of `size` bytes), with the keep filter or without."""
    tracker = Tracker(level=level)  # type: ignore[arg-type]
    parser = StraceParser(
        keep=tracker.wanted_syscalls if filtered else None,
        drop_signals=tracker.ignored_signals if filtered else frozenset(),
    )
    events: list[Event] = []
    step = size or len(data) or 1
    for at in range(0, len(data), step):
        events += tracker.feed(parser.feed(data[at : at + step]))
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


# Lines of a fork-heavy `-f -ttt` trace of a few pids, with their odd relatives: what the parser's hot
# loop takes by FAST_OTHER, FAST_CALL, the pre-check or the slow path, in any mix. (No line the parser
# finds out of range: an Unparsed first line of the root is a case of its own, not of the hot loop.)
_PIDS = [b"12 ", b"13  ", b"14 "]
_UNFINISHED = [  # (the unfinished line's body, the resumed line's body)
    (b"vfork( <unfinished ...>", b"<... vfork resumed>) = 13"),
    (b"vfork( <unfinished ...>", b"<... vfork resumed>) = 14"),
    (b'execve("/bin/true", ["/bin/true"], 0x5 /* 3 vars */ <unfinished ...>', b"<... execve resumed>) = 0"),
    (b"wait4(-1,  <unfinished ...>", b"<... wait4 resumed>[{WIFEXITED(s)}], 0, NULL) = 13"),
    (b'write(1, "f(x) = 1", 8 <unfinished ...>', b"<... write resumed>) = 8"),
    (b"_x( <unfinished ...>", b"<... _x resumed>) = 0"),
]
_WHOLE = [
    *(b"vfork() = 14", b"clone(x) = 13", b"exit_group(0) = ?", b"9x() = 0", b"getpid() = 12"),
    *(
        b"+++ exited with 0 +++",
        b"+++ killed by SIGKILL +++",
        b"--- SIGCHLD {si_signo=SIGCHLD, si_pid=13} ---",
    ),
    b"--- SIGUSR1 {si_signo=SIGUSR1, si_pid=12} ---",
]


def _well_formed(picks: list[tuple[int, int, bool]]) -> bytes:
    """Lines from (pid, body, stamp) picks, each pid's own sequence as strace writes it: one call in
    flight at a time, its next line resuming it."""
    pending: dict[int, bytes] = {}
    out = []
    for pid, body, late in picks:
        stamp = b"1795239818.5 " if late else b"1795239818.277003 "
        if pid in pending:
            text = pending.pop(pid)
        elif body < len(_UNFINISHED):
            text, pending[pid] = _UNFINISHED[body]
        else:
            text = _WHOLE[body - len(_UNFINISHED)]
        out.append(_PIDS[pid] + stamp + text + b"\n")
    return b"".join(out)


_PICK = st.tuples(
    st.integers(0, len(_PIDS) - 1), st.integers(0, len(_UNFINISHED) + len(_WHOLE) - 1), st.booleans()
)


@settings(max_examples=300, deadline=None)
@given(picks=st.lists(_PICK, max_size=30), size=st.integers(1, 400))
def test_keep_filter_changes_no_event_of_fork_heavy_lines(
    picks: list[tuple[int, int, bool]], size: int
) -> None:
    """Fork-heavy lines of a few pids in any order, fed in chunks of any size: the same events with the
    filter on."""
    data = _well_formed(picks)
    assert _events(data, "process", filtered=True, size=size) == _events(data, "process", filtered=False)
