"""The facts the parser extracts from strace lines: frozen attrs records, one per kind of line.

Every record carries `line_no` (1-based), `pid` (None when the line has no pid prefix) and `ts` (epoch
seconds, None without `-t`/`-tt`/`-ttt`). Arguments stay raw text: decoding is the tracker's business.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

import attrs

from capsule.parse.grammar import PID_CHANGED_MARK, RESULT_TAIL

SyscallState = Literal["complete", "unfinished", "resumed"]

_TAIL = re.compile(RESULT_TAIL)
_PID_CHANGED = re.compile(PID_CHANGED_MARK)


@attrs.frozen(kw_only=True)
class Syscall:
    """A syscall line: whole, the first half of an interrupted call, or its resumption.

    Only the fields every line needs are stored (records are built at 300k+ lines/s); the result, errno,
    `-T` duration and markers are read from `tail`, the raw text after ` = ` (or the `<unfinished ...>`,
    `<pid changed to N ...>`, `<detached ...>` marker), by the properties below.
    """

    line_no: int
    pid: int | None
    ts: float | None
    name: str
    args: str  # raw argument text (for a resumed call: only the part after `resumed>`)
    state: SyscallState
    tail: str = ""  # `3</etc/x> <0.000012>`, `-1 ENOENT (No such file or directory)`, `<unfinished ...>`

    @property
    def _tail_match(self) -> re.Match[str] | None:
        return _TAIL.match(self.tail) if self.state != "unfinished" else None

    @property
    def result(self) -> str | None:
        """`0`, `-1`, `0x7f..`, `?`; None when the line has no result (unfinished, or resumed open)."""
        m = self._tail_match
        return m["result"] if m is not None else None

    @property
    def errno(self) -> str | None:
        """`ENOENT` for a failed call."""
        m = self._tail_match
        return m["errno"] if m is not None else None

    @property
    def extra(self) -> str:
        """What strace says after the result: ` (No such file or directory)`, ` <unavailable>`, ..."""
        m = self._tail_match
        return m["extra"] if m is not None else ""

    @property
    def duration(self) -> float | None:
        """The `-T` time spent in the call."""
        m = self._tail_match
        return float(m["duration"]) if m is not None and m["duration"] is not None else None

    @property
    def pid_changed_to(self) -> int | None:
        """`<pid changed to N ...>`: a thread's execve, which resumes in the leader's pid N."""
        m = _PID_CHANGED.match(self.tail) if self.state == "unfinished" else None
        return int(m[1]) if m is not None else None

    @property
    def detached(self) -> bool:
        """`<detached ...>`: strace let go of the task mid-call; the call never resumes."""
        return self.state == "unfinished" and self.tail == "<detached ...>"


def _slot_setters(cls: type) -> tuple[Callable[[object, object], None], ...]:
    return tuple(cls.__dict__[f.name].__set__ for f in attrs.fields(cls))


_SYSCALL_SETTERS = _slot_setters(Syscall)
_new = object.__new__


def make_syscall(
    line_no: int, pid: int | None, ts: float | None, name: str, args: str, state: SyscallState, tail: str
) -> Syscall:
    """Build a Syscall as `Syscall(...)` would, at twice the speed: the parser's hot path.

    attrs' frozen `__init__` goes through `object.__setattr__` per field (1.4 us here, half the budget
    of a line at 300k lines/s); the slots' own descriptors set the same fields in 0.8 us.
    """
    s = _new(Syscall)
    s_line_no, s_pid, s_ts, s_name, s_args, s_state, s_tail = _SYSCALL_SETTERS
    s_line_no(s, line_no)
    s_pid(s, pid)
    s_ts(s, ts)
    s_name(s, name)
    s_args(s, args)
    s_state(s, state)
    s_tail(s, tail)
    return s


@attrs.frozen(kw_only=True)
class Exited:
    """`+++ exited with N +++`"""

    line_no: int
    pid: int | None
    ts: float | None
    code: int


@attrs.frozen(kw_only=True)
class Killed:
    """`+++ killed by SIGX (core dumped) +++`"""

    line_no: int
    pid: int | None
    ts: float | None
    signal: str
    core_dumped: bool


@attrs.frozen(kw_only=True)
class Superseded:
    """`+++ superseded by execve in pid N +++`: a thread of this leader exec'd and took over its pid."""

    line_no: int
    pid: int | None
    ts: float | None
    by_pid: int | None  # the thread that exec'd (strace >= 6.0 says which)


@attrs.frozen(kw_only=True)
class Signal:
    """`--- SIGX {si_signo=...} ---` (delivery) or `--- stopped by SIGX ---`."""

    line_no: int
    pid: int | None
    ts: float | None
    signal: str
    info: str  # the raw `{...}` siginfo text, "" for a stop
    stopped: bool = False


@attrs.frozen(kw_only=True)
class Attached:
    """`strace: Process N attached` / `detached`: strace's own bookkeeping about task N."""

    line_no: int
    pid: int | None  # the task attached or detached
    ts: float | None
    detached: bool = False


@attrs.frozen(kw_only=True)
class Message:
    """Any other `strace: ...` diagnostic (warnings, `-p` notices): strace speaking, not the trace."""

    line_no: int
    pid: int | None
    ts: float | None
    text: str


@attrs.frozen(kw_only=True)
class Unparsed:
    """A line the parser did not understand: kept with the reason, never fatal."""

    line_no: int
    pid: int | None
    ts: float | None
    text: str
    reason: str


Record = Syscall | Exited | Killed | Superseded | Signal | Attached | Message | Unparsed
