"""The eBPF parser and tracker, pure: line cases, out-of-order records, argv recovery, any bytes."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsule.events import Event
from capsule.events.process import (
    FileOpened,
    NetConnected,
    ProcExec,
    ProcExited,
    ProcSignaled,
    ProcSpawned,
)
from capsule.parse.ebpf import (
    ArgvPiece,
    EbpfParser,
    ExecArg,
    ExecBegun,
    ExecDone,
    ExecFailed,
    Forked,
    Header,
    ProcessEnded,
    SignalDelivered,
)
from capsule.parse.ebpf_redact import EbpfRedactor
from capsule.parse.records import Unparsed
from capsule.track.ebpf import EbpfTracker, open_flags, si_code_name, signal_name

CLOCK = 1_700_000_000_000_000_000  # ns: epoch minus monotonic, as Capsule writes it


def header(root: int = 100) -> bytes:
    return b'{"type":"capsule","root":%d,"clock":%d}\n' % (root, CLOCK)


def printf(*lines: str) -> bytes:
    return b"".join(orjson.dumps({"type": "printf", "data": line + "\n"}) + b"\n" for line in lines)


def hexed(data: bytes) -> str:
    return "".join(f"\\x{b:02x}" for b in data)


def parse(data: bytes, step: int | None = None) -> list[object]:
    parser = EbpfParser()
    out: list[object] = []
    if step is None:
        out += parser.feed(data)
    else:
        for i in range(0, len(data), step):
            out += parser.feed(data[i : i + step])
    return out + parser.close()


def track(data: bytes, level: str = "process") -> tuple[EbpfTracker, list[Event]]:
    parser = EbpfParser()
    tracker = EbpfTracker(level=level)  # type: ignore[arg-type]
    events = tracker.feed(parser.feed(data) + parser.close())
    return tracker, events + tracker.close()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("F 5 101 100 2 4100", Forked(line_no=2, ts=(5 + CLOCK) * 1e-9, pid=101, parent=100, via="vfork")),
        ("F 5 101 100 0 11", Forked(line_no=2, ts=(5 + CLOCK) * 1e-9, pid=101, parent=100, via="clone")),
        (
            "E 7 101 100 /bin/echo two  spaces",
            ExecBegun(line_no=2, ts=(7 + CLOCK) * 1e-9, tid=101, tgid=100, path="/bin/echo two  spaces"),
        ),
        ("A 101 0 ", ExecArg(line_no=2, tid=101, index=0, text="")),
        ("A 101 1 a b", ExecArg(line_no=2, tid=101, index=1, text="a b")),
        ("X 9 101 100 2", ExecFailed(line_no=2, ts=(9 + CLOCK) * 1e-9, tid=101, tgid=100, errno=2)),
        (
            "S 9 100 101 /bin/true",
            ExecDone(line_no=2, ts=(9 + CLOCK) * 1e-9, pid=100, old_pid=101, path="/bin/true"),
        ),
        ("Q 11 100 139", ProcessEnded(line_no=2, ts=(11 + CLOCK) * 1e-9, tgid=100, status=139)),
        (r"V 100 3 0 \x61\x00\x62", ArgvPiece(line_no=2, pid=100, size=3, offset=0, data=b"a\0b")),
        (
            "G 12 100 15 0 4147",
            SignalDelivered(line_no=2, ts=(12 + CLOCK) * 1e-9, tgid=100, signo=15, code=0, sender=4147),
        ),
        (
            "G 12 100 2 128 0",  # sender 0: none (the kernel's own signal)
            SignalDelivered(line_no=2, ts=(12 + CLOCK) * 1e-9, tgid=100, signo=2, code=128, sender=None),
        ),
        (
            "G 12 100 10 -42 4242",
            SignalDelivered(line_no=2, ts=(12 + CLOCK) * 1e-9, tgid=100, signo=10, code=-42, sender=4242),
        ),
    ],
)
def test_line_cases(line: str, expected: object) -> None:
    """Each line of the program's format parses to its record (text fields keep their spaces)."""
    records = parse(header() + printf(line))
    assert records == [Header(line_no=1, root=100, clock_ns=CLOCK), expected]


