"""Environment processes on the live system: liveness by pid + start time, killing a whole tree, finding
the environments on this machine, and cleaning up after a supervisor that died (SIGKILL).

A pid is only ever signalled when its start time matches the one recorded, so a reused pid is never hit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import psutil

from capsule.codec import CodecError
from capsule.events import Event, SessionEnded, SessionStarted
from capsule.events.env import EnvDeactivated, SvcStopped
from capsule.fold.environment import EnvState, apply
from capsule.stages.processes import CLOCK_SLACK, process_if
from capsule.stages.reader import glance, iter_events, recorder_alive
from capsule.stages.store import EVENTS, session_dirs

SOCKET = "ctl.sock"


def tree_of(pid: int | None, started: float | None, pgid: int | None) -> list[psutil.Process]:
    """The process, its descendants and the members of its process group started no earlier than it."""
    found: dict[int, psutil.Process] = {}
    root = process_if(pid, started)
    if root is not None:
        found[root.pid] = root
        with contextlib.suppress(psutil.Error):
            for child in root.children(recursive=True):
                found[child.pid] = child
    if pgid is not None and (root is not None or process_if(pgid, None) is None):
        # The group outlives its leader only while members remain, so its id cannot have been reused;
        # members must also have started after the leader did.
        for proc in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error, OSError):
                if os.getpgid(proc.pid) == pgid and (
                    started is None or proc.create_time() >= started - CLOCK_SLACK
                ):
                    found[proc.pid] = proc
    found.pop(os.getpid(), None)
    return [p for p in found.values() if _not_zombie(p)]


def _not_zombie(proc: psutil.Process) -> bool:
    try:
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def signal_tree(procs: list[psutil.Process], signum: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signum)


def kill_tree_now(pid: int | None, started: float | None, pgid: int | None, timeout: float = 5.0) -> int:
    """SIGTERM, then SIGKILL after `timeout`, every process of a tree; returns how many there were."""
    procs = tree_of(pid, started, pgid)
    if not procs:
        return 0
    signal_tree(procs, signal.SIGTERM)
    _gone, alive = psutil.wait_procs(procs, timeout=timeout)
    signal_tree(alive, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=2.0)
    return len(procs)


@attrs.frozen
class EnvSession:
    path: Path
    header: SessionStarted
    state: EnvState
    supervisor_alive: bool

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> str | None:
        return self.state.activated.config_path if self.state.activated else None

    def alive(self) -> dict[str, bool]:
        return {
            p.name: process_if(p.pid, p.started) is not None
            for p in self.state.processes.values()
            if p.pid is not None
        }


def load_env(path: Path) -> EnvSession | None:
    seen = glance(path)
    if seen.header is None or seen.header.session_kind != "env":
        return None
    state = EnvState()
    try:
        for event in iter_events(path):
            apply(state, event)
    except (CodecError, OSError):
        pass
    return EnvSession(path, seen.header, state, recorder_alive(seen.header))


def env_sessions(home: Path) -> Iterator[EnvSession]:
    """Every env session, newest first."""
    for path in session_dirs(home):
        try:
            with open(path / EVENTS, "rb") as file:
                if b'"session_kind":"env"' not in file.readline():
                    continue
        except OSError:
            continue
        env = load_env(path)
        if env is not None:
            yield env


def open_envs(home: Path, config_path: str | None = None) -> list[EnvSession]:
    """Env sessions not yet ended (a live supervisor, or a dead one that left processes)."""
    return [
        e
        for e in env_sessions(home)
        if e.state.ended is None and (config_path is None or e.config_path == config_path)
    ]


def recover(env: EnvSession, reason: str = "recovered") -> list[str]:
    """The supervisor of `env` is dead: stop what it left running and close its session."""
    from capsule.stages.record import SessionWriter  # imports trio: keep it out of `env status`

    stopped = []
    with open(env.path / EVENTS, "rb") as file:
        count = sum(1 for _ in file)
    writer = SessionWriter(env.path / EVENTS, next_seq=count)
    try:
        events: list[Event] = []
        for name, pid, started, pgid in env.state.live_pids():
            n = kill_tree_now(pid, started, pgid, timeout=5.0)
            if n:
                stopped.append(name)
            events.append(SvcStopped(ts=time.time(), name=name, pid=pid, reason=reason, killed=bool(n)))
        events.append(EnvDeactivated(ts=time.time(), reason=reason))
        events.append(SessionEnded(ts=time.time(), error="supervisor died; cleaned up by a later command"))
        writer.write(events)
    finally:
        writer.close()
    return stopped


class ControlError(OSError):
    """The supervisor's socket did not answer."""


def control(session_dir: Path, op: str, name: str | None = None, timeout: float = 120.0) -> dict[str, Any]:
    """One request to a supervisor over its Unix socket; its JSON reply."""
    import socket

    import orjson

    path = session_dir / SOCKET
    dirfd = None
    address = str(path)
    if len(address) >= 100:
        dirfd = os.open(session_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        address = f"/proc/self/fd/{dirfd}/{SOCKET}"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(orjson.dumps({"op": op, "name": name}) + b"\n")
            data = b""
            while b"\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        raise ControlError(f"supervisor of {session_dir.name} does not answer: {exc}") from None
    finally:
        if dirfd is not None:
            os.close(dirfd)
    if not data.strip():
        raise ControlError(f"supervisor of {session_dir.name} closed the connection")
    reply: dict[str, Any] = orjson.loads(data)
    return reply


def process_stats(pid: int | None, started: float | None) -> tuple[float | None, int | None]:
    """(average CPU % since start, RSS bytes) of a process and its descendants."""
    proc = process_if(pid, started)
    if proc is None:
        return None, None
    try:
        procs = [proc, *proc.children(recursive=True)]
        cpu = rss = 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                cpu += t.user + t.system
                rss += p.memory_info().rss
        age = max(time.time() - proc.create_time(), 1e-3)
        return round(100.0 * cpu / age, 2), int(rss)
    except psutil.Error:
        return None, None
