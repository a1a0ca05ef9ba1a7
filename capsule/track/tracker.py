"""The tracker: a deterministic state machine folding parser records into process events.

Theory of operation. Every task (tid) strace reports is mapped to its thread-group leader: a clone
with CLONE_THREAD maps the new tid to the caller's leader and is not a process; any other
fork/vfork/clone/clone3 returning N makes N a process (`proc.spawned`, at the ts of the clone's return).
An interrupted call (`<unfinished ...>`) waits per tid for its `<... X resumed>` half; a resumed half
without a partner is used as it stands. A pid seen before any clone claimed it (the child ran before
its parent's clone returned) has its records buffered until the claim, or until `close()`, where it
becomes a process of unknown parent (`via="unknown"`). The first pid of the trace is the root.

Lines without a pid prefix (no `-f`, or strace writing to stderr, where it prefixes lines only while
more than one task is traced) belong to the only live task when there is one, else to the root. When a
trace starts with such lines, the root's pid is learnt from the first prefixed `<... X resumed>` that
completes the pid-less call in progress (or from a prefixed pid that no clone returned); records are
held until then. A trace with no pid at all is one process with pid 0.
"""

from __future__ import annotations

import errno as errno_names
import re
from typing import Literal

from capsule.events import (
    Event,
    FileChanged,
    FileOpened,
    NetConnected,
    NetSocket,
    ProcExec,
    ProcExited,
    ProcSignaled,
    ProcSpawned,
    TraceUnparsed,
)
from capsule.parse import (
    Attached,
    Exited,
    Killed,
    Message,
    Record,
    Signal,
    Superseded,
    Syscall,
    Unparsed,
)
from capsule.parse.grammar import PID_MAX
from capsule.track.args import decode_array, decode_string, exec_head, split_args
from capsule.track.connects import ConnectsInProgress
from capsule.track.levels import (
    _CHANGES,
    _CWD,
    _ENDS,
    _EXEC,
    _NET_OPS,
    _OPEN,
    _SPAWN,
    IGNORED_SIGNALS,
    level_parts,
    wanted_syscalls,
)
from capsule.track.paths import descriptor, resolve, sockaddr, written_path

Level = Literal["process", "file", "net", "all"]

_SI_PID = re.compile(r"\bsi_pid=(\d+)")
# A waited child's end: wait4's status (`[{WIFEXITED(s) && WEXITSTATUS(s) == 3}]`,
# `[{WIFSIGNALED(s) && WTERMSIG(s) == SIGSEGV && WCOREDUMP(s)}]`), or waitid's siginfo.
_WAIT_EXITED = re.compile(r"WIFEXITED\(s\) && WEXITSTATUS\(s\) == (\d{1,3})\}")
_WAIT_SIGNALED = re.compile(r"WIFSIGNALED\(s\) && WTERMSIG\(s\) == (SIG\w+|\d+)( && WCOREDUMP\(s\))?\}")
_WAITID = re.compile(r"si_code=CLD_(EXITED|KILLED|DUMPED), si_pid=(\d{1,7})\b.*?si_status=(\w+)")
_SI_CODE = re.compile(r"\bsi_code=(\w+)")
_FAMILY = re.compile(r"\bsa_family=(\w+)")
_INET = re.compile(r'sin_port=htons\((\d+)\), sin_addr=inet_addr\("([^"]*)"\)')
_INET6 = re.compile(r'sin6_port=htons\((\d+)\).*inet_pton\(AF_INET6, "([^"]*)"')
_UNIX = re.compile(r"sun_path=(@?)(\".*\"(?:\.\.\.)?)")

_Held = tuple[Record, float, int | None]
_UNFINISHED = "<unfinished ...>"  # the tail of an interrupted call that neither changed pid nor detached  # a record, its effective ts, its pid (None: not yet known)