@pytest.mark.parametrize(
    "line",
    [
        "F 5 99999999999999999999999 100 2 4100",  # a pid out of range
        "F 5 0 100 2 4100",
        "Q 11 100 -1",
        "Q x 100 0",
        "Z 1 2 3",
        r"V 100 3 0 \x6",
        r"V 100 3 0 abcd",
        "E 7 101",
        "G 12 100 15 0",  # torn
        "G 12 100 15 0 4147 9",
        "G 12 100 15 x 4147",
        "G 12 100 -15 0 4147",
        "G 12 100 15 0 -1",
        "G 12 100 15 4294967296 0",  # a si_code beyond 32 bits
    ],
)
def test_malformed_lines_are_unparsed(line: str) -> None:
    """Malformed or out-of-range lines become Unparsed records, never exceptions or bad events."""
    records = parse(header() + printf(line))
    assert isinstance(records[1], Unparsed)


def test_handshake_and_probe_count_lines_are_dropped_and_other_objects_counted() -> None:
    """R lines and attached_probes carry nothing; lost_events is kept as unparsed (data was lost)."""
    data = header() + b'{"type": "attached_probes", "data": {"probes": 18}}\n' + printf("R 5")
    data += b'{"type": "lost_events", "data": {"events": 3}}\nnot json\n'
    records = parse(data)
    assert [type(r) for r in records] == [Header, Unparsed, Unparsed]
    assert "lost_events" in records[1].text  # type: ignore[union-attr]


def test_torn_last_line_is_reported() -> None:
    """A trace cut mid-line (the tracer killed) ends with one Unparsed, not a guess."""
    data = header() + printf("Q 11 100 0")[:-9]
    records = parse(data)
    assert isinstance(records[-1], Unparsed)
    assert records[-1].reason == "torn last line"


SAMPLE = header(100) + printf(
    "R 1",
    "E 10 100 100 /bin/sh",
    "A 100 0 sh",
    "A 100 1 -c",
    "A 100 2 x",
    r"V 100 8 0 " + hexed(b"sh\0-c\0x\0"),
    "S 11 100 100 /bin/sh",
    "F 12 101 100 3 1200011",
    # the child's exit read before its exec (another CPU's buffer), the exec before the fork below
    "E 14 102 102 /bin/echo",
    "A 102 0 echo",
    "A 102 1 hi",
    r"V 102 8 0 " + hexed(b"echo\0hi\0"),
    "S 15 102 102 /bin/echo",
    "Q 16 102 0",
    "F 13 102 101 2 4100",
    "X 17 101 101 2",
    "Q 18 101 2816",
    "Q 19 100 134",
)


def test_tracker_emits_strace_events_and_orders_a_child_read_before_its_fork() -> None:
    """Records of a process not spawned yet wait for its fork; exits decode codes and signals."""
    tracker, events = track(SAMPLE)
    kinds = [(type(e).__name__, getattr(e, "pid", None)) for e in events]
    assert kinds == [
        ("ProcSpawned", 100),
        ("ProcExec", 100),
        ("ProcSpawned", 101),
        ("ProcSpawned", 102),
        ("ProcExec", 102),
        ("ProcExited", 102),
        ("ProcExec", 101),
        ("ProcExited", 101),
        ("ProcExited", 100),
    ]
    spawned = [e for e in events if isinstance(e, ProcSpawned)]
    assert [(e.ppid, e.via) for e in spawned] == [(None, "root"), (100, "clone"), (101, "vfork")]
    execs = [e for e in events if isinstance(e, ProcExec)]
    assert execs[1].argv == ("echo", "hi")
    assert execs[1].ok
    assert (execs[2].ok, execs[2].errno, execs[2].argv) == (False, "ENOENT", ())
    exits = [e for e in events if isinstance(e, ProcExited)]
    assert [(e.exit_code, e.signal, e.core_dumped) for e in exits] == [
        (0, None, False),
        (11, None, False),
        (None, "SIGABRT", True),
    ]
    assert tracker.root_status == (None, "SIGABRT")
    assert tracker.live == 0


def test_tracker_live_count_follows_the_tree() -> None:
    """The live count (what stops the tracer) is 0 only once every process has ended."""
    parser = EbpfParser()
    tracker = EbpfTracker()
    counts = []
    for record in parser.feed(SAMPLE):
        tracker.feed([record])
        counts.append(tracker.live)
    assert counts[-1] == 0
    assert 0 not in counts[:-1]


