"""The environment supervisor: `python -m capsule.stages.supervise CONFIG [--foreground] [--notify-fd N]`.

One trio program per environment. It writes an `env` session, starts processes in dependency order (each
in its own process group), checks their health, restarts them with backoff (the decision is
`capsule.env.policy.decide`), logs their output, serves the CLI on a Unix socket in the session
directory, stops them in reverse order (stop_signal, then SIGKILL to the group and every descendant),
and stops everything after `inactivity_timeout` without a CLI touch. `--notify-fd` receives
`session <id>` once the session exists and `up ok|failed [names]` once every process settled.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import orjson
import psutil
import trio

from capsule import __version__
from capsule.env.config import (
    ConfigError,
    HealthCheck,
    ProcessConfig,
    ProjectConfig,
    parse_config,
    parse_env_file,
)
from capsule.env.policy import RestartHistory, decide
from capsule.events import Event, SessionEnded, SessionStarted, kind_versions
from capsule.events.env import (
    EnvActivated,
    EnvDeactivated,
    EnvIdle,
    EnvTouched,
    SvcExited,
    SvcFailed,
    SvcGaveUp,
    SvcReady,
    SvcRestarting,
    SvcStarted,
    SvcStarting,
    SvcStopped,
    SvcUnhealthy,
)
from capsule.stages.envproc import SOCKET, signal_tree, tree_of
from capsule.stages.processes import returncode_status, started_at
from capsule.stages.reader import glance
from capsule.stages.record import SessionWriter
from capsule.stages.store import EVENTS, capsule_home, create_session, open_private, session_dirs

TOUCH_RECORD_EVERY = 30.0  # env.touched is written at most this often (the deadline itself is exact)


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


@attrs.define(eq=False)
class Service:
    cfg: ProcessConfig
    log: LogFile
    want: bool = True
    stopping: bool = False
    proc: trio.Process | None = None
    pid: int | None = None
    started: float | None = None
    history: RestartHistory = attrs.Factory(RestartHistory)
    is_up: bool = False
    settled: trio.Event = attrs.Factory(trio.Event)
    running: bool = False  # a runner task exists
    runner_done: trio.Event = attrs.Factory(trio.Event)
    backoff_scope: trio.CancelScope | None = None
    attempt: int = 0
    last_stderr: bytes = b""  # the last non-blank stderr line: the likely cause when it gives up

    def note_stderr(self, lines: list[bytes]) -> None:
        for line in reversed(lines):
            if line.strip():
                self.last_stderr = line.strip()
                return

    def settle(self, up: bool) -> None:
        if not self.settled.is_set():
            self.is_up = up
            self.settled.set()


class Supervisor:
    def __init__(
        self, config: ProjectConfig, config_path: Path, home: Path, argv: tuple[str, ...] = ()
    ) -> None:
        self.config, self.config_path, self.home = config, config_path, home
        self.argv = argv or ("capsule", "env", "up", str(config_path))
        self.root = (config_path.parent / config.working_dir).resolve()
        self.session_id, self.dir = create_session(home)
        self.writer = SessionWriter(self.dir / EVENTS)
        self.services = {
            p.name: Service(p, LogFile(self.dir / "logs" / f"{p.name}.log", config.log_max_bytes))
            for p in config.processes
        }
        self.last_touch = 0.0
        self.last_touch_recorded = 0.0
        self.done = trio.Event()
        self.shutting_down = False
        self.nursery: trio.Nursery | None = None

    def emit(self, *events: Event) -> None:
        self.writer.write(list(events))

    # -- processes -----------------------------------------------------------------------------------

    def _environ(self, svc: Service) -> dict[str, str]:
        env = dict(os.environ)
        for base, name in ((self.root, self.config.env_file), (self._cwd(svc), svc.cfg.env_file)):
            if name:
                env.update(parse_env_file((base / name).read_text(encoding="utf-8")))
        env.update(dict(svc.cfg.env))
        return env

    def _cwd(self, svc: Service) -> Path:
        return (self.root / svc.cfg.working_dir).resolve()

    def _argv(self, svc: Service) -> list[str]:
        argv = list(svc.cfg.argv)
        if svc.cfg.trace:
            name = f"{self.config.name}.{svc.cfg.name}"
            argv = [
                sys.executable,
                "-m",
                "capsule",
                "run",
                "--name",
                name,
                "--parent",
                self.session_id,
                "--",
                *argv,
            ]
        return argv

    def _spawn_error(self, svc: Service) -> str | None:
        cwd = self._cwd(svc)
        if not cwd.is_dir():
            return f"working_dir {svc.cfg.working_dir!r}: no such directory ({cwd})"
        exe = svc.cfg.argv[0]
        if "/" in exe:
            target = exe if os.path.isabs(exe) else str(cwd / exe)
            if not os.access(target, os.X_OK):
                return f"command not executable or not found: {exe}"
        elif shutil.which(exe) is None:
            return f"command not found: {exe}"
        return None

    async def run_service(self, svc: Service) -> None:
        svc.running = True
        svc.runner_done = trio.Event()
        try:
            await self._run_service(svc)
        finally:
            svc.running = False
            svc.runner_done.set()

    async def _run_service(self, svc: Service) -> None:
        name = svc.cfg.name
        for dep in svc.cfg.depends_on:
            other = self.services[dep]
            await other.settled.wait()
            if not other.is_up:
                self.emit(SvcFailed(ts=time.time(), name=name, error=f"dependency {dep!r} did not come up"))
                svc.settle(False)
                return
        while svc.want:
            argv = self._argv(svc)
            cwd = self._cwd(svc)
            self.emit(
                SvcStarting(ts=time.time(), name=name, argv=tuple(argv), cwd=str(cwd), attempt=svc.attempt)
            )
            error = self._spawn_error(svc) or await port_taken(svc.cfg.health_check)
            env: dict[str, str] = {}
            if error is None:
                try:
                    env = self._environ(svc)
                except (OSError, UnicodeDecodeError) as exc:
                    error = f"env_file: {exc}"
            proc = None
            if error is None:
                try:
                    proc = await trio.lowlevel.open_process(
                        argv,
                        cwd=str(cwd),
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        start_new_session=True,
                    )
                except OSError as exc:
                    error = f"cannot start {argv[0]}: {exc.strerror or exc}"
            if proc is None:
                svc.log.line("capsule", f"error: {error}".encode())
                self.emit(SvcFailed(ts=time.time(), name=name, error=error or "cannot start"))
                svc.settle(False)
                return
            svc.proc, svc.pid, svc.started = proc, proc.pid, started_at(proc.pid)
            svc.last_stderr = b""
            began = time.time()
            trace_session = await self._trace_session(proc.pid) if svc.cfg.trace else None
            hc = svc.cfg.health_check
            self.emit(
                SvcStarted(
                    ts=time.time(),
                    name=name,
                    pid=proc.pid,
                    started=svc.started,
                    pgid=proc.pid,
                    health_check=hc.text if hc else None,
                    trace_session=trace_session,
                )
            )
            async with trio.open_nursery() as nursery:
                assert proc.stdout is not None
                assert proc.stderr is not None
                nursery.start_soon(self._pump, svc, proc.stdout, "stdout")
                nursery.start_soon(self._pump, svc, proc.stderr, "stderr")
                nursery.start_soon(self._health, svc)
                await proc.wait()
                with trio.move_on_after(0.2):  # let the pipes drain unless a grandchild holds them
                    while len(nursery.child_tasks) > 1:  # noqa: ASYNC110 (bounded drain, no event to wait on)
                        await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
            if svc.stopping:
                return
            code, sig = returncode_status(proc.returncode)
            ran = time.time() - began
            self.emit(
                SvcExited(
                    ts=time.time(), name=name, pid=proc.pid, exit_code=code, signal=sig, ran_s=round(ran, 6)
                )
            )
            svc.log.line("capsule", f"exited: {sig or f'code {code}'} after {ran:.2f}s".encode())
            svc.settle(False)
            decision = decide(svc.cfg, svc.history, now=time.time(), ran_s=ran, exit_code=code, signal=sig)
            svc.history = decision.history
            if decision.action == "give_up":
                reason = decision.reason
                if svc.last_stderr:
                    reason += f"; last stderr: {svc.last_stderr.decode(errors='replace')[:300]}"
                self.emit(SvcGaveUp(ts=time.time(), name=name, restarts=svc.history.total, reason=reason))
                svc.log.line("capsule", f"gave up: {reason}".encode())
                return
            if decision.action == "exit":
                return
            self.emit(
                SvcRestarting(ts=time.time(), name=name, restarts=svc.history.total, delay_s=decision.delay_s)
            )
            svc.attempt += 1
            with trio.CancelScope() as scope:
                svc.backoff_scope = scope
                await trio.sleep(decision.delay_s)
            svc.backoff_scope = None

    async def _trace_session(self, pid: int) -> str | None:
        """The `run` session that `capsule run` (pid) is writing, once its header exists."""
        with trio.move_on_after(5.0):
            while True:
                for path in session_dirs(self.home)[:20]:
                    seen = glance(path)
                    if seen.header is not None and seen.header.recorder_pid == pid:
                        return path.name
                await trio.sleep(0.05)
        return None

    async def _pump(self, svc: Service, stream: trio.abc.ReceiveStream, label: str) -> None:
        pending = b""
        async with stream:
            while data := await stream.receive_some(65536):
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    svc.log.line(label, line)
                if label == "stderr":
                    svc.note_stderr(lines)
        if pending:
            svc.log.line(label, pending)
            if label == "stderr":
                svc.note_stderr([pending])

    async def _health(self, svc: Service) -> None:
        hc = svc.cfg.health_check
        name = svc.cfg.name
        if hc is None:
            svc.settle(True)
            return
        healthy: bool | None = None
        poll = min(0.1, svc.cfg.health_check_interval)
        while True:
            ok, reason = await check(hc, svc.cfg.health_timeout, self._cwd(svc))
            if ok and healthy is not True:
                self.emit(SvcReady(ts=time.time(), name=name))
                svc.settle(True)
            elif not ok and healthy is True:
                self.emit(SvcUnhealthy(ts=time.time(), name=name, reason=reason))
            if ok or healthy is not None:
                healthy = ok
            await trio.sleep(svc.cfg.health_check_interval if healthy is not None else poll)

    async def stop_service(self, svc: Service, reason: str) -> None:
        svc.want = False
        if svc.backoff_scope is not None:
            svc.backoff_scope.cancel()
        proc = svc.proc
        if proc is None or proc.returncode is not None or not svc.running:
            if svc.running:
                await svc.runner_done.wait()
            return
        svc.stopping = True
        tree = tree_of(proc.pid, svc.started, proc.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, getattr(signal, svc.cfg.stop_signal))
        signal_tree(tree, getattr(signal, svc.cfg.stop_signal))
        killed = False
        with trio.move_on_after(svc.cfg.stop_timeout):
            await proc.wait()
        if proc.returncode is None:
            killed = True
        leftovers = [p for p in {*tree, *tree_of(proc.pid, svc.started, proc.pid)} if _exists(p)]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        signal_tree(leftovers, signal.SIGKILL)
        await proc.wait()
        await trio.to_thread.run_sync(lambda: psutil.wait_procs(leftovers, timeout=2.0))
        code, sig = returncode_status(proc.returncode)
        self.emit(
            SvcStopped(
                ts=time.time(),
                name=svc.cfg.name,
                pid=proc.pid,
                exit_code=code,
                signal=sig,
                killed=killed,
                reason=reason,
            )
        )
        svc.log.line("capsule", f"stopped ({reason}){' with SIGKILL' if killed else ''}".encode())
        await svc.runner_done.wait()
        svc.stopping = False

    async def start_service(self, svc: Service) -> None:
        if svc.running:
            return
        assert self.nursery is not None
        svc.want, svc.attempt, svc.history = True, 0, RestartHistory()
        svc.settled = trio.Event()
        self.nursery.start_soon(self.run_service, svc)
        with trio.move_on_after(max(5.0, svc.cfg.health_timeout * 3)):
            await svc.settled.wait()

    async def shutdown(self, reason: str) -> None:
        if self.shutting_down:
            await self.done.wait()
            return
        self.shutting_down = True
        for name in reversed(self.config.start_order):
            await self.stop_service(self.services[name], reason)
        self.emit(EnvDeactivated(ts=time.time(), reason=reason))
        self.done.set()

    # -- the CLI -------------------------------------------------------------------------------------

    def touch(self, command: str) -> None:
        self.last_touch = trio.current_time()
        if self.last_touch - self.last_touch_recorded >= TOUCH_RECORD_EVERY or command != "status":
            self.last_touch_recorded = self.last_touch
            self.emit(EnvTouched(ts=time.time(), command=command))

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        self.touch(str(op))
        if op in ("status", "touch"):
            return {"ok": True}
        if op == "down":
            await self.shutdown("down")
            return {"ok": True}
        name = request.get("name")
        svc = self.services.get(str(name))
        if svc is None:
            return {"ok": False, "error": f"no process named {name!r} in {self.config.name}"}
        if op == "stop":
            await self.stop_service(svc, "stop")
        elif op == "start":
            await self.start_service(svc)
        elif op == "restart":
            await self.stop_service(svc, "restart")
            await self.start_service(svc)
        else:
            return {"ok": False, "error": f"unknown op {op!r}"}
        return {"ok": True, "up": svc.is_up}

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        address, dirfd = socket_address(self.dir)
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            await sock.bind(address)
        finally:
            os.umask(old)
            if dirfd is not None:
                os.close(dirfd)
        (self.dir / SOCKET).chmod(0o600)
        sock.listen(16)
        listener = trio.SocketListener(sock)
        task_status.started()
        async with trio.open_nursery() as nursery, listener:
            while True:
                stream = await listener.accept()
                nursery.start_soon(self._conn, stream)

    async def _conn(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            with trio.move_on_after(10):
                while b"\n" not in data and len(data) < 65536:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    data += chunk
            try:
                request = orjson.loads(data.split(b"\n")[0])
            except orjson.JSONDecodeError:
                reply: dict[str, Any] = {"ok": False, "error": "bad request"}
            else:
                reply = await self.handle(request)
            # Shielded: a `down` sets `done`, and the supervisor then cancels everything; the reply to the
            # client that asked for it must still go out (under load it was lost: "closed the connection").
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(2),
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                await stream.send_all(orjson.dumps(reply) + b"\n")

    async def idle_watch(self) -> None:
        timeout = self.config.inactivity_timeout
        if timeout is None:
            return
        while True:
            deadline = self.last_touch + timeout
            if trio.current_time() >= deadline:
                break
            await trio.sleep_until(deadline)
        self.emit(
            EnvIdle(ts=time.time(), idle_s=round(trio.current_time() - self.last_touch, 3), timeout_s=timeout)
        )
        await self.shutdown("idle")

    async def signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as receiver:
            async for _ in receiver:
                await self.shutdown("signal")
                return

    # -- the whole -----------------------------------------------------------------------------------

    async def run(self, notify: int | None) -> int:
        began = time.time()
        self.last_touch = trio.current_time()
        self.emit(
            SessionStarted(
                ts=began,
                capsule_version=__version__,
                session_id=self.session_id,
                session_kind="env",
                name=self.config.name,
                argv=self.argv,
                cwd=str(self.root),
                host=platform.node(),
                recorder_pid=os.getpid(),
                recorder_started=started_at(os.getpid()),
                kinds=kind_versions(),
            )
        )
        _notify(notify, f"session {self.session_id}")
        failed: list[str] = []
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                await nursery.start(self.serve)
                self.emit(
                    EnvActivated(
                        ts=time.time(),
                        project=self.config.name,
                        config_path=str(self.config_path),
                        root=str(self.root),
                        processes=self.config.start_order,
                        inactivity_timeout_s=self.config.inactivity_timeout,
                        socket=SOCKET,
                    )
                )
                nursery.start_soon(self.signals)
                for name in self.config.start_order:
                    nursery.start_soon(self.run_service, self.services[name])
                for svc in self.services.values():
                    await svc.settled.wait()
                failed = [n for n, s in self.services.items() if not s.is_up]
                _notify(notify, "up ok" if not failed else "up failed " + " ".join(failed))
                if notify is not None:
                    os.close(notify)
                    notify = None
                nursery.start_soon(self.idle_watch)
                await self.done.wait()
                nursery.cancel_scope.cancel()
        finally:
            with contextlib.suppress(OSError):
                (self.dir / SOCKET).unlink()
            self.emit(SessionEnded(ts=time.time(), duration_s=round(time.time() - began, 6), exit_code=0))
            self.writer.close()
            for svc in self.services.values():
                svc.log.close()
        return 0


def _exists(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _notify(fd: int | None, line: str) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.write(fd, line.encode() + b"\n")


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


def load_config(path: Path) -> ProjectConfig:
    return parse_config(path.read_text(encoding="utf-8"), str(path), default_name=path.resolve().parent.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m capsule.stages.supervise", description=__doc__.splitlines()[0]
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("--foreground", action="store_true")
    parser.add_argument("--notify-fd", type=int, default=None)
    parser.add_argument(
        "--command-line", default=None, help="the user's command, a JSON list (the header's argv)"
    )
    args = parser.parse_args(argv)
    os.umask(0o077)
    try:
        config = load_config(args.config)
    except (ConfigError, OSError, UnicodeDecodeError) as exc:
        print(f"capsule: error: {exc}", file=sys.stderr)
        return 4
    shown = (
        tuple(orjson.loads(args.command_line))
        if args.command_line
        else ("capsule", "env", "up", str(args.config))
    )
    supervisor = Supervisor(config, args.config.resolve(), capsule_home(), argv=shown)
    if not args.foreground:
        fd = open_private(supervisor.dir / "supervisor.log")
        os.dup2(fd, 2)
        os.close(fd)
    return trio.run(supervisor.run, args.notify_fd)


if __name__ == "__main__":
    sys.exit(main())