class Tracker:
    """Fold parser records into events: `feed(records) -> list[Event]`, then `close()` at the end."""

    # Signals whose `--- SIG… ---` lines produce nothing: SIGCHLD is the noise of every fork.
    ignored_signals: frozenset[str] = IGNORED_SIGNALS

    @property
    def dropped_signals(self) -> frozenset[str]:
        """The signals whose lines a parser may drop unread: an import's tracker reads SIGCHLD's sender."""
        return frozenset() if self._ends else self.ignored_signals

    @property
    def wanted_syscalls(self) -> frozenset[str]:
        """The syscall names this tracker acts on at its level: a parser may drop the rest."""
        return wanted_syscalls(self._files, self._net, ends=self._ends)

    def __init__(self, level: Level = "process", default_ts: float = 0.0, *, ends: bool = False) -> None:
        self._files, self._net = level_parts(level)
        # `ends` (imports): a process's end is also read from its exit_group and its parent's wait, for
        # logs whose exit lines strace left out (`-qq`, `-e quiet=exit`; `-e signal=none` drops the
        # `+++ killed by` ones). A complete log shows each exit line before the parent's wait returns
        # (the tracer reaps a traced child first), so for it nothing changes.
        self._ends = ends
        # leader -> (ts, exit code, signal, core dumped) its exit_group or its parent's wait said
        self._end_calls: dict[int, tuple[float, int | None, str | None, bool]] = {}
        self.root_pid: int | None = None
        self.root_status: tuple[int | None, str | None] | None = None
        self.unparsed = 0
        self._ts = default_ts  # last timestamp seen: lines without one get it (all of them, unstamped)
        self._tgid: dict[int, int] = {}  # every known tid -> its thread-group leader
        self._live: set[int] = set()  # tids that have not exited
        self._exited: set[int] = set()  # leaders that got their ProcExited
        self._pending: dict[int, Syscall] = {}  # tid -> its unfinished call
        self._took_over: set[int] = set()  # leaders whose pending exec is a thread's that took their pid
        self._unclaimed: dict[int, list[_Held]] = {}  # pids no clone has returned yet, in order seen
        self._hold: list[_Held] | None = None  # records held while a pid-less root is unresolved
        self._anon_open: str | None = None  # the pid-less stream's call in progress, while held
        self._held_children: set[int] = set()  # pids returned by held clones
        # Files: each process's cwd, absolute or relative to the root's starting directory ("").
        self._cwd: dict[int, str] = {}
        # Sockets: the local address a descriptor was bound to, by socket inode (`-y`) or (pid, fd).
        self._bound: dict[object, tuple[str, str, int | None]] = {}
        self._listening: set[object] = set()
        self._connecting = ConnectsInProgress()  # non-blocking connects, until their result
        self._out: list[Event] = []
        self._spawned = 0

    @property
    def unexited(self) -> int:
        """Processes seen spawned whose exit the trace has not shown (so far)."""
        return self._spawned - len(self._exited)

    # --- the interface -----------------------------------------------------------------------------

    def feed(self, records: list[Record]) -> list[Event]:
        """Fold `records` (in trace order); return the events they complete, in causal order."""
        out: list[Event] = []
        self._out = out
        for rec in records:
            ts = rec.ts
            if ts is None:
                ts = self._ts
            else:
                self._ts = ts
            self._route(rec, ts)
        return out

    def close(self) -> list[Event]:
        """End of trace: settle the root and emit the processes no clone ever claimed."""
        out: list[Event] = []
        self._out = out
        if self.root_pid is None and self._hold is not None:
            self._resolve_root(0)
        out.extend(self._connecting.drain())
        while self._unclaimed:
            pid = next(iter(self._unclaimed))
            held = self._unclaimed.pop(pid)
            self._new_process(pid, None, "unknown", held[0][1])
            for rec, ts, hpid in held:
                self._process(rec, ts, hpid)
        # Processes whose end only their calls showed (every process of a -qq log), in time order
        for tgid in sorted(self._end_calls, key=lambda tgid: self._end_calls[tgid][0]):
            self._settle(tgid)
        return out

    # --- routing -----------------------------------------------------------------------------------

    def _route(self, rec: Record, ts: float) -> None:
        # Records are final classes: `type(rec) is` is their isinstance, and cheaper (an isinstance of a
        # union most of all); a fork-heavy trace has ~5 records a process, each through here and _process.
        if type(rec) is Unparsed:
            self.unparsed += 1
            self._out.append(TraceUnparsed(ts=ts, line_no=rec.line_no, text=rec.text, reason=rec.reason))
            return
        if type(rec) is Message:
            return
        if self.root_pid is not None:
            self._process(rec, ts, rec.pid)
            return
        if self._hold is None:
            if rec.pid is not None:  # `strace: Process N attached` first (`-p`) or a prefixed line
                self._new_process(rec.pid, None, "root", ts)
                self._process(rec, ts, rec.pid)
                return
            self._hold = []
        self._hold.append((rec, ts, rec.pid))
        self._watch_held(rec)

    def _watch_held(self, rec: Record) -> None:
        """Learn the root's pid from held records (see the module docstring)."""
        if not isinstance(rec, Syscall):
            return
        if rec.name in _SPAWN and rec.state != "unfinished":
            child = _result_pid(rec)
            if child is not None:
                self._held_children.add(child)
        if rec.pid is None:
            self._anon_open = rec.name if rec.state == "unfinished" else None
            return
        completes_anon = rec.state == "resumed" and rec.name == self._anon_open
        if completes_anon or (self._anon_open is None and rec.pid not in self._held_children):
            self._resolve_root(rec.pid)

    def _resolve_root(self, pid: int) -> None:
        held = self._hold or []
        self._hold = None
        self._new_process(pid, None, "root", held[0][1] if held else self._ts)
        for rec, ts, hpid in held:
            self._process(rec, ts, hpid)

    def _anon_pid(self) -> int:
        if len(self._live) == 1:
            return next(iter(self._live))
        return self.root_pid if self.root_pid is not None else 0

    # --- processing --------------------------------------------------------------------------------

    def _process(self, rec: Record, ts: float, pid: int | None) -> None:
        kind = type(rec)
        if kind is Attached or kind is Message or kind is Unparsed:
            return
        if pid is None:
            pid = self._anon_pid()
        tgid = self._tgid.get(pid)
        if tgid is None:
            self._unclaimed.setdefault(pid, []).append((rec, ts, pid))
            return
        if type(rec) is Syscall:
            self._syscall(rec, ts, pid, tgid)
        elif type(rec) is Exited or type(rec) is Killed:
            self._exit(rec, ts, pid, tgid)
        elif type(rec) is Superseded:
            self._superseded(rec, tgid)
        elif isinstance(rec, Signal) and self._ends and rec.signal == "SIGCHLD":
            self._adopt_signaller(rec, tgid)
        elif isinstance(rec, Signal) and not rec.stopped and rec.signal not in self.ignored_signals:
            sender = _SI_PID.search(rec.info)
            if sender is not None and (len(sender[1]) > 7 or int(sender[1]) > PID_MAX):
                sender = None
            code = _SI_CODE.search(rec.info)
            self._out.append(
                ProcSignaled(
                    ts=ts,
                    pid=tgid,
                    signal=rec.signal,
                    sender_pid=int(sender[1]) if sender else None,
                    code=code[1] if code else None,
                )
            )

    def _syscall(self, rec: Syscall, ts: float, pid: int, tgid: int) -> None:
        if rec.state == "unfinished":
            # The common mark first: `<unfinished ...>` changes no pid and is no detach.
            if rec.tail == _UNFINISHED:
                self._pending[pid] = rec
                return
            changed = rec.pid_changed_to
            if not rec.detached:  # a detached call never resumes
                self._pending[changed if changed is not None else pid] = rec
            return
        name, args, changed = rec.name, rec.args, False
        if rec.state == "resumed":
            partner = self._pending.pop(pid, None)
            if partner is not None and (partner.name == name or name == "???"):
                name = partner.name
                args = partner.args + args
                changed = (
                    partner.tail != _UNFINISHED and partner.pid_changed_to is not None
                ) or pid in self._took_over
            elif name in _EXEC:
                args = ""  # only the tail of the call survived: path and argv are unknown
            self._took_over.discard(pid)
        if name in _SPAWN:
            self._spawn(rec, name, args, ts, tgid)
        elif name in _EXEC:
            self._exec(rec, name, args, ts, tgid, changed)
        elif self._files and name in _OPEN:
            self._open(rec, name, args, ts, tgid)
        elif self._files and name in _CHANGES:
            self._change(rec, name, args, ts, tgid)
        elif self._files and name in _CWD:
            self._chdir(rec, name, args, tgid)
        elif self._net and name == "connect":
            self._connect(rec, args, ts, tgid)
        elif self._net and name == "getsockopt":
            self._connect_result(rec, args, tgid)
        elif self._net and name in _NET_OPS:
            self._socket_call(rec, name, args, ts, tgid)
        elif self._ends and name in _ENDS:
            self._end_call(rec, name, args, ts, tgid)

    def _adopt_signaller(self, rec: Signal, tgid: int) -> None:
        """`ends` (imports): a SIGCHLD from a pid no clone returned makes it a child of its receiver. A
        log without clone lines (`strace -f -e trace=execve`, the classic one) has no other parentage;
        in a log with them, a parent's clone line always comes before its child's SIGCHLD."""
        child = _SI_PID.search(rec.info)
        if child is None or len(child[1]) > 7:
            return
        pid = int(child[1])
        held = self._unclaimed.get(pid)
        if held and pid != tgid:
            self._new_process(pid, tgid, "unknown", held[0][1])
            self._claim(pid)

    def _end_call(self, rec: Syscall, name: str, args: str, ts: float, tgid: int) -> None:
        """Keep what exit_group and a parent's wait say of a process's end, for a process no exit line
        ends (see `_settle`): never used sooner, since a log's lines need not come in the order the
        kernel did things (`strace -ff` files merge by each call's entry time)."""
        if name == "exit_group":
            code = args.strip()
            if code.isdigit() and len(code) <= 10 and tgid not in self._end_calls:
                self._end_calls[tgid] = (ts, int(code) & 0xFF, None, False)
            return
        if rec.errno is not None:
            return
        end: tuple[int | None, str | None, bool] | None = None
        if name == "wait4":
            child = _result_pid(rec)
            exited, signaled = _WAIT_EXITED.search(args), _WAIT_SIGNALED.search(args)
            if exited is not None and int(exited[1]) <= 255:  # no kernel says more: a hostile line
                end = (int(exited[1]), None, False)
            elif signaled is not None:
                end = (None, signaled[1], signaled[2] is not None)
        else:  # waitid
            info = _WAITID.search(args)
            child = int(info[2]) if info is not None and 0 < int(info[2]) <= PID_MAX else None
            how, status = (info[1], info[3]) if info is not None else ("", "")
            if how == "EXITED" and status.isdigit() and len(status) <= 3 and int(status) <= 255:
                end = (int(status), None, False)
            elif how in ("KILLED", "DUMPED") and (status.startswith("SIG") or status.isdigit()):
                end = (None, status, how == "DUMPED")
        if child is None or end is None or self._tgid.get(child) != child or child in self._exited:
            return  # WNOHANG's 0, a stopped or continued child, one not followed or already ended
        called = self._end_calls.get(child)
        self._end_calls[child] = (called[0] if called is not None else ts, *end)  # exit_group's time first

    def _settle(self, tgid: int) -> None:
        """End `tgid` as its calls said (`_end_call`) if no exit line did: at the trace's end, or when
        its pid is reused (it was gone by then)."""
        ts, code, signal, core_dumped = self._end_calls.pop(tgid)
        if tgid in self._exited:
            return
        self._exited.add(tgid)
        self._live.discard(tgid)
        self._out.append(ProcExited(ts=ts, pid=tgid, exit_code=code, signal=signal, core_dumped=core_dumped))
        if tgid == self.root_pid:
            self.root_status = (code, signal)

    def _spawn(self, rec: Syscall, name: str, args: str, ts: float, tgid: int) -> None:
        child = _result_pid(rec)
        if child is None:
            if rec.result is not None and rec.result.isdigit() and rec.errno is None:
                self._out_of_range(rec, ts, f"{name} returned pid {rec.result[:30]}")
            return
        if "CLONE_THREAD" in args and name != "fork" and name != "vfork":
            self._tgid[child] = tgid
            self._live.add(child)
            self._claim(child)
            return
        held = self._unclaimed.get(child)
        if held:
            # vfork, or a child scheduled first: it ran (and maybe exec'd) before the clone returned in the
            # parent. It existed from its first line on, so it is spawned then, never after its exec.
            ts = min(ts, held[0][1])
        self._new_process(child, tgid, name, ts)
        self._claim(child)

    def _claim(self, pid: int) -> None:
        for rec, ts, hpid in self._unclaimed.pop(pid, ()):
            self._process(rec, ts, hpid)

    def _new_process(self, pid: int, ppid: int | None, via: str, ts: float) -> None:
        if pid in self._end_calls:  # its pid reused: the process its calls ended is gone
            self._settle(pid)
        if ppid is None and via == "root":
            self.root_pid = pid
        self._tgid[pid] = pid
        self._live.add(pid)
        if pid in self._exited:
            self._exited.discard(pid)  # a reused pid is a new process
            self._spawned -= 1
        self._spawned += 1
        if self._files:  # fork copies the cwd
            self._cwd[pid] = self._cwd.get(ppid, "") if ppid is not None else ""
        self._out.append(ProcSpawned(ts=ts, pid=pid, ppid=ppid, via=via))

    def _exec(self, rec: Syscall, name: str, args: str, ts: float, tgid: int, changed: bool) -> None:
        head = exec_head(args) if name == "execve" else None
        if head is not None:  # the common shape, decoded by one regex (split_args: ~8 us an exec)
            # A tail of `0` (an exec that worked) is result 0 without errno: no regex over it.
            errno = None if rec.tail == "0" else rec.errno
            self._out.append(
                ProcExec(
                    ts=ts,
                    pid=tgid,
                    path=head[0],
                    argv=head[1],
                    ok=changed or (errno is None and (rec.tail == "0" or rec.result == "0")),
                    errno=errno,
                    argv_truncated=False,
                )
            )
            return
        parts = split_args(args)
        if name == "execveat":
            parts = parts[1:]
        path = decode_string(parts[0]) if parts else None
        argv = decode_array(parts[1]) if len(parts) > 1 else None
        errno = rec.errno
        ok = changed or (errno is None and rec.result == "0")
        if argv is not None and argv == ((), True):
            argv = None  # `[...]`: `-s 0` (or a cut argv) shows none of it: unknown, not empty
        self._out.append(
            ProcExec(
                ts=ts,
                pid=tgid,
                # (`-e raw=all` shows the path as a pointer, `0x7ffee9d9ea70`: no path then)
                path=path[0] if path is not None else (parts[0] if parts and parts[0][:2] != "0x" else ""),
                argv=argv[0] if argv is not None else None,
                ok=ok,
                errno=errno,
                argv_truncated=argv[1] if argv is not None else True,
            )
        )

    def _exit(self, rec: Exited | Killed, ts: float, pid: int, tgid: int) -> None:
        self._live.discard(pid)
        self._pending.pop(pid, None)
        if pid != tgid or tgid in self._exited:
            return  # a thread's own exit line, or a leader already reported
        self._exited.add(tgid)
        self._end_calls.pop(tgid, None)
        self._out.extend(self._connecting.exited(tgid))
        if isinstance(rec, Exited):
            event = ProcExited(ts=ts, pid=tgid, exit_code=rec.code)
            status: tuple[int | None, str | None] = (rec.code, None)
        else:
            event = ProcExited(ts=ts, pid=tgid, signal=rec.signal, core_dumped=rec.core_dumped)
            status = (None, rec.signal)
        self._out.append(event)
        if tgid == self.root_pid:
            self.root_status = status

    def _superseded(self, rec: Superseded, leader: int) -> None:
        # A thread of `leader` exec'd: it takes over the leader's pid and is gone as a thread. Its
        # unfinished execve resumes in the leader (stderr style does not say `<pid changed ...>`).
        thread = rec.by_pid
        if thread is None:
            thread = next(
                (
                    t
                    for t, c in self._pending.items()
                    if c.name in _EXEC and self._tgid.get(t) == leader and t != leader
                ),
                None,
            )
        if thread is None or thread == leader:
            return
        if thread not in self._tgid and thread in self._unclaimed:
            # Its clone never returned in the leader (`<... clone3 resumed> <unfinished ...>) = ?`): the
            # exec took the leader's pid first. The superseded line says whose thread it was.
            self._tgid[thread] = leader
            self._live.add(thread)
            self._claim(thread)
        call = self._pending.pop(thread, None)
        if call is not None and leader not in self._pending:
            self._pending[leader] = call
            # The kernel takes the leader's pid (de_thread) only past an exec's point of no return: the
            # call succeeded, whatever its resumed line says. strace 6.1, when it printed the thread's
            # line as a plain `<unfinished ...>`, resumes it as `= 231` (exit_group's number).
            self._took_over.add(leader)
        self._live.discard(thread)
        self._tgid.pop(thread, None)

    def _out_of_range(self, rec: Syscall, ts: float, why: str) -> None:
        """A number no kernel produces: the line is a `trace.unparsed` fact, not a process."""
        self.unparsed += 1
        text = f"{rec.name}({rec.args}) = {rec.tail}"
        self._out.append(
            TraceUnparsed(ts=ts, line_no=rec.line_no, text=text[:4096], reason=f"out of range: {why}")
        )

    def _base(self, tgid: int, dirfd: str | None) -> str | None:
        """The directory a path argument is relative to: the cwd, or a dirfd's `-y` path (None: an fd
        whose path the trace does not show)."""
        if dirfd is None:
            return self._cwd.get(tgid, "")
        fd, path = descriptor(dirfd)
        if fd == "AT_FDCWD":
            if path is not None and path.startswith("/"):
                self._cwd[tgid] = path  # the kernel's own word for the cwd
                return path
            return self._cwd.get(tgid, "")
        return path

    def _path_arg(self, parts: list[str], tgid: int, dir_index: int | None, index: int) -> str | None:
        if index >= len(parts):
            return None
        written = written_path(parts[index])
        if written is None:
            return None
        base = self._base(
            tgid, parts[dir_index] if dir_index is not None and dir_index < len(parts) else None
        )
        if base is None and not written.startswith("/"):
            return written
        return resolve(base, written)

    def _change(self, rec: Syscall, name: str, args: str, ts: float, tgid: int) -> None:
        op, dir_index, index, target_dir, target_index = _CHANGES[name]
        parts = split_args(args)
        path = self._path_arg(parts, tgid, dir_index, index)
        if path is None:
            return
        target = self._path_arg(parts, tgid, target_dir, target_index) if target_index is not None else None
        if name in ("symlink", "symlinkat"):
            target = written_path(parts[0]) if parts else None  # what the new link points to, as written
        self._out.append(
            FileChanged(
                ts=ts,
                pid=tgid,
                op=op,
                path=path,
                target=target,
                ok=rec.errno is None and rec.result not in (None, "?"),
                errno=rec.errno,
            )
        )

    def _chdir(self, rec: Syscall, name: str, args: str, tgid: int) -> None:
        if rec.errno is not None or rec.result != "0":
            return
        parts = split_args(args)
        if not parts:
            return
        if name == "fchdir":
            _fd, path = descriptor(parts[0])
            if path is not None and path.startswith("/"):
                self._cwd[tgid] = path
            return
        written = written_path(parts[0])
        if written is not None:
            self._cwd[tgid] = resolve(self._cwd.get(tgid, ""), written)

    def _open(self, rec: Syscall, name: str, args: str, ts: float, tgid: int) -> None:
        parts = split_args(args)
        base: str | None = self._cwd.get(tgid, "") if self._files else ""
        if name in ("openat", "openat2"):
            base = self._base(tgid, parts[0]) if parts else None
            parts = parts[1:]
        path = decode_string(parts[0]) if parts else None
        if path is not None and (base is not None or path[0].startswith("/")):
            path = (resolve(base, path[0]), path[1])
        flags = parts[1] if len(parts) > 1 else ""
        if name == "creat":
            flags = "O_CREAT|O_WRONLY|O_TRUNC"  # creat(path, mode) is open with these flags
        self._out.append(
            FileOpened(
                ts=ts,
                pid=tgid,
                # (`-e raw=all` shows the path as a pointer, `0x7ffee9d9ea70`: no path then)
                path=path[0] if path is not None else (parts[0] if parts and parts[0][:2] != "0x" else ""),
                flags=flags,
                ok=rec.errno is None and rec.result not in (None, "?"),
                errno=rec.errno,
            )
        )

    def _connect(self, rec: Syscall, args: str, ts: float, tgid: int) -> None:
        parts = split_args(args)
        addr = parts[1] if len(parts) > 1 else ""
        family_m = _FAMILY.search(addr)
        family = family_m[1] if family_m else ""
        address = addr
        if family == "AF_INET" and (m := _INET.search(addr)):
            address = f"{m[2]}:{m[1]}"
        elif family == "AF_INET6" and (m := _INET6.search(addr)):
            address = f"[{m[2]}]:{m[1]}"
        elif family == "AF_UNIX" and (m := _UNIX.search(addr)):
            path = decode_string(m[2])
            address = m[1] + (path[0] if path is not None else m[2])
        ok = rec.errno is None and rec.result not in (None, "?")
        event = NetConnected(ts=ts, pid=tgid, family=family, address=address, ok=ok, errno=rec.errno)
        self._out.extend(self._connecting.connect(self._socket_key(parts[0], tgid) if parts else None, event))

    def _connect_result(self, rec: Syscall, args: str, tgid: int) -> None:
        """getsockopt(fd, SOL_SOCKET, SO_ERROR, [0]): how a held non-blocking connect went."""
        if not self._connecting or rec.errno is not None or "SO_ERROR" not in args:
            return
        parts = split_args(args)
        if len(parts) < 4 or parts[1:3] != ["SOL_SOCKET", "SO_ERROR"]:
            return
        value = parts[3].strip("[]")
        if value.isdigit():  # strace prints the errno's name; a number only when it has none
            value = "0" if value == "0" else errno_names.errorcode.get(int(value), value)
        settled = self._connecting.result(self._socket_key(parts[0], tgid), None if value == "0" else value)
        if settled is not None:
            self._out.append(settled)

    def _socket_key(self, arg: str, tgid: int) -> object:
        fd, path = descriptor(arg)
        return path if path is not None and path.startswith("socket:") else (tgid, fd)

    def _socket_call(self, rec: Syscall, name: str, args: str, ts: float, tgid: int) -> None:
        parts = split_args(args)
        if not parts:
            return
        ok = rec.errno is None and rec.result not in (None, "?")
        key = self._socket_key(parts[0], tgid)
        if name == "getsockname":
            # A bind to port 0 gets its port from the kernel: the program asks for it with getsockname.
            bound = self._bound.get(key)
            addr = sockaddr(parts[1]) if ok and len(parts) > 1 else None
            if bound is None or addr is None or bound[2] != 0 or addr[2] == 0:
                return
            self._bound[key] = addr
            if key not in self._listening:
                return
            name = "listen"  # listen() came before the port was known: say where it listens now
        if name == "bind":
            addr = sockaddr(parts[1]) if len(parts) > 1 else None
            if addr is not None and ok:
                self._bound[key] = addr
        elif name == "listen":
            addr = self._bound.get(key)
            if ok:
                self._listening.add(key)
                if addr is not None and addr[2] == 0:
                    return  # port 0: the kernel picks one; getsockname tells it (above)
        elif name in ("accept", "accept4"):
            addr = sockaddr(parts[1]) if len(parts) > 1 else None
        else:  # sendto / sendmsg: only a send to an explicit address is a new peer
            text = (
                parts[4]
                if name == "sendto" and len(parts) > 4
                else (parts[1] if name == "sendmsg" and len(parts) > 1 else "")
            )
            if "msg_name=" not in text and name == "sendmsg":
                return
            addr = sockaddr(text)
            if addr is None:
                return
        op = "accept" if name == "accept4" else ("send" if name in ("sendto", "sendmsg") else name)
        family, address, port = addr if addr is not None else ("", "", None)
        self._out.append(
            NetSocket(
                ts=ts, pid=tgid, op=op, family=family, address=address, port=port, ok=ok, errno=rec.errno
            )
        )


def _result_pid(rec: Syscall) -> int | None:
    result = rec.result
    if result is None:
        return None
    if result[:2] == "0x" and 2 < len(result) <= 8:  # `-e raw=all` prints every result in hex
        pid = int(result, 16)
    elif result.isdigit() and len(result) <= 7:
        pid = int(result)
    else:
        return None
    return pid if 0 < pid <= PID_MAX else None