def test_an_exec_begin_read_after_its_process_ended_is_late_not_parked() -> None:
    """Seen live (a CI hang): a child's exec begin and argv lines were read from another CPU's buffer
    after its exit. They belong to the ended process: dropped, not parked for a fork that never comes
    (the live count reaches 0 and the tracer stops); the exec's argv comes from the argv area; a new
    process reusing the pid later is tracked as usual."""
    area = b"sh\0-c\0kill -TERM $$\0"
    data = header(100) + printf(
        "F 10 101 100 2 4100",
        f"V 101 {len(area)} 0 {hexed(area)}",
        "S 12 101 101 /usr/bin/sh",
        "Q 13 101 15",
        "E 11 101 101 /usr/bin/sh",  # late: stamped before the exit, read after it
        "A 101 0 sh",
        "A 101 1 -c",
        "A 101 2 kill -TERM $$",
        "F 20 101 100 1 17",  # pid 101 again, a new process
        "Q 21 101 0",
        "Q 22 100 0",
    )
    tracker, events = track(data)
    assert tracker.live == 0
    (exec_,) = [e for e in events if isinstance(e, ProcExec)]
    assert (exec_.path, exec_.argv) == ("/usr/bin/sh", ("sh", "-c", "kill -TERM $$"))
    spawned = [e.pid for e in events if isinstance(e, ProcSpawned)]
    assert spawned == [100, 101, 101]
    exits = [(e.pid, e.exit_code, e.signal) for e in events if isinstance(e, ProcExited)]
    assert exits == [(101, None, "SIGTERM"), (101, 0, None), (100, 0, None)]


def test_argv_cut_by_the_program_is_completed_from_the_argv_area() -> None:
    """Elements cut at 199 bytes are filled from the new program's argv area, aligned from the end
    (a #! script's area starts with its interpreter); a read that failed takes the area whole."""
    long = "y" * 500
    area = b"/bin/sh\0/tmp/script\0" + long.encode() + b"\0"
    pieces = [f"V 100 {len(area)} {o} " + hexed(area[o : o + 199]) for o in range(0, len(area), 199)]
    data = header(100) + printf(
        "E 10 100 100 /tmp/script",
        "A 100 0 script",
        "A 100 1 " + long[:199],
        *pieces,
        "S 11 100 100 /tmp/script",
    )
    _, events = track(data)
    exec_ = next(e for e in events if isinstance(e, ProcExec))
    assert exec_.argv == ("script", long)
    assert not exec_.argv_truncated
    unread = header(100) + printf("E 10 100 100 ", "A 100 0 ", *pieces, "S 11 100 100 /tmp/script")
    _, events = track(unread)
    exec_ = next(e for e in events if isinstance(e, ProcExec))
    assert exec_.path == "/tmp/script"
    assert exec_.argv == ("/bin/sh", "/tmp/script", long)


def test_non_utf8_argv_bytes_become_replacement_characters() -> None:
    """Bytes that are not UTF-8 read as U+FFFD; a literal backslash sequence stays itself."""
    area = b"echo\0\xff\xfe\0\\x41\0"
    raw_arg = (
        b'{"type": "printf", "data": "A 100 1 \xff\xfe\\n"}\n'  # the recorder copies the bytes as they are
    )
    data = (
        header(100)
        + printf("E 10 100 100 /bin/echo", "A 100 0 echo")
        + raw_arg
        + printf("A 100 2 \\x41", f"V 100 {len(area)} 0 " + hexed(area), "S 11 100 100 /bin/echo")
    )
    _, events = track(data)
    exec_ = next(e for e in events if isinstance(e, ProcExec))
    assert exec_.argv == ("echo", "\ufffd\ufffd", "\\x41")


def test_file_and_net_records_at_their_levels() -> None:
    """Opens and connects become file.opened / net.connected only at the levels that ask for them;
    an open that failed as the guard's mount namespace fails it (the loader's level refused) at any."""
    data = header(100) + printf(
        "O 5 100 524865 3 note.txt", "O 6 100 0 -2 missing", "C 7 100 2 8080 -111 127.0.0.1"
    )
    _, process_level = track(data)
    assert not [e for e in process_level if isinstance(e, FileOpened | NetConnected)]
    refusals = header(100) + printf("P 5 100 -100 0 -13 .env", "P 6 100 -100 577 -30 /ro/f")
    _, refused = track(refusals)
    assert [(e.path, e.ok, e.errno) for e in refused if isinstance(e, FileOpened)] == [
        (".env", False, "EACCES"),
        ("/ro/f", False, "EROFS"),
    ]
    _, events = track(data, "all")
    opened = [e for e in events if isinstance(e, FileOpened)]
    assert [(e.path, e.flags, e.ok, e.errno) for e in opened] == [
        ("note.txt", "O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC", True, None),
        ("missing", "O_RDONLY", False, "ENOENT"),
    ]
    (conn,) = [e for e in events if isinstance(e, NetConnected)]
    assert (conn.family, conn.address, conn.ok, conn.errno) == (
        "AF_INET",
        "127.0.0.1:8080",
        False,
        "ECONNREFUSED",
    )


