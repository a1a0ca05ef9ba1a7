"""The tracker: exact process trees from real recordings, and determinism under any batching."""

from __future__ import annotations

import random
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsule.events import (
    Event,
    FileOpened,
    NetConnected,
    ProcExec,
    ProcExited,
    ProcSignaled,
    ProcSpawned,
    TraceUnparsed,
)
from capsule.parse import Record, StraceParser
from capsule.track import Tracker

TRACES = Path(__file__).parent.parent / "data" / "traces"
FIXTURES = sorted(TRACES.glob("*.strace"))


def records_of(data: bytes) -> list[Record]:
    p = StraceParser()
    return p.feed(data) + p.close()


def track(
    records: list[Record], level: str = "process", batches: list[int] | None = None
) -> tuple[Tracker, list[Event]]:
    t = Tracker(level=level)  # type: ignore[arg-type]
    out: list[Event] = []
    pos = 0
    for size in batches or []:
        out += t.feed(records[pos : pos + size])
        pos += size
    out += t.feed(records[pos:])
    return t, out + t.close()


def run(name: str, level: str = "process") -> tuple[Tracker, list[Event]]:
    return track(records_of((TRACES / f"{name}.strace").read_bytes()), level)


def brief(events: list[Event]) -> list[tuple[object, ...]]:
    """Events without timestamps, as tuples, for exact comparisons."""
    return [(type(e).__name__, *attrs.astuple(e)[1:]) for e in events]


def test_procs_tree() -> None:
    """fork, vfork, clone3, two threads, SIGSEGV/SIGABRT core dumps, SIGKILL, SIGUSR1, an orphan."""
    t, events = run("procs")
    assert t.root_pid == 3796
    assert t.root_status == (5, None)
    assert t.unparsed == 0
    spawned = [(e.pid, e.ppid, e.via) for e in events if isinstance(e, ProcSpawned)]
    # the threads 3800 and 3801 (clone3 with CLONE_THREAD) are not processes
    assert spawned == [
        (3796, None, "root"),
        (3797, 3796, "clone"),
        (3798, 3796, "vfork"),
        (3799, 3796, "clone3"),
        (3802, 3796, "clone"),
        (3803, 3796, "clone"),
        (3804, 3796, "clone"),
        (3805, 3796, "clone"),
        (3807, 3796, "clone"),
        (3808, 3807, "clone"),  # the orphan keeps the parent that spawned it
    ]
    exits = {e.pid: (e.exit_code, e.signal, e.core_dumped) for e in events if isinstance(e, ProcExited)}
    assert exits == {
        3797: (0, None, False),
        3798: (0, None, False),
        3799: (3, None, False),
        3802: (None, "SIGSEGV", True),
        3803: (None, "SIGABRT", True),
        3804: (None, "SIGKILL", False),
        3805: (4, None, False),
        3807: (0, None, False),
        3808: (0, None, False),
        3796: (5, None, False),
    }
    assert len([e for e in events if isinstance(e, ProcExited)]) == len(exits)
    signals = [(e.pid, e.signal, e.sender_pid, e.code) for e in events if isinstance(e, ProcSignaled)]
    assert signals == [
        (3802, "SIGSEGV", None, "SEGV_MAPERR"),
        (3803, "SIGABRT", 3803, "SI_TKILL"),
        (3805, "SIGUSR1", 3796, "SI_USER"),
    ]  # no SIGCHLD
    execs = [(e.pid, e.argv) for e in events if isinstance(e, ProcExec)]
    assert execs == [
        (3796, ("./procs",)),
        (3797, ("true", "forked")),
        (3798, ("true", "vforked")),
        (3808, ("true", "orphan")),
    ]


def test_child_exec_before_parent_clone_returns() -> None:
    """The vfork child's execve is logged before vfork returns: the spawn still comes first."""
    _, events = run("procs")
    kinds = [(type(e).__name__, getattr(e, "pid", None)) for e in events]
    assert kinds.index(("ProcSpawned", 3798)) < kinds.index(("ProcExec", 3798))
    spawn = next(e for e in events if isinstance(e, ProcSpawned) and e.pid == 3798)
    first_exec = next(e for e in events if isinstance(e, ProcExec) and e.pid == 3798)
    # the ts of the child's first line (its execve, logged before `<... vfork resumed>) = 3798` at
    # 1795239834.791328): a process is never spawned after it exec'd
    assert spawn.ts == 1795239834.791233 <= first_exec.ts


