"""The guard's two launchers, C (stages/bpf/guard_launch.c) and Python (stages/guard_launch.py), run on the
same cases: each case runs both, as real processes, and they must give the same result (which is also
checked). The whole guard with each: `CAPSULE_GUARD_PRETEND_MISSING=c-launcher` runs tests/guard with the
Python one."""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from capsule.stages import guard_launch
from capsule.stages.guard import NOTIF_RECV, Guard
from capsule.stages.guard_build import launcher
from capsule.stages.guard_probe import LAUNCHER, PRETEND_MISSING, launcher_command


def _c_launcher() -> Path | None:
    """The C launcher, built whatever the environment pretends (the cases compare both)."""
    pretended = os.environ.pop(PRETEND_MISSING, None)
    try:
        return launcher()
    finally:
        if pretended is not None:
            os.environ[PRETEND_MISSING] = pretended


BUILT = _c_launcher()
LAUNCHERS = {
    "c": [str(BUILT)],
    "python": [sys.executable, "-I", "-S", str(LAUNCHER)],
}
pytestmark = pytest.mark.skipif(BUILT is None, reason="the C launcher cannot be built here (no cc)")
ROOT = os.geteuid() == 0


def _both(case: Callable[[list[str]], Any]) -> Any:
    """`case` run with each launcher: the same result from both, returned."""
    got = {name: case(argv) for name, argv in LAUNCHERS.items()}
    assert got["c"] == got["python"]
    return got["c"]


def _run(launch: list[str], *args: str, **kw: Any) -> tuple[int, str, str]:
    done = subprocess.run([*launch, *args], capture_output=True, text=True, timeout=30, check=False, **kw)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--bogus", "--", "/bin/true"], "launcher: unknown option --bogus"),
        (["--net"], "launcher: --net needs a value"),
        (["--net", "on", "--", "/bin/true"], "launcher: --net is off or loopback, not on"),
        (["--notify", "x1", "--", "/bin/true"], "launcher: --notify takes a descriptor number, not x1"),
        (["--notify", "99999999999", "--probe"], "launcher: --notify takes a descriptor number, not 99999999999"),
        (["--argv0", "", "--", "/bin/true"], "launcher: --argv0 is empty"),
        (["--argv0", "x"], "launcher: nothing to run"),
        (["--"], "launcher: nothing to run"),
        (["--notify", "0", "--probe"], "seccomp user notification: passing the listener: Socket operation on non-socket"),
    ],
)  # fmt: skip
def test_a_bad_command_line_is_exit_125_and_one_line(args: list[str], said: str) -> None:
    result = _both(lambda launch: _run(launch, *args, stdin=subprocess.DEVNULL))
    assert result == (125, "", f"capsule: error: guard: {said}\n")


def test_a_failed_exec_is_126_or_127_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a program\n")
    assert _both(lambda launch: _run(launch, "--", str(tmp_path / "missing"))) == (
        127, "", f"capsule: error: {tmp_path}/missing: No such file or directory\n",
    )  # fmt: skip
    assert _both(lambda launch: _run(launch, "--argv0", "x", "--", str(tmp_path / "plain"))) == (
        126, "", f"capsule: error: {tmp_path}/plain: Permission denied\n",
    )  # fmt: skip
    assert _both(lambda launch: _run(launch, "--", "")) == (
        127, "", "capsule: error: : No such file or directory\n",
    )  # fmt: skip


def test_argv0_and_what_the_program_inherits() -> None:
    """argv[0] as asked, the rest as given; the program gets no descriptor of the launcher's, its
    environment unchanged and SIGPIPE/SIGXFSZ at their default (the interpreter ignores both)."""
    script = (
        'tr "\\0" "\\n" < /proc/$$/cmdline | head -1; echo "$0" "$@"; ls /proc/self/fd | sort -n | tr "\\n" " "; echo; '
        'grep SigIgn /proc/self/status; echo "$CAPSULE_T"'
    )
    out = _both(
        lambda launch: _run(
            launch, "--argv0", "named", "--", "/bin/sh", "-c", script, "a b", "c",
            env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "CAPSULE_T": "kept"},
        )
    )  # fmt: skip
    assert out == (0, f"named\na b c\n0 1 2 3 \nSigIgn:\t{_ignored_by_a_child()}\nkept\n", "")


