"""The eBPF tracer: Capsule's own recorder (stages/bpf), a second source for the pipeline.

Why libbpf and a CO-RE object of our own, not bpftrace (which this replaced): bpftrace compiles its
program with LLVM at every start (~0.45 s here, a second or more on a loaded machine) while the
command waits; the object is built once (`ebpf_build`) and loads and attaches in ~20 ms. It also
puts every record in one ring buffer shared by the CPUs, in the order the kernel made them (bpftrace's
per-CPU buffers were read one after another). Its output is bpftrace's line format (`-f json`: JSON
escapes every byte, so argv with newlines or quotes cannot forge a line), read by the same parser.

How a recording starts (`launch`): the recorder is started first, in its own session (Ctrl-C at the
terminal must reach the command, not the tracer) and with a parent-death signal (a SIGKILLed Capsule
leaves no tracer behind), and loads its programs while the command is spawned as a stub blocked on a
pipe (stages/bpf/stub.c, static: it reads one byte, then execv's the resolved command
with the user's argv, so the record shows the exec exactly as strace would); Capsule gives the
recorder the stub's pid, waits until its readiness line is in the trace (sending the stub signal 0,
which the program also answers), then closes the pipe. The recorder does not know when the tree is
gone: the tracker's live count tells Capsule, which confirms it with a flush barrier (`flush_barrier`)
and then SIGKILLs the recorder, whose trace is complete by then.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import attrs
import psutil
import trio

from capsule.stages.ebpf_recorder import (
    EbpfTracer,
    EbpfUnavailable,
    Gated,
    Starting,
    descendant_running,
    gated,
    start_recorder,
)
from capsule.stages.launch import EarlyEbpf, MainThreadProcess
from capsule.stages.pipeline import LiveCount

READY_TIMEOUT_S = 60.0
_READY = re.compile(rb'"data": "R (\d+)')
# The guard's `wrap`: a command line -> the guarded command line and the descriptors it needs.
Wrap = Callable[[Sequence[str]], tuple[list[str], tuple[int, ...]]]


def kill_tree(root: int, traced: Collection[int] = (), rounds: int = 20) -> None:
    """on_violation = "kill" under the eBPF tracer: SIGKILL the command, every process the trace shows
    alive (`traced`: orphans re-parented out of the tree too, as strace's tracees) and their
    descendants. Each round stops (SIGSTOP) the ones not seen yet, so none forks or exits away while
    the rest are found; then every one is killed (the guard's wrappers are spared: they exit with it)."""
    seen: dict[int, psutil.Process] = {}
    new: list[psutil.Process] = []
    for pid in {root, *traced}:
        with contextlib.suppress(psutil.Error):
            new.append(psutil.Process(pid))
    for _ in range(rounds):
        if not new:
            break
        for proc in new:
            with contextlib.suppress(psutil.Error):
                proc.suspend()
            seen[proc.pid] = proc
        found: dict[int, psutil.Process] = {}
        for proc in new:
            with contextlib.suppress(psutil.Error):
                found.update((c.pid, c) for c in proc.children(recursive=True) if c.pid not in seen)
        new = list(found.values())
    for proc in seen.values():
        with contextlib.suppress(psutil.Error):
            proc.kill()


@attrs.define
class Launched:
    """A recording under way: `process` is Capsule's child (the command itself, or the guard's wrapper
    around it), `root` the command's pid (what the program follows), `tracer` the recorder."""

    process: trio.Process | MainThreadProcess
    root: int
    tracer: MainThreadProcess

    @property
    def wrapped(self) -> bool:
        """The command runs inside the guard's launcher and bubblewrap, not as Capsule's own child."""
        return self.root != self.process.pid


async def take_over(
    early: EarlyEbpf, stub: MainThreadProcess, spool: Path, on_ready: Callable[[float], None]
) -> Launched:
    """A recording `launch.start_ebpf` started before trio: wait until the recorder follows the stub
    (and has let it go), call `on_ready` with that time, and go on as `launch` would have. Under the
    guard's wrappers (`stub` is their top), the stub is the one `early.finder` found."""
    root = stub.pid
    if early.finder is not None:
        found = await trio.to_thread.run_sync(early.finder.join)
        if found is None:
            _kill(stub)
            early.gate.abandon()
            early.starting.stop()
            code = stub.poll()
            raise EbpfUnavailable(
                f"the command's guard wrapper ended (exit {code}) before it started"
                if code is not None
                else "the command's guard wrappers did not start it in time"
            )
        root = found
    launched = Launched(process=stub, root=root, tracer=early.starting.process)
    try:
        ready_ns = await _wait_ready(spool, launched, early.starting)
    except BaseException:
        _kill(stub)
        early.gate.abandon()
        raise
    finally:
        early.starting.errors.close()
    early.gate.release()
    on_ready(early.starting.epoch(ready_ns))
    return launched


async def launch(
    tracer: EbpfTracer,
    resolved: str,
    argv: list[str],
    *,
    spool: Path,
    level: str,
    stdio: tuple[int | None, int | None, int | None] = (None, None, None),
    on_ready: Callable[[float], None] = lambda _ts: None,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    wrap: Wrap | None = None,
    on_spawn: Callable[[trio.Process], None] = lambda _process: None,
    starting: Starting | None = None,
) -> Launched:
    """Start the recorder (or take `starting`, started earlier at this `level`), then the stub (inside
    `wrap`, the guard's command line, when given; `on_spawn` hears it started), point the recorder at
    it, wait until every program is attached, call `on_ready`, then let the command go."""
    gate = gated(tracer, resolved, argv)
    if starting is None:
        try:
            starting = start_recorder(tracer, level, gate)
        except BaseException:
            gate.spawned()
            gate.abandon()
            raise
    command, fds = wrap(gate.argv) if wrap is not None else (list(gate.argv), ())
    stdin, stdout, stderr = stdio
    try:
        process = await trio.lowlevel.open_process(
            command,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            pass_fds=(gate.gate_r, *fds),
            cwd=cwd,
            env=env,
        )
    except BaseException:
        gate.abandon()
        starting.stop()
        raise
    finally:
        gate.spawned()
    on_spawn(process)
    return await attach(
        tracer, process, gate, spool=spool, level=level, on_ready=on_ready, cwd=cwd, starting=starting,
        wrapped=wrap is not None,
    )  # fmt: skip


async def attach(
    tracer: EbpfTracer,
    process: trio.Process | MainThreadProcess,
    gate: Gated,
    *,
    spool: Path,
    level: str,
    on_ready: Callable[[float], None] = lambda _ts: None,
    cwd: str | None = None,
    starting: Starting | None = None,
    wrapped: bool = True,
) -> Launched:
    """The recorder on the stub `gate` started as (`wrapped` False) or, under the guard's wrappers,
    below `process`: find the stub, point the recorder (`starting`, or one started now) at it and at
    `spool`, wait until every program is attached, call `on_ready`, release the command. Under the
    guard, its answers to the wrappers' execs must have started (`Guard.spawned`): the stub is found
    only once they are done."""
    if starting is None:
        try:
            starting = start_recorder(tracer, level, gate)
        except BaseException:
            _kill(process)
            gate.abandon()
            raise
    try:
        root = await _find_stub(process, gate.argv) if wrapped else process.pid
    except BaseException:
        _kill(process)
        gate.abandon()
        starting.stop()
        raise
    starting.follow(root, spool, cwd)
    launched = Launched(process=process, root=root, tracer=starting.process)
    try:
        ready_ns = await _wait_ready(spool, launched, starting)
    except BaseException:
        _kill(process)
        gate.abandon()
        raise
    finally:
        starting.errors.close()
    gate.release()
    on_ready(starting.epoch(ready_ns))
    return launched


async def _find_stub(
    process: trio.Process | MainThreadProcess, stub: Sequence[str], timeout_s: float = READY_TIMEOUT_S
) -> int:
    """The stub's pid: the descendant of `process` (the guard's launcher, then bubblewrap) whose
    command line is exactly the stub's; EbpfUnavailable if the wrappers end first."""
    wanted = "\0".join(stub).encode() + b"\0"
    with trio.move_on_after(timeout_s):
        while process.poll() is None:
            if (pid := descendant_running(process.pid, wanted)) is not None:
                return pid
            await trio.sleep(0.005)
    _kill(process)
    raise EbpfUnavailable(f"the command's guard wrapper ended (exit {process.returncode}) before it started")


def _kill(process: trio.Process | MainThreadProcess) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()


async def _wait_ready(spool: Path, launched: Launched, starting: Starting) -> int:
    """The recorder's readiness line, which it writes once it follows the root (then it lets the stub
    go): its time (the recorder's clock, ns)."""
    fd = os.open(spool, os.O_RDONLY | os.O_CLOEXEC)
    seen = b""
    try:
        with trio.move_on_after(READY_TIMEOUT_S):
            while launched.tracer.poll() is None:
                seen = seen[-256:] + os.read(fd, 1 << 16)  # a regular file: never blocks
                if found := _READY.search(seen):
                    return int(found[1])
                await trio.sleep(0.002)
    finally:
        os.close(fd)
    _kill(launched.process)
    with contextlib.suppress(ProcessLookupError):
        launched.tracer.terminate()
    raise EbpfUnavailable(f"the eBPF recorder did not attach{starting.last_error()} (run `capsule doctor`)")


BARRIER_TIMEOUT_S = 5.0
# How often the end of a recording is looked for (the tree's last exit read, then the barrier's
# marker), and the trace file read while the recorder runs: the recorder already writes in batches,
# so a short interval costs a few wake-ups a second, and it is the whole wait between the command's
# end and Capsule's (strace's recording reads every 20 ms and batches the lines it finds).
POLL_S = 0.005
# Recorders SIGKILLed once their trace was complete, still detaching their programs in the kernel
# (tens of ms each, mostly waiting for RCU grace periods): held so that they are reaped by a later
# `reap_stopped`, never waited for.
_STOPPED: list[MainThreadProcess] = []


def reap_stopped() -> None:
    """Reap the stopped recorders that have finished exiting."""
    _STOPPED[:] = [p for p in _STOPPED if p.poll() is None]


async def flush_barrier(launched: Launched, live: LiveCount, timeout_s: float = BARRIER_TIMEOUT_S) -> bool:
    """Wait until the tracker has read everything the tree did until now. The program puts a `B`
    record in the ring buffer for a signal-0 kill of -root; the buffer is one for every CPU, read in
    the order its records were reserved (a record still being written holds back the ones after it),
    so once the tracker has counted the marker, every record the tree caused before it has been
    tracked. False if the recorder ended first or the marker did not come (the buffer was full)
    within `timeout_s`."""
    want = live.flushed + 1
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(-launched.root, 0)  # the program sees it on entry, whatever the kill's result
    with contextlib.suppress(ProcessLookupError):
        launched.tracer.send_signal(signal.SIGUSR1)  # read the marker now, not after up to 4 ms
    with trio.move_on_after(timeout_s):
        while launched.tracer.poll() is None:
            if live.flushed >= want:
                return True
            await trio.sleep(0.002)
    return False


async def stop_when_tree_gone(
    launched: Launched,
    live: LiveCount,
    *,
    poll_s: float = POLL_S,
    on_gone: Callable[[], None] | None = None,
) -> None:
    """Once the command has exited and the tracker has seen every process of its tree end, confirmed
    by a flush barrier (a fork still unread in the buffer would show up by then), stop the recorder
    (`on_gone` first: a task's exit is observed then). The trace is complete at that point, so the
    recorder is SIGKILLed rather than asked to drain, and not waited for: its programs take a while
    to detach in the kernel, which no record needs (`reap_stopped` reaps it later; a process that
    exits leaves it to init, already dying). Returns at once if the recorder ended itself.

    The first barrier goes as soon as the command has exited, without waiting for the tracker to see
    the tree gone: its exit record is in the buffer by then (the tracepoint fires before the parent is
    told), so once the marker is counted the tracker has read as far as waiting would have, and a tree
    that ended with its command (the common case) ends after one round trip through the recorder and
    the trace (each ~2-9 ms: it reads every READ_EVERY_MS, the trace is read every POLL_S), not two."""
    await launched.process.wait()
    barriers = 0
    while launched.tracer.poll() is None:
        if live.value == 0 or barriers == 0:
            await flush_barrier(launched, live)  # on a timeout (lost markers): the tree still looks gone
            barriers += 1
            if live.value == 0:
                if on_gone is not None:
                    on_gone()
                with contextlib.suppress(ProcessLookupError):
                    launched.tracer.kill()
                reap_stopped()
                if launched.tracer.poll() is None:
                    _STOPPED.append(launched.tracer)
                return
        await trio.sleep(poll_s)
