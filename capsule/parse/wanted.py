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
