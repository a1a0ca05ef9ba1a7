"""The environment supervisor's I/O at the edge: process logs, health checks, spawn checks, the socket.

Each function here answers one question about the live system for the driver (`capsule.stages.supervise`),
which turns the answer into an observation for the machine; none of them decides anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import trio

from capsule.env.config import HealthCheck, parse_env_file
from capsule.stages.envproc import SOCKET
from capsule.stages.store import open_private


def socket_address(session_dir: Path) -> tuple[str, int | None]:
    """An AF_UNIX address for the session's socket, short enough for sun_path (108 bytes) via /proc."""
    path = session_dir / SOCKET
    if len(str(path)) < 100:
        return str(path), None
    fd = os.open(session_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{SOCKET}", fd


class LogFile:
    """`logs/<name>.log`: `<iso time> <stream> <line>`, rotated to `.log.1` past `max_bytes`."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes
        path.parent.mkdir(mode=0o700, exist_ok=True)
        self._fd = open_private(path)
        self.size = os.fstat(self._fd).st_size

    def line(self, stream: str, text: bytes) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
        data = stamp.encode() + b" " + stream.encode() + b" " + text.rstrip(b"\r\n") + b"\n"
        if self.size + len(data) > self.max_bytes and self.size > 0:
            os.close(self._fd)
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self._fd = open_private(self.path)
            self.size = 0
        os.write(self._fd, data)
        self.size += len(data)

    def close(self) -> None:
        os.close(self._fd)


def spawn_error(cwd: Path, exe: str, working_dir: str) -> str | None:
    """Why `exe` cannot be started in `cwd` (`working_dir` as written in the config), or None."""
    if not cwd.is_dir():
        return f"working_dir {working_dir!r}: no such directory ({cwd})"
    if "/" in exe:
        target = exe if os.path.isabs(exe) else str(cwd / exe)
        if not os.access(target, os.X_OK):
            return f"command not executable or not found: {exe}"
    elif shutil.which(exe) is None:
        return f"command not found: {exe}"
    return None


def environ(env_files: tuple[str, ...], env: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """This process's environment, then each env file in order, then the process's own `env`."""
    out = dict(os.environ)
    for name in env_files:
        out.update(parse_env_file(Path(name).read_text(encoding="utf-8")))
    out.update(dict(env))
    return out


async def port_taken(hc: HealthCheck | None) -> str | None:
    """An error if the health check's port already answers before the process starts.

    Something else holds the port: the process would fail to bind it, and worse, the health check would
    report that other server as this process being ready.
    """
    if hc is None or hc.kind not in ("http", "tcp"):
        return None
    with trio.move_on_after(0.5):
        try:
            stream = await trio.open_tcp_stream(hc.host, hc.port)
        except OSError:
            return None
        await stream.aclose()
        return f"port {hc.port} already in use before start (health check {hc.text})"
    return None


async def check(hc: HealthCheck, limit: float, cwd: Path) -> tuple[bool, str]:
    """One health check: (healthy, why not)."""
    try:
        with trio.fail_after(limit):
            if hc.kind == "cmd":
                done = await trio.run_process(
                    list(hc.argv),
                    cwd=str(cwd),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                    stdin=subprocess.DEVNULL,
                )
                return done.returncode == 0, f"{hc.text} exited with {done.returncode}"
            stream = await trio.open_tcp_stream(hc.host, hc.port)
            async with stream:
                if hc.kind == "tcp":
                    return True, ""
                request = (
                    f"GET {hc.path} HTTP/1.0\r\nHost: {hc.host}:{hc.port}\r\nUser-Agent: capsule\r\n\r\n"
                )
                await stream.send_all(request.encode())
                data = b""
                while b"\r\n" not in data and len(data) < 4096:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    data += chunk
                parts = data.split(b" ", 2)
                if len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400:
                    return True, ""
                status_line = data.split(b"\r\n")[0].decode(errors="replace")
                return False, f"{hc.text}: {status_line or 'no HTTP answer'}"
    except trio.TooSlowError:
        return False, f"{hc.text}: no answer within {limit:g}s"
    except OSError as exc:
        return False, f"{hc.text}: {exc.strerror or exc}"