# (si_code, signal) -> the name strace 6.1 prints (seen under `strace -f`: real signals, and each code
# sent with rt_sigqueueinfo)
SI_CODES = {
    (0, 15): "SI_USER",
    (0x80, 2): "SI_KERNEL",
    (0x80, 11): "SI_KERNEL",  # a generic name first, whatever the signal
    (-1, 10): "SI_QUEUE",
    (-2, 34): "SI_TIMER",
    (-3, 10): "SI_MESGQ",
    (-4, 10): "SI_ASYNCIO",
    (-5, 10): "SI_SIGIO",
    (-6, 6): "SI_TKILL",
    (-7, 10): "SI_DETHREAD",
    (-60, 10): "SI_ASYNCNL",
    (1, 11): "SEGV_MAPERR",
    (2, 11): "SEGV_ACCERR",
    (9, 11): "SEGV_MTESERR",
    (10, 11): "0xa",
    (2, 7): "BUS_ADRERR",
    (5, 7): "BUS_MCEERR_AO",
    (2, 4): "ILL_ILLOPN",
    (9, 4): "ILL_BADIADDR",
    (1, 8): "FPE_INTDIV",
    (9, 8): "0x9",  # a gap in SIGFPE's codes
    (14, 8): "FPE_FLTUNK",
    (15, 8): "FPE_CONDTRAP",
    (1, 5): "TRAP_BRKPT",
    (6, 5): "TRAP_PERF",
    (1, 29): "POLL_IN",
    (6, 29): "POLL_HUP",
    (1, 31): "SYS_SECCOMP",
    (2, 31): "SYS_USER_DISPATCH",
    (3, 31): "0x3",
    (1, 27): "0x1",  # SIGPROF: strace 6.1 names none of its codes
    (5, 10): "0x5",  # a signal with no codes of its own
    (99, 10): "0x63",
    (-42, 10): "0xffffffd6",  # an unknown negative code: as a 32-bit unsigned number
    (-(2**31), 10): "0x80000000",
}


def test_names() -> None:
    """Signal, si_code and open-flag names are spelled as strace spells them."""
    # real-time ones as strace 6.1 printed `kill -N` of 32, 33, 34, 40 and 64 here
    assert [signal_name(n) for n in (9, 11, 31, 32, 33, 34, 40, 64, 99)] == [
        "SIGKILL",
        "SIGSEGV",
        "SIGSYS",
        "SIGRTMIN",
        "SIGRT_1",
        "SIGRT_2",
        "SIGRT_8",
        "SIGRT_32",
        "SIG99",
    ]
    assert [si_code_name(code, signo) for code, signo in SI_CODES] == list(SI_CODES.values())
    assert open_flags(0o2101102) == "O_RDWR|O_CREAT|O_TRUNC|O_LARGEFILE|O_CLOEXEC"
    assert open_flags(0o40000000 | 1) == "O_WRONLY|0o40000000"


def test_chunking_never_changes_the_records() -> None:
    """Fed whole, one byte at a time or in 7-byte chunks, the trace gives the same records."""
    whole = parse(SAMPLE)
    assert parse(SAMPLE, 1) == whole
    assert parse(SAMPLE, 7) == whole


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=64))
def test_arbitrary_bytes_never_crash(data: bytes, step: int) -> None:
    """Any bytes, in any chunking, parse and track without an exception."""
    records = parse(header() + data + SAMPLE[: len(data)], step)
    tracker = EbpfTracker(level="all")
    tracker.feed(records)  # type: ignore[arg-type]
    tracker.close()


