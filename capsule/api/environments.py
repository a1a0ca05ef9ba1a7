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
from capsule.stages.envstatus import (
    EnvironmentStatus,
    ProcessStatus,
    Reload,
    Supervisor,
    status_of,
)

if TYPE_CHECKING:
    from capsule.env.config import ProjectConfig
    from capsule.env.merge import Merged
    from capsule.stages.envproc import EnvSession

Note = Callable[[str], None]
Op = Literal["start", "stop", "restart"]


# --- records ------------------------------------------------------------------------------------


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
    inode: int | None = None  # the log file those lines were read from, and where they ended:
    offset: int = 0  # `follow` goes on from there (no line lost or repeated in between)


@attrs.frozen(kw_only=True)
class KillAll:
    """What `kill-all` did, one line each, and the supervisors that did not answer."""

    done: tuple[str, ...]
    errors: tuple[str, ...]


# --- finding environments ---------------------------------------------------------------------


def config_file(path: Path) -> Path:
    """The config file of a project directory (or the file itself), resolved: the nearest `capsule.toml`
    or `.runcept.toml` in the directory or above it, as git finds `.git`."""
    from capsule.stages.envctl import find_config

    try:
        return find_config(path)
    except FileNotFoundError as exc:
        raise NotFound(str(exc)) from None


