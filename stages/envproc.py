"""Environments on the live system: finding the environments on this machine, talking to a supervisor, and
cleaning up after a supervisor that died (SIGKILL). Every stop goes through `capsule.stages.procs`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import psutil

from capsule.codec import CodecError
from capsule.env.config import ProjectConfig
from capsule.env.merge import Merged
from capsule.events import Event, SessionEnded, SessionRecovered, SessionStarted
from capsule.events.env import EnvDeactivated, SvcStopped
from capsule.fold.environment import EnvState, RunTree, apply
from capsule.stages import procs
from capsule.stages.envctl import LOCKS, config_digest
from capsule.stages.procs import process_if
from capsule.stages.reader import glance, iter_events, recorder_alive
from capsule.stages.settings_file import read_settings
from capsule.stages.store import EVENTS, session_dirs


def read_project(path: Path, home: Path) -> tuple[Merged, ProjectConfig]:
    """A project file with the global defaults merged under it, and its parsed config (ConfigError,
    SettingsError, OSError or UnicodeDecodeError when either file is broken)."""
    from capsule.env.config import parse_config
    from capsule.env.merge import merge

    settings = read_settings(home)
    merged = merge(path.read_text(encoding="utf-8"), settings.env, str(path), settings.origin("env"))
    config = parse_config(merged.text, str(path), default_name=path.resolve().parent.name)
    return merged, config


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
        live = self.live()
        return {p.name: p.name in live for p in self.state.processes.values() if p.pid is not None}

    def live(self) -> dict[str, psutil.Process]:
        """The processes alive now, by name, each looked up once (a status reads liveness and usage of
        every process of an environment; scripts ask for it in a loop)."""
        found = {}
        for p in self.state.processes.values():
            proc = process_if(p.pid, p.started)
            if proc is not None:
                found[p.name] = proc
        return found


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


def run_tree(t: RunTree) -> procs.Tree:
    """The procs.Tree of one recorded run: leader, group, recorded members, cgroup and marker."""
    return procs.Tree(
        pid=t.pid,
        started=t.started,
        pgid=t.pgid,
        members=tuple(procs.Member(pid=pid, started=started) for pid, started in t.members),
        cgroup=t.cgroup,
        marker=f"{procs.MARKER}={t.marker}" if t.marker else None,
    )


def recover(env: EnvSession, reason: str = "recovered") -> list[str]:
    """The supervisor of `env` is dead: stop what it left running (leftovers too) and close its session."""
    from capsule.stages.record import SessionWriter  # imports trio: keep it out of `env status`

    stopped = []
    with open(env.path / EVENTS, "rb") as file:
        count = sum(1 for _ in file)
    writer = SessionWriter(env.path / EVENTS, next_seq=count)
    try:
        events: list[Event] = []
        live = {name: (pid, started, pgid) for name, pid, started, pgid in env.state.live_pids()}
        trees = {t.name: run_tree(t) for t in env.state.trees()}
        for name in [*live, *(n for n in trees if n not in live)]:
            pid, started, pgid = live.get(name, (None, None, None))
            tree = trees.get(name) or procs.Tree(pid=pid, started=started, pgid=pgid)
            n = procs.stop(tree, signal.SIGTERM, grace=5.0).count
            if n:
                stopped.append(name)
            if name in live:
                events.append(SvcStopped(ts=time.time(), name=name, pid=pid, reason=reason, killed=bool(n)))
        events.append(EnvDeactivated(ts=time.time(), reason=reason))
        why = "supervisor died; cleaned up by a later command"
        events.append(
            SessionRecovered(ts=time.time(), reason=why, events_before=count, events_added=len(events))
        )
        # when it died is not recorded: its duration is unknown, not 0 (`ls` showed 0.00s)
        events.append(SessionEnded(ts=time.time(), duration_s=None, error=why))
        writer.write(events)
    finally:
        writer.close()
    for t in env.state.trees():
        if t.cgroup:
            procs.Cgroup(Path(t.cgroup)).remove()
    return stopped


@contextlib.contextmanager
def config_lock(home: Path, config_path: str) -> Iterator[None]:
    """Held while an environment of `config_path` is looked for and, if there is none, started.

    An exclusive `fcntl.flock` on `$CAPSULE_HOME/locks/<hash of the path>.lock`: a second `env up` of the
    same config waits here, then finds the environment the first one started and joins it."""
    import fcntl

    locks = home / LOCKS
    locks.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(
        locks / f"{config_digest(config_path)}.lock",
        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def process_stats(proc: psutil.Process, cgroup: str | None = None) -> tuple[float | None, int | None]:
    """(average CPU % since start, RSS bytes) of a live process and its descendants: the members of its
    run's cgroup when it has one (a small read), else its descendants (a scan of every process)."""
    try:
        age = max(time.time() - proc.create_time(), 1e-3)
    except psutil.Error:
        return None, None
    pids = procs.cgroup_pids(cgroup)
    if pids:
        cpu, rss = 0.0, 0
        for member in pids:
            with contextlib.suppress(psutil.Error):
                one = proc if member == proc.pid else psutil.Process(member)
                with one.oneshot():  # /proc/PID/stat read once for both figures
                    times, mem = one.cpu_times(), one.memory_info()
                cpu, rss = cpu + times.user + times.system, rss + mem.rss
        return round(100.0 * cpu / age, 2), rss
    used = procs.usage(procs.Tree(pid=proc.pid, started=proc.create_time()))
    return round(100.0 * used.cpu_s / age, 2), used.rss
