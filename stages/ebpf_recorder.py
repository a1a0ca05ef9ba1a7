"""The eBPF recorder's process: found, probed and started, without trio (so `capsule run` can start it
before trio and the recording's stages load: its ~20 ms of loading and attaching then overlap theirs).
stages/ebpf.py follows the recording it makes.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import attrs
import orjson

from capsule.stages import proc_children
from capsule.stages.ebpf_build import BuildFailed, ensure_built, kernel_btf
from capsule.stages.launch import MainThreadProcess

BTF = Path("/sys/kernel/btf/vmlinux")
TRACEFS = Path("/sys/kernel/tracing")


class EbpfUnavailable(RuntimeError):
    """eBPF recording cannot work here; the message says why in one line."""


@attrs.frozen
class EbpfTracer:
    path: str  # the loader (stages/bpf/recorder.c, built)
    object: str  # the kernel half (stages/bpf/recorder.bpf.c, built)
    version: str  # the libbpf the loader runs with
    stub: str = ""  # the command's stub (stages/bpf/stub.c, built)
    btf: str = ""  # the kernel's types for the object's CO-RE reads (`kernel_btf`; "": the kernel's own)
    kind: str = "ebpf"

    def flags(self, level: str) -> tuple[str, ...]:
        """The loader's arguments but the root pid: the object and the trace level."""
        return (self.object, level)

    def loader(self) -> list[str]:
        """The loader's command line up to its object."""
        return [self.path, *(("--btf", self.btf) if self.btf else ()), self.object]


def find_ebpf() -> EbpfTracer:
    """The built recorder with what it needs, or EbpfUnavailable saying what is missing."""
    if os.geteuid() != 0:
        raise EbpfUnavailable("eBPF recording needs root (bpf() and tracepoints are privileged)")
    if shutil.which("setpriv") is None:
        raise EbpfUnavailable("setpriv (util-linux) not found on PATH")
    if not BTF.exists():
        raise EbpfUnavailable(f"the kernel has no BTF ({BTF} is missing)")
    _mount_tracefs()
    try:
        built = ensure_built()
    except BuildFailed as e:
        raise EbpfUnavailable(str(e)) from None
    btf = kernel_btf(built)
    return EbpfTracer(
        path=str(built.loader),
        object=str(built.object),
        version=built.version,
        stub=str(built.stub),
        btf="" if btf is None else str(btf),
    )


def _mount_tracefs() -> None:
    if (TRACEFS / "events").is_dir():
        return
    with contextlib.suppress(OSError):
        TRACEFS.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True, check=False)
    if not (TRACEFS / "events").is_dir():
        raise EbpfUnavailable(f"tracefs is not mounted at {TRACEFS} and could not be mounted")


