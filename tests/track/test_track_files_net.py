"""Files and sockets from a real `strace -f -y` recording: absolute paths through cd, fchdir and -y
annotations, every kind of change, and bind/listen/accept/send with the kernel-chosen port."""

from __future__ import annotations

from pathlib import Path

import pytest

from capsule.events import Event, FileChanged, FileOpened, NetConnected, NetSocket
from capsule.parse import StraceParser
from capsule.track import Tracker

# /tmp/i8r-rec$ strace -f -y -ttt -q -s 4096 --seccomp-bpf -e trace=%process,%file,%network,fchdir \
#   bash -c 'mkdir d && cd d && echo a > f1 && mv f1 f2 && chmod 600 f2 && rm f2 && cd .. && rmdir d;
#            python3 -I -S -c "…os.fchdir(open /tmp); create+unlink i8r-rel.txt; server; connect; accept;
#            UDP sendto 127.0.0.1:9"'
TRACE = Path(__file__).parent.parent / "data" / "traces" / "files_net_y.strace"
CWD = "/tmp/i8r-rec"


def events(level: str, keep: bool = True) -> list[Event]:
    tracker = Tracker(level=level)  # type: ignore[arg-type]
    parser = StraceParser(keep=tracker.wanted_syscalls if keep else None)
    return tracker.feed(parser.feed(TRACE.read_bytes()) + parser.close()) + tracker.close()


def test_changes_have_absolute_paths() -> None:
    """mkdir (relative, no dirfd), the write, rename, chmod, rm and rmdir: each absolute from the cwd."""
    changes = [(e.op, e.path, e.target) for e in events("file") if isinstance(e, FileChanged)]
    assert changes[:6] == [
        ("create", f"{CWD}/d", None),
        ("rename", f"{CWD}/d/f1", f"{CWD}/d/f2"),
        ("chmod", f"{CWD}/d/f2", None),
        ("delete", f"{CWD}/d/f2", None),
        ("delete", f"{CWD}/d", None),
        ("delete", "/tmp/i8r-rel.txt", None),  # after fchdir to /tmp: relative, made absolute
    ]


def test_opens_follow_cd_and_fchdir() -> None:
    """`echo a > f1` after `cd d` opens /tmp/i8r-rec/d/f1; python's open after fchdir is under /tmp."""
    opened = {e.path: e.flags for e in events("file") if isinstance(e, FileOpened) and e.ok}
    assert "O_CREAT" in opened[f"{CWD}/d/f1"]
    assert "O_CREAT" in opened["/tmp/i8r-rel.txt"]
    assert all(p.startswith("/") for p in opened)


def test_sockets() -> None:
    """bind to port 0, listen reported with the port getsockname learnt, connect, accept, UDP send."""
    got = [e for e in events("net") if isinstance(e, NetSocket | NetConnected)]
    ops = [(e.op, e.family, e.address, e.port) for e in got if isinstance(e, NetSocket)]
    assert ops[0] == ("bind", "inet", "127.0.0.1", 0)
    listen = next(o for o in ops if o[0] == "listen")
    assert listen[3] not in (0, None)
    connect = next(e for e in got if isinstance(e, NetConnected))
    assert connect.address == f"127.0.0.1:{listen[3]}"
    assert any(o[0] == "accept" and o[2] == "127.0.0.1" for o in ops)
    assert ("send", "inet", "127.0.0.1", 9) in ops


@pytest.mark.parametrize("level", ["file", "net", "all"])
def test_the_parser_filter_keeps_what_the_tracker_needs(level: str) -> None:
    """Dropping unwanted syscalls in the parser changes nothing the tracker emits."""
    assert events(level, keep=True) == events(level, keep=False)


def test_process_level_ignores_files_and_sockets() -> None:
    """At level process no file or socket event is made from the same trace."""
    assert not any(
        isinstance(e, FileOpened | FileChanged | NetSocket | NetConnected) for e in events("process")
    )


def _traced(lines: str) -> list[Event]:
    tracker = Tracker(level="net")
    parser = StraceParser(keep=tracker.wanted_syscalls)
    return tracker.feed(parser.feed(lines.encode()) + parser.close()) + tracker.close()