def test_thread_execve_superseded_and_pid_changed() -> None:
    """A thread's execve (`<pid changed to N ...>`, `superseded`) is one exec of the leader, no extra exit."""
    # thread_exec_unchanged: as strace 6.1 printed it live once (a flaky parity test), the thread's line
    # a plain `<unfinished ...>` and the exec resumed `= 231`; the superseded leader says it succeeded.
    # thread_exec_unreturned (live, under load): the clone3 that made the thread never returned in the
    # leader (`= ?`): only the superseded line says the exec'ing pid was its thread.
    for name in ("thread_exec", "thread_exec_stderr", "thread_exec_unchanged", "thread_exec_unreturned"):
        t, events = run(name)
        root = t.root_pid
        assert brief(events) == [
            ("ProcSpawned", root, None, "root"),
            ("ProcExec", root, "./thread_exec", ("./thread_exec",), True, None, False),
            ("ProcExec", root, "/bin/echo", ("echo", "from-thread"), True, None, False),
            ("ProcExited", root, 0, None, False),
        ], name
    assert run("thread_exec_stderr")[0].root_pid == 3818  # learnt from `[pid 3818] <... clone3 resumed>`


def test_thread_exit_lines_are_not_processes() -> None:
    """The leader exits while a thread is blocked: one exit, the leader's."""
    t, events = run("thread_exit")
    assert [type(e).__name__ for e in events] == ["ProcSpawned", "ProcExec", "ProcExited"]
    assert t.root_status == (2, None)


def test_failed_exec_attempts_and_interleaving() -> None:
    """env searching PATH: failed attempts are ProcExec(ok=False); parallel children are all tracked."""
    t, events = run("sh_path")
    execs = [(e.pid, e.path, e.ok, e.errno) for e in events if isinstance(e, ProcExec)]
    assert execs[1:5] == [
        (3830, "/usr/bin/env", True, None),
        (3830, "/nonexistent/true", False, "ENOENT"),
        (3830, "/usr/local/bin/true", False, "ENOENT"),
        (3830, "/usr/bin/true", True, None),
    ]
    assert [e.pid for e in events if isinstance(e, ProcSpawned)] == [3829, 3830, 3831, 3832, 3835]
    assert t.root_status == (0, None)


def test_argv_escapes_and_truncation() -> None:
    """Escapes, quotes, non-ASCII in argv; `-s 8` truncation; a 3000-argument argv."""
    (exec_,) = [e for e in run("argv_escapes")[1] if isinstance(e, ProcExec)]
    assert exec_.argv == (
        "/bin/echo",
        "tab\there",
        "new\nline",
        'q"uote',
        "back\\slash",
        "\x01ctl",
        "héllo wörld",
        "",
    )
    assert not exec_.argv_truncated
    (exec_,) = [e for e in run("truncated")[1] if isinstance(e, ProcExec)]
    assert exec_.argv == ("/bin/ech", "abcdefgh", "2", "3", "4", "5", "6", "7")
    assert exec_.argv_truncated
    huge = [e for e in run("huge_argv")[1] if isinstance(e, ProcExec) and e.path == "/bin/true"]
    assert len(huge[0].argv) == 3001


def test_levels() -> None:
    """file.opened / net.connected only at their levels; no pid prefix at all is one process, pid 0."""
    t, events = run("net_yy", "net")
    nets = [(e.pid, e.family, e.address, e.ok, e.errno) for e in events if isinstance(e, NetConnected)]
    assert nets == [
        (0, "AF_INET", "127.0.0.1:9", False, "ECONNREFUSED"),
        (0, "AF_UNIX", "/nonexistent.sock", False, "ENOENT"),
    ]
    assert not [e for e in events if isinstance(e, FileOpened)]
    _, events = run("net_yy", "file")
    assert "/etc/hostname" in [e.path for e in events if isinstance(e, FileOpened)]
    assert not [e for e in events if isinstance(e, NetConnected)]
    _, events = run("net_yy", "process")
    assert [type(e).__name__ for e in events] == ["ProcSpawned", "ProcExited"]
    assert t.root_pid == 0


def test_trace_cut_mid_call() -> None:
    """A trace starting mid-way: resumed lines without partner and unclaimed pids never crash."""
    lines = (TRACES / "procs.strace").read_bytes().splitlines(keepends=True)
    t, events = track(records_of(b"".join(lines[10:])))  # starts at `<... vfork resumed>) = 3798`
    assert t.root_pid == 3796
    by_pid = {e.pid: e for e in events if isinstance(e, ProcSpawned)}
    assert by_pid[3798].via == "vfork"
    execs = [e for e in events if isinstance(e, ProcExec) and e.pid == 3798]
    # its execve started before the cut: what is left says it succeeded, path and argv are unknown
    assert [(e.path, e.argv, e.ok, e.argv_truncated) for e in execs] == [("", None, True, True)]
    assert len([e for e in events if isinstance(e, ProcExited)]) == len(
        {e.pid for e in events if isinstance(e, ProcExited)}
    )