def probe_ebpf(tracer: EbpfTracer, timeout_s: float = 120.0) -> str | None:
    """Load and attach every program once: None if it works, else the recorder's last error line.
    It works once the recorder says every program is attached: its exit is not waited for, since the
    kernel's teardown of its tracepoints takes ~1.3 s here (`capsule doctor` took 1.65 s, nearly all
    of it that); a thread reaps it meanwhile (init, should Capsule exit first)."""
    with tempfile.TemporaryFile() as errors:
        probe = subprocess.Popen(
            [*tracer.loader(), "--probe"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors
        )
        assert probe.stdout is not None
        with probe.stdout:
            ready, _, _ = select.select([probe.stdout], [], [], timeout_s)
            said = probe.stdout.readline() if ready else b""
        if said.startswith(b"attached "):
            threading.Thread(target=probe.wait, name="capsule-probe-reaper", daemon=True).start()
            return None
        try:
            code = probe.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            probe.kill()
            probe.wait()
            return f"the eBPF recorder did not attach its programs within {timeout_s:.0f} s"
        errors.seek(0)
        lines = [ln for ln in errors.read().decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else f"the eBPF recorder exited with {code}"


def write_header(spool_fd: int, root: int, cwd: str | None = None, clock_ns: int | None = None) -> None:
    """The trace's first line, written by Capsule: the root pid, the clock to make epoch seconds and
    the root's working directory (relative paths the tree opens are made absolute from it)."""
    offset = (
        time.time_ns() - time.monotonic_ns() if clock_ns is None else clock_ns
    )  # the recorder's: MONOTONIC
    header: dict[str, object] = {"type": "capsule", "root": root, "clock": offset}
    if cwd is not None:
        header["cwd"] = os.path.abspath(cwd)
    os.write(spool_fd, orjson.dumps(header) + b"\n")


@attrs.frozen
class Gated:
    """The command as a stub blocked on a pipe: `argv` to spawn (wrapped or not) with `gate_r` passed
    down; the recorder holds `gate_w` too, and writes the byte that lets the stub go once it follows
    it. A stub whose gate closes with no byte (the recorder failed, or Capsule gave up) exits at once,
    never running the command untraced."""

    argv: tuple[str, ...]
    gate_r: int
    gate_w: int

    def spawned(self) -> None:
        """The stub is started: Capsule's copy of the read end goes."""
        with contextlib.suppress(OSError):
            os.close(self.gate_r)

    def release(self) -> None:
        """The recorder follows the stub: the command starts (if the recorder has not let it go already)."""
        with contextlib.suppress(OSError):  # the stub is gone already (the pipe has no reader)
            os.write(self.gate_w, b"1")
        self.abandon()

    def abandon(self) -> None:
        """Capsule's copy of the write end goes, with no byte: a stub that still waits will not run."""
        with contextlib.suppress(OSError):
            os.close(self.gate_w)


def gated(tracer: EbpfTracer, resolved: str, argv: Sequence[str]) -> Gated:
    """The stub that execv's `resolved` with `argv` once its gate gives a byte (two pipe ends to own):
    a static C program (no interpreter to start, no library to load)."""
    gate_r, gate_w = os.pipe2(os.O_CLOEXEC)
    stub = (tracer.stub, str(gate_r), resolved, *argv)
    return Gated(argv=stub, gate_r=gate_r, gate_w=gate_w)


@attrs.define
class Starting:
    """The recorder started before its root and trace are known, loading and attaching its programs
    meanwhile (while Capsule's own modules load and the command's stub starts); `follow` names them."""

    process: MainThreadProcess
    pid_w: int  # the recorder's stdin: one line, `ROOT_PID TRACE_PATH`
    errors: IO[bytes]  # its stderr, read back when it fails
    followed: bool = False
    clock_ns: int = 0  # CLOCK_REALTIME minus CLOCK_MONOTONIC (the recorder's clock), taken at `follow`

    def follow(self, root: int, spool: Path, cwd: str | None) -> None:
        """The trace's header, then the root's pid and the trace's path to the recorder, which opens
        the trace (appending, after the header) and starts following the root."""
        self.clock_ns = time.time_ns() - time.monotonic_ns()
        spool_fd = os.open(spool, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            write_header(spool_fd, root, cwd or os.getcwd(), self.clock_ns)
        finally:
            os.close(spool_fd)
        self.followed = True
        with contextlib.suppress(OSError):  # it ended: the wait for its readiness says why
            os.write(self.pid_w, b"%d %s\n" % (root, os.fsencode(spool)))
        self.close()

    def close(self) -> None:
        """No root will come (or it came): the recorder reads its end of stdin."""
        if self.pid_w >= 0:
            os.close(self.pid_w)
            self.pid_w = -1

    def stop(self) -> None:
        """Not needed after all: the recorder is killed (it was not following anything yet)."""
        self.close()
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.errors.close()

    def epoch(self, ns: int) -> float:
        """A time of the recorder's clock (CLOCK_MONOTONIC ns) as epoch seconds, as the trace's are."""
        return (ns + self.clock_ns) / 1e9

    def discard_unused(self) -> None:
        """`stop` it if it was never given a root (the recording ended before its command started)."""
        if not self.followed:
            self.stop()

    def last_error(self) -> str:
        """`: <the recorder's last line on stderr>`, or ""."""
        self.errors.seek(0)
        said = [ln for ln in self.errors.read().decode(errors="replace").splitlines() if ln.strip()]
        return f": {said[-1].strip()}" if said else ""


def start_recorder(tracer: EbpfTracer, level: str, gate: Gated) -> Starting:
    """Start the recorder at trace `level` on a root and trace to be named (`Starting.follow`), holding
    the write end of `gate`, the stub's: it lets the command go as soon as it follows it. Spawned
    from the calling thread, which must be the main one, not one of trio's workers: the parent-death
    signal fires when the spawning *thread* ends, and trio retires idle workers after 10 s."""
    errors = tempfile.TemporaryFile()  # noqa: SIM115 (Starting owns it: closed by stop or its user)
    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    try:
        process = MainThreadProcess(
            subprocess.Popen(
                ["setpriv", "--pdeathsig", "TERM", *tracer.loader(), "-", level, str(gate.gate_w)],
                stdin=pid_r,
                pass_fds=(gate.gate_w,),
                stdout=subprocess.DEVNULL,
                stderr=errors,
                start_new_session=True,
            )
        )
    except BaseException:
        os.close(pid_w)
        errors.close()
        raise
    finally:
        os.close(pid_r)
    return Starting(process=process, pid_w=pid_w, errors=errors)


def refusal_line(tid: int, path: str, argv: Sequence[str], errno: int) -> bytes:
    """The trace line Capsule writes for an exec the guard is about to refuse with `errno` (seccomp
    answers it before the syscall tracepoints, so the program prints nothing of it): the attempt's
    thread, path and argv as the guard read them from the process's memory, and the error. Its clock
    is the recorder's (CLOCK_MONOTONIC)."""
    try:
        with open(f"/proc/{tid}/status", "rb") as status:
            tgid = next((int(ln.split()[1]) for ln in status if ln.startswith(b"Tgid:")), tid)
    except (OSError, ValueError, IndexError):
        tgid = tid
    refused = {
        "ns": time.monotonic_ns(), "tid": tid, "tgid": tgid, "path": path, "argv": list(argv), "errno": errno,
    }  # fmt: skip
    return orjson.dumps({"type": "capsule", "refused": refused}) + b"\n"


def note_refusals(spool: Path) -> Callable[[int, str, Sequence[str], int], None]:
    """The guard's `on_refused` for a recording into `spool`: one appended line a refused exec (a
    single write to an O_APPEND file: never torn by the recorder's own lines, each batch of which is
    one write of whole lines too)."""

    def note(tid: int, path: str, argv: Sequence[str], errno: int) -> None:
        fd = os.open(spool, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            os.write(fd, refusal_line(tid, path, argv, errno))
        finally:
            os.close(fd)

    return note


def descendant_running(top: int, cmdline: bytes) -> int | None:
    """The first of `top` and its descendants whose /proc cmdline is `cmdline`."""
    for pid in _descendants(top):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline:
                return pid
    return None


def _descendants(pid: int) -> list[int]:
    """`pid` and its descendants: from the kernel's children lists, a few small reads for the guard's two
    wrappers, where psutil's children() scans every process of the machine (~13 ms a poll here, five
    polls a guarded start, beside the wrappers' own start)."""
    if proc_children.available():
        return list(proc_children.walk(pid, {}))
    import psutil  # a kernel without CONFIG_PROC_CHILDREN

    with contextlib.suppress(psutil.Error):
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    return [pid]


class StubFinder:
    """Points `starting` at the command's stub as soon as it runs below `top` (the guard's launcher,
    then bubblewrap), from a thread: a guarded start made before trio loads (`launch.start_ebpf`) lets
    the command go once the wrappers are through, not once Capsule's own modules have loaded too.
    Polls the wrappers' children lists every FIND_EVERY_S until the stub's command line shows, the top
    ends, or `timeout_s` passes."""

    FIND_EVERY_S = 0.002

    def __init__(
        self,
        top: MainThreadProcess,
        stub: Sequence[str],
        starting: Starting,
        spool: Path,
        timeout_s: float = 60.0,
    ) -> None:
        import threading

        self.root: int | None = None
        self._top, self._starting, self._spool = top, starting, spool
        self._wanted = "\0".join(stub).encode() + b"\0"
        self._deadline = time.monotonic() + timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._find, name="capsule-stub-finder", daemon=True)
        self._thread.start()

    def _find(self) -> None:
        while self._top.poll() is None and time.monotonic() < self._deadline:
            if (pid := descendant_running(self._top.pid, self._wanted)) is not None:
                if not self._stop.is_set():
                    self._starting.follow(pid, self._spool, None)
                    self.root = pid
                return
            if self._stop.wait(self.FIND_EVERY_S):
                return

    def join(self) -> int | None:
        """The stub's pid, once it is followed; None when the wrappers ended first (or time ran out)."""
        self._thread.join()
        return self.root

    def cancel(self) -> None:
        """Stop looking (the start failed): nothing is followed after this returns."""
        self._stop.set()
        self._thread.join()
