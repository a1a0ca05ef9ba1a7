"""The guard's notification loop in a forked child of Capsule, off the recording's interpreter lock.

A guarded exec waits in the kernel until the guard answers. As a thread of the recording process, the
loop took the interpreter lock back after each of its system calls (reading /proc/PID/mem, the
validity check, the answer), each time behind the thread that parses and folds the trace: ~150-200 us
a decision on a busy 2-core machine, for ~25 us of work. In a child of its own it only competes for a
CPU. fork, not a fresh interpreter: the child starts at once with the policy, the shell parser and the
guard's state as they are (stages/forked.py does the same for reports).

The child keeps only what it serves with (the socket the launcher passes the listener on, the wake-up
pipe, its report pipe, stderr) and closes every other descriptor it inherited: a copy of another
tree's pipe would keep it open after that tree ended. It ignores the terminal's signals (the tree and
Capsule handle them) and dies with Capsule (PR_SET_PDEATHSIG): the listener then closes, and the
kernel fails the tree's next exec (ENOSYS) rather than let it run unjudged. What it decides reaches
Capsule as frames on its report pipe: each refusal (the `policy.blocked` event's fields) at once, the
totals when it stops; a reader thread here hands them to the guard (`Reports`).
"""

from __future__ import annotations

import contextlib
import ctypes
import marshal
import os
import signal
import struct
import threading
from collections.abc import Callable
from typing import Any

_LENGTH = struct.Struct("<I")
_PR_SET_PDEATHSIG = 1
PRIORITY = -10  # the server's nice value, where it may raise its own priority
_QUIET = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP)


def fork_server(
    serve: Callable[[Callable[[Any], None]], Any], keep: tuple[int, ...]
) -> tuple[int, int] | None:
    """Run `serve(send)` in a forked child; `send(item)` writes one frame (marshal data) to the report
    pipe, and what `serve` returns is sent last. Returns (pid, read end of the report pipe), or None
    when no child can be made (the caller serves in a thread instead)."""
    read, write = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        return None
    if pid == 0:  # the child: never returns
        status = 1
        try:
            _become_server(keep=(*keep, write))
            send = _sender(write)
            send(("done", serve(send)))
            status = 0
        except BaseException:  # noqa: S110 - the child leaves whatever happened, by _exit alone
            pass
        finally:
            os._exit(status)
    os.close(write)
    return pid, read


def _become_server(keep: tuple[int, ...]) -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, _QUIET)
    with contextlib.suppress(ValueError, OSError):  # ValueError: not forked from the main thread
        signal.set_wakeup_fd(-1)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Ahead of the tree and the recording for a CPU when an exec waits on it (it sleeps otherwise):
    # 3,000 `true` under a deny rule, eBPF tracer, 1.5x -> 1.28x of no policy. Only where permitted (root).
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, PRIORITY)
    if os.getppid() == 1:  # Capsule died before the line above: nobody to serve
        os._exit(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _sender(fd: int) -> Callable[[Any], None]:
    def send(item: Any) -> None:
        payload = marshal.dumps(item)
        data = _LENGTH.pack(len(payload)) + payload
        while data:
            data = data[os.write(fd, data) :]

    return send


class Reports:
    """Capsule's end of a server child: a thread that reads its frames and hands each to `on_item`,
    then waits for the child; `join` when the child was told to stop."""

    def __init__(self, pid: int, fd: int, on_item: Callable[[Any], None]) -> None:
        self.pid = pid
        self._fd = fd
        self._on_item = on_item
        self._thread = threading.Thread(target=self._read, name="capsule-guard-reports", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        held = b""
        try:
            while chunk := os.read(self._fd, 1 << 16):
                held += chunk
                while len(held) >= _LENGTH.size:
                    (n,) = _LENGTH.unpack_from(held)
                    if len(held) < _LENGTH.size + n:
                        break
                    item = marshal.loads(held[_LENGTH.size : _LENGTH.size + n])  # noqa: S302 (our child's)
                    held = held[_LENGTH.size + n :]
                    self._on_item(item)
        finally:
            os.close(self._fd)

    def join(self) -> None:
        self._thread.join()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
