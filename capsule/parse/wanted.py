"""The lines of a chunk the keep filter lets through (`select_wanted`), in a module of its own: the second
process of a split import (stages/import_part.py) chooses them without loading the parser's records."""

from __future__ import annotations

import re
from typing import NamedTuple

from capsule.parse import grammar as g


class Selected(NamedTuple):
    """The lines of one chunk (whole lines) the keep filter lets through, as `select_wanted` found them.

    `lines`: (line number within the chunk, 1-based; text; pid or None): a line with a pid was kept only
    as that pid's first line in the part read (kept if the parser has not seen the pid before).
    `new_pids`: the pids first seen in this chunk of the part; `lines_in`: the chunk's lines."""

    lines_in: int
    lines: list[tuple[int, str, str | None]]
    new_pids: list[str]


class Wanted:
    """The keep filter of a tracker (its syscall names and ignored signals) choosing the lines of chunks:
    `select(block, seen)` is `select_wanted` of the block decoded, by one pass over its bytes when they
    are ASCII (nearly every strace log: strace escapes what is not), by the text patterns otherwise.
    Each pattern is compiled on first use."""

    def __init__(self, keep: frozenset[str], drop_signals: frozenset[str] = frozenset()) -> None:
        self.keep, self.drop_signals = keep, drop_signals
        self._runs: re.Pattern[bytes] | None = None
        self._lines: re.Pattern[str] | None = None

    def select(self, block: bytes, seen: set[str]) -> Selected:
        """The lines of `block` (whole lines) the filter lets through, and the first line of each pid
        not in `seen` (`seen` is not changed)."""
        if block.isascii():
            if self._runs is None:
                self._runs = g.wanted_runs(self.keep, self.drop_signals)
            return select_ascii(block, self._runs, seen)
        return select_wanted(block.decode("utf-8", "replace"), self.lines(), seen)

    def lines(self) -> re.Pattern[str]:
        """The text pattern (grammar.wanted_lines) of this filter."""
        if self._lines is None:
            self._lines = g.wanted_lines(self.keep, self.drop_signals)
        return self._lines


def select_wanted(text: str, wanted: re.Pattern[str], seen: set[str]) -> Selected:
    """The lines of `text` (whole lines) that `wanted` (grammar.wanted_lines) finds, plus the first line
    of every pid not in `seen` (marked with its pid); `seen` is not changed."""
    framed = "\n" + text  # a match at framed[i] (its newline) is the line starting at text[i]
    starts = [m.start() for m in wanted.finditer(framed)]
    # dict.fromkeys keeps first occurrences in order, so each new pid's first line lies after the
    # previous one's: every search starts where the last stopped (one pass over the chunk in all).
    new_pids = [pid for pid in dict.fromkeys(g.LINE_PID.findall(framed)) if pid not in seen]
    first: dict[int, str | None] = dict.fromkeys(starts)
    at = 0
    for pid in new_pids:
        at = framed.find("\n" + pid + " ", at)
        first.setdefault(at, pid)
    lines: list[tuple[int, str, str | None]] = []
    line_no, counted = 0, 0
    for start in sorted(first):
        line_no += text.count("\n", counted, start)
        counted = start
        lines.append((line_no + 1, text[start : text.find("\n", start)], first[start]))
    return Selected(text.count("\n"), lines, new_pids)


def select_ascii(block: bytes, runs: re.Pattern[bytes], seen: set[str]) -> Selected:
    """`select_wanted` of ASCII `block` (whole lines) decoded, with `runs` (grammar.wanted_runs) of the
    same filter: the same lines, marks and pids, from one pass that yields a match per wanted line and
    per run of one pid's skippable lines (a pid's first line starts a run or is a wanted line)."""
    framed = b"\n" + block  # a match at framed[i] (its newline) is the line starting at block[i]
    lines: list[tuple[int, str, str | None]] = []
    new: dict[str, None] = {}
    # The pids (as bytes) already in `seen` or `new`: a pid's later lines cost one lookup, not a decode.
    known: set[bytes] = set()
    count = block.count
    line_no, counted = 0, 0
    for m in runs.finditer(framed):
        run_pid, line, line_pid = m.groups()
        start = m.start()
        if line is None:  # a run of skippable lines: kept only as the first line of a new pid
            if run_pid in known:
                continue
            known.add(run_pid)
            pid = run_pid.decode()
            if pid in seen:
                continue
            new[pid] = None
            mark: str | None = pid
            line = framed[start + 1 : framed.find(b"\n", start + 1)]
        else:
            mark = None
            if line_pid is not None and line_pid not in known:
                known.add(line_pid)
                pid = line_pid.decode()
                if pid not in seen:
                    new[pid] = None
        line_no += count(b"\n", counted, start)
        counted = start
        lines.append((line_no + 1, line.decode("ascii"), mark))
    return Selected(line_no + count(b"\n", counted), lines, list(new))
