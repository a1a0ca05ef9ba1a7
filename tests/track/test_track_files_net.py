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