def _ignored_by_a_child() -> str:
    """The SigIgn mask a child of this test starts with: what the test itself ignores (whatever started
    it may have ignored some: a CI harness here ignored signal 32), less SIGPIPE and SIGXFSZ, which
    the interpreter ignores and the launcher puts back to their default."""
    with open("/proc/self/status") as status:
        mask = next(int(line.split()[1], 16) for line in status if line.startswith("SigIgn:"))
    return f"{mask & ~((1 << (signal.SIGPIPE - 1)) | (1 << (signal.SIGXFSZ - 1))):016x}"


def _child_net(launch: list[str], net: str, port: int) -> dict[str, Any]:
    """What a process in `--net NET` sees: its interfaces, whether lo is up, a connect to the test's
    server on the host's loopback, and one to a server of its own on its loopback."""
    probe = f"""
import fcntl, json, socket, struct
names = [line.split(':')[0].strip() for line in open('/proc/net/dev').read().splitlines()[2:]]
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    flags = struct.unpack('16sH14s', fcntl.ioctl(s, 0x8913, struct.pack('16sH14s', b'lo', 0, b'')))[1]
def connect(port):
    try:
        socket.create_connection(('127.0.0.1', port), timeout=5).close()
        return 'connected'
    except OSError as e:
        return e.strerror
own = 'no loopback'
try:
    server = socket.create_server(('127.0.0.1', 0))
    own = connect(server.getsockname()[1])
except OSError as e:
    own = e.strerror
print(json.dumps(dict(names=names, up=bool(flags & 1), host=connect({port}), own=own)))
"""
    code, out, err = _run(launch, "--net", net, "--", sys.executable, "-I", "-S", "-c", probe)
    assert (code, err) == (0, ""), err
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.mark.skipif(not ROOT, reason="a network namespace needs root here")
@pytest.mark.parametrize("net", ["off", "loopback"])
def test_the_network_namespace(net: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # the host's server answers
        seen = _both(lambda launch: _child_net(launch, net, port))
    if net == "off":
        assert seen == {"names": ["lo"], "up": False, "host": "Network is unreachable", "own": "Network is unreachable"}  # fmt: skip
    else:
        assert seen == {"names": ["lo"], "up": True, "host": "Connection refused", "own": "connected"}


@contextmanager
def _listening(launch: list[str], *args: str, **kw: Any) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """The launcher with `--notify` started on `args`, and the listener it passed back."""
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [*launch, "--notify", str(theirs.fileno()), *args], pass_fds=(theirs.fileno(),),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw,
    )  # fmt: skip
    theirs.close()
    with ours:
        ours.settimeout(30)
        _, fds, _, _ = socket.recv_fds(ours, 4, 1)
    (listener,) = fds
    try:
        yield proc, listener
    finally:
        os.close(listener)  # should the test fail: the tree's execs fail instead of waiting
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def _serve(listener: int, deny: str | None, seen: list[tuple[str, list[str]]]) -> None:
    """Answer each exec under the filter (refusing the path `deny`) until no process is left."""
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    while True:
        ((_, events),) = poller.poll()
        if not events & select.POLLIN:
            return  # POLLHUP: every process under the filter is gone
        buf = bytearray(80)
        try:
            import fcntl

            fcntl.ioctl(listener, NOTIF_RECV, buf)
        except OSError:
            continue
        nid, pid = struct.unpack_from("QI", buf, 0)
        (nr,) = struct.unpack_from("i", buf, 16)
        path, argv = Guard._read(pid, nr, struct.unpack_from("6Q", buf, 32))
        seen.append((path, argv))
        Guard._respond(listener, nid, path != deny)


def _notified(launch: list[str], script: str) -> tuple[int, str, list[tuple[str, list[str]]]]:
    seen: list[tuple[str, list[str]]] = []
    with _listening(launch, "--argv0", "top", "--", "/bin/sh", "-c", script) as (proc, listener):
        server = threading.Thread(target=_serve, args=(listener, "/bin/echo", seen))
        server.start()
        out, _ = proc.communicate(timeout=30)
        server.join(timeout=30)
        assert not server.is_alive()
    return proc.returncode, out, seen


