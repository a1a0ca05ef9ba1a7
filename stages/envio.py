"""The environment supervisor's I/O at the edge: process logs, health checks, spawn checks, the socket.

Each function here answers one question about the live system for the driver (`capsule.stages.supervise`),
which turns the answer into an observation for the machine; none of them decides anything.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import trio

from capsule.env.config import HealthCheck
from capsule.env.machine import Spawn
from capsule.events import Event
from capsule.events.env import SvcExited, SvcGaveUp, SvcStopped
from capsule.stages import procs
from capsule.stages.envctl import SOCKET, socket_address
from capsule.stages.reader import glance
from capsule.stages.store import open_private, session_dirs


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
            self._rotate()
        os.write(self._fd, data)
        self.size += len(data)

    def _rotate(self) -> None:
        """The log becomes `.log.1` and a new one starts; `<name>.log` exists at every moment (a reader polling
        it never finds it missing), since both steps are renames over an existing name."""
        old, new = self.path.with_name(self.path.name + ".1"), self.path.with_name(self.path.name + ".new")
        link = self.path.with_name(self.path.name + ".1.new")
        link.unlink(missing_ok=True)
        os.link(self.path, link)
        os.replace(link, old)
        new.unlink(missing_ok=True)
        fd = open_private(new)
        os.replace(new, self.path)
        os.close(self._fd)
        self._fd, self.size = fd, 0

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


def env_file_values(text: str) -> dict[str, str]:
    """An env file's variables, read by python-dotenv as `load_dotenv` would: `export` prefixes, inline
    `# comments`, escapes in double quotes, multi-line quoted values, `${VAR}` from the file or this
    process's environment. A bare `KEY` (no `=`) sets nothing."""
    from dotenv import dotenv_values

    return {
        k: v for k, v in dotenv_values(stream=io.StringIO(text), interpolate=True).items() if v is not None
    }


