"""Project environments: up, down, status, ls, ps, start/stop/restart, logs, kill-all.

An environment is an env session with a supervisor (capsule/stages/supervise.py); its state is the fold
of that session, so status is right even when the supervisor died. Starting one holds a per-config lock
(`fcntl.flock` on `$CAPSULE_HOME/locks/`): two `env up` of the same config at once start one
environment, and the second one waits for it and reports it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs

from capsule.api.errors import BadInput, CheckFailed, NotFound, RecordingFailed, Unavailable, UsageError
from capsule.api.sessions import home

if TYPE_CHECKING:
    from capsule.env.config import ProjectConfig
    from capsule.stages.envproc import EnvSession

Note = Callable[[str], None]
Op = Literal["start", "stop", "restart"]
UP_STATES = ("ready", "running", "exited")


# --- records ------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ProcessStatus:
    """One process of an environment, as `env status --json` shows it."""

    name: str
    state: str = attrs.field(
        metadata={"doc": "starting running ready unhealthy backoff exited stopped gave_up lost (or queued)."}
    )
    pid: int | None
    restarts: int
    health: str | None
    exit_code: int | None
    signal: str | None
    uptime_s: float | None
    last_exit: float | None
    cpu_percent: float | None
    rss: int | None
    error: str | None
    trace_session: str | None


@attrs.frozen(kw_only=True)
class Supervisor:
    pid: int | None
    alive: bool


@attrs.frozen(kw_only=True)
class EnvironmentStatus:
    """`capsule env status --json`."""

    project: str | None
    config: str | None
    session: str
    active: bool
    deactivated: str | None
    supervisor: Supervisor
    processes: tuple[ProcessStatus, ...]

    @property
    def not_up(self) -> tuple[str, ...]:
        """The processes that are not ready, running or exited (cleanly done)."""
        return tuple(p.name for p in self.processes if p.state not in UP_STATES)


@attrs.frozen(kw_only=True)
class EnvironmentRow:
    """One row of `capsule env ls --json`."""

    session: str
    project: str | None
    config: str | None
    state: str = attrs.field(metadata={"doc": "up, down or 'supervisor dead'."})
    supervisor: Supervisor
    processes: int
    started: float


@attrs.frozen(kw_only=True)
class ManagedProcess(ProcessStatus):
    """One row of `capsule ps --json`: a process of an open environment."""

    project: str | None
    session: str
    supervisor_alive: bool


@attrs.frozen(kw_only=True)
class Logs:
    """The last lines of a managed process's log (`<time> <stream> <line>` each, bytes as written)."""

    name: str
    path: Path
    lines: tuple[bytes, ...]


@attrs.frozen(kw_only=True)
class KillAll:
    """What `kill-all` did, one line each, and the supervisors that did not answer."""

    done: tuple[str, ...]
    errors: tuple[str, ...]


# --- finding environments ---------------------------------------------------------------------


def config_file(path: Path) -> Path:
    """The config file of a project directory (or the file itself), resolved."""
    from capsule.env import CONFIG_NAMES

    if path.is_file():
        return path.resolve()
    for name in CONFIG_NAMES:
        if (path / name).is_file():
            return (path / name).resolve()
    raise NotFound(f"no {' or '.join(CONFIG_NAMES)} in {path.resolve()}")