def test_every_exec_goes_to_the_listener_first_the_launchers_own() -> None:
    script = "/bin/echo no; echo rc=$?; /bin/true && echo yes"
    code, out, seen = _both(lambda launch: _notified(launch, script))
    assert (code, out) == (0, "rc=126\nyes\n")
    assert seen == [("/bin/sh", ["top", "-c", script]), ("/bin/echo", ["/bin/echo", "no"]),
                    ("/bin/true", ["/bin/true"])]  # fmt: skip


def test_probe_passes_the_listener_and_runs_nothing() -> None:
    def probe(launch: list[str]) -> tuple[int, str]:
        with _listening(launch, "--probe") as (proc, _listener):
            proc.wait(timeout=30)
            return proc.returncode, proc.stderr.read() if proc.stderr else ""

    assert _both(probe) == (0, "")
    if ROOT:
        assert _both(lambda launch: _run(launch, "--net", "loopback", "--probe")) == (0, "", "")


PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_SECCOMP_GET_FILTER = 17, 0x4206, 0x4207, 0x420C


def _installed_filter(launch: list[str]) -> bytes:
    """The filter the kernel holds for the launched program, read back with ptrace."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
    seen: list[tuple[str, list[str]]] = []
    with _listening(launch, "--", "/bin/sleep", "30") as (proc, listener):
        server = threading.Thread(target=_serve, args=(listener, None, seen), daemon=True)
        server.start()
        while Path(f"/proc/{proc.pid}/comm").read_text() != "sleep\n":  # its exec answered and done
            server.join(timeout=0.01)
        assert libc.ptrace(PTRACE_SEIZE, proc.pid, None, None) == 0, os.strerror(ctypes.get_errno())
        try:
            assert libc.ptrace(PTRACE_INTERRUPT, proc.pid, None, None) == 0, os.strerror(ctypes.get_errno())
            os.waitpid(proc.pid, 0)
            count = libc.ptrace(PTRACE_SECCOMP_GET_FILTER, proc.pid, None, None)
            if count < 0:
                pytest.skip(f"PTRACE_SECCOMP_GET_FILTER: {os.strerror(ctypes.get_errno())}")
            buf = ctypes.create_string_buffer(count * 8)
            assert libc.ptrace(PTRACE_SECCOMP_GET_FILTER, proc.pid, None, buf) == count
        finally:
            libc.ptrace(PTRACE_DETACH, proc.pid, None, None)
        proc.kill()
    return buf.raw


@pytest.mark.skipif(not ROOT, reason="reading a seccomp filter back needs CAP_SYS_ADMIN")
def test_the_c_filter_is_filter_program_instruction_for_instruction() -> None:
    assert _both(_installed_filter) == guard_launch.filter_program(os.uname().machine)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x32 is x86_64's")
def test_x32_syscalls_are_refused() -> None:
    x32 = "import ctypes; libc = ctypes.CDLL(None, use_errno=True); print(libc.syscall(0x40000000 | 39), ctypes.get_errno())"

    def run(launch: list[str]) -> tuple[int, str]:
        seen: list[tuple[str, list[str]]] = []
        with _listening(launch, "--", sys.executable, "-I", "-S", "-c", x32) as (proc, listener):
            server = threading.Thread(target=_serve, args=(listener, None, seen), daemon=True)
            server.start()
            out, _ = proc.communicate(timeout=30)
        return proc.returncode, out

    assert _both(run) == (0, "-1 1\n")  # EPERM


def test_launcher_command_is_the_c_one_unless_pretended_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PRETEND_MISSING, raising=False)
    assert launcher_command() == LAUNCHERS["c"]
    monkeypatch.setenv(PRETEND_MISSING, "c-launcher")
    assert launcher_command() == LAUNCHERS["python"]


def test_concurrent_first_starts_build_once(tmp_path: Path) -> None:
    """Several Capsule processes asking at once on an empty cache: one build, the same launcher for all."""
    ask = "from capsule.stages.guard_build import launcher; print(launcher())"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    env.pop(PRETEND_MISSING, None)
    procs = [
        subprocess.Popen([sys.executable, "-c", ask], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    said = {proc.communicate(timeout=120)[0].strip() for proc in procs}
    assert [proc.returncode for proc in procs] == [0, 0, 0]
    (built,) = said
    assert [p.name for p in (tmp_path / "capsule").glob("guard-*")] == [Path(built).parent.name]
    assert _run([built, "--", "/bin/true"]) == (0, "", "")