_NB = 'connect({fd}, {{sa_family=AF_INET, sin_port=htons({port}), sin_addr=inet_addr("127.0.0.1")}}, 16) = '
T0 = 1700000000.0  # an epoch time: small ones read as `-r` relative times
PENDING = "-1 EINPROGRESS (Operation now in progress)"


def _connect(t: float, fd: object, port: int, result: str = PENDING) -> str:
    return f"10 {T0 + t:.6f} " + _NB.format(fd=fd, port=port) + result


def _so_error(t: float, fd: object, value: str) -> str:
    return f"10 {T0 + t:.6f} getsockopt({fd}, SOL_SOCKET, SO_ERROR, [{value}], [4]) = 0"


def test_a_non_blocking_connect_is_settled_by_its_result() -> None:
    """`= -1 EINPROGRESS` (Node, asyncio, curl, a Python socket with a timeout) is held until the result:
    getsockopt(SO_ERROR) says 0 or the error, a second connect says EISCONN (EALREADY: not yet). One
    never settled goes out as it was, before its process's exit; with the connect's own time."""
    y = "3<socket:[{}]>".format
    lines = [
        _connect(1.0, y(11), 80),
        _connect(1.1, y(12), 81),
        _so_error(1.2, y(12), "ECONNREFUSED"),
        _so_error(1.3, y(11), "0"),
        _connect(1.4, y(13), 82),
        _connect(1.5, y(13), 82, "-1 EALREADY (Operation already in progress)"),
        _connect(1.6, y(13), 82, "-1 EISCONN (Transport endpoint is already connected)"),
        _connect(1.7, y(14), 83),
        # no -y (an imported log): by (pid, fd); fd 5 reused by a new socket before a result
        _connect(1.8, 5, 84),
        _connect(1.9, 5, 85),
        _so_error(2.0, 5, "111"),
        f"10 {T0 + 2.1:.6f} +++ exited with 0 +++",
    ]
    trace = "\n".join(lines)
    got = [
        (e.ts, e.address, e.ok, e.errno) if isinstance(e, NetConnected) else type(e).__name__
        for e in _traced(trace + "\n")
        if not isinstance(e, NetSocket)
    ]
    assert [g for g in got if not isinstance(g, str) or g == "ProcExited"] == [
        (T0 + 1.1, "127.0.0.1:81", False, "ECONNREFUSED"),
        (T0 + 1.0, "127.0.0.1:80", True, None),
        (T0 + 1.4, "127.0.0.1:82", True, None),
        (T0 + 1.8, "127.0.0.1:84", False, "EINPROGRESS"),
        (T0 + 1.9, "127.0.0.1:85", False, "ECONNREFUSED"),
        (T0 + 1.7, "127.0.0.1:83", False, "EINPROGRESS"),  # never settled: out at the exit, as it was
        "ProcExited",
    ]


def test_a_connect_still_in_progress_at_the_end_of_the_trace_is_kept() -> None:
    (connect,) = [
        e for e in _traced(_connect(1.0, "3<socket:[9]>", 80) + "\n") if isinstance(e, NetConnected)
    ]
    assert (connect.ok, connect.errno) == (False, "EINPROGRESS")


def test_connects_held_for_a_result_are_bounded() -> None:
    """A program that never asks how its connects went keeps at most MAX_HELD of them held; the
    oldest go out as they were, and every connect is still recorded once."""
    from capsule.track.connects import MAX_HELD

    n = MAX_HELD + 10
    trace = "".join(_connect(i, f"3<socket:[{i}]>", 80) + "\n" for i in range(n))
    tracker = Tracker(level="net")
    parser = StraceParser(keep=tracker.wanted_syscalls)
    early = [
        e for e in tracker.feed(parser.feed(trace.encode()) + parser.close()) if isinstance(e, NetConnected)
    ]
    assert len(early) == 10
    assert len(tracker._connecting) == MAX_HELD
    late = [e for e in tracker.close() if isinstance(e, NetConnected)]
    assert [e.ts for e in early + late] == [T0 + i for i in range(n)]
