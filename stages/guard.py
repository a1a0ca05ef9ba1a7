"""The guard (architecture §10): a policy enforced in the kernel around any command line Capsule starts.

`open_guard` probes the mechanisms, refuses or downgrades (`capsule.policy.enforce`), and yields a
`Guard` whose `wrap(argv)` is the one place a command line is wrapped (`capsule run`, the scheduler's
tasks, the supervisor's services): the launcher (network namespace, seccomp filter), bubblewrap (hidden
and read-only paths), then the traced command line. A forked child of Capsule (stages/guard_server.py;
a thread where no child can be made) answers the seccomp notifications: it
reads the exec's path and argv from `/proc/PID/mem`, checks the notification is still valid (the
process may have died and its pid been reused), asks `decide_exec`, and answers CONTINUE or EPERM.
Refusals become `policy.blocked` events through `emit`, on the trio thread (from the child, each sent as
decided); `on_violation = "kill"`
then calls `kill`. A command line allowed before is answered by the C fast path (stages/guard_answer.py)
without waking any Python; every other exec comes back to the code here.

Coexistence with strace: a USER_NOTIF answer outranks strace's `--seccomp-bpf` SECCOMP_RET_TRACE, so an
exec would never reach strace that way. A guarded trace therefore runs strace without `--seccomp-bpf`
(`tracer_flags`): ptrace's syscall-entry stop comes before seccomp, so strace still records every exec,
allowed ones and the refused attempt (`= -1 EPERM`). The price is a ptrace stop on every syscall
(measured in tests/bench/guard.py).

Coexistence with the eBPF tracer: its recorder runs outside the guard (it needs the privileges the guard
drops) on the stub the guard wraps (launcher -> bwrap -> stub -> the command; `wrap(helper=True)` lets
the stub's own exec through as it lets strace's). A refused exec never reaches the syscall tracepoints
(seccomp answers before `sys_enter`; the program prints no `X` for it), so the guard tells the
recorder what the refused attempt was (`on_refused`) before answering, and the recorder writes it into
the trace (stages/ebpf.py, `refusal_line`) with its error: the trace shows the attempt, as strace does.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno as errno_mod
import fcntl
import hashlib
import os
import select
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from capsule.events import Event
from capsule.events.policy import PolicyApplied, PolicyBlocked, PolicyChecked
from capsule.policy import Policy, Verdict, decide_exec
from capsule.policy.commands import shell_file
from capsule.policy.enforce import (
    DETECT,
    Detected,
    Enforcement,
    bwrap_args,
    detect_violation,
    launcher_args,
    refused_open,
)
from capsule.policy.rules import MOUNT, NETNS, SECCOMP
from capsule.redact import redact_argv
from capsule.stages.guard_answer import Answerer, Handed, library
from capsule.stages.guard_files import ProcessMemory, expand_paths, read_only_paths, resolved, script_text
from capsule.stages.guard_probe import launcher_command
from capsule.stages.guard_server import Reports, fork_server
from capsule.stages.record import SessionWriter

if TYPE_CHECKING:
    import trio

ALLOWED_KEPT = 4096  # allowed (path, argv) pairs a guard remembers
# <linux/seccomp.h>: struct seccomp_notif is 80 bytes, seccomp_notif_resp 24 (checked at start).
NOTIF_RECV = 0xC0502100
NOTIF_SEND = 0xC0182101
NOTIF_ID_VALID = 0x40082102
FLAG_CONTINUE = 1
EXECVE = {"x86_64": (59, 322), "aarch64": (221, 281)}.get(os.uname().machine, (-1, -1))
AT_EMPTY_PATH = 0x1000


def tracer_flags(flags: Sequence[str], enforcement: Enforcement | None) -> tuple[str, ...]:
    """strace's flags for a tree whose execs the guard answers: without --seccomp-bpf (see the module
    docstring)."""
    notify = enforcement is not None and SECCOMP in enforcement.enforced
    return tuple(f for f in flags if not (notify and f == "--seccomp-bpf"))


@attrs.define
class GuardStats:
    execs: int = 0
    blocked: int = 0
    latencies_ns: list[int] = attrs.Factory(list)

    def event(self, ts: float, **where: Any) -> PolicyChecked:
        lat = sorted(self.latencies_ns)
        median = lat[len(lat) // 2] / 1000 if lat else None
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000 if lat else None
        return PolicyChecked(
            ts=ts, execs=self.execs, blocked=self.blocked, median_us=median, p99_us=p99, **where
        )


class Guard:
    """One guarded tree: wraps its command line, answers its execs, reports its refusals."""

    def __init__(
        self,
        enforcement: Enforcement,
        *,
        emit: Callable[[list[Event]], None] | None,
        kill: Callable[[], None] | None,
        where: dict[str, Any],
        redact: bool,
        cwd: Path,
    ) -> None:
        self.enforcement = enforcement
        self.policy = enforcement.policy
        self._held: list[Event] = []  # emitted before `bind` (emit None: a guard made before trio runs)
        self._emit = emit if emit is not None else self._held.extend
        self._bound_later = emit is None  # `bind` gives the emit and the kill (the server forks before)
        self.bound = not self._bound_later
        self._kill = kill
        self.where = where
        self.redact = redact
        self.cwd = cwd
        self.home = os.path.expanduser("~")
        self.stats = GuardStats()
        self.hidden: list[tuple[str, bool]] = []
        self._read_only: list[str] = []
        self._own: list[str] = []
        self._infra: list[str] = []
        self._token = _running_trio_token()  # None before trio runs: `bind` gives it one
        self._sock: socket.socket | None = None
        self._child: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._scratch: str | None = None
        self.killed = False
        self._applied = False
        self._last_blocked: tuple[int, str, tuple[str, ...]] | None = None
        self._allowed: set[tuple[str, tuple[str, ...]]] = set()  # (path, argv) judged allowed before
        # `bash FILE` judged allowed before, with the digest of the script it read then: the same
        # script again is allowed without matching its ~100 commands against the rules (~1.5 ms)
        self._allowed_scripts: dict[tuple[str, tuple[str, ...]], bytes] = {}
        self._pending: collections.deque[PolicyBlocked] = collections.deque()  # thread -> trio thread
        # Hears (tid, path, argv, errno) of each exec about to be answered with an error, from the
        # notification thread: a refused exec never reaches the syscall tracepoints (eBPF records it so).
        self.on_refused: Callable[[int, str, Sequence[str], int], None] | None = None
        self._server: Reports | None = None
        self._parser_pending = bool(self.policy.deny_commands or self.policy.allow_commands)
        # The C fast path (stages/guard_answer.py), built and loaded in prepare: loaded here, before any
        # guarded tree runs, so no tree can swap the file under a server about to load it. Used by the
        # forked server only: its memo and counts are the library's globals, one per process.
        self._answerer: Answerer | None = None
        self._fast: Answerer | None = None  # while it serves: what _decide's memo is mirrored into
        self._fast_read = False  # the library read the current notification (and may remember it)
        self._report: Callable[[PolicyBlocked], None] = self._queue  # a refusal, to be emitted

    @property
    def notify(self) -> bool:
        return SECCOMP in self.enforcement.enforced

    def prepare(self) -> None:
        """Expand the paths, make the empty stand-ins, build the C fast path (blocking: call in a
        thread)."""
        if self.notify:
            self._answerer = Answerer.load(library())
        if MOUNT in self.enforcement.enforced:
            self.hidden = expand_paths(self.policy, self.cwd, self.home)
            # Capsule's own state is read-only to the tree as well: its sessions (the record of what the
            # tree did), its config (a policy's default) and its caches (the kept walk above, the eBPF
            # recorder Capsule runs as root) are not the agent's to rewrite. The recording's own files
            # are writable again (`wrap`'s `writable`).
            self._read_only = read_only_paths(self.policy, self.cwd, self.home)
            self._own = _own_state()
            self._scratch = tempfile.mkdtemp(prefix="capsule-guard-")
            Path(self._scratch, "file").touch()
            Path(self._scratch, "dir").mkdir()
            os.chmod(Path(self._scratch, "file"), 0)
            os.chmod(Path(self._scratch, "dir"), 0)

    @property
    def launches(self) -> bool:
        """Whether `wrap` puts the launcher in front (which then gives its program the `argv0` asked)."""
        return bool(self.enforcement.enforced)

    def wrap(
        self,
        argv: Sequence[str],
        *,
        writable: Sequence[str] = (),
        helper: bool = False,
        argv0: str | None = None,
    ) -> tuple[list[str], tuple[int, ...]]:
        """The guarded command line for `argv` (strace's or the command's own), and the descriptors the
        child must inherit. `writable`: the recording's own files, kept writable under read_only_paths;
        `helper`: argv[0] is Capsule's own (the eBPF tracer's stub), let through as strace is; `argv0`:
        the title of the process the launcher execs (bwrap, which stays as the tree's top, or strace)."""
        enforced = self.enforcement.enforced
        if self.enforcement.active and not self._applied:
            self._applied = True
            self._emit([applied_event(self)])
        if not enforced:
            return list(argv), ()
        argv = list(argv)
        if argv and "/" not in argv[0]:
            argv[0] = shutil.which(argv[0]) or argv[0]
        infra = []
        if argv and (helper or os.path.basename(argv[0]) == "strace"):
            infra.append(os.path.realpath(argv[0]))
        inner = argv
        if MOUNT in enforced:
            assert self._scratch is not None
            bwrap = shutil.which("bwrap") or "bwrap"
            options = bwrap_args(
                hidden=self.hidden,
                read_only=self._read_only,
                own=self._own,
                writable=[str(Path(w).resolve()) for w in writable],
                empty_file=str(Path(self._scratch, "file")),
                empty_dir=str(Path(self._scratch, "dir")),
            )
            inner = [bwrap, *options, "--", *argv]
            infra.insert(0, os.path.realpath(bwrap))
        fds: tuple[int, ...] = ()
        notify_fd = None
        if self.notify:
            self._sock, self._child = socket.socketpair()
            self._child.set_inheritable(True)
            notify_fd = self._child.fileno()
            fds = (notify_fd,)
            self._infra = infra
        net = self.policy.network if NETNS in enforced else "on"
        launcher = [*launcher_command(), *launcher_args(network=net, notify_fd=notify_fd, argv0=argv0)]
        return [*launcher, "--", *inner], fds

    def spawned(self) -> None:
        """The wrapped command has been started: drop our copy of its end, start answering (in a
        child process: stages/guard_server.py; in a thread where no child can be made)."""
        if self._child is not None:
            self._child.close()
            self._child = None
        if self._sock is None or self._thread is not None or self._server is not None:
            return
        forked = fork_server(self._serve_child, keep=(self._sock.fileno(), self._wake_r))
        if forked is not None:
            self._server = Reports(*forked, on_item=self._from_server)
            # Only the child takes the listener off this socket: should it die first, the listener
            # in flight closes with the last copy, and the tree's execs fail (ENOSYS) instead of waiting.
            self._sock.close()
            self._sock = None
            return
        self._thread = threading.Thread(target=self._serve, name="capsule-guard", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop answering (the tree is gone), clean up, and emit the totals. The thread (or the
        server's reader) only ever queues work for the trio thread (run_sync_soon), so joining it here
        cannot deadlock."""
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join()
        if self._server is not None:
            self._server.join()
        self._drain()  # what the thread queued after the tree was already gone
        if self._child is not None:
            self._child.close()
        if self._sock is not None:
            self._sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self._scratch is not None:
            for name in ("file", "dir"):
                with contextlib.suppress(OSError):
                    os.chmod(Path(self._scratch, name), 0o700)
            shutil.rmtree(self._scratch, ignore_errors=True)
        if self.notify and self._applied:
            self._emit([self.stats.event(time.time(), **self.where)])

    # --- the notification loop (in the server child, or a thread) -------------------------------------

    def _serve_child(self, send: Callable[[Any], None]) -> tuple[int, int, list[int]]:
        """The server child's work: answer until told to stop, each refusal sent as it is decided."""
        self._report = lambda event: send(("blocked", _fields(event)))
        self._serve(self._answerer)
        return self.stats.execs, self.stats.blocked, self.stats.latencies_ns

    def _from_server(self, item: Any) -> None:
        """On the reader thread: a frame from the server child."""
        if item[0] == "blocked":
            self._report(PolicyBlocked(**item[1]))
        elif item[0] == "done":
            self.stats = GuardStats(*item[1])

    def _queue(self, event: PolicyBlocked) -> None:
        self._pending.append(event)
        if (token := self._token) is not None:  # else `bind` drains what waits
            token.run_sync_soon(self._drain)

    def bind(self, emit: Callable[[list[Event]], None], kill: Callable[[], None] | None) -> None:
        """A guard made before trio ran (`launch`: emit None) joins its recording, in the trio thread:
        what it emitted so far (`policy.applied`), then everything from now on, goes to `emit`; refusals
        its server reported meanwhile are emitted on the trio thread, as later ones will be."""
        import trio

        held, self._held = self._held, []
        self._emit, self._kill, self.bound = emit, kill, True
        if held:
            emit(held)
        self._token = trio.lowlevel.current_trio_token()
        self._token.run_sync_soon(self._drain)

    def _serve(self, fast: Answerer | None = None) -> None:
        assert self._sock is not None
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        self._when_idle(poller)
        if not any(fd == self._sock.fileno() for fd, _ in poller.poll()):
            return
        _, fds, _, _ = socket.recv_fds(self._sock, 4, 1)
        if not fds:
            return  # the launcher died before installing the filter
        listener = fds[0]
        try:
            poller = select.poll()
            poller.register(listener, select.POLLIN)
            poller.register(self._wake_r, select.POLLIN)
            if fast is not None and self._serve_fast(fast, listener, poller):
                return
            while True:
                self._when_idle(poller)
                ready = dict(poller.poll())
                if self._wake_r in ready:
                    return
                flags = ready.get(listener, 0)
                if flags & select.POLLIN:
                    self._answer(listener)
                elif flags & (select.POLLHUP | select.POLLERR):
                    return  # every process under the filter is gone
        finally:
            os.close(listener)

    def _when_idle(self, poller: select.poll) -> None:
        """Load the shell parser (~15 ms with its kept tables: stages/bash_tables.py) the first time
        nothing waits for an answer: while the launcher starts, or between the wrappers' execs and the
        command's, rather than when a `sh -c` waits for it (`_decide` loads it then if it must)."""
        if self._parser_pending and not poller.poll(0):
            self._load_parser()

    def _load_parser(self) -> None:
        self._parser_pending = False
        _import_shell_parser()

    def _serve_fast(self, fast: Answerer, listener: int, poller: select.poll) -> bool:
        """Serve through the C fast path, which answers the execs remembered as allowed and hands every
        other to `_judge`; its answers are counted into the totals. False: it failed with no
        notification in hand, and the Python loop serves on."""
        self._fast = fast
        try:
            while True:
                self._when_idle(poller)
                got = fast.next(listener, self._wake_r)
                if isinstance(got, bool):
                    return got
                # only a (path, argv) the library read itself is given back to it to remember: one
                # Python read at its limits (truncated) is never looked up there
                self._fast_read = got[5] is not None
                self._judge(listener, got)
        finally:
            self._fast = None
            answered = fast.totals()
            self.stats.execs += len(answered)
            self.stats.latencies_ns += answered

    def _answer(self, listener: int) -> None:
        buf = bytearray(80)
        try:
            fcntl.ioctl(listener, NOTIF_RECV, buf)
        except OSError as exc:
            if exc.errno in (errno_mod.ENOENT, errno_mod.EINTR):
                return  # the process died (or was signalled) before we read its notification
            raise
        start = time.monotonic_ns()
        nid, pid = struct.unpack_from("QI", buf, 0)
        (nr,) = struct.unpack_from("i", buf, 16)
        args = struct.unpack_from("6Q", buf, 32)
        self._judge(listener, (nid, pid, nr, args, start, None))

    def _judge(self, listener: int, handed: Handed) -> None:
        """Decide and answer one notification (path and argv already read, and the id checked valid,
        by the C fast path; or None: read them here)."""
        nid, pid, nr, args, start, read = handed
        if read is not None:
            path, argv = read
        else:
            try:
                path, argv = self._read(pid, nr, args)
            except OSError:
                # Alive (checked next) but its path or argv cannot be read: a pointer to nothing, for
                # which the kernel fails the exec with EFAULT. Said so rather than left unanswered
                # (the exec would wait in the kernel until the tree ended); not a policy decision.
                if self._valid(listener, nid):
                    self._respond(listener, nid, False, errno_mod.EFAULT)
                    self.stats.latencies_ns.append(time.monotonic_ns() - start)
                    self.stats.execs += 1
                return
            if not self._valid(listener, nid):
                return  # the process is gone; nothing to answer
        try:
            verdict, program = self._decide(pid, path, argv)
        except Exception as exc:  # every notification must be answered: fail closed, never die
            verdict = Verdict(
                allowed=False, rule=f"guard error: {type(exc).__name__}", command=" ".join(argv)
            )
            program = path
        if verdict is not None and program is None:
            # a denied program that is not there (a PATH search trying each directory): the kernel
            # would say ENOENT, so say that and record nothing; the search goes on as it would
            self._refused(pid, path, argv, errno_mod.ENOENT)
            self._respond(listener, nid, False, errno_mod.ENOENT)
            return
        if verdict is None or self.policy.on_violation != "kill" or not (self._kill or self._bound_later):
            if verdict is not None:
                self._refused(pid, path, argv, errno_mod.EPERM)
            self._respond(listener, nid, verdict is None)
        # else on_violation = "kill": no answer, so the exec stays stopped in the kernel until the kill
        # (queued below) ends the tree; nothing the violator's parent does after it can run before that.
        self.stats.latencies_ns.append(time.monotonic_ns() - start)
        self.stats.execs += 1
        if verdict is not None:
            self.stats.blocked += 1
            seen = (pid, program or path, tuple(argv))
            if seen == self._last_blocked:
                return  # the same program again by another name (/bin/ls, /usr/bin/ls): one decision
            self._last_blocked = seen
            shown = redact_argv(argv) if self.redact else tuple(argv)
            command = verdict.command
            if self.redact:
                command = " ".join(redact_argv(command.split()))
            found = Detected(rule=verdict.rule or "", pid=pid, argv=shown, path=path, command=command)
            self._report(_blocked_event(self, found, SECCOMP))

    def _refused(self, pid: int, path: str, argv: list[str], errno: int) -> None:
        if self.on_refused is not None:
            with contextlib.suppress(OSError):
                self.on_refused(pid, path, redact_argv(argv) if self.redact else argv, errno)

    def _decide(self, pid: int, path: str, argv: list[str]) -> tuple[Verdict | None, str | None]:
        """The verdict (None: allow) and, for a refusal, the program as the process sees it resolved
        (None when it does not exist there)."""
        if self._infra and os.path.realpath(path) == self._infra[0]:
            self._infra.pop(0)
            return None, path
        self._infra = []
        key = (path, tuple(argv))
        if key in self._allowed:
            return None, path
        text = script_text(pid, argv)
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest() if text is not None else None
        if digest is not None and self._allowed_scripts.get(key) == digest:
            return None, path
        if self._parser_pending:
            self._load_parser()
        verdict = decide_exec(self.policy, argv, path, script_text=text)
        if verdict.allowed:
            # A verdict depends on the path and argv alone, unless a script file is read: kept, so a
            # loop exec'ing the same command line is judged once (bounded: cleared when full).
            if digest is not None:
                if len(self._allowed_scripts) >= ALLOWED_KEPT:
                    self._allowed_scripts.clear()
                self._allowed_scripts[key] = digest
            elif shell_file(argv) is None:
                if len(self._allowed) >= ALLOWED_KEPT:
                    self._allowed.clear()
                    if self._fast is not None:
                        self._fast.forget()
                self._allowed.add(key)
                # Mirrored into the C fast path, which then answers this line itself: only ever a line
                # the policy allows anyway.
                if self._fast is not None and self._fast_read:
                    self._fast.remember(path, argv)
            return None, path
        return verdict, resolved(pid, path)

    def _drain(self) -> None:
        """On the trio thread: emit the refusals the notification thread queued (and kill if told)."""
        events = []
        while self._pending:
            events.append(self._pending.popleft())
        if not events:
            return
        self._emit(list(events))
        if any(e.action == "kill" for e in events) and not self.killed and self._kill is not None:
            self.killed = True
            self._kill()

    @staticmethod
    def _read(pid: int, nr: int, args: tuple[int, ...]) -> tuple[str, list[str]]:
        memory = ProcessMemory(pid)
        try:
            if nr == EXECVE[1]:  # execveat(dirfd, path, argv, envp, flags)
                path = memory.string(args[1])
                if not path and args[4] & AT_EMPTY_PATH:
                    path = os.readlink(f"/proc/{pid}/fd/{ctypes.c_int(args[0]).value}")
                argv = memory.argv(args[2])
            else:
                path = memory.string(args[0])
                argv = memory.argv(args[1])
        finally:
            memory.close()
        if path and not path.startswith("/"):
            with contextlib.suppress(OSError):
                path = os.path.join(os.readlink(f"/proc/{pid}/cwd"), path)
        return path, argv

    @staticmethod
    def _valid(listener: int, nid: int) -> bool:
        try:
            fcntl.ioctl(listener, NOTIF_ID_VALID, struct.pack("Q", nid))
        except OSError:
            return False
        return True

    @staticmethod
    def _respond(listener: int, nid: int, allow: bool, error: int = errno_mod.EPERM) -> None:
        if allow:
            resp = struct.pack("QqiI", nid, 0, 0, FLAG_CONTINUE)
        else:
            resp = struct.pack("QqiI", nid, 0, -error, 0)
        with contextlib.suppress(OSError):  # ENOENT: the process died meanwhile
            fcntl.ioctl(listener, NOTIF_SEND, resp)


def _import_shell_parser() -> None:
    from capsule.stages.bash_tables import load_bashlex

    with contextlib.suppress(Exception):  # an import that fails fails again where it is needed
        load_bashlex()


def _own_state() -> list[str]:
    from capsule.stages.ebpf_build import cache_dir
    from capsule.stages.home import home_path

    return [os.path.realpath(p) for p in (home_path(), cache_dir()) if os.path.isdir(p)]


def _fields(event: PolicyBlocked) -> dict[str, Any]:
    return {f.name: getattr(event, f.name) for f in attrs.fields(PolicyBlocked) if f.init}


def applied_event(guard: Guard) -> PolicyApplied:
    e, p = guard.enforcement, guard.policy
    return PolicyApplied(
        ts=time.time(),
        mechanisms=e.enforced,
        detected=e.detected,
        warning=e.warning,
        deny_commands=p.deny_commands,
        allow_commands=p.allow_commands,
        protect_paths=p.protect_paths,
        read_only_paths=p.read_only_paths,
        network=p.network,
        on_violation=p.on_violation,
        hidden=len(guard.hidden),
        **guard.where,
    )


NO_POLICY = Enforcement(policy=Policy(), enforced=())


def _running_trio_token() -> trio.lowlevel.TrioToken | None:
    """The token of the trio run this thread is in; None before trio is loaded or outside a run (a
    guard `launch` makes before trio loads, so the guarded command starts while it does)."""
    import sys

    loaded = sys.modules.get("trio")
    if loaded is None:
        return None
    try:
        return loaded.lowlevel.current_trio_token()  # type: ignore[no-any-return]
    except RuntimeError:
        return None


def open_guard(
    enforcement: Enforcement | None,
    *,
    emit: Callable[[list[Event]], None] | None,
    kill: Callable[[], None] | None = None,
    where: dict[str, Any] | None = None,
    redact: bool = True,
    cwd: Path | None = None,
) -> Guard:
    """A prepared guard whose owner calls `close()` when the tree is gone (`guarding` is the block form,
    for callers whose tree lives inside one block). None guards nothing and wraps nothing. `emit` None:
    made before trio runs (`launch`), its events held until `bind`."""
    guard = Guard(
        enforcement or NO_POLICY,
        emit=emit,
        kill=kill,
        where=where or {},
        redact=redact,
        cwd=cwd or Path.cwd(),
    )
    guard.prepare()
    return guard


@contextlib.contextmanager
def guarding(
    enforcement: Enforcement | None,
    *,
    emit: Callable[[list[Event]], None],
    kill: Callable[[], None] | None = None,
    where: dict[str, Any] | None = None,
    redact: bool = True,
    cwd: Path | None = None,
    made: Guard | None = None,
) -> Iterator[Guard]:
    """A guard for one tree, as `enforcement_for` decided (call that before creating anything, so a
    refusal leaves nothing behind); None guards nothing and wraps nothing. Call in the trio thread.
    `policy.applied` is emitted at the first `wrap`, `policy.checked` when the block ends. `made`: the
    guard `launch` made before trio ran (its tree started already); the caller binds it (`bind`) once
    the tree's top is known, which `kill` needs."""
    guard = made or open_guard(enforcement, emit=emit, kill=kill, where=where, redact=redact, cwd=cwd)
    try:
        yield guard
    finally:
        if not guard.bound:  # `made`, and the recording failed before it knew the tree's top
            guard.bind(emit, None)
        guard.close()


def trace_level(level: str, enforcement: Enforcement | None, *, ebpf: bool = False) -> str:
    """The level the tracer records at. Path rules record at level file at least, so each open the
    mount namespace refused is on record (as a `policy.blocked` event); a detected network rule needs
    level net. Under the eBPF tracer (`ebpf`), path rules the kernel enforces need only the refused
    opens: `refused` (or `refused+net`), whose programs print an open only when it failed as the
    mount namespace fails it (the strace tracer cannot choose opens by their result, and detecting a
    path rule after the fact needs every open). `session_level` is what the session then says."""
    if enforcement is None or not enforcement.active:
        return level
    detect = MOUNT in enforcement.detected
    files = MOUNT in enforcement.enforced or detect
    net = NETNS in enforcement.detected
    has_file, has_net = level in ("file", "all"), level in ("net", "all")
    net = net or has_net
    if ebpf and files and not detect and not has_file:
        return "refused+net" if net else "refused"
    files = files or has_file
    return "all" if files and net else "file" if files else "net" if net else "process"


_REFUSED_LEVELS = {"refused": "process", "refused+net": "net"}


def session_level(recorded: str) -> str:
    """The trace level a session recorded at `recorded` (`trace_level`'s) says it has, and its trace is
    derived at: the refused opens alone are not level file (the eBPF tracker keeps those at any
    level: capsule/track/ebpf.py `REFUSED`)."""
    return _REFUSED_LEVELS.get(recorded, recorded)


def _blocked_event(guard: Guard, found: Detected, mechanism: str, ts: float | None = None) -> PolicyBlocked:
    """`ts`: when the trace saw it (a refused open), not when the recorder read that line (now)."""
    kill = mechanism == DETECT or guard.policy.on_violation == "kill"
    return PolicyBlocked(
        ts=time.time() if ts is None else ts,
        pid=found.pid,
        argv=found.argv,
        path=found.path,
        rule=found.rule,
        command=found.command,
        mechanism=mechanism,
        action="kill" if kill else "block",
        **guard.where,
    )


def check_events(guard: Guard, batch: Sequence[Event]) -> list[Event]:
    """The `policy.blocked` events a batch of traced events shows: opens the mount namespace refused,
    and (fallback detect) violations of the parts that are only detected. Kills when one says so."""
    found: list[Event] = []
    detected = guard.enforcement.detected
    mount = MOUNT in guard.enforcement.enforced
    for event in batch:
        if mount and (hit := refused_open(guard.policy, event, home=guard.home)) is not None:
            found.append(_blocked_event(guard, hit, MOUNT, event.ts))
        if detected and (hit := detect_violation(guard.policy, event, parts=detected, home=guard.home)):
            found.append(_blocked_event(guard, hit, DETECT, event.ts))
    if (
        any(isinstance(e, PolicyBlocked) and e.action == "kill" for e in found)
        and not guard.killed
        and guard._kill is not None
    ):
        guard.killed = True
        guard._kill()
    return found


async def guard_record_stage(
    receive: trio.MemoryReceiveChannel[list[Event]], writer: SessionWriter, guard: Guard
) -> None:
    """record_stage, with the guard's after-the-fact checks on each batch (see check_events)."""
    active = guard.enforcement.active
    async with receive:
        async for batch in receive:
            writer.write(batch)
            if active and (blocked := check_events(guard, batch)):
                writer.write(blocked)


def kill_guarded_tree(root: int) -> None:
    """on_violation = "kill": SIGKILL every process strace (at or under `root`) traces, in rounds until a
    round finds none new. Tracees, not children: a killed shell's children are reparented out of the
    tree but strace -f still traces them. strace and bwrap are spared (a killed strace
    would let its tracees run on untraced); the spool relay is Capsule's child, outside the tree."""
    tracer = tracer_of(root)
    killed: set[int] = set()
    for _ in range(KILL_ROUNDS):
        victims = [pid for pid in _tracees(tracer) if pid not in killed]
        if not victims:
            return
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed.update(victims)


KILL_ROUNDS = 20


def _tracees(tracer: int) -> list[int]:
    """The pids whose TracerPid (/proc/PID/status) is `tracer`."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", "rb") as status:
                for line in status:
                    if line.startswith(b"TracerPid:"):
                        if int(line.split()[1]) == tracer:
                            found.append(int(entry.name))
                        break
        except (OSError, ValueError):
            continue
    return found


def tracer_of(pid: int) -> int:
    """The strace process at or under `pid` (a guarded trace starts as launcher -> bwrap -> strace), or
    `pid` itself: signals meant for the command go to strace's children, never to strace or bwrap."""
    import psutil  # here: a guarded start (`launch`) spawns before psutil would load (~6 ms)

    try:
        proc = psutil.Process(pid)
        for candidate in (proc, *proc.children(recursive=True)):
            if candidate.name() == "strace":
                return candidate.pid
    except psutil.Error:
        pass
    return pid