def test_redactor_masks_secrets_in_argv_lines_and_the_hex_area() -> None:
    """A secret split over A lines (`--password x`) or hidden in the V hex is masked in every line,
    the area's size follows, the result tracks to the redacted argv, and redacting again is a no-op."""
    argv = [b"/bin/echo", b"--password", b"hunter2", b"--token=s3cr3t", b"z" * 300]
    area = b"".join(a + b"\0" for a in argv)
    pieces = [f"V 100 {len(area)} {o} " + hexed(area[o : o + 199]) for o in range(0, len(area), 199)]
    args = [f"A 100 {i} {a.decode()[:199]}" for i, a in enumerate(argv)]
    data = header(100) + printf(
        "E 10 100 100 /bin/echo", *args, *pieces, "S 11 100 100 /bin/echo", "Q 12 100 0"
    )
    redactor = EbpfRedactor()
    once = redactor.feed(data) + redactor.close()
    for secret in (b"hunter2", b"s3cr3t", b"hunter2".hex().encode(), hexed(b"hunter2").encode()):
        assert secret not in once
    again = EbpfRedactor()
    assert again.feed(once) + again.close() == once
    _, events = track(once)
    exec_ = next(e for e in events if isinstance(e, ProcExec))
    assert exec_.argv == ("/bin/echo", "--password", "***", "--token=***", "z" * 300)


def test_relative_opens_are_made_absolute_from_the_cwd_the_trace_follows() -> None:
    """P lines (with their dirfd) and D lines (chdir; empty: fchdir): a relative open at AT_FDCWD is
    absolute from the header's cwd and the chdirs since, inherited at fork; relative to another fd,
    after an fchdir, or in an old O line, it stays as given."""
    data = b'{"type":"capsule","root":100,"clock":%d,"cwd":"/work/p"}\n' % CLOCK + printf(
        "P 1 100 -100 0 3 a.txt",
        "D 2 100 sub",
        "P 3 100 -100 0 3 ../b.txt",
        "F 4 101 100 1 11",
        "P 5 101 -100 0 3 c.txt",
        "P 6 101 7 0 3 d.txt",
        "P 7 101 7 0 3 /etc//hosts",
        "D 8 101 ",
        "P 9 101 -100 0 3 e.txt",
        "O 10 100 0 3 f.txt",
        "Q 11 101 0",
        "Q 12 100 0",
    )
    _tracker, events = track(data, level="file")
    paths = [e.path for e in events if isinstance(e, FileOpened)]
    assert paths == [
        "/work/p/a.txt",
        "/work/p/b.txt",
        "/work/p/sub/c.txt",
        "d.txt",
        "/etc/hosts",
        "e.txt",
        "f.txt",
    ]
    # a trace without the header's cwd keeps relative paths as they were given
    _tracker, events = track(header() + printf("P 1 100 -100 0 3 a.txt", "Q 2 100 0"), level="file")
    assert [e.path for e in events if isinstance(e, FileOpened)] == ["a.txt"]


def test_a_refused_exec_written_by_capsule_is_a_failed_attempt_with_its_argv() -> None:
    """The guard's refusal line (seccomp answered before sys_enter: the program prints nothing of the
    attempt) gives the attempt's path, argv and error; a malformed one is unparsed, never fatal."""
    refused = {"ns": 5, "tid": 101, "tgid": 100, "path": "/usr/bin/sudo", "argv": ["sudo", "id"], "errno": 1}
    data = (
        header()
        + printf("S 1 100 100 /bin/sh")
        + orjson.dumps({"type": "capsule", "refused": refused})
        + b"\n"
        + orjson.dumps({"type": "capsule", "refused": {**refused, "ns": 6, "errno": 2, "path": "/bin/sudo"}})
        + b"\n"
        + printf("Q 7 100 0")
        + b'{"type":"capsule","refused":{"tid":"x"}}\n'
    )
    tracker, events = track(data)
    execs = [e for e in events if isinstance(e, ProcExec)]
    assert [(e.path, e.argv, e.ok, e.errno) for e in execs][-2:] == [
        ("/usr/bin/sudo", ("sudo", "id"), False, "EPERM"),
        ("/bin/sudo", ("sudo", "id"), False, "ENOENT"),
    ]
    assert execs[-2].ts == (5 + CLOCK) * 1e-9
    assert tracker.unparsed == 1