def _read(config: Path) -> tuple[Merged, ProjectConfig]:
    from capsule.env.config import ConfigError
    from capsule.settings import SettingsError
    from capsule.stages.envproc import read_project

    try:
        return read_project(config, home())
    except (ConfigError, SettingsError) as exc:
        raise BadInput(str(exc)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{config}: {exc}") from exc


def load_config(config: Path) -> ProjectConfig:
    """The project config of `config` with the global defaults merged under it."""
    return _read(config)[1]


@attrs.frozen(kw_only=True)
class ConfigValue:
    key: str
    value: Any
    origin: str = attrs.field(metadata={"doc": "The file it came from, or 'built-in default'."})


@attrs.frozen(kw_only=True)
class MergedConfig:
    """`capsule env config --json`: the project config as it runs, and where each value came from."""

    config: str
    global_config: str
    text: str
    values: tuple[ConfigValue, ...]


def merged_config(path: Path) -> MergedConfig:
    """The config of `path` (found upward) with the global defaults under it, value by value."""
    from capsule.api.settings import path as settings_path

    config = config_file(path)
    merged, _ = _read(config)
    return MergedConfig(
        config=str(config),
        global_config=str(settings_path()),
        text=merged.text,
        values=tuple(ConfigValue(key=k, value=v, origin=o) for k, v, o in merged.origins),
    )


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
    from capsule.stages.envctl import ControlError, control

    if env.supervisor_alive and env.state.ended is None:
        with contextlib.suppress(ControlError):
            control(env.path, op, timeout=5)


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
    merged, loaded = _read(config)
    with _config_lock(config):
        env = _live(config)
        if env is not None:
            return _reload(env, config, merged.text, timeout)
        _check_policy(loaded)
        for line in _cleanup_dead(str(config)):
            if note is not None:
                note(line)
        _start_detached(config, timeout, argv)
    return _caught_up(config)


def _caught_up(config: Path, patience_s: float = 2.0) -> EnvironmentStatus:
    """The status once the session says what became of every process whose pid is gone. A process can
    exit between the supervisor's answer and this read: the fold still says it runs, and the status
    would call it `exited`, which reads as done — a crash loop between two runs would look up. Re-read
    (the supervisor writes the exit within milliseconds) until nothing is in that state, or
    `patience_s`."""
    deadline = time.monotonic() + patience_s
    while True:
        env = _live(config) or _latest(config)
        assert env is not None  # the supervisor announced its session
        status = status_of(env)
        pending = [
            p.name
            for p in status.processes
            if p.state == "exited" and env.state.processes[p.name].state != "exited"
        ]
        if not pending or not env.supervisor_alive or time.monotonic() > deadline:
            return status
        time.sleep(0.02)  # polling the session for the supervisor's record of those exits


def _reload(env: EnvSession, config: Path, text: str, timeout: float) -> EnvironmentStatus:
    """`env up` of a running environment: hand it the config as it is now; wait for what changed."""
    from capsule.stages.envctl import ControlError
    from capsule.stages.envctl import control as request

    try:
        reply = request(env.path, "reload", extra={"config": text})
    except ControlError as exc:
        raise Unavailable(str(exc)) from exc
    if not reply.get("ok"):
        raise BadInput(str(reply.get("error")))
    changes = reply.get("changes") or {}
    if not any(changes.values()):
        return status_of(env)
    touched = {*changes.get("added", ()), *changes.get("changed", ())}
    deadline = time.monotonic() + timeout
    while True:
        now = _live(config) or env
        procs = now.state.processes
        if all(_removed(procs.get(n)) for n in changes.get("removed", ())) and all(
            procs[n].stopping is None and not procs[n].pending_start and procs[n].state != "starting"
            for n in procs
            if n in touched or procs[n].stop_reason == "reload"
        ):
            break
        if time.monotonic() > deadline or not now.supervisor_alive:
            break
        time.sleep(0.05)
    status = status_of(now)
    # A removed process can stay in the fold, stopped, until its leftovers are cleared: it is no longer
    # the environment's, so not "not up" (1 CI run in ~6 failed `env up` on it: "not up: celery").
    gone = set(changes.get("removed", ()))
    status = attrs.evolve(status, processes=tuple(p for p in status.processes if p.name not in gone))
    names = [p.name for p in status.processes]
    reload = Reload(
        added=tuple(changes.get("added", ())),
        removed=tuple(changes.get("removed", ())),
        changed=tuple(changes.get("changed", ())),
        unchanged=tuple(n for n in names if n not in touched and n not in changes.get("removed", ())),
    )
    return attrs.evolve(status, reloaded=reload)


def _removed(p: Any) -> bool:
    """A process the reload removed is done with: gone from the fold, or stopped for good (the fold keeps
    one whose tree outlived the stop until its leftovers are cleared)."""
    return p is None or (p.stopping is None and p.state in ("stopped", "exited", "gave_up"))


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
                "capsule.api.supervisor",  # the supervisor, then the shipping of its closed session
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
    from capsule.stages.envctl import ControlError, control

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
    from capsule.stages.envctl import ControlError, control
    from capsule.stages.envproc import open_envs

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
    return status_of(env)


def ls(all: bool = False, name: str | None = None) -> tuple[EnvironmentRow, ...]:
    """The environments on this machine, newest first: one row each (its latest session), or every
    session with `all`; `name` keeps the projects it matches (a name or a glob such as `web-*`)."""
    from fnmatch import fnmatchcase

    from capsule.stages.envproc import env_sessions

    rows = []
    seen: set[str] = set()
    for env in env_sessions(home()):
        key = env.config_path or f"{env.state.project}:{env.id}"
        if not all and key in seen:
            continue
        seen.add(key)
        if name is not None and not fnmatchcase(env.state.project or "", name):
            continue
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
        data = status_of(env)
        rows.extend(
            ManagedProcess(
                project=data.project, session=data.session, supervisor_alive=env.supervisor_alive,
                **attrs.asdict(p, recurse=False),
            )
            for p in data.processes
        )  # fmt: skip
    return tuple(rows)


def touch_all() -> None:
    """Tell every live supervisor someone is using it (an MCP call counts for `inactivity_timeout`)."""
    from capsule.stages.envproc import open_envs

    for env in open_envs(home()):
        _touch(env, "touch")


# --- one process --------------------------------------------------------------------------------


def process_status(name: str, env_path: Path | None = None) -> ManagedProcess:
    """One process of an open environment (the only one of that name, or the one of `env_path`)."""
    from capsule.stages.envproc import open_envs

    if env_path is not None:
        config = config_file(env_path)
        found = _latest(config)
        envs = [found] if found is not None else []
    else:
        envs = [e for e in open_envs(home()) if name in e.state.processes]
    envs = [e for e in envs if name in e.state.processes]
    if not envs:
        raise NotFound(f"no environment has a process named {name!r}")
    if len(envs) > 1:
        raise UsageError(f"{name!r} is in {len(envs)} environments: say which with --env PATH")
    env = envs[0]
    _touch(env)
    data = status_of(env)
    p = next(p for p in data.processes if p.name == name)
    return ManagedProcess(
        project=data.project, session=data.session, supervisor_alive=env.supervisor_alive,
        **attrs.asdict(p, recurse=False),
    )  # fmt: skip


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
    from capsule.stages.envctl import ControlError
    from capsule.stages.envctl import control as request

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
    inode, data = None, b""
    current = _open_log(log)
    if current is not None:
        with current:
            inode, data = os.fstat(current.fileno()).st_ino, current.read()
    offset = len(data)
    old = log.with_name(log.name + ".1")
    with contextlib.suppress(FileNotFoundError):
        if old.stat().st_ino != inode:  # (rotated since: then it is the file just read)
            data = old.read_bytes() + data
    tail = data.splitlines(keepends=True)[-lines:] if lines > 0 else []
    return Logs(name=name, path=log, lines=tuple(tail), inode=inode, offset=offset)


def follow(log: Path, interval: float = 0.2, start: tuple[int | None, int] | None = None) -> Iterator[bytes]:
    """What is appended to `log` from `start` (an inode and offset, as `logs` returns; else from now),
    chunk by chunk, forever. Followed by inode like `tail -F`: when the log is rotated the rest of the
    old file is read to its end, then the one rotated in between if there was one, then the new one from
    its start, so no line is lost across rotations."""
    rotated = log.with_name(log.name + ".1")
    current = None
    if start is not None and start[0] is not None:
        for candidate in (log, rotated):
            file = _open_log(candidate)
            if file is not None and os.fstat(file.fileno()).st_ino == start[0]:
                file.seek(start[1])
                current = file
                break
            if file is not None:
                file.close()
    if current is None:
        current = _open_log(log)
        if current is not None and start is None:
            current.seek(0, os.SEEK_END)
    try:
        while True:
            if current is not None:
                chunk = current.read()
                if chunk:
                    yield chunk
            inode = _inode(log)
            if current is None or (inode is not None and inode != os.fstat(current.fileno()).st_ino):
                was = None
                if current is not None:
                    rest = current.read()  # what was written before the rename
                    if rest:
                        yield rest
                    was = os.fstat(current.fileno()).st_ino
                    current.close()
                between = _open_log(rotated) if was is not None else None
                if between is not None:
                    with between:  # rotated twice since the last look: the middle file, whole
                        if os.fstat(between.fileno()).st_ino not in (was, inode):
                            chunk = between.read()
                            if chunk:
                                yield chunk
                current = _open_log(log)
                if current is not None:
                    continue  # the new file: read it at once
            elif current.tell() > os.fstat(current.fileno()).st_size:  # truncated in place
                current.seek(0)
            time.sleep(interval)
    finally:
        if current is not None:
            current.close()


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _open_log(log: Path) -> Any:
    try:
        return open(log, "rb")
    except FileNotFoundError:
        return None


@attrs.frozen(kw_only=True)
class LogLine:
    """One line of `env logs --json`."""

    time: str
    process: str
    stream: str = attrs.field(metadata={"doc": "stdout, stderr or capsule (the supervisor's own)."})
    text: str


def log_line(process: str, line: bytes) -> LogLine:
    """A log line (`<time> <stream> <text>`) as its parts; text decoded, undecodable bytes replaced."""
    stamp, _, rest = line.rstrip(b"\r\n").partition(b" ")
    stream, _, text = rest.partition(b" ")
    return LogLine(
        time=stamp.decode(errors="replace"),
        process=process,
        stream=stream.decode(errors="replace"),
        text=text.decode(errors="replace"),
    )


_spawned: list[Any] = []  # supervisors started by a long-lived caller (the MCP server): reaped by reap()


def reap() -> None:
    """Collect exited supervisors this process started, so none lingers as a zombie."""
    _spawned[:] = [p for p in _spawned if p.poll() is None]


__all__ = [
    "ConfigValue",
    "EnvironmentRow",
    "EnvironmentStatus",
    "KillAll",
    "LogLine",
    "Logs",
    "ManagedProcess",
    "MergedConfig",
    "Note",
    "Op",
    "ProcessStatus",
    "Reload",
    "Supervisor",
    "config_file",
    "control",
    "down",
    "follow",
    "kill_all",
    "load_config",
    "log_line",
    "logs",
    "ls",
    "merged_config",
    "process_status",
    "ps",
    "reap",
    "restart",
    "start",
    "status",
    "stop",
    "touch_all",
    "up",
    "up_foreground",
]
