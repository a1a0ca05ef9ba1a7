"""A split import (stages/import_part.py) reads a log's last part in another process, which only chooses the
lines (`Wanted.select`) that the importer's parser then reads (`feed_selected`): the same events as reading
the whole log in one process, whatever the split point and the other process's chunking. The one-pass
choice over ASCII bytes (`select_ascii`) is the text one (`select_wanted`) to the line, mark and pid."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsule.events import Event
from capsule.parse import Record, StraceParser
from capsule.parse.grammar import wanted_lines, wanted_runs
from capsule.parse.wanted import Selected, Wanted, select_ascii, select_wanted
from capsule.track import Tracker

ROOT = Path(__file__).resolve().parents[2]
TRACES = sorted([*(ROOT / "tests/data/traces").glob("*.strace"), *(ROOT / "sessions").glob("*/trace.strace")])
LEVELS = ("process", "file", "net", "all")


def _one_process(data: bytes, level: str, *, filtered: bool = True) -> tuple[list[Record], list[Event]]:
    tracker = Tracker(level=level)  # type: ignore[arg-type]
    parser = StraceParser(
        keep=tracker.wanted_syscalls if filtered else None,
        drop_signals=tracker.ignored_signals if filtered else frozenset(),
    )
    records = parser.feed(data) + parser.close()
    return records, tracker.feed(records) + tracker.close()


def _split(data: bytes, level: str, cut: int, sizes: list[int]) -> tuple[list[Record], list[Event]]:
    """The head (data[:cut], whole lines) parsed here; the rest chosen as the other process chooses it,
    in chunks of about `sizes` bytes (whole lines), and its unfinished last line passed as it is."""
    tracker = Tracker(level=level)  # type: ignore[arg-type]
    parser = StraceParser(keep=tracker.wanted_syscalls, drop_signals=tracker.ignored_signals)
    records = parser.feed(data[:cut])
    wanted = Wanted(tracker.wanted_syscalls, tracker.ignored_signals)
    rest = data[cut:]
    end = rest.rfind(b"\n") + 1
    body, tail = rest[:end], rest[end:]
    seen: set[str] = set()
    at = 0
    for size in [*sizes, len(body)]:
        if at >= len(body):
            break
        stop = body.find(b"\n", at + max(size, 1) - 1) + 1 or len(body)
        chosen = wanted.select(body[at:stop], seen)
        seen.update(chosen.new_pids)
        chosen = Selected(*tuple(chosen))  # as marshal gives it back: a plain tuple
        records += parser.feed_selected(chosen)
        at = stop
    if tail:
        records += parser.feed(tail)
    records += parser.close()
    return records, tracker.feed(records) + tracker.close()


def _line_starts(data: bytes) -> list[int]:
    return [0] + [i + 1 for i, c in enumerate(data) if c == 10]


_SPLITTABLE = [t for t in TRACES if StraceParser.filters_from(t.read_bytes()[: 1 << 16])]


def test_the_golden_traces_include_splittable_ones() -> None:
    assert len(_SPLITTABLE) >= 5


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("trace", _SPLITTABLE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_split_reading_changes_no_event(trace: Path, level: str) -> None:
    """Every `-ttt` trace, at every level, split at several lines with random chunks: the same events as
    one process gives (and the same records as filtered there), filtered or not."""
    data = trace.read_bytes()
    whole = _one_process(data, level)
    assert whole[1] == _one_process(data, level, filtered=False)[1]
    starts = _line_starts(data)
    rng = random.Random(15)
    for cut in {starts[1], starts[len(starts) // 2], starts[-1], *rng.sample(starts, min(4, len(starts)))}:
        sizes = [rng.randint(1, 400) for _ in range(50)]
        assert _split(data, level, cut, sizes) == whole, f"cut at byte {cut}"


_LINE = st.sampled_from(
    [
        *(b"12 ", b"12  ", b"13 ", b"14 ", b"9999999 ", b"[pid 3] ", b"1795239818.277003 ", b"0.000123 "),
        *(b"05:00:00.25 ", b"execve(", b"clone(", b"vfork(", b"read(", b"wait4(", b")", b" = ", b"0"),
        *(b"13", b"14", b"-1 ENOENT (x)", b"<... ", b"execve resumed>", b"clone resumed>", b"read resumed>"),
        *(
            b" <unfinished ...>",
            b"+++ exited with 1 +++",
            b"--- SIGCHLD {si_pid=13} ---",
            b"--- SIGINT {} ---",
        ),
        *(b"strace: Process 14 attached", b'"/bin/x", ["x"], 0x1 /* 1 vars */', b"\n", b"\n", b"\n", b"\xff"),
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(_LINE, max_size=60),
    cut=st.integers(0, 100),
    sizes=st.lists(st.integers(1, 60), max_size=10),
    level=st.sampled_from(LEVELS),
)
def test_split_reading_is_one_process_reading(
    parts: list[bytes], cut: int, sizes: list[int], level: str
) -> None:
    """Near-miss `-f -ttt` text after an epoch-stamped first line (what a split import needs), split at any
    line, chosen in any chunks: the records and events of reading it all in one process."""
    data = b'12 1795239818.277003 execve("/bin/sh", ["sh"], 0x1 /* 1 vars */) = 0\n' + b"".join(parts)
    assert StraceParser.filters_from(data[:200])
    starts = _line_starts(data)
    at = starts[min(max(cut, 1), len(starts) - 1)]
    assert _split(data, level, at, sizes) == _one_process(data, level)


# Lines of fields: pid, spaces, stamp, spaces, body (skippable or not at each level), most of them
# well-formed, some with a field a near miss, some a few pieces of anything.
_BODY = st.sampled_from(
    [
        *(b"execve(", b"clone3(", b"fork(x) = 1", b"read(3) = 1", b"_x(", b"a1(", b"openat(", b"connect("),
        *(b"<... execve resumed>", b"<... read resumed>) = 0", b"<... openat resumed>", b"<... x y resumed>"),
        *(b"--- SIGCHLD {} ---", b"--- SIGCHLD", b"--- SIGINT {} ---", b"+++ exited with 1 +++", b"(", b""),
    ]
)
_WELL_FORMED = st.tuples(
    st.sampled_from([b"12", b"13", b"014", b"9"]),
    st.sampled_from([b" ", b"  "]),
    st.sampled_from([b"1795239818.277003", b"1.5:2"]),
    st.just(b" "),
    _BODY,
)
_NEAR_MISS = st.tuples(
    st.sampled_from([b"12", b"[pid 3]", b"x", b""]),
    st.sampled_from([b" ", b""]),
    st.sampled_from([b"1795239818.277003", b"0", b".5", b""]),
    st.sampled_from([b" ", b"  ", b""]),
    _BODY,
)
_PIECES = st.lists(
    st.sampled_from([b"12 ", b"read(", b"strace: x", b" ", b"<... ", b"--- ", b"\n"]), max_size=4
)
_ASCII_LINE = st.one_of(
    _WELL_FORMED.map(b"".join), _WELL_FORMED.map(b"".join), _NEAR_MISS.map(b"".join), _PIECES.map(b"".join)
)


@settings(max_examples=500, deadline=None)
@given(
    lines=st.lists(_ASCII_LINE, max_size=40),
    level=st.sampled_from(LEVELS),
    seen=st.sets(st.sampled_from(["9", "12", "13", "14", "014", "3"])),
)
def test_one_pass_choice_is_the_text_choice(lines: list[bytes], level: str, seen: set[str]) -> None:
    """Any ASCII chunk of near-miss lines, any pids seen before: `select_ascii` chooses the lines (with
    their numbers and marks) and finds the new pids (in order) that `select_wanted` does."""
    block = b"".join(line + b"\n" for line in lines)
    tracker = Tracker(level=level)  # type: ignore[arg-type]
    keep, signals = tracker.wanted_syscalls, tracker.ignored_signals
    text = select_wanted(block.decode("ascii"), wanted_lines(keep, signals), seen)
    assert select_ascii(block, wanted_runs(keep, signals), seen) == text
    assert Wanted(keep, signals).select(block, seen) == text