def test_unclaimed_pid_at_close() -> None:
    """A pid no clone ever returned becomes a process of unknown parent at close."""
    data = b'1 execve("/a", ["a"], 0x1 /* 1 vars */) = 0\n2 execve("/b", ["b"], 0x1 /* 1 vars */) = 0\n'
    _, events = track(records_of(data))
    assert brief(events) == [
        ("ProcSpawned", 1, None, "root"),
        ("ProcExec", 1, "/a", ("a",), True, None, False),
        ("ProcSpawned", 2, None, "unknown"),
        ("ProcExec", 2, "/b", ("b",), True, None, False),
    ]


def test_unparsed_lines() -> None:
    """Unparsed records become trace.unparsed events and are counted."""
    t, events = track(records_of(b"1 +++ exited with 0 +++\nbogus\n"))
    assert events[-1] == TraceUnparsed(ts=0.0, line_no=2, text="bogus", reason="not a syscall line")
    assert t.unparsed == 1


@pytest.mark.parametrize("path", FIXTURES, ids=[f.name for f in FIXTURES])
def test_batching_does_not_matter(path: Path) -> None:
    """One record at a time, random batches, all at once: the same events."""
    records = records_of(path.read_bytes())
    whole = track(records, "all")[1]
    assert track(records, "all", [1] * len(records))[1] == whole
    rng = random.Random(7)
    assert track(records, "all", [rng.randint(1, 20) for _ in range(len(records))])[1] == whole


_SMALL = [f for f in FIXTURES if f.stat().st_size < 30_000]


@settings(max_examples=100, deadline=None)
@given(
    which=st.sampled_from(_SMALL),
    start=st.integers(0, 200),
    stop=st.integers(0, 200),
    cuts=st.lists(st.integers(1, 10), max_size=30),
)
def test_any_slice_any_batching(which: Path, start: int, stop: int, cuts: list[int]) -> None:
    """Any slice of a real trace (cut mid-call, parentless children): no crash, batching-invariant."""
    records = records_of(which.read_bytes())[start : start + stop]
    assert track(records, "all", cuts)[1] == track(records, "all")[1]


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_records_of_arbitrary_bytes(data: bytes) -> None:
    """Whatever the parser makes of arbitrary bytes, the tracker takes it."""
    track(records_of(data), "all")


QUIET_LOG = b"""\
10 1795239818.000001 clone(child_stack=NULL, flags=SIGCHLD) = 11
10 1795239818.000002 clone(child_stack=NULL, flags=SIGCHLD) = 12
10 1795239818.000003 clone(child_stack=NULL, flags=SIGCHLD) = 13
10 1795239818.000004 clone(child_stack=NULL, flags=SIGCHLD) = 14
11 1795239818.000010 exit_group(3) = ?
10 1795239818.000011 wait4(-1, NULL, WNOHANG, NULL) = 0
10 1795239818.000012 wait4(-1, [{WIFSTOPPED(s) && WSTOPSIG(s) == SIGTSTP}], WUNTRACED, NULL) = 12
10 1795239818.000020 wait4(-1, [{WIFEXITED(s) && WEXITSTATUS(s) == 3}], 0, NULL) = 11
10 1795239818.000030 wait4(-1, [{WIFSIGNALED(s) && WTERMSIG(s) == SIGSEGV && WCOREDUMP(s)}], 0, NULL) = 12
10 1795239818.000040 waitid(P_ALL, 0, {si_signo=SIGCHLD, si_code=CLD_KILLED, si_pid=13, si_uid=0, si_status=SIGTERM, \
si_utime=0, si_stime=0}, WEXITED, NULL) = 0
14 1795239818.000045 exit_group(0) = ?
10 1795239818.000046 clone(child_stack=NULL, flags=SIGCHLD) = 14
14 1795239818.000047 exit_group(1) = ?
10 1795239818.000050 exit_group(2) = ?
"""


def test_ends_are_read_from_exit_group_and_waits_when_a_log_has_no_exit_lines() -> None:
    """`ends` (imports): a -qq log's processes end as their exit_group and their parent's wait say; a
    WNOHANG or a stopped child ends nothing; a pid reused ends its first process first."""
    t = Tracker(ends=True)
    p = StraceParser(keep=t.wanted_syscalls)
    events = t.feed(p.feed(QUIET_LOG) + p.close()) + t.close()
    ends = [(e.pid, e.exit_code, e.signal, e.core_dumped, e.ts) for e in events if isinstance(e, ProcExited)]
    assert sorted(ends) == [
        (10, 2, None, False, 1795239818.00005),
        (11, 3, None, False, 1795239818.00001),  # exit_group's time, the wait's status
        (12, None, "SIGSEGV", True, 1795239818.00003),
        (13, None, "SIGTERM", False, 1795239818.00004),
        (14, 0, None, False, 1795239818.000045),  # ended by its pid's reuse, before the new 14 spawned
        (14, 1, None, False, 1795239818.000047),
    ]
    kinds = [(type(e).__name__, e.pid) for e in events]
    assert kinds.index(("ProcExited", 14)) < kinds.index(
        ("ProcSpawned", 14), kinds.index(("ProcSpawned", 14)) + 1
    )
    assert t.root_status == (2, None)
    assert t.unexited == 0
    plain = Tracker()  # a live recording's tracker: exit lines only
    assert not [
        e for e in plain.feed(StraceParser().feed(QUIET_LOG)) + plain.close() if isinstance(e, ProcExited)
    ]