def load_config(config: Path) -> ProjectConfig:
    from capsule.env.config import ConfigError
    from capsule.stages.supervise import load_config as load

    try:
        return load(config)
    except ConfigError as exc:
        raise BadInput(str(exc)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{config}: {exc}") from exc


def _latest(config: Path) -> EnvSession | None:
    from capsule.stages.envproc import env_sessions

    for env in env_sessions(home()):
        if env.config_path == str(config):
            return env
    return None


def _live(config: Path) -> EnvSession | None:
    env = _latest(config)
    return env if env is not None and env.state.ended is None and env.supervisor_alive else None


def _cleanup_dead(config: str | None) -> list[str]:
    """Stop what dead supervisors left running (for one config, or all); say what was stopped."""
    from capsule.stages.envproc import open_envs, recover

    done = []
    for env in open_envs(home(), config):
        if not env.supervisor_alive:
            stopped = recover(env)
            done.append(
                f"{env.state.project} ({env.id}): supervisor dead, stopped {', '.join(stopped) or 'nothing'}"
            )
    return done


def _touch(env: EnvSession, op: str = "status") -> None:
    """Tell a live supervisor someone looked (it counts for `inactivity_timeout`)."""
    from capsule.stages.envproc import ControlError, control

    if env.supervisor_alive and env.state.ended is None:
        with contextlib.suppress(ControlError):
            control(env.path, op, timeout=5)


def _status(env: EnvSession) -> EnvironmentStatus:
    from capsule.fold.environment import with_liveness
    from capsule.stages.envproc import process_stats

    alive = env.alive()
    shown = with_liveness(env.state, alive)
    now = time.time()
    processes = []
    for name, p in env.state.processes.items():
        cpu, rss = process_stats(p.pid, p.started) if alive.get(name) else (None, None)
        processes.append(
            ProcessStatus(
                name=name,
                state=shown[name],
                pid=p.pid,
                restarts=p.restarts,
                health=p.health,
                exit_code=p.exit_code,
                signal=p.signal,
                uptime_s=round(now - p.since, 3) if p.since and p.pid else None,
                last_exit=p.last_exit_ts,
                cpu_percent=cpu,
                rss=rss,
                error=p.error,
                trace_session=p.trace_session,
            )
        )
    return EnvironmentStatus(
        project=env.state.project,
        config=env.config_path,
        session=env.id,
        active=env.state.ended is None and env.supervisor_alive,
        deactivated=env.state.deactivated,
        supervisor=Supervisor(pid=env.header.recorder_pid, alive=env.supervisor_alive),
        processes=tuple(processes),
    )


# --- up and down --------------------------------------------------------------------------------


def _config_lock(config: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the per-config start lock (blocking): one starter of an environment at a time."""
    from capsule.stages.envproc import config_lock

    return config_lock(home(), str(config))


def _check_policy(config: ProjectConfig) -> None:
    """A `[policy]` the kernel cannot enforce here is refused now, in one line (exit 125), not by the
    detached supervisor."""
    if config.policy.empty:
        return
    from capsule.stages.guard_probe import GuardRefused, enforcement_for

    try:
        enforcement = enforcement_for(config.policy)
    except GuardRefused as exc:
        raise RecordingFailed(str(exc)) from None
    if enforcement.detected:  # a service's trace is its own run session: nothing here could detect
        raise RecordingFailed(
            f"{enforcement.warning}; services cannot be guarded after the fact: fallback = "
            '"detect" is for capsule run and traced agent tasks'
        )


def up(
    path: Path, timeout: float = 120.0, note: Note | None = None, argv: tuple[str, ...] | None = None
) -> EnvironmentStatus:
    """The environment of `path`, started under a detached supervisor if it is not up; its status.

    What dead supervisors of the same config left running is stopped first (each line to `note`).
    Raises `Unavailable` if the supervisor does not start, `CheckFailed` if not every process is up
    within `timeout` (the status then says which)."""
    config = config_file(path)
    loaded = load_config(config)
    with _config_lock(config):
        env = _live(config)
        if env is not None:
            return _status(env)
        _check_policy(loaded)
        for line in _cleanup_dead(str(config)):
            if note is not None:
                note(line)
        _start_detached(config, timeout, argv)
    env = _live(config) or _latest(config)
    assert env is not None  # the supervisor announced its session
    return _status(env)


def _start_detached(config: Path, timeout: float, argv: tuple[str, ...] | None = None) -> None:
    import subprocess

    import orjson

    where = home()
    (where / "spool").mkdir(parents=True, exist_ok=True, mode=0o700)
    read, write = os.pipe()
    err_path = where / "spool" / f"supervise-{os.getpid()}-{write}.log"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "capsule.stages.supervise",
                str(config),
                "--notify-fd",
                str(write),
                "--command-line",
                orjson.dumps(argv or ("capsule", "env", "up", str(config))).decode(),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            pass_fds=(write,),
            start_new_session=True,
            close_fds=True,
        )
    _spawned.append(proc)
    os.close(write)
    try:
        outcome = _read_notify(read, timeout)
    finally:
        os.close(read)
    try:
        if "session" not in outcome:
            proc.poll()
            detail = err_path.read_text(errors="replace").strip().splitlines()
            raise Unavailable(f"the supervisor did not start: {detail[-1] if detail else 'no output'}")
    finally:
        err_path.unlink(missing_ok=True)
    if "up" not in outcome:
        env = _live(config) or _latest(config)
        project = env.state.project if env is not None else config.parent.name
        raise CheckFailed(f"{project}: not every process was up after {timeout:g}s")


def _read_notify(fd: int, timeout: float) -> dict[str, str]:
    """The supervisor's `session ID` and `up` lines from its notify pipe, until `up` or `timeout`."""
    import select

    got: dict[str, str] = {}
    buf = b""
    deadline = time.monotonic() + timeout
    while "up" not in got:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            key, _, value = line.decode().partition(" ")
            got[key] = value
    return got


def up_foreground(path: Path, note: Note | None = None, argv: tuple[str, ...] | None = None) -> int | None:
    """Supervise the environment of `path` from this process until it is brought down; its exit code.

    None if it is already up (under another supervisor): the caller reports its status instead."""
    import orjson

    shown = argv or ("capsule", "env", "up", "--foreground", str(path))
    import threading

    from capsule.stages.supervise import main as supervise

    config = config_file(path)
    load_config(config)
    lock = _config_lock(config)
    lock.__enter__()
    if _live(config) is not None:
        lock.__exit__(None, None, None)
        return None
    for line in _cleanup_dead(str(config)):
        if note is not None:
            note(line)
    before = _latest(config)
    released = threading.Event()

    def release_when_announced() -> None:
        # The lock covers the start: it is let go once the new session is there to be found.
        while not released.is_set():
            env = _live(config)
            if env is not None and (before is None or env.id != before.id):
                break
            released.wait(0.05)
        lock.__exit__(None, None, None)

    watcher = threading.Thread(target=release_when_announced, name="capsule-env-lock", daemon=True)
    watcher.start()
    try:
        return supervise([str(config), "--foreground", "--command-line", orjson.dumps(shown).decode()])
    finally:
        released.set()
        watcher.join()


def _wait_gone(env: EnvSession, seconds: float = 10.0) -> None:
    from capsule.stages.procs import process_if

    deadline = time.monotonic() + seconds
    while process_if(env.header.recorder_pid, env.header.recorder_started) and time.monotonic() < deadline:
        time.sleep(0.02)


def down(path: Path) -> tuple[str, ...]:
    """Bring the environment of `path` down (and what dead supervisors left); say what was done."""
    from capsule.stages.envproc import ControlError, control

    config = config_file(path)
    env = _live(config)
    done = []
    if env is not None:
        try:
            control(env.path, "down")
        except ControlError as exc:
            raise Unavailable(str(exc)) from exc
        _wait_gone(env)
        done.append(f"{env.state.project}: down")
    done += _cleanup_dead(str(config))
    return tuple(done or ["nothing running"])


def kill_all() -> KillAll:
    """Bring down every environment on this machine, and stop what dead supervisors left running."""
    from capsule.stages.envproc import ControlError, control, open_envs

    done: list[str] = []
    errors: list[str] = []
    for env in open_envs(home()):
        if env.supervisor_alive:
            try:
                control(env.path, "down", timeout=60)
            except ControlError as exc:
                errors.append(str(exc))
            _wait_gone(env)
            done.append(f"{env.state.project} ({env.id}): down")
    done += _cleanup_dead(None)
    from capsule.api.agents import stop_dead_runs  # agent tasks whose scheduler died

    done += [
        f"agents {r.session}: stopped what task {r.task} left (attempt {r.attempt})" for r in stop_dead_runs()
    ]
    return KillAll(done=tuple(done), errors=tuple(errors))


# --- looking ------------------------------------------------------------------------------------


def status(path: Path) -> EnvironmentStatus:
    """The latest environment of `path` (up or not); counts as interaction."""
    config = config_file(path)
    env = _latest(config)
    if env is None:
        raise NotFound(f"no environment for {config} yet; start one with `capsule env up`")
    _touch(env)
    return _status(env)


def ls() -> tuple[EnvironmentRow, ...]:
    """Every environment on this machine, newest first."""
    from capsule.stages.envproc import env_sessions

    rows = []
    for env in env_sessions(home()):
        active = env.state.ended is None and env.supervisor_alive
        state = "up" if active else ("supervisor dead" if env.state.ended is None else "down")
        rows.append(
            EnvironmentRow(
                session=env.id,
                project=env.state.project,
                config=env.config_path,
                state=state,
                supervisor=Supervisor(pid=env.header.recorder_pid, alive=env.supervisor_alive),
                processes=len(env.state.processes),
                started=env.header.ts,
            )
        )
    return tuple(rows)


def ps() -> tuple[ManagedProcess, ...]:
    """Every managed process of every open environment."""
    from capsule.stages.envproc import open_envs

    rows: list[ManagedProcess] = []
    for env in open_envs(home()):
        data = _status(env)
        rows.extend(
            ManagedProcess(
                project=data.project, session=data.session, supervisor_alive=env.supervisor_alive,
                **attrs.asdict(p, recurse=False),
            )
            for p in data.processes
        )  # fmt: skip
    return tuple(rows)


# --- one process --------------------------------------------------------------------------------


def _env_with(name: str, env_path: Path | None) -> EnvSession:
    from capsule.stages.envproc import open_envs

    if env_path is not None:
        config = config_file(env_path)
        env = _live(config)
        if env is None:
            raise NotFound(f"no running environment for {config}; start it with `capsule env up`")
        return env
    live = [e for e in open_envs(home()) if e.supervisor_alive and name in e.state.processes]
    if not live:
        raise NotFound(f"no running environment has a process named {name!r}")
    if len(live) > 1:
        raise UsageError(f"{name!r} is in {len(live)} environments: say which with --env PATH")
    return live[0]


def control(op: Op, name: str, env_path: Path | None = None) -> str:
    """start, stop or restart one process of a running environment; returns what was done."""
    from capsule.stages.envproc import ControlError
    from capsule.stages.envproc import control as request

    env = _env_with(name, env_path)
    if name not in env.state.processes:
        raise NotFound(f"no process named {name!r} in {env.state.project}")
    try:
        reply = request(env.path, op, name)
    except ControlError as exc:
        raise Unavailable(str(exc)) from exc
    if not reply.get("ok"):
        raise NotFound(str(reply.get("error")))
    if op != "stop" and not reply.get("up"):
        raise CheckFailed(f"{name} did not come up (see `capsule logs {name}`)")
    return f"{env.state.project}/{name}: {op} done"


def start(name: str, env_path: Path | None = None) -> str:
    return control("start", name, env_path)


def stop(name: str, env_path: Path | None = None) -> str:
    return control("stop", name, env_path)


def restart(name: str, env_path: Path | None = None) -> str:
    return control("restart", name, env_path)


def logs(name: str, env_path: Path | None = None, lines: int = 50) -> Logs:
    """The last `lines` lines of a process's log (the rotated one first); counts as interaction."""
    from capsule.stages.envproc import env_sessions

    if env_path is not None:
        found = _latest(config_file(env_path))
    else:
        found = next((e for e in env_sessions(home()) if name in e.state.processes), None)
    if found is None or name not in found.state.processes:
        raise NotFound(f"no environment has a process named {name!r}")
    _touch(found)
    log = found.path / "logs" / f"{name}.log"
    old = log.with_name(log.name + ".1")
    data = (old.read_bytes() if old.is_file() else b"") + (log.read_bytes() if log.is_file() else b"")
    tail = data.splitlines(keepends=True)[-lines:] if lines > 0 else []
    return Logs(name=name, path=log, lines=tuple(tail))


def follow(log: Path, interval: float = 0.2) -> Iterator[bytes]:
    """What is appended to `log` from now on, chunk by chunk, forever (a rotation starts it over)."""
    pos = log.stat().st_size if log.is_file() else 0
    while True:
        time.sleep(interval)
        size = log.stat().st_size if log.is_file() else 0
        if size < pos:  # rotated
            pos = 0
        if size > pos:
            with open(log, "rb") as file:
                file.seek(pos)
                yield file.read(size - pos)
            pos = size


_spawned: list[Any] = []  # supervisors started by a long-lived caller (the MCP server): reaped by reap()


def reap() -> None:
    """Collect exited supervisors this process started, so none lingers as a zombie."""
    _spawned[:] = [p for p in _spawned if p.poll() is None]
