"""The strace parser: table-driven line cases, real recordings, and any chunking of any bytes."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsule.parse import (
    NEED_DATA,
    Attached,
    Exited,
    Killed,
    Message,
    Record,
    Signal,
    StraceParser,
    Superseded,
    Syscall,
    Unparsed,
)

TRACES = Path(__file__).parent.parent / "data" / "traces"
FIXTURES = sorted(TRACES.glob("*.strace"))


def parse(
    data: bytes,
    chunks: list[int] | None = None,
    tt_origin: float = 0.0,
    keep: frozenset[str] | None = None,
    drop_signals: frozenset[str] = frozenset(),
) -> list[Record]:
    """Parse `data` fed in pieces of the given sizes (the rest in one piece), then close."""
    p = StraceParser(tt_origin=tt_origin, keep=keep, drop_signals=drop_signals)
    out: list[Record] = []
    pos = 0
    for size in chunks or []:
        out += p.feed(data[pos : pos + size])
        pos += size
    out += p.feed(data[pos:])
    return out + p.close()


def assert_chunking_invariant(data: bytes, seed: int = 0) -> list[Record]:
    """Whole, one byte at a time and random chunks all give the same records."""
    whole = parse(data)
    assert parse(data, [1] * len(data)) == whole
    rng = random.Random(seed)
    for _ in range(3):
        assert parse(data, [rng.randint(1, 40) for _ in range(len(data) // 10 + 1)]) == whole
    return whole


def call(line_no: int = 1, pid: int | None = 1234, ts: float | None = None, **kw: object) -> Syscall:
    return Syscall(line_no=line_no, pid=pid, ts=ts, **kw)  # type: ignore[arg-type]


CASES: list[tuple[str, bytes, list[Record]]] = [
    (
        "-o style pid and -ttt",
        b'3366  1795239818.278728 execve("/bin/true", ["true"], 0x7ffc /* 35 vars */) = 0\n',
        [
            call(
                ts=1795239818.278728,
                pid=3366,
                name="execve",
                args='"/bin/true", ["true"], 0x7ffc /* 35 vars */',
                state="complete",
                tail="0",
            )
        ],
    ),
    (
        "stderr style [pid N] and -tt",
        b"[pid  3819] 05:43:54.975068 rseq(0x7fde69507fe0, 0x20, 0, 0x53053053 <unfinished ...>\n",
        [
            call(
                pid=3819,
                ts=5 * 3600 + 43 * 60 + 54.975068,
                name="rseq",
                args="0x7fde69507fe0, 0x20, 0, 0x53053053",
                state="unfinished",
                tail="<unfinished ...>",
            )
        ],
    ),
    (
        "no pid, -t, -yy decorations",
        b"05:43:55 connect(3<TCP:[6421]>, {sa_family=AF_INET, sin_port=htons(9)}, 16) = -1 ECONNREFUSED "
        b"(Connection refused)\n",
        [
            call(
                pid=None,
                ts=5 * 3600 + 43 * 60 + 55.0,
                name="connect",
                args="3<TCP:[6421]>, {sa_family=AF_INET, sin_port=htons(9)}, 16",
                state="complete",
                tail="-1 ECONNREFUSED (Connection refused)",
            )
        ],
    ),
    (
        "no pid, no timestamp, padded =",
        b"exit_group(0)                           = ?\n",
        [call(pid=None, name="exit_group", args="0", state="complete", tail="?")],
    ),
    (
        "-T duration and -y result",
        b'1  1.5 openat(AT_FDCWD</tmp>, "/etc/x", O_RDONLY) = 3</etc/x> <0.000023>\n',
        [
            call(
                pid=1,
                ts=1.5,
                name="openat",
                args='AT_FDCWD</tmp>, "/etc/x", O_RDONLY',
                state="complete",
                tail="3</etc/x> <0.000023>",
            )
        ],
    ),
    (
        "resumed",
        b"3365  1795239818.280709 <... wait4 resumed>NULL, 0, NULL) = 3366\n",
        [
            call(
                pid=3365,
                ts=1795239818.280709,
                name="wait4",
                args="NULL, 0, NULL",
                state="resumed",
                tail="3366",
            )
        ],
    ),
    (
        "resumed with nothing after it",
        b"12 <... clone3 resumed>\n",
        [call(pid=12, name="clone3", args="", state="resumed", tail="")],
    ),
    (
        "= ? <unavailable>",
        b"12 <... futex resumed>) = ? <unavailable>\n",
        [call(pid=12, name="futex", args="", state="resumed", tail="? <unavailable>")],
    ),
    (
        "??? syscall name",
        b"12 ???(0x1, 0x2) = -1 ENOSYS (Function not implemented)\n",
        [
            call(
                pid=12,
                name="???",
                args="0x1, 0x2",
                state="complete",
                tail="-1 ENOSYS (Function not implemented)",
            )
        ],
    ),
    (
        "hex result",
        b"12 brk(NULL) = 0x55a05aa61000\n",
        [call(pid=12, name="brk", args="NULL", state="complete", tail="0x55a05aa61000")],
    ),
    (
        "= inside a quoted argument",
        b'12 write(1, "f(x) = 1", 8) = 8\n',
        [call(pid=12, name="write", args='1, "f(x) = 1", 8', state="complete", tail="8")],
    ),
    (
        "= inside an unfinished call's argument",
        b'12 write(1, "f(x) = 1", 8 <unfinished ...>\n',
        [call(pid=12, name="write", args='1, "f(x) = 1", 8', state="unfinished", tail="<unfinished ...>")],
    ),
    (
        "pid changed",
        b'3486  1.0 execve("/bin/echo", ["echo"], 0x7ffe /* 35 vars */ <pid changed to 3485 ...>\n',
        [
            call(
                pid=3486,
                ts=1.0,
                name="execve",
                args='"/bin/echo", ["echo"], 0x7ffe /* 35 vars */',
                state="unfinished",
                tail="<pid changed to 3485 ...>",
            )
        ],
    ),
    (
        "detached mid-call",
        b"12 wait4(-1,  <detached ...>\n",
        [call(pid=12, name="wait4", args="-1, ", state="unfinished", tail="<detached ...>")],
    ),
    ("exited", b"12 +++ exited with 5 +++\n", [Exited(line_no=1, pid=12, ts=None, code=5)]),
    (
        "killed, core dumped",
        b"12 +++ killed by SIGSEGV (core dumped) +++\n",
        [Killed(line_no=1, pid=12, ts=None, signal="SIGSEGV", core_dumped=True)],
    ),
    (
        "killed",
        b"12 +++ killed by SIGKILL +++\n",
        [Killed(line_no=1, pid=12, ts=None, signal="SIGKILL", core_dumped=False)],
    ),
    (
        "superseded (6.x)",
        b"3485  +++ superseded by execve in pid 3486 +++\n",
        [Superseded(line_no=1, pid=3485, ts=None, by_pid=3486)],
    ),
    (
        "superseded (older)",
        b"3485  +++ superseded by execve +++\n",
        [Superseded(line_no=1, pid=3485, ts=None, by_pid=None)],
    ),
    (
        "signal",
        b"12 --- SIGUSR1 {si_signo=SIGUSR1, si_code=SI_USER, si_pid=3365, si_uid=0} ---\n",
        [
            Signal(
                line_no=1,
                pid=12,
                ts=None,
                signal="SIGUSR1",
                info="{si_signo=SIGUSR1, si_code=SI_USER, si_pid=3365, si_uid=0}",
            )
        ],
    ),
    (
        "stopped",
        b"12 --- stopped by SIGSTOP ---\n",
        [Signal(line_no=1, pid=12, ts=None, signal="SIGSTOP", info="", stopped=True)],
    ),
    (
        "attached and detached",
        b"strace: Process 77 attached\nstrace: Process 77 detached\n",
        [
            Attached(line_no=1, pid=77, ts=None),
            Attached(line_no=2, pid=77, ts=None, detached=True),
        ],
    ),
    (
        "an strace diagnostic",
        b"strace: Seccomp filter is requested but there are no syscalls to filter.\n",
        [
            Message(
                line_no=1,
                pid=None,
                ts=None,
                text="strace: Seccomp filter is requested but there are no syscalls to filter.",
            )
        ],
    ),
    (
        "attach notice cutting a call (stderr style)",
        b"clone3({flags=CLONE_VM, exit_signal=0}strace: Process 3819 attached\n <unfinished ...>\n",
        [
            Attached(line_no=1, pid=3819, ts=None),
            call(
                line_no=2,
                pid=None,
                name="clone3",
                args="{flags=CLONE_VM, exit_signal=0}",
                state="unfinished",
                tail="<unfinished ...>",
            ),
        ],
    ),
    (
        "empty lines are counted, not records",
        b"\n\n12 +++ exited with 0 +++\n",
        [Exited(line_no=3, pid=12, ts=None, code=0)],
    ),
    (
        "garbage",
        b"hello world\n",
        [Unparsed(line_no=1, pid=None, ts=None, text="hello world", reason="not a syscall line")],
    ),
    (
        "non-UTF-8 bytes",
        b"12 \xff\xfe junk\n",
        [Unparsed(line_no=1, pid=12, ts=None, text="12 \ufffd\ufffd junk", reason="not a syscall line")],
    ),
    (
        "-Y: the process's name after its pid, -o and stderr style",
        b"3366<sh> 1795239818.278728 getppid() = 3360<strace>\n"
        b"[pid  3367<a\\76 b>] 1795239818.278729 +++ exited with 0 +++\n",
        [
            call(
                ts=1795239818.278728, pid=3366, name="getppid", args="", state="complete", tail="3360<strace>"
            ),
            Exited(line_no=2, pid=3367, ts=1795239818.278729, code=0),
        ],
    ),
    (
        "-n and -i: the syscall's number and the instruction pointer before the body",
        b"12 1795239818.5 [ 110] [00007f4fec27ead7] getppid() = 1\n"
        b"12 1795239818.6 [ 231] [????????????????] +++ exited with 0 +++\n"
        b"13 1795239818.7 [00007f4fec27ead7] --- SIGCHLD {si_signo=SIGCHLD} ---\n",
        [
            call(ts=1795239818.5, pid=12, name="getppid", args="", state="complete", tail="1"),
            Exited(line_no=2, pid=12, ts=1795239818.6, code=0),
            Signal(line_no=3, pid=13, ts=1795239818.7, signal="SIGCHLD", info="{si_signo=SIGCHLD}"),
        ],
    ),
    (
        "-k: stack frames are strace's own text",
        b"12 1795239818.5 getppid() = 1\n"
        b" > /usr/lib/x86_64-linux-gnu/libc.so.6(getppid+0x7) [0xe3ad7]\n"
        b" > /usr/bin/bash() [0x3b470]\n",
        [
            call(ts=1795239818.5, pid=12, name="getppid", args="", state="complete", tail="1"),
            Message(
                line_no=2,
                pid=None,
                ts=None,
                text=" > /usr/lib/x86_64-linux-gnu/libc.so.6(getppid+0x7) [0xe3ad7]",
            ),
            Message(line_no=3, pid=None, ts=None, text=" > /usr/bin/bash() [0x3b470]"),
        ],
    ),
    (
        "-C: the summary table after the trace is strace's own text",
        b"12 1795239818.5 +++ exited with 0 +++\n"
        b"% time     seconds  usecs/call     calls    errors syscall\n"
        b"------ ----------- ----------- --------- --------- ----------------\n"
        b" 85.18    0.251819        2444       103        50 wait4\n",
        [
            Exited(line_no=1, pid=12, ts=1795239818.5, code=0),
            Message(
                line_no=2,
                pid=None,
                ts=None,
                text="% time     seconds  usecs/call     calls    errors syscall",
            ),
            Message(
                line_no=3,
                pid=None,
                ts=None,
                text="------ ----------- ----------- --------- --------- ----------------",
            ),
            Message(
                line_no=4, pid=None, ts=None, text=" 85.18    0.251819        2444       103        50 wait4"
            ),
        ],
    ),
    (
        "CRLF line ends (a log that went through Windows), the last line's too",
        b"12 1795239818.5 getppid() = 1\r\n12 1795239818.6 +++ exited with 0 +++\r",
        [
            call(ts=1795239818.5, pid=12, name="getppid", args="", state="complete", tail="1"),
            Exited(line_no=2, pid=12, ts=1795239818.6, code=0),
        ],
    ),
    (
        "partial last line parsed at close",
        b"12 +++ exited with 1 +++",
        [Exited(line_no=1, pid=12, ts=None, code=1)],
    ),
]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_line_cases(data: bytes, expected: list[Record]) -> None:
    """Each line shape parses to the expected records, however the bytes are chunked."""
    assert assert_chunking_invariant(data) == expected


def test_result_properties() -> None:
    """result, errno, extra and duration are read from the tail."""
    (rec,) = parse(b'1 openat(AT_FDCWD, "/x", O_RDONLY) = -1 ENOENT (No such file or directory) <0.000012>\n')
    assert isinstance(rec, Syscall)
    assert (rec.result, rec.errno, rec.extra, rec.duration) == (
        "-1",
        "ENOENT",
        " (No such file or directory)",
        1.2e-05,
    )
    (rec,) = parse(b"1 <... futex resumed>) = ? <unavailable>\n")
    assert isinstance(rec, Syscall)
    assert (rec.result, rec.errno, rec.extra) == ("?", None, " <unavailable>")
    (rec,) = parse(b'1 execve("/bin/echo", [], 0x7f <pid changed to 3485 ...>\n')
    assert isinstance(rec, Syscall)
    assert (rec.pid_changed_to, rec.result, rec.detached) == (3485, None, False)
    (rec,) = parse(b"1 <... vfork resumed>) = 0x4485\n")  # `-e raw=all`: results in hex
    assert isinstance(rec, Syscall)
    assert (rec.result, rec.errno, rec.extra) == ("0x4485", None, "")


def test_tt_origin_and_midnight() -> None:
    """-tt stamps add tt_origin, and a trace crossing midnight keeps counting."""
    recs = parse(b"23:59:59.5 +++ exited with 0 +++\n00:00:00.25 +++ exited with 0 +++\n", tt_origin=1000.0)
    assert [r.ts for r in recs] == [1000.0 + 86399.5, 1000.0 + 86400.25]


def test_lines_counter_and_next_record() -> None:
    """The h11-style interface yields the same records, then NEED_DATA."""
    p = StraceParser()
    p.receive_data(b"1 +++ exited with 0 +++\n2 +++ exi")
    assert p.next_record() == Exited(line_no=1, pid=1, ts=None, code=0)
    assert p.next_record() is NEED_DATA
    p.receive_data(b"ted with 1 +++")
    p.receive_data(b"")
    assert p.next_record() == Exited(line_no=2, pid=2, ts=None, code=1)
    assert p.next_record() is NEED_DATA
    assert p.lines == 2


@pytest.mark.parametrize("path", FIXTURES, ids=[f.name for f in FIXTURES])
def test_real_recordings_parse_fully(path: Path) -> None:
    """Every line of every real recording is understood, whatever the chunking."""
    data = path.read_bytes()
    if len(data) < 30_000:
        records = assert_chunking_invariant(data)
    else:
        records = parse(data)
        assert parse(data, [random.Random(1).randint(1, 4000) for _ in range(100)]) == records
    assert not [r for r in records if isinstance(r, Unparsed)]
    assert len(records) <= data.count(b"\n")


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(1, 50), max_size=20))
def test_arbitrary_bytes_never_crash(data: bytes, cuts: list[int]) -> None:
    """Any bytes, any chunking: no exception, and the same records as in one piece."""
    assert parse(data, cuts) == parse(data)


_ALPHABET = st.sampled_from(
    [
        *(b"12 ", b"[pid 3] ", b"1.5 ", b"05:00:00 ", b"execve(", b")", b" = ", b"0", b"-1 ENOENT"),
        *(b"<... ", b" resumed>", b" <unfinished ...>", b"+++ exited with 1 +++", b"--- SIGINT {} ---"),
        *(b"strace: Process 4 attached", b'"a\\"', b"\n", b"\xff", b"???"),
    ]
)


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(_ALPHABET, max_size=40), cuts=st.lists(st.integers(1, 30), max_size=20))
def test_strace_like_bytes_never_crash(parts: list[bytes], cuts: list[int]) -> None:
    """Near-miss strace text: no exception, chunking-invariant."""
    data = b"".join(parts)
    assert parse(data, cuts) == parse(data)


def _parse_slow(data: bytes, cuts: list[int] | None = None) -> list[Record]:
    """`parse` with every fast path (FAST_CALL, FAST_OTHER, PREFIX_FAST) switched off: every line by
    `_parse_line`."""
    from capsule.parse import grammar

    never = re.compile(r"(?!)")
    saved = grammar.FAST_CALL, grammar.FAST_OTHER, grammar.PREFIX_FAST
    grammar.FAST_CALL = grammar.FAST_OTHER = grammar.PREFIX_FAST = never
    try:
        return parse(data, cuts)
    finally:
        grammar.FAST_CALL, grammar.FAST_OTHER, grammar.PREFIX_FAST = saved


# The keep filter of a process-level recording (Tracker.wanted_syscalls, Tracker.ignored_signals).
_KEEP = frozenset({"???", "clone", "clone2", "clone3", "execve", "execveat", "fork", "vfork"})
_DROP = frozenset({"SIGCHLD"})


def _parse_kept(data: bytes, cuts: list[int] | None = None, *, other: bool = True) -> list[Record]:
    """Parse through the keep filter, in pieces of the given sizes, with FAST_OTHER on or off. (FAST_CALL
    stays on: it is part of the filter, dropping the unwanted calls the pre-check lets through.)"""
    from capsule.parse import grammar

    saved = grammar.FAST_OTHER
    if not other:
        grammar.FAST_OTHER = re.compile(r"(?!)")
    try:
        return parse(data, cuts, keep=_KEEP, drop_signals=_DROP)
    finally:
        grammar.FAST_OTHER = saved


SESSION_TRACES = sorted((TRACES.parent.parent.parent / "sessions").glob("*/trace.strace"))


@pytest.mark.parametrize("path", [*FIXTURES, *SESSION_TRACES], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fast_path_is_no_fast_path_on_real_traces(path: Path) -> None:
    """Every real trace (each strace form) parses to the same records with the fast paths off, and to the
    same through the keep filter with FAST_OTHER off."""
    data = path.read_bytes()
    assert _parse_slow(data) == parse(data)
    assert _parse_kept(data, other=False) == _parse_kept(data)


_FAST_ALPHABET = st.sampled_from(
    [
        *(b"12 ", b"12  ", b"9999999 ", b"99999999999 ", b"[pid 3] ", b"1795239818.277003 ", b"0.000123 "),
        *(b"     0.5 ", b"99999999999.5 ", b"05:00:00.25 ", b"execve(", b"clone(", b"read(", b")", b" = "),
        *(b"0", b"3366", b"-1 ENOENT (x)", b"<... ", b"execve resumed>", b" <unfinished ...>", b"\n"),
        *(b"+++ exited with 1 +++", b"+++ exited with 999 +++", b"strace: Process 4 attached", b'"a"'),
        # the shapes FAST_OTHER takes, and near misses of them
        *(b"vfork(", b"wait4(-1, ", b" <unfinished ...>", b"<detached ...>", b" <pid changed to 12 ...>"),
        *(b"+++ exited with 0 +++", b"+++ exited with -1 +++", b"+++ exited with 0256 +++", b" +++", b"..."),
        *(
            b"--- SIGCHLD {si_pid=3} ---",
            b"--- SIGUSR1 {} ---",
            b"--- 7 {x} ---",
            b" ---",
            b"---",
            b"{",
            b"}",
        ),
        *(
            b"+++ killed by SIGKILL +++",
            b"--- stopped by SIGSTOP ---",
            b"???(",
            b"_x(",
            b"\xc3\xa9(",
            b" ...>",
        ),
    ]
)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(_FAST_ALPHABET, max_size=40), cuts=st.lists(st.integers(1, 30), max_size=10))
def test_fast_path_is_no_fast_path(parts: list[bytes], cuts: list[int]) -> None:
    """Near-miss `-f -ttt` text (big pids, `-r` and huge stamps, cut lines): the fast paths change nothing."""
    data = b"".join(parts)
    assert _parse_slow(data, cuts) == parse(data)


# Whole lines of a fork-heavy `-f -ttt` trace and near misses of them: prefixes with good and bad pids and
# stamps, bodies FAST_OTHER takes (unfinished calls, exits, signals) and ones it must leave alone.
_PREFIXES = [b"12 ", b"13  ", b"9999999 ", b"99999999 ", b"4194305 ", b"[pid 3] ", b""]
_STAMPS = [b"1795239818.277003 ", b"1795239818.5 ", b"0.000123 ", b"99999999999.5 ", b"05:00:00.25 ", b""]
_BODIES = [
    *(b"vfork( <unfinished ...>", b"wait4(-1,  <unfinished ...>", b"read(3, <detached ...>"),
    b'execve("/bin/true", ["/bin/true"], 0x5 /* 3 vars */ <unfinished ...>',
    *(b'write(1, "f(x) = 1", 8 <unfinished ...>', b'execve("/x", [], 0x1 <pid changed to 12 ...>'),
    *(
        b"_x( <unfinished ...>",
        b"???( <unfinished ...>",
        b"\xc3\xa9( <unfinished ...>",
        b"x(<unfinished ...>",
    ),
    *(
        b"vfork( <unfinished ...> ",
        b"vfork( <unfinished ..>",
        b"<... vfork resumed>) = 13",
        b"exit_group(0) = ?",
    ),
    *(
        b"<... execve resumed>) = 0",
        b"<... wait4 resumed>x) = 1 <unfinished ...>",
        b"clone(child_stack=NULL) = 14",
    ),
    *(
        b"+++ exited with 0 +++",
        b"+++ exited with 255 +++",
        b"+++ exited with 256 +++",
        b"+++ exited with -1 +++",
    ),
    *(
        b"+++ exited with 0000 +++",
        b"+++ exited with 007 +++",
        b"+++ exited with 0 ++",
        b"+++ killed by SIGKILL +++",
    ),
    *(b"--- SIGCHLD {si_signo=SIGCHLD, si_pid=13} ---", b"--- SIGUSR1 {} ---", b"--- 33 {x} ---"),
    *(
        b"--- SIGCHLD {x} --- ",
        b"--- SIGCHLD x ---",
        b"--- stopped by SIGSTOP ---",
        b"strace: Process 4 attached",
    ),
    *(b"clone(flags=X" + b"strace: Process 4 attached", b" <unfinished ...>", b", x) = 4", b"\xff ---", b""),
    b"9x() = 0",  # a name the line choice keeps (not [A-Za-z_]) and FAST_CALL drops for a pid seen
]
_LINE = st.builds(
    lambda p, t, b: p + t + b, st.sampled_from(_PREFIXES), st.sampled_from(_STAMPS), st.sampled_from(_BODIES)
)


@settings(max_examples=400, deadline=None)
@given(
    lines=st.lists(_LINE, max_size=25),
    end=st.sampled_from([b"\n", b""]),
    cuts=st.lists(st.integers(1, 60), max_size=10),
)
def test_fast_other_is_no_fast_path(lines: list[bytes], end: bytes, cuts: list[int]) -> None:
    """Fork-heavy lines and near misses: FAST_OTHER changes no record, however the bytes are chunked, with
    or without the keep filter (wanted calls, dropped signals, each pid's first line); without it the
    records do not depend on the chunking. (Through the filter they may: a line dropped as a later line
    of a pid in one chunking can be that pid's first of its chunk in another; events never differ,
    tests/track/test_track_keep.py.)"""
    data = b"\n".join(lines) + end
    whole = parse(data)
    assert _parse_slow(data, cuts) == whole
    assert parse(data, cuts) == whole
    assert _parse_kept(data, other=False) == _parse_kept(data)
    assert _parse_kept(data, cuts, other=False) == _parse_kept(data, cuts)
    assert _parse_kept(data, [1] * len(data), other=False) == _parse_kept(data, [1] * len(data))


def test_fast_other_leaves_unwanted_calls_to_fast_call() -> None:
    """An unwanted unfinished call FAST_CALL also matches (a `) = ` in its arguments) marks its pid as
    seen there, so that a later unwanted call of the pid is dropped: FAST_OTHER does not take it."""
    data = b'12 1795239818.277003 write(1, "f(x) = 1", 8 <unfinished ...>\n12 1795239818.3 9x() = 0\n'
    kept = _parse_kept(data)
    assert _parse_kept(data, other=False) == kept
    assert len(kept) == 1