def test_exit_lines_win_over_what_calls_said() -> None:
    """A complete log: the `+++` lines give every end, whatever order the waits come in (`-ff` merges
    by entry time, so a parent's whole wait4 line can precede its child's exit line)."""
    log = (
        b"10 1795239818.1 clone(child_stack=NULL, flags=SIGCHLD) = 11\n"
        b"10 1795239818.2 wait4(-1, [{WIFEXITED(s) && WEXITSTATUS(s) == 9}], 0, NULL) = 11\n"
        b"11 1795239818.3 exit_group(9) = ?\n"
        b"11 1795239818.4 +++ exited with 9 +++\n"
        b"10 1795239818.5 exit_group(0) = ?\n"
        b"10 1795239818.6 +++ exited with 0 +++\n"
    )
    with_ends, without = Tracker(ends=True), Tracker()
    a = with_ends.feed(StraceParser(keep=with_ends.wanted_syscalls).feed(log)) + with_ends.close()
    b = without.feed(StraceParser(keep=without.wanted_syscalls).feed(log)) + without.close()
    assert a == b
    assert [(e.pid, e.ts) for e in a if isinstance(e, ProcExited)] == [(11, 1795239818.4), (10, 1795239818.6)]


def test_ends_no_kernel_gives_are_ignored() -> None:
    """A hostile log's wait statuses past 255 end nothing; exit_group keeps the low 8 bits, as the kernel."""
    log = (
        b"10 1795239818.1 clone(child_stack=NULL, flags=SIGCHLD) = 11\n"
        b"10 1795239818.2 clone(child_stack=NULL, flags=SIGCHLD) = 12\n"
        b"10 1795239818.3 wait4(-1, [{WIFEXITED(s) && WEXITSTATUS(s) == 300}], 0, NULL) = 11\n"
        b"10 1795239818.4 waitid(P_ALL, 0, {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=12, si_uid=0, "
        b"si_status=000000300}, WEXITED, NULL) = 0\n"
        b"10 1795239818.5 exit_group(258) = ?\n"
    )
    t = Tracker(ends=True)
    events = t.feed(StraceParser(keep=t.wanted_syscalls).feed(log)) + t.close()
    assert [(e.pid, e.exit_code) for e in events if isinstance(e, ProcExited)] == [(10, 2)]
    assert t.unexited == 2


def test_an_import_without_clone_lines_takes_parents_from_sigchld() -> None:
    """`-e trace=execve`: a pid no clone returned is the child of the process its SIGCHLD went to (its
    own children's SIGCHLDs, held with it, follow); a live recording's tracker leaves them roots."""
    log = (
        b'10 1795239818.1 execve("/bin/sh", ["sh"], 0x1 /* 1 vars */) = 0\n'
        b'11 1795239818.2 execve("/bin/sh", ["sh", "-c", "x"], 0x1 /* 1 vars */) = 0\n'
        b'12 1795239818.3 execve("/bin/true", ["true"], 0x1 /* 1 vars */) = 0\n'
        b"12 1795239818.4 +++ exited with 0 +++\n"
        b"11 1795239818.5 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=12, si_uid=0} ---\n"
        b"11 1795239818.6 +++ exited with 0 +++\n"
        b"10 1795239818.7 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=11, si_uid=0} ---\n"
        b"10 1795239818.8 +++ exited with 0 +++\n"
    )

    def spawns(tracker: Tracker) -> list[tuple[int, int | None, float]]:
        parser = StraceParser(keep=tracker.wanted_syscalls, drop_signals=tracker.dropped_signals)
        events = tracker.feed(parser.feed(log)) + tracker.close()
        assert not [e for e in events if isinstance(e, ProcSignaled)]  # SIGCHLD is no event either way
        return [(e.pid, e.ppid, e.ts) for e in events if isinstance(e, ProcSpawned)]

    assert spawns(Tracker(ends=True)) == [
        (10, None, 1795239818.1),
        (11, 10, 1795239818.2),
        (12, 11, 1795239818.3),
    ]
    assert [ppid for _pid, ppid, _ts in spawns(Tracker())] == [None, None, None]
