"""What form an strace log was written in, and how to read the forms the line parser cannot take alone.

Pure functions over bytes the caller read: `probe_clock` tells how the log tells time from its first and
last lines, `anchor` turns that into epoch times (the caller supplies the log's modification time and
local midnights: the core reads no clock), and `merge_per_pid` turns the files of `strace -ff -o PREFIX`
(one per pid, no pid on the lines) into one `strace -f -o FILE` log, ordered by timestamp.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator, Sequence
from typing import Literal

import attrs

from capsule.parse.grammar import COMM, EPOCH_MIN_DIGITS, MAX_ELAPSED, MAX_STAMP

Clock = Literal["epoch", "time-of-day", "relative", "none"]

DAY = 86400.0
_HALF_DAY = 43200.0
SLACK_S = 60.0  # a log's last stamp may follow its modification time by this much (clock skew, buffering)

_COMM = COMM.encode()  # `12<sh>`: `-Y` names the process after its pid
# `[pid 12] `, `12  ` or nothing, then a stamp: `1795239818.277003 ` (epoch), `     0.000123 ` (`-r`),
# `05:43:44.614042 ` or `05:43:44 ` (`-tt`, `-t`).
_STAMP = re.compile(
    rb"^(?:\[pid +\d+" + _COMM + rb"\] |\d+" + _COMM + rb" +)? *"
    rb"(?:(?P<num>\d+\.\d+)|(?P<hh>\d\d):(?P<mm>\d\d):(?P<ss>\d\d(?:\.\d+)?)) ",
    re.MULTILINE,
)
# `12  execve(`, `12  1.5 exit(`: a line of `strace -f -o FILE`, pid first.
_PID_LINE = re.compile(rb"^\d+" + _COMM + rb" +\S", re.MULTILINE)
# The first thing on a line of `strace -ff` output: a stamp or a call, never a pid.
_ANY_LINE = re.compile(rb"^(?!strace: )\S.*$|^ +\d", re.MULTILINE)


@attrs.frozen(kw_only=True)
class ClockProbe:
    """How a log tells time, from its first and last stamps as written."""

    clock: Clock
    first: float | None = None  # epoch seconds, seconds of the day, or the first relative stamp
    last: float | None = None  # the same for the last stamp (None for `relative`: only a sum says)


def _stamp(m: re.Match[bytes]) -> tuple[Clock, float]:
    num = m["num"]
    if num is not None:
        return ("epoch" if num.index(b".") >= EPOCH_MIN_DIGITS else "relative"), float(num)
    return "time-of-day", int(m["hh"]) * 3600 + int(m["mm"]) * 60 + float(m["ss"])


def _stamps(data: bytes) -> Iterator[tuple[Clock, float]]:
    """The stamps in `data` the parser accepts (an epoch one past MAX_STAMP is no time)."""
    for m in _STAMP.finditer(data):
        clock, value = _stamp(m)
        if value < MAX_STAMP and (clock != "relative" or value <= MAX_ELAPSED):
            yield clock, value


def probe_clock(head: bytes, tail: bytes) -> ClockProbe:
    """The clock of a log from its first bytes (`head`) and its last ones (`tail`, may overlap)."""
    first = next(_stamps(head), None)
    if first is None:
        return ClockProbe(clock="none")
    clock, start = first
    end = start
    for other, value in _stamps(tail):
        if other == clock:
            end = value
    return ClockProbe(clock=clock, first=start, last=None if clock == "relative" else end)


def relative_elapsed(data: bytes, start: float = 0.0) -> float:
    """`start` plus the `-r` stamps in `data` (whole lines): the time from the first line to the last.

    Feed a long log chunk by chunk, passing the sum so far; stamps the parser refuses (an epoch stamp,
    one pushing the sum past MAX_ELAPSED) are left out the same way.
    """
    total = start
    for m in _STAMP.finditer(data):
        num = m["num"]
        if num is not None and num.index(b".") < EPOCH_MIN_DIGITS:
            value = float(num)
            if total + value <= MAX_ELAPSED:
                total += value
    return total


def anchor(
    probe: ClockProbe, *, mtime: float, midnight: float, elapsed: float = 0.0
) -> tuple[float | None, float]:
    """(`trace_origin`, the time of the first stamp) in epoch seconds.

    `midnight` is the local midnight starting the day of `mtime`, the log's modification time, which is
    when its last line was written: `-t`/`-tt` stamps are counted from the midnight that puts the last
    stamp at or before it (a day earlier when the trace crossed midnight); `-r` stamps so that the last
    line falls at `mtime` (`elapsed` is their sum); a log without stamps happened, as far as anyone can
    tell, at `mtime`.
    """
    if probe.clock == "epoch":
        assert probe.first is not None
        return None, probe.first
    if probe.clock == "time-of-day":
        assert probe.first is not None
        assert probe.last is not None
        origin = midnight
        if origin + probe.last > mtime + SLACK_S:
            origin -= DAY  # the log was written the day before its modification time's day
        if probe.last < probe.first - _HALF_DAY:
            origin -= DAY  # it crossed midnight: the first stamps belong to the day before
        return origin, origin + probe.first
    if probe.clock == "relative":
        origin = mtime - elapsed
        return origin, origin + (probe.first or 0.0)
    return mtime, mtime


def has_pid_prefix(head: bytes) -> bool:
    """Do the log's lines start with a pid (`strace -f -o FILE`), unlike the files of `strace -ff`?"""
    first = _ANY_LINE.search(head)
    return first is not None and _PID_LINE.match(head, first.start()) is not None


# --- strace -ff -o PREFIX ------------------------------------------------------------------------------

# `clone(...) = 1234`, `<... vfork resumed>) = 1234`: a process this file's process created.
_SPAWNED = re.compile(rb"(?:clone3?|v?fork)(?:\(| resumed>).*\) += (\d+)", re.MULTILINE)


def _keyed(pid: int, rank: int, data: bytes) -> Iterator[tuple[float, int, int, bytes]]:
    """(time, rank, line number, `PID line`) for each line of one -ff file; lines without a stamp (or with
    `-r` ones, which cannot be compared across files) keep the time of the line before."""
    prefix = b"%d " % pid
    now = float("-inf")
    day = 0.0
    last_clock = -1.0
    for n, line in enumerate(data.splitlines()):
        m = _STAMP.match(line)
        if m is not None:
            clock, value = _stamp(m)
            if clock == "epoch":
                now = value
            elif clock == "time-of-day":
                if value < last_clock - _HALF_DAY:
                    day += DAY
                last_clock = value
                now = day + value
        yield now, rank, n, prefix + line + b"\n"


def merge_per_pid(files: Sequence[tuple[int, bytes]]) -> Iterator[bytes]:
    """The lines of `strace -ff` files (pid, content) as one `-f -o FILE` log, each with its pid.

    Lines are ordered by timestamp; each file keeps its own order; ties (and logs without comparable
    stamps) go to the process no other file spawned first -- the root must come first, since the tracker
    takes the first pid it sees as the root -- then by pid.
    """
    spawned = {int(m[1]) for _pid, data in files for m in _SPAWNED.finditer(data)}
    order = sorted(files, key=lambda f: (f[0] in spawned, f[0]))
    streams = [_keyed(pid, rank, data) for rank, (pid, data) in enumerate(order)]
    for _t, _rank, _n, line in heapq.merge(*streams):
        yield line
