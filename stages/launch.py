"""`capsule run`'s first steps, without trio: the session, its header, the spool and strace itself.

Importing trio and the recorder's stages takes ~60-100 ms, all of it before the command could start
when strace was spawned from inside the trio run. `capsule run` starts strace (or the eBPF recorder
and the command's stub) here instead, then loads the recorder while the command already runs on the
other core; `record_run` takes the recording over as it is (`Early`). With a policy, the guard is made
here too (stages/guard.py: made before trio runs, bound to the recording later) and the command starts
inside its wrappers, its server answering. Tasks and services (a trio loop of their own) start their
trees from there, through the same steps.

Terminal signals that arrive between strace's start and the recorder's listening are kept and raised
again once it listens, to be handled as then (SIGTERM relayed to the command, the others ignored while
the command runs); kept by a handler, not SIG_IGN, which strace and the command would inherit.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from capsule import __version__
from capsule.events import DERIVATION, SessionStarted, kind_versions
from capsule.stages.record import SessionWriter
from capsule.stages.spools import Relay, claim_spool, spool_output, start_relay
from capsule.stages.store import EVENTS, create_session, open_private, spool_path, trace_name

if TYPE_CHECKING:
    from capsule.fold.labels import RuleSet
    from capsule.stages.ebpf_recorder import EbpfTracer, Gated, Starting, StubFinder
    from capsule.stages.guard import Guard
    from capsule.stages.tracer import Tracer

TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


BINFMT_MISC = "/proc/sys/fs/binfmt_misc"


def resolve_command(
    name: str, cwd: str | None = None, env: dict[str, str] | None = None
) -> tuple[str | None, str | None]:
    """(path, None) if `name` can be executed, else (None, errno name) as execvp would fail (from
    `cwd`, with `env`'s PATH when they are given); ENOEXEC for a file the kernel would not exec."""
    if "/" in name:
        where = os.path.join(cwd, name) if cwd is not None else name
        if not os.path.exists(where):
            return None, "ENOENT"
        if os.path.isdir(where) or not os.access(where, os.X_OK):
            return None, "EACCES"
        return (None, "ENOEXEC") if no_exec_format(where) else (name, None)
    found = shutil.which(name, path=None if env is None else env.get("PATH", os.defpath))
    if found is None:
        return None, "ENOENT"
    return (None, "ENOEXEC") if no_exec_format(found) else (found, None)


def no_exec_format(path: str) -> bool:
    """Whether the kernel would refuse to exec `path` (ENOEXEC): neither `#!` nor an ELF header, and no
    binfmt_misc handler registered that might take it. A shell runs such a file as a script of its own;
    strace (and the eBPF stub) exec it as it is, and would fail inside the recording with strace's
    `exec: Exec format error`."""
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError:
        return False  # let the exec say what is wrong
    if head[:2] == b"#!" or head == b"\x7fELF":
        return False
    try:
        handlers = [n for n in os.listdir(BINFMT_MISC) if n not in ("register", "status")]
    except OSError:
        handlers = []
    return not handlers


class MainThreadProcess:
    """A child started with subprocess.Popen, awaited through a pidfd (as trio.Process is)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def poll(self) -> int | None:
        return self._popen.poll()

    def terminate(self) -> None:
        self._popen.terminate()

    def kill(self) -> None:
        self._popen.kill()

    def send_signal(self, signum: int) -> None:
        self._popen.send_signal(signum)

    async def wait(self) -> int:
        import trio

        if self._popen.poll() is None:
            pidfd = os.pidfd_open(self.pid)
            try:
                await trio.lowlevel.wait_readable(pidfd)
            finally:
                os.close(pidfd)
        return self._popen.wait()


def header(
    session_id: str, argv: tuple[str, ...], name: str | None, started: float, **fields: object
) -> SessionStarted:
    """A run's session.started. `started` is taken before strace is spawned, so the header never
    postdates the trace's first line."""
    cwd = fields.pop("cwd", None)
    return SessionStarted(
        ts=started,
        capsule_version=__version__,
        session_id=session_id,
        session_kind="run",
        name=name,
        argv=argv,
        cwd=os.path.abspath(str(cwd or os.getcwd())),
        host=platform.node(),
        recorder_pid=os.getpid(),
        recorder_started=own_start_time(),
        kinds=kind_versions(),
        derivation=DERIVATION,
        **fields,  # type: ignore[arg-type]
    )


def own_start_time() -> float:
    """This process's start time as psutil.Process().create_time() gives it (and stages/procs.py
    `process_if` compares it): /proc/self/stat's starttime, in clock ticks after /proc/stat's btime.
    Read here without psutil, whose import (~6 ms) would delay strace's start; psutil where /proc
    says something else."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            ticks = float(stat.read().rpartition(b")")[2].split()[19])
        with open("/proc/stat", "rb") as system:
            boot = next(float(line.split()[1]) for line in system if line.startswith(b"btime"))
        return ticks / os.sysconf("SC_CLK_TCK") + boot
    except (OSError, IndexError, ValueError, StopIteration):
        import psutil

        return float(psutil.Process().create_time())


def traced_header(
    session_id: str,
    argv: tuple[str, ...],
    name: str | None,
    started: float,
    tracer: Tracer | EbpfTracer,
    flags: tuple[str, ...],
    level: str,
    redact: bool,
    parent: str | None,
    cwd: str | None,
) -> SessionStarted:
    """The header of a run that a tracer records (`header` with the tracer's fields)."""
    return header(
        session_id,
        argv,
        name,
        started,
        tracer=tracer.path,
        tracer_version=tracer.version,
        tracer_flags=flags,
        trace_level=level,
        redacted=redact,
        parent=parent,
        cwd=cwd,
    )


def shown_argv(argv: Sequence[str], redact: bool) -> tuple[str, ...]:
    """argv as the record shows it: bytes that are not UTF-8 (surrogates in sys.argv) as U+FFFD, as the
    trace's own argv shows them (the command itself still gets the exact bytes); redacted."""
    from capsule.redact import redact_argv

    text = [os.fsencode(a).decode("utf-8", "replace") for a in argv]
    return redact_argv(text) if redact else tuple(text)


def open_recording(
    home: Path, started: float, tracer_path: str, *, answers: RuleSet | None, redact: bool
) -> tuple[str, Path, SessionWriter, int]:
    """A new session for a run: its id, directory, writer and the descriptor of its kept trace."""
    session_id, path = create_session(home, started)
    writer = SessionWriter(path / EVENTS, answers=answers, redact=redact)
    try:
        trace_fd = open_private(path / trace_name(tracer_path), new=True)
    except BaseException:
        writer.close()
        raise
    return session_id, path, writer, trace_fd


@attrs.define
class Early:
    """A recording whose strace `start` has spawned: what `record_run` takes over."""

    session_id: str
    path: Path
    started: float
    writer: SessionWriter
    trace_fd: int
    spool: Path
    spool_claim: int
    flags: tuple[str, ...]
    process: MainThreadProcess
    relay: Relay | None  # strace's redacting relay: finished once strace has ended
    spawned: float  # time.monotonic() at the spawn: a time limit counts from there
    ebpf: EarlyEbpf | None = None  # eBPF: `process` is the command's stub, this its recorder and gate
    guard: Guard | None = None  # a policy's: `process` is its launcher, the command inside its wrappers
    signals: list[int] = attrs.field(factory=list)  # terminal signals that arrived before the recorder
    _handlers: dict[signal.Signals, Any] = attrs.field(factory=dict, repr=False)

    def restore_signals(self) -> None:
        """Put back the terminal signals' handlers as they were before `start` (after the recording)."""
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)
        self._handlers.clear()


@attrs.frozen
class EarlyEbpf:
    """An eBPF recording started before trio: the recorder (following the stub already, or about to)
    and the stub's gate, which the recorder opens as soon as it follows the stub."""

    starting: Starting
    gate: Gated
    finder: StubFinder | None = None  # inside the guard's wrappers: what points the recorder at the stub


def _hold_terminal_signals() -> tuple[list[int], dict[signal.Signals, Any]]:
    """Keep the terminal signals that arrive from now on (to be raised again once the recorder
    listens), with the handlers they had."""
    early_signals: list[int] = []
    handlers = {
        signum: signal.signal(signum, lambda signum, _frame: early_signals.append(signum))
        for signum in TERMINAL_SIGNALS
    }
    return early_signals, handlers


def _undo(writer: SessionWriter, trace_fd: int, spool_claim: int | None) -> None:
    """A start that failed: what it opened is closed (the session stays, a header without a trace)."""
    writer.close()
    os.close(trace_fd)
    if spool_claim is not None:
        os.close(spool_claim)


def _start(
    home: Path,
    tracer_path: str,
    answers: RuleSet | None,
    redact: bool,
    flags: tuple[str, ...],
    spawn: Callable[[Path], tuple[subprocess.Popen[bytes], EarlyEbpf | Relay | None]],
    header: Callable[[str, float, SessionWriter], None] | None = None,
    guard: Guard | None = None,
) -> Early:
    """The steps every early start takes around its own `spawn` (given the spool): the session, its
    `header` (given the session's id, start time and writer) if the start writes one, the spool, the
    terminal signals held while it spawns, and on any failure all of it undone but the session (a
    header, if any, without a trace)."""
    started = time.time()
    session_id, path, writer, trace_fd = open_recording(
        home, started, tracer_path, answers=answers, redact=redact
    )
    spool_claim: int | None = None
    try:
        if header is not None:
            header(session_id, started, writer)
        spool = spool_path(home, session_id)
        spool_claim = claim_spool(spool)
        early_signals, handlers = _hold_terminal_signals()
        try:
            popen, helper = spawn(spool)
        except BaseException:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            raise
    except BaseException:
        _undo(writer, trace_fd, spool_claim)
        raise
    return Early(
        session_id=session_id,
        path=path,
        started=started,
        writer=writer,
        trace_fd=trace_fd,
        spool=spool,
        spool_claim=spool_claim,
        flags=flags,
        process=MainThreadProcess(popen),
        relay=helper if isinstance(helper, Relay) else None,
        spawned=time.monotonic(),
        ebpf=helper if isinstance(helper, EarlyEbpf) else None,
        guard=guard,
        signals=early_signals,
        handlers=handlers,
    )


def start_ebpf(
    argv: list[str],
    home: Path,
    tracer: EbpfTracer,
    resolved: str,
    answers: RuleSet | None,
    level: str,
    redact: bool,
    guard: Guard | None = None,
) -> Early:
    """Create the session and claim the spool, start the eBPF recorder, spawn the command's stub on
    `argv` (`resolved`: its program) and point the recorder at it, in the main thread and before trio is
    loaded: the recorder loads its programs meanwhile and lets the command go itself once it follows
    it, while Capsule's own modules load. The session's header is `record_run`'s to write (its time is
    the recorder's readiness). With a `guard`, the stub starts inside its wrappers and its server starts
    answering; `record_run` finds the stub below them and points the recorder at it. OSError if any of
    it fails."""
    from capsule.stages.ebpf_recorder import StubFinder, gated, note_refusals, start_recorder

    def spawn(spool: Path) -> tuple[subprocess.Popen[bytes], EarlyEbpf]:
        gate = gated(tracer, resolved, argv)
        starting: Starting | None = None
        finder: StubFinder | None = None
        try:
            starting = start_recorder(tracer, level, gate)
            try:
                if guard is None:
                    stub = subprocess.Popen(gate.argv, pass_fds=(gate.gate_r,))
                else:
                    if guard.notify:  # set before its server forks: a refused exec, into the trace
                        guard.on_refused = note_refusals(spool)
                    command, fds = guard.wrap(gate.argv, helper=True)
                    stub = subprocess.Popen(command, pass_fds=(gate.gate_r, *fds))
            finally:
                gate.spawned()
            if guard is None:
                starting.follow(stub.pid, spool, None)
            else:
                guard.spawned()
                finder = StubFinder(MainThreadProcess(stub), gate.argv, starting, spool)
        except BaseException:
            if finder is not None:
                finder.cancel()
            gate.spawned()
            gate.abandon()
            if starting is not None:
                starting.stop()
            raise
        return stub, EarlyEbpf(starting=starting, gate=gate, finder=finder)

    return _start(home, tracer.path, answers, redact, tracer.flags(level), spawn, guard=guard)


def start(
    argv: list[str],
    home: Path,
    tracer: Tracer,
    answers: RuleSet | None,
    level: str,
    name: str | None,
    redact: bool,
    parent: str | None,
    guard: Guard | None = None,
) -> Early:
    """Create the session, write its header, claim the spool and spawn strace on `argv` (a command
    `resolve_command` found; in this directory, with this environment and these streams), in the main
    thread and before trio is loaded; with a `guard`, inside its wrappers, its server answering. OSError
    if any of it fails (the session then ends as `record_run` would leave it: a header without a
    trace)."""
    flags = tracer.flags(level)
    if guard is not None:
        from capsule.stages.guard import tracer_flags

        flags = tracer_flags(flags, guard.enforcement)

    def header(session_id: str, started: float, writer: SessionWriter) -> None:
        shown = shown_argv(argv, redact)
        writer.write(
            [traced_header(session_id, shown, name, started, tracer, flags, level, redact, parent, None)]
        )

    def spawn(spool: Path) -> tuple[subprocess.Popen[bytes], Relay | None]:
        output = spool_output(spool, redact=redact)
        traced = [tracer.path, *flags, *output, "--", *argv]
        wrapped, fds = guard.wrap(traced, writable=[output[-1]]) if guard is not None else (traced, ())
        relay = start_relay(spool) if redact else None
        try:
            popen = subprocess.Popen(wrapped, pass_fds=fds)
        except BaseException:
            if relay is not None:
                relay.release()  # it ends, finding no writer
            raise
        if guard is not None:
            guard.spawned()
        return popen, relay

    return _start(home, tracer.path, answers, redact, flags, spawn, header, guard=guard)