def test_an_exec_from_a_thread_read_after_its_success_is_that_exec() -> None:
    """Seen live (a flaky parity test): a thread's exec begin (E, its tid) sat in one CPU's buffer
    while the exec itself (S, in the process's pid, naming the thread as old pid) was read first from
    another. The begin and its argv lines are that same exec, read late: not a second attempt left
    pending, which ended the process with a failed exec it never made."""
    area = b"echo\0exec-from-thread\0"
    data = header(100) + printf(
        f"V 100 {len(area)} 0 {hexed(area)}",
        "S 12 100 105 /bin/echo",
        "E 11 105 100 /bin/echo",  # late: stamped before the exec, read after it
        "A 105 0 echo",
        "A 105 1 exec-from-thread",
        "M 105",
        "F 20 101 100 1 17",
        "Q 21 101 0",
        "Q 22 100 0",
    )
    tracker, events = track(data)
    assert tracker.live == 0
    execs = [e for e in events if isinstance(e, ProcExec)]
    assert [(e.pid, e.path, e.argv, e.ok) for e in execs] == [
        (100, "/bin/echo", ("echo", "exec-from-thread"), True)
    ]


def test_a_non_blocking_connect_is_settled_by_so_error_as_under_strace() -> None:
    """N (a connect with its fd) returning -EINPROGRESS is held until K, getsockopt(SO_ERROR) on that
    fd of that process: 0 is ok, else its errno. One never settled goes out at its process's end; a C
    line (a trace written before N) has no fd and is recorded as it was."""
    data = header(100) + printf(
        "F 1 101 100 0 11",
        "N 5 100 3 2 8080 -115 127.0.0.1",
        "N 6 100 4 2 9 -115 127.0.0.1",
        "N 7 101 3 2 8081 -115 127.0.0.1",  # the same fd in another process: its own socket
        "K 8 100 4 111",
        "K 9 100 3 0",
        "N 10 100 5 2 8082 -115 127.0.0.1",
        "C 11 100 2 8083 -115 127.0.0.1",
        "Q 12 100 0",
        "K 13 101 3 0",
        "Q 14 101 0",
    )
    _, events = track(data, "net")
    got = [(e.pid, e.address, e.ok, e.errno) for e in events if isinstance(e, NetConnected)]
    assert got == [
        (100, "127.0.0.1:9", False, "ECONNREFUSED"),
        (100, "127.0.0.1:8080", True, None),
        (100, "127.0.0.1:8083", False, "EINPROGRESS"),
        (100, "127.0.0.1:8082", False, "EINPROGRESS"),  # its process ended first
        (101, "127.0.0.1:8081", True, None),
    ]
    assert [r for r in parse(printf("K 1 2 3")) if not isinstance(r, Unparsed)] == []  # torn: unparsed


def test_signal_deliveries_are_tracked_as_under_strace() -> None:
    """G lines are proc.signaled events at every level, before their receiver's exit: the signal and
    si_code by name, the sender's pid (0: none). One for a process not forked yet waits for its fork; a
    SIGCHLD (the program prints none) is dropped, as the strace tracker drops it; a torn line is
    unparsed, and the rest of the trace tracks as before."""
    data = header(100) + printf(
        "G 2 101 10 0 100",  # read before the fork that made its receiver (another CPU's buffer)
        "F 1 101 100 0 11",
        "G 3 100 17 1 101",
        "G 4 101 15 0 100",
        "Q 5 101 15",
        "G 6 100 2 128 0",
        "G 7 100 11 1 0",
        "G 8 100 10 5 4242",
        "G 9 100 2 0",
        "Q 10 100 139",
    )
    for level in ("process", "all"):
        tracker, events = track(data, level)
        got = [
            (type(e).__name__, e.pid, e.signal, e.code, e.sender_pid)
            if isinstance(e, ProcSignaled)
            else (type(e).__name__, getattr(e, "pid", None))
            for e in events
        ]
        assert got == [
            ("ProcSpawned", 100),
            ("ProcSpawned", 101),
            ("ProcSignaled", 101, "SIGUSR1", "SI_USER", 100),
            ("ProcSignaled", 101, "SIGTERM", "SI_USER", 100),
            ("ProcExited", 101),
            ("ProcSignaled", 100, "SIGINT", "SI_KERNEL", None),
            ("ProcSignaled", 100, "SIGSEGV", "SEGV_MAPERR", None),
            ("ProcSignaled", 100, "SIGUSR1", "0x5", 4242),
            ("TraceUnparsed", None),
            ("ProcExited", 100),
        ]
        assert tracker.unparsed == 1