def environ(env_files: tuple[str, ...], env: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """This process's environment, then each env file in order, then the process's own `env`."""
    out = dict(os.environ)
    for name in env_files:
        out.update(env_file_values(Path(name).read_text(encoding="utf-8")))
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


async def check(hc: HealthCheck, limit: float, cwd: Path, client: Any = None) -> tuple[bool, str]:
    """One health check: (healthy, why not). http(s) goes through httpx (redirects followed, TLS
    verified, the status within `expect_status`); tcp is a connect; cmd is its exit status."""
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
            if hc.kind == "http":
                if client is None:
                    async with http_client() as client:
                        return await _http_check(client, hc, limit)
                return await _http_check(client, hc, limit)
            stream = await trio.open_tcp_stream(hc.host, hc.port)
            await stream.aclose()
            return True, ""
    except trio.TooSlowError:
        return False, f"{hc.text}: no answer within {limit:g}s"
    except OSError as exc:
        return False, f"{hc.text}: {exc.strerror or exc}"


def http_client() -> Any:
    """The client of one probe loop (its TLS context is made once, not per check)."""
    import httpx2

    # No keep-alive: each check opens its own connection (that is what it checks), and an idle pooled
    # one would look like traffic to `activity = "traffic"`. Certificates are not verified: a check
    # asks whether the service answers, and local services mostly have self-signed ones (curl -k).
    return httpx2.AsyncClient(
        follow_redirects=True,
        headers={"User-Agent": "capsule"},
        trust_env=False,
        verify=False,
        limits=httpx2.Limits(max_keepalive_connections=0),
    )


async def _http_check(client: Any, hc: HealthCheck, limit: float) -> tuple[bool, str]:
    import httpx2

    try:
        answer = await client.get(hc.url or f"http://{hc.host}:{hc.port}{hc.path}", timeout=limit)
    except httpx2.TimeoutException:
        return False, f"{hc.text}: no answer within {limit:g}s"
    except httpx2.HTTPError as exc:
        return False, f"{hc.text}: {exc or type(exc).__name__}"
    low, high = hc.expect
    if low <= answer.status_code <= high:
        return True, ""
    want = f"{low}" if low == high else f"{low}-{high}"
    return False, f"{hc.text}: HTTP {answer.status_code} {answer.reason_phrase} (expected {want})"


def connections_on(port: int) -> int:
    """Established TCP connections whose local port is `port` (/proc/net/tcp and tcp6: no psutil scan
    of every socket on the machine)."""
    want = f":{port:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, "rb") as file:
                next(file, None)
                for row in file:
                    fields = row.split(None, 4)
                    if len(fields) > 3 and fields[3] == b"01" and fields[1].decode().endswith(want):
                        count += 1
        except OSError:
            continue
    return count


def log_line(event: Event) -> str | None:
    """What a process's log says about an event of its lifecycle (`capsule` lines), if anything."""
    match event:
        case SvcExited():
            return f"exited: {event.signal or f'code {event.exit_code}'} after {event.ran_s:.2f}s"
        case SvcGaveUp():
            return f"gave up: {event.reason}"
        case SvcStopped() if event.pid is not None:
            return f"stopped ({event.reason}){' with SIGKILL' if event.killed else ''}"
    return None


async def spawn(
    spawn: Spawn,
    working_dir: str,
    cgroup: procs.Cgroup | None,
    wrap: Callable[[list[str]], tuple[list[str], tuple[int, ...]]] | None = None,
) -> trio.Process | str:
    """Start one run (its own session, moved into `cgroup` before exec, with its marker); or why not.
    `wrap` (the guard's) turns the command line into the guarded one and names the fds it needs."""
    cwd = Path(spawn.cwd)
    error = spawn_error(cwd, spawn.argv[0], working_dir) or await port_taken(spawn.port_check)
    if error is not None:
        return error
    try:
        env = {**environ(spawn.env_files, spawn.env), procs.MARKER: spawn.marker}
    except (OSError, UnicodeDecodeError) as exc:
        return f"env_file: {exc}"
    argv, fds = wrap(list(spawn.argv)) if wrap is not None else (list(spawn.argv), ())
    try:
        return await trio.lowlevel.open_process(
            argv,
            pass_fds=fds,
            cwd=str(cwd),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=cgroup.join_in_child if cgroup is not None else None,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot start {spawn.argv[0]}: {getattr(exc, 'strerror', None) or exc}"


async def pump(
    stream: trio.abc.ReceiveStream, log: LogFile, label: str, last: Callable[[bytes], None]
) -> None:
    """Copy a stream into the log line by line; `last` hears each non-blank line (stderr's last one matters)."""
    pending = b""
    async with stream:
        while data := await stream.receive_some(65536):
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                log.line(label, line)
                if line.strip():
                    last(line.strip())
    if pending:
        log.line(label, pending)
        if pending.strip():
            last(pending.strip())


async def probe(
    hc: HealthCheck,
    cwd: Path,
    limit: float,
    interval: float,
    poll: float,
    report: Callable[[bool, str], None],
    every_failure: bool = False,
) -> None:
    """Run a health check forever; `report` each change of its answer (the first answer is a change),
    and every failure after the first pass when `every_failure` (restart_on_unhealthy counts them)."""
    last: bool | None = None
    client = http_client() if hc.kind == "http" else None
    async with contextlib.AsyncExitStack() as stack:
        if client is not None:
            await stack.enter_async_context(client)
        while True:
            ok, reason = await check(hc, limit, cwd, client)
            if ok != last or (every_failure and not ok and last is not None):
                report(ok, reason)
            if ok or last is not None:
                last = ok
            await trio.sleep(interval if last else poll)


async def trace_session(home: Path, pid: int, patience_s: float = 5.0) -> str | None:
    """The `run` session that `capsule run` (pid) is writing, once its header exists (the eBPF tracer
    writes it once its recorder is attached: tens of ms, a second the first time, when it is built)."""
    with trio.move_on_after(patience_s):
        while True:
            for path in session_dirs(home)[:20]:
                seen = glance(path)
                if seen.header is not None and seen.header.recorder_pid == pid:
                    return path.name
            await trio.sleep(0.05)
    return None


async def serve_control(
    session_dir: Path,
    answer: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The supervisor's Unix socket (0600): one JSON request line in, one JSON answer line out."""
    address, dirfd = socket_address(session_dir)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        await sock.bind(address)
    finally:
        os.umask(old)
        if dirfd is not None:
            os.close(dirfd)
    (session_dir / SOCKET).chmod(0o600)
    sock.listen(16)
    listener = trio.SocketListener(sock)
    task_status.started()
    async with trio.open_nursery() as nursery, listener:
        while True:
            nursery.start_soon(_connection, await listener.accept(), answer)


async def _connection(
    stream: trio.SocketStream, answer: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
) -> None:
    async with stream:
        data = b""
        with trio.move_on_after(10):
            while b"\n" not in data and len(data) < 1 << 22:  # a reload carries the config
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
        try:
            request = orjson.loads(data.split(b"\n")[0])
        except orjson.JSONDecodeError:
            request = None
        bad = {"ok": False, "error": "bad request"}
        reply = await answer(request) if isinstance(request, dict) else bad
        # Shielded: a `down` ends the supervisor, which then cancels everything; the answer to the client
        # that asked for it must still go out (under load it was lost: "closed the connection").
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(2),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await stream.send_all(orjson.dumps(reply) + b"\n")
