"""The eBPF tracker: `capsule.parse.ebpf` records -> the same process events the strace tracker emits.

Capsule's recorder reads one ring buffer in the order the kernel reserved its records, but traces
written by bpftrace (which recorded this format before it) hold each CPU's events in order, read one
CPU's buffer after another, so a child's exec may be read before the fork that made it (the fork is
reported on the parent's CPU). Records of a
process that is not alive yet are parked under its pid and replayed, in order, when its fork arrives;
whatever is still parked at the end becomes a process with no known parent, as the strace tracker
does with pids no clone ever claimed. Threads never reach here: the program prints only processes.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Set
from typing import Final

from capsule.events import Event
from capsule.events.process import (
    FileOpened,
    NetConnected,
    ProcExec,
    ProcExited,
    ProcSignaled,
    ProcSpawned,
    TraceUnparsed,
)
from capsule.parse.ebpf import (
    STRLEN,
    ArgvPiece,
    CwdChanged,
    EbpfRecord,
    ExecArg,
    ExecBegun,
    ExecDone,
    ExecFailed,
    ExecMore,
    FileOpen,
    Flushed,
    Forked,
    Header,
    NetConnect,
    ProcessEnded,
    SignalDelivered,
    SockError,
)
from capsule.parse.records import Unparsed
from capsule.track.connects import ConnectsInProgress
from capsule.track.levels import IGNORED_SIGNALS, level_parts
from capsule.track.paths import resolve
from capsule.track.tracker import Level

# Linux's signal numbers (x86-64, arm64 and most others; signal(7)), named as strace names them.
_SIGNALS: Final = [
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
]

# si_code names as strace prints them: a generic one, whatever the signal, first;
_SI_CODES: Final = {
    0: "SI_USER",
    0x80: "SI_KERNEL",
    -1: "SI_QUEUE",
    -2: "SI_TIMER",
    -3: "SI_MESGQ",
    -4: "SI_ASYNCIO",
    -5: "SI_SIGIO",
    -6: "SI_TKILL",
    -7: "SI_DETHREAD",
    -60: "SI_ASYNCNL",
}
# else the signal's own, codes 1, 2, … ("-": none, a number). SIGCHLD's are not needed: none is recorded.
_SIGNAL_CODES: Final = {
    4: "ILL_ILLOPC ILL_ILLOPN ILL_ILLADR ILL_ILLTRP ILL_PRVOPC ILL_PRVREG ILL_COPROC ILL_BADSTK ILL_BADIADDR",
    5: "TRAP_BRKPT TRAP_TRACE TRAP_BRANCH TRAP_HWBKPT TRAP_UNK TRAP_PERF",
    7: "BUS_ADRALN BUS_ADRERR BUS_OBJERR BUS_MCEERR_AR BUS_MCEERR_AO",
    8: "FPE_INTDIV FPE_INTOVF FPE_FLTDIV FPE_FLTOVF FPE_FLTUND FPE_FLTRES FPE_FLTINV FPE_FLTSUB - - - - - "
    "FPE_FLTUNK FPE_CONDTRAP",
    11: "SEGV_MAPERR SEGV_ACCERR SEGV_BNDERR SEGV_PKUERR SEGV_ACCADI SEGV_ADIDERR SEGV_ADIPERR SEGV_MTEAERR "
    "SEGV_MTESERR",
    29: "POLL_IN POLL_OUT POLL_MSG POLL_ERR POLL_PRI POLL_HUP",
    31: "SYS_SECCOMP SYS_USER_DISPATCH",
}

# open(2) flags (asm-generic), in the order strace prints them after the access mode.
_OPEN_FLAGS: Final = (
    (0o100, "O_CREAT"),
    (0o200, "O_EXCL"),
    (0o400, "O_NOCTTY"),
    (0o1000, "O_TRUNC"),
    (0o2000, "O_APPEND"),
    (0o4000, "O_NONBLOCK"),
    (0o4010000, "O_SYNC"),
    (0o10000, "O_DSYNC"),
    (0o20000, "O_ASYNC"),
    (0o40000, "O_DIRECT"),
    (0o100000, "O_LARGEFILE"),
    (0o200000, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"),
    (0o1000000, "O_NOATIME"),
    (0o2000000, "O_CLOEXEC"),
    (0o10000000, "O_PATH"),
    (0o20000000, "O_TMPFILE"),
)
_FAMILIES: Final = {1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6"}


def signal_name(number: int) -> str:
    """A signal's name as strace 6.1 prints it: the kernel's real-time signals from 32 are `SIGRTMIN`,
    then `SIGRT_1` … `SIGRT_32` (glibc's own SIGRTMIN, 34, is `SIGRT_2`)."""
    if 1 <= number <= len(_SIGNALS):
        return _SIGNALS[number - 1]
    if number == 32:
        return "SIGRTMIN"
    if 33 <= number <= 64:
        return f"SIGRT_{number - 32}"
    return f"SIG{number}"


def si_code_name(code: int, signo: int) -> str:
    """A signal's si_code as strace 6.1 prints it (`SI_USER`, `SEGV_MAPERR`), an unknown one as a 32-bit
    hex number (`0x5`, `0xffffffd6`)."""
    name = _SI_CODES.get(code)
    if name is None and code > 0:
        own = _SIGNAL_CODES.get(signo, "").split()
        name = own[code - 1] if code <= len(own) and own[code - 1] != "-" else None
    return name if name is not None else f"{code & 0xFFFFFFFF:#x}"


def errno_name(number: int) -> str:
    return _errno.errorcode.get(number, f"E{number}")


def open_flags(flags: int) -> str:
    """`O_RDONLY|O_CLOEXEC` as strace spells the flags of an open."""
    names = [("O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE")[flags & 3]]
    rest = flags & ~3
    for bit, name in _OPEN_FLAGS:
        if rest & bit == bit:
            names.append(name)
            rest &= ~bit
    if rest:
        names.append(f"{rest:#o}")
    return "|".join(names)


AT_FDCWD: Final = -100
# The errors of the opens the recorder prints at level refused (stages/bpf/recorder.bpf.c), the guard's
# path rules enforced: those the mount namespace fails (capsule/policy/enforce.py `refused_open`). A
# session recorded so says the user's level (stages/guard.py `session_level`), without files, and keeps
# these opens as file.opened events at it, so that its refusals are derived from its trace again.
REFUSED: Final = frozenset((_errno.EACCES, _errno.EROFS))
GONE_KEPT: Final = 4096  # ended processes remembered (late records come within milliseconds)
# Records of the process their `tgid` names (it must be alive for them to apply)
_OF_TGID: Final = (
    ExecBegun,
    ExecFailed,
    ProcessEnded,
    FileOpen,
    CwdChanged,
    NetConnect,
    SockError,
    SignalDelivered,
)


class _Exec:
    __slots__ = ("argv", "path", "tgid", "truncated", "ts")

    def __init__(self, rec: ExecBegun) -> None:
        self.ts = rec.ts
        self.tgid = rec.tgid
        self.path = rec.path
        self.argv: list[str] = []
        self.truncated = len(rec.path.encode()) >= STRLEN - 1

    @classmethod
    def unseen(cls, ts: float, tgid: int) -> _Exec:
        """An exec whose begin record was not read (yet): no path, the argv to come from the area."""
        return cls(ExecBegun(line_no=0, ts=ts, tid=tgid, tgid=tgid, path=""))


def _complete_argv(attempt: _Exec, size: int, area: bytearray) -> None:
    """Fill the elements of an exec's argv that the program cut at 199 bytes from the new program's
    own argv area. The area is what the program sees, which for a `#!` script is the interpreter's
    argv (`interp [arg] script args…`): only the first element differs, so elements are aligned from
    the end. What the area does not hold whole stays marked truncated."""
    whole = len(area) >= size
    program_argv = [a.decode("utf-8", "replace") for a in bytes(area).split(b"\0")]
    if area.endswith(b"\0"):
        program_argv.pop()
    if not attempt.path:
        # The caller's memory could not be read at the syscall (a page not faulted in yet: a forked
        # child exec'ing a string of the parent's it never touched). The new program's argv area was
        # just written by the kernel, so it is always there.
        attempt.argv = program_argv
        attempt.truncated = not whole
        return
    cut = [i for i, arg in enumerate(attempt.argv) if len(arg.encode()) >= STRLEN - 1]
    if not cut and not attempt.truncated:
        return
    missing_tail = attempt.truncated  # the program read only the first elements (M line)
    if missing_tail and whole and len(program_argv) >= len(attempt.argv):
        # The given argv had more elements than were read: the area has them all, after argv[0].
        extra = len(program_argv) - len(attempt.argv)
        attempt.argv = [*attempt.argv[:1], *program_argv[extra + 1 :]] if extra >= 0 else attempt.argv
        missing_tail = False
    offset = len(program_argv) - len(attempt.argv)
    still_cut = False
    for i in cut:
        j = i + offset
        if i > 0 and 0 <= j < len(program_argv) and program_argv[j].startswith(attempt.argv[i]):
            attempt.argv[i] = program_argv[j]
            still_cut |= not whole and j == len(program_argv) - 1
        else:
            still_cut = True
    attempt.truncated = missing_tail or still_cut


class EbpfTracker:
    """Fold eBPF records into events: `feed(records) -> list[Event]`, then `close()` at the end."""

    def __init__(self, level: Level = "process") -> None:
        self._files, self._net = level_parts(level)
        self.root_pid: int | None = None
        self.root_status: tuple[int | None, str | None] | None = None
        self.unparsed = 0
        self.flushed = 0  # flush barrier markers read (capsule/stages/ebpf.py stop_when_tree_gone)
        self._root_pending = False  # the header named the root; its spawn waits for a first timestamp
        self._alive: set[int] = set()
        self._parked: dict[int, list[EbpfRecord]] = {}
        self._parked_tids: dict[int, int] = {}  # tid of a parked exec -> the pid it is parked under
        # pid -> when it ended, for the last GONE_KEPT processes: a record of one of them read after its
        # end (from another CPU's buffer) is late, not ahead of a fork to come, and is dropped
        self._gone: dict[int, float] = {}
        self._late_tids: set[int] = set()  # a dropped exec's argv lines follow it
        self._execs: dict[int, _Exec] = {}  # tid -> its exec attempt in progress
        self._argv_area: dict[int, tuple[int, bytearray]] = {}  # pid -> (size, bytes so far) of a new program
        # pid -> its working directory (None: unknown, after an fchdir or in a trace that does not say)
        self._cwd: dict[int, str | None] = {}
        self._connecting = ConnectsInProgress()  # non-blocking connects, until their result (N, K)
        self._out: list[Event] = []

    @property
    def unexited(self) -> int:
        """Processes the trace showed start and never end (after `close`: the tree was cut short)."""
        return len(self._alive)

    @property
    def alive(self) -> Set[int]:
        """The processes of the tree started and not yet ended (a view: it follows the trace)."""
        return self._alive

    @property
    def live(self) -> int:
        """Processes started and not yet ended, parked ones included: 0 once the whole tree is gone."""
        return len(self._alive) + len(self._parked) + int(self._root_pending)

    def feed(self, records: list[EbpfRecord]) -> list[Event]:
        out: list[Event] = []
        self._out = out
        for rec in records:
            self._route(rec)
        return out

    def close(self) -> list[Event]:
        out: list[Event] = []
        self._out = out
        if self._root_pending and self.root_pid is not None:
            self._parked.setdefault(self.root_pid, [])
            self._root_pending = False
        while self._parked:
            pid = next(iter(self._parked))
            held = self._parked[pid]
            first = next((r.ts for r in held if isinstance(r.ts, float)), 0.0)
            via = "root" if pid == self.root_pid else "unknown"
            self._spawn(pid, None, via, first)  # replays what was parked under it
        out.extend(self._connecting.drain())
        return out

    # --- routing -----------------------------------------------------------------------------------

    def _route(self, rec: EbpfRecord) -> None:
        if isinstance(rec, Unparsed):
            self.unparsed += 1
            self._out.append(
                TraceUnparsed(ts=rec.ts or 0.0, line_no=rec.line_no, text=rec.text, reason=rec.reason)
            )
            return
        if isinstance(rec, Flushed):
            self.flushed += 1
            return
        if isinstance(rec, Header):
            self.root_pid = rec.root
            self._root_pending = True
            self._cwd[rec.root] = rec.cwd
            return
        if self._root_pending and rec.ts is not None and self.root_pid is not None:
            self._root_pending = False
            self._spawn(self.root_pid, None, "root", rec.ts)
        owner = self._owner(rec)
        if owner is None and isinstance(rec, ExecArg | ExecMore):
            if rec.tid in self._late_tids:
                return
            owner = self._parked_tids.get(rec.tid)  # the argv of a parked exec waits with it
        if owner is not None and owner not in self._alive and self._late(owner, rec):
            if isinstance(rec, ExecBegun):
                self._late_tids.add(rec.tid)
            return
        if owner is not None and owner not in self._alive:
            self._parked.setdefault(owner, []).append(rec)
            if isinstance(rec, ExecBegun):
                self._parked_tids[rec.tid] = owner
            return
        self._apply(rec)

    def _late(self, owner: int, rec: EbpfRecord) -> bool:
        """Whether `rec` belongs to the ended process `owner` (not to a new one reusing its pid): a
        record without a stamp of its own (an argv piece) follows its exec, which came before the end."""
        ended = self._gone.get(owner)
        ts = getattr(rec, "ts", None)
        return ended is not None and (ts is None or ts <= ended)

    def _owner(self, rec: EbpfRecord) -> int | None:
        """The process a record belongs to, which must be alive for it to apply."""
        if isinstance(rec, Forked):
            return rec.parent
        if isinstance(rec, _OF_TGID):
            return rec.tgid
        if isinstance(rec, ExecDone | ArgvPiece):
            return rec.pid
        return None  # argv lines follow their exec's line from the same CPU, in order

    def _apply(self, rec: EbpfRecord) -> None:
        if isinstance(rec, Forked):
            self._spawn(rec.pid, rec.parent, rec.via, rec.ts)
        elif isinstance(rec, ExecBegun):
            self._late_tids.discard(rec.tid)
            self._execs[rec.tid] = _Exec(rec)
        elif isinstance(rec, ExecArg):
            attempt = self._execs.get(rec.tid)
            if attempt is not None and rec.index == len(attempt.argv):
                attempt.argv.append(rec.text)
                attempt.truncated |= len(rec.text.encode()) >= STRLEN - 1
        elif isinstance(rec, ExecMore):
            if (attempt := self._execs.get(rec.tid)) is not None:
                attempt.truncated = True
        elif isinstance(rec, ExecFailed):
            self._exec_ended(self._execs.pop(rec.tid, None), rec.tgid, rec.ts, errno_name(rec.errno))
        elif isinstance(rec, ArgvPiece):
            _size, area = self._argv_area.setdefault(rec.pid, (rec.size, bytearray()))
            if rec.offset == len(area):
                area += rec.data
        elif isinstance(rec, ExecDone):
            attempt = self._execs.pop(rec.old_pid, None)
            if (found := self._argv_area.pop(rec.pid, None)) is not None:
                if attempt is None:  # its begin is on another CPU's buffer, unread: the area has the argv
                    attempt = _Exec.unseen(rec.ts, rec.pid)
                _complete_argv(attempt, *found)
            self._exec_ended(attempt, rec.pid, rec.ts, None, rec.path)
        elif isinstance(rec, ProcessEnded):
            self._ended(rec)
        elif isinstance(rec, SignalDelivered):
            self._signaled(rec)
        elif isinstance(rec, CwdChanged):
            cwd = self._cwd.get(rec.tgid)
            if not rec.path:
                self._cwd[rec.tgid] = None  # fchdir: the trace does not name the directory
            elif rec.path.startswith("/") or cwd is not None:
                self._cwd[rec.tgid] = resolve(cwd, rec.path)
        elif isinstance(rec, FileOpen):
            if self._files or -rec.ret in REFUSED:
                self._out.append(
                    FileOpened(
                        ts=rec.ts,
                        pid=rec.tgid,
                        path=self._absolute(rec),
                        flags=open_flags(rec.flags),
                        ok=rec.ret >= 0,
                        errno=errno_name(-rec.ret) if rec.ret < 0 else None,
                    )
                )
        elif isinstance(rec, NetConnect) and self._net:
            self._connected(rec)
        elif isinstance(rec, SockError) and self._net:
            error = None if rec.error == 0 else errno_name(rec.error)
            if (settled := self._connecting.result((rec.tgid, rec.fd), error)) is not None:
                self._out.append(settled)

    def _absolute(self, rec: FileOpen) -> str:
        """An open's path as strace -y shows it: absolute from the cwd (AT_FDCWD) where the trace says
        which that is; relative to another descriptor, or in a trace without dirfds, as given."""
        if rec.dirfd is None or (rec.dirfd != AT_FDCWD and not rec.path.startswith("/")):
            return rec.path
        cwd = self._cwd.get(rec.tgid)
        if cwd is None and not rec.path.startswith("/"):
            return rec.path
        return resolve(cwd, rec.path)

    def _spawn(self, pid: int, ppid: int | None, via: str, ts: float) -> None:
        if ppid is not None:
            self._cwd[pid] = self._cwd.get(ppid)
        self._alive.add(pid)
        self._gone.pop(pid, None)
        self._late_tids.discard(pid)
        self._out.append(ProcSpawned(ts=ts, pid=pid, ppid=ppid, via=via))
        held = self._parked.pop(pid, ())
        for tid in [t for t, owner in self._parked_tids.items() if owner == pid]:
            del self._parked_tids[tid]
        for rec in held:
            self._route(rec)

    def _exec_ended(
        self, attempt: _Exec | None, pid: int, ts: float, errno: str | None, path: str = ""
    ) -> None:
        self._out.append(
            ProcExec(
                ts=attempt.ts if attempt is not None else ts,
                pid=pid,
                path=(attempt.path if attempt is not None else "") or path,
                argv=tuple(attempt.argv) if attempt is not None else (),
                ok=errno is None,
                errno=errno,
                argv_truncated=attempt.truncated if attempt is not None else True,
            )
        )

    def _ended(self, rec: ProcessEnded) -> None:
        self._alive.discard(rec.tgid)
        self._out.extend(self._connecting.exited(rec.tgid))
        if rec.tgid != self.root_pid:
            self._cwd.pop(rec.tgid, None)
        self._gone[rec.tgid] = rec.ts
        if len(self._gone) > GONE_KEPT:
            del self._gone[next(iter(self._gone))]
        status = rec.status
        signum = status & 0x7F
        if signum == 0:
            code = (status >> 8) & 0xFF
            self._out.append(ProcExited(ts=rec.ts, pid=rec.tgid, exit_code=code))
            result: tuple[int | None, str | None] = (code, None)
        else:
            name = signal_name(signum)
            self._out.append(
                ProcExited(ts=rec.ts, pid=rec.tgid, signal=name, core_dumped=bool(status & 0x80))
            )
            result = (None, name)
        if rec.tgid == self.root_pid:
            self.root_status = result

    def _signaled(self, rec: SignalDelivered) -> None:
        """A signal delivered, at every level, as the strace tracker records its `--- SIG… ---` lines."""
        name = signal_name(rec.signo)
        if name in IGNORED_SIGNALS:  # SIGCHLD: the program prints none, and the strace tracker drops it
            return
        code = si_code_name(rec.code, rec.signo)
        self._out.append(ProcSignaled(ts=rec.ts, pid=rec.tgid, signal=name, sender_pid=rec.sender, code=code))

    def _connected(self, rec: NetConnect) -> None:
        family = _FAMILIES.get(rec.family, f"AF_{rec.family}")
        if rec.family == 2:
            address = f"{rec.address}:{rec.port}"
        elif rec.family == 10:
            address = f"[{rec.address}]:{rec.port}"
        else:
            address = rec.address
        event = NetConnected(
            ts=rec.ts,
            pid=rec.tgid,
            family=family,
            address=address,
            ok=rec.ret >= 0,
            errno=errno_name(-rec.ret) if rec.ret < 0 else None,
        )
        self._out.extend(self._connecting.connect(None if rec.fd is None else (rec.tgid, rec.fd), event))
