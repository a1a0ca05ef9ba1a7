"""Project environments: `capsule env up|down|status|ls`, `start|stop|restart|logs|ps|kill-all`.

Exit codes (capsule/cli/base.py): 1 `env up` brought up an environment where something failed (or a
start/restart did not come up), 3 no config file, no such environment or process, 4 a broken config
file, 5 the supervisor could not be started or does not answer.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from capsule.cli.base import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_ENVIRONMENT,
    EXIT_NOT_FOUND,
    HELP_SETTINGS,
    JsonOption,
    _console,
    _home,
    _print_json,
    app,
    command_line,
    duration,
    fail,
)

if TYPE_CHECKING:
    from capsule.stages.envproc import EnvSession

env_app = typer.Typer(
    rich_markup_mode=None,
    context_settings=HELP_SETTINGS,
    help="Project environments: supervised services from capsule.toml.",
    no_args_is_help=True,
)
app.add_typer(env_app, name="env")

PathArg = Annotated[Path, typer.Argument(help="The project directory or its capsule.toml / .runcept.toml.")]
EnvOption = Annotated[Path | None, typer.Option("--env", "-e", help="The project directory or config file.")]


def _config_file(path: Path) -> Path:
    from capsule.env import CONFIG_NAMES

    if path.is_file():
        return path.resolve()
    for name in CONFIG_NAMES:
        if (path / name).is_file():
            return (path / name).resolve()
    fail(f"no {' or '.join(CONFIG_NAMES)} in {path.resolve()}", EXIT_NOT_FOUND)
    return None


def _load(config: Path) -> Any:
    from capsule.env.config import ConfigError
    from capsule.stages.supervise import load_config

    try:
        return load_config(config)
    except ConfigError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{config}: {exc}", EXIT_BAD_INPUT)


def _latest_env(config: Path) -> EnvSession | None:
    from capsule.stages.envproc import env_sessions

    for env in env_sessions(_home()):
        if env.config_path == str(config):
            return env
    return None


def _live(config: Path) -> EnvSession | None:
    env = _latest_env(config)
    return env if env is not None and env.state.ended is None and env.supervisor_alive else None


def _cleanup_dead(config: str | None) -> list[str]:
    """Stop what dead supervisors left running (for one config, or all); say what was stopped."""
    from capsule.stages.envproc import open_envs, recover

    done = []
    for env in open_envs(_home(), config):
        if not env.supervisor_alive:
            stopped = recover(env)
            done.append(
                f"{env.state.project} ({env.id}): supervisor dead, stopped {', '.join(stopped) or 'nothing'}"
            )
    return done


def _touch(env: EnvSession, op: str = "status") -> None:
    from capsule.stages.envproc import ControlError, control

    if env.supervisor_alive and env.state.ended is None:
        with contextlib.suppress(ControlError):
            control(env.path, op, timeout=5)


def status_dict(env: EnvSession) -> dict[str, Any]:
    from capsule.fold.environment import with_liveness
    from capsule.stages.envproc import process_stats

    alive = env.alive()
    shown = with_liveness(env.state, alive)
    now = time.time()
    processes = []
    for name, p in env.state.processes.items():
        cpu, rss = process_stats(p.pid, p.started) if alive.get(name) else (None, None)
        processes.append(
            {
                "name": name,
                "state": shown[name],
                "pid": p.pid,
                "restarts": p.restarts,
                "health": p.health,
                "exit_code": p.exit_code,
                "signal": p.signal,
                "uptime_s": round(now - p.since, 3) if p.since and p.pid else None,
                "last_exit": p.last_exit_ts,
                "cpu_percent": cpu,
                "rss": rss,
                "error": p.error,
                "trace_session": p.trace_session,
            }
        )
    header = env.header
    return {
        "project": env.state.project,
        "config": env.config_path,
        "session": env.id,
        "active": env.state.ended is None and env.supervisor_alive,
        "deactivated": env.state.deactivated,
        "supervisor": {"pid": header.recorder_pid, "alive": env.supervisor_alive},
        "processes": processes,
    }


def _print_status(data: dict[str, Any]) -> None:
    from rich.table import Table

    console = _console()
    sup = data["supervisor"]
    if data["active"]:
        head = f"[bold]{data['project']}[/] · session {data['session']} · supervisor {sup['pid']}"
    elif not sup["alive"] and data["deactivated"] is None:
        head = f"[bold]{data['project']}[/] · session {data['session']} · [bold red]supervisor {sup['pid']} is dead[/]"
    else:
        head = f"[bold]{data['project']}[/] · session {data['session']} · down ({data['deactivated'] or 'ended'})"
    console.print(head)
    table = Table(box=None, pad_edge=False)
    for col in ("name", "state", "pid", "uptime", "restarts", "last exit", "health", "cpu %", "rss"):
        table.add_column(col)
    colors = {
        "ready": "green",
        "running": "green",
        "gave_up": "red",
        "lost": "red",
        "unhealthy": "yellow",
        "backoff": "yellow",
    }
    for p in data["processes"]:
        last = p["signal"] or (f"code {p['exit_code']}" if p["exit_code"] is not None else "")
        color = colors.get(p["state"])
        state = f"[{color}]{p['state']}[/]" if color else p["state"]
        table.add_row(
            p["name"],
            state,
            str(p["pid"] or ""),
            f"{p['uptime_s']:.0f}s" if p["uptime_s"] is not None else "",
            str(p["restarts"]),
            last,
            p["error"] or p["health"] or "",
            f"{p['cpu_percent']:.1f}" if p["cpu_percent"] is not None else "",
            f"{p['rss'] / 2**20:.1f}M" if p["rss"] is not None else "",
        )
    console.print(table)


def _json_argv(argv: tuple[str, ...]) -> str:
    import orjson

    return orjson.dumps(argv).decode()


def activate(path: Path, timeout: float = 120.0, note: Callable[[str], None] | None = None) -> EnvSession:
    """The live environment of `path`, started under a detached supervisor if it is not up.

    What dead supervisors of the same config left running is stopped first (each line to `note`).
    Fails (CliError) if the supervisor does not start or not every process is up within `timeout`."""
    import os
    import subprocess

    config = _config_file(path)
    _load(config)
    env = _live(config)
    if env is not None:
        return env
    for line in _cleanup_dead(str(config)):
        if note is not None:
            note(line)
    home = _home()
    (home / "spool").mkdir(parents=True, exist_ok=True, mode=0o700)
    read, write = os.pipe()
    err_path = home / "spool" / f"supervise-{os.getpid()}-{write}.log"
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
                _json_argv(command_line("env", "up", str(path))),
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
    outcome = _read_notify(read, timeout)
    os.close(read)
    if "session" not in outcome:
        proc.poll()
        detail = err_path.read_text(errors="replace").strip().splitlines()
        err_path.unlink(missing_ok=True)
        fail(f"the supervisor did not start: {detail[-1] if detail else 'no output'}", EXIT_ENVIRONMENT)
    err_path.unlink(missing_ok=True)
    env = _live(config) or _latest_env(config)
    assert env is not None
    if "up" not in outcome:
        fail(f"{env.state.project}: not every process was up after {timeout:g}s", EXIT_CHECK_FAILED)
    return env


_spawned: list[Any] = []  # supervisors started by a long-lived caller (the MCP server): reaped by reap()


def reap() -> None:
    """Collect exited supervisors this process started, so none lingers as a zombie."""
    _spawned[:] = [p for p in _spawned if p.poll() is None]


@env_app.command(help="Start the project's processes under a supervisor (detached unless --foreground).")
def up(
    path: PathArg = Path("."),
    foreground: Annotated[bool, typer.Option("--foreground", help="Supervise from this terminal.")] = False,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", parser=duration, metavar="DURATION", help="How long to wait for every process."
        ),
    ] = 120.0,
    as_json: JsonOption = False,
) -> None:
    if foreground:
        config = _config_file(path)
        _load(config)
        if _live(config) is None:
            for line in _cleanup_dead(str(config)):
                print(f"capsule: {line}", file=sys.stderr)
            from capsule.stages.supervise import main as supervise

            raise typer.Exit(
                supervise([str(config), "--foreground", "--command-line", _json_argv(command_line())])
            )
    env = activate(path, timeout, note=lambda line: print(f"capsule: {line}", file=sys.stderr))
    data = status_dict(env)
    if as_json:
        _print_json(data)
    else:
        _print_status(data)
    bad = [p["name"] for p in data["processes"] if p["state"] not in ("ready", "running", "exited")]
    if bad:
        print(f"capsule: error: not up: {', '.join(bad)} (see `capsule env logs NAME`)", file=sys.stderr)
        raise typer.Exit(EXIT_CHECK_FAILED)


def _read_notify(fd: int, timeout: float) -> dict[str, str]:
    import os
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


def deactivate(path: Path) -> list[str]:
    """Bring the environment of `path` down (and what dead supervisors left); say what was done."""
    from capsule.stages.envproc import ControlError, control
    from capsule.stages.processes import process_if

    config = _config_file(path)
    env = _live(config)
    done = []
    if env is not None:
        try:
            control(env.path, "down")
        except ControlError as exc:
            fail(str(exc), EXIT_ENVIRONMENT)
        deadline = time.monotonic() + 10
        while (
            process_if(env.header.recorder_pid, env.header.recorder_started) and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        done.append(f"{env.state.project}: down")
    done += _cleanup_dead(str(config))
    return done or ["nothing running"]


@env_app.command(help="Stop every process (reverse dependency order), grandchildren included.")
def down(path: PathArg = Path(".")) -> None:
    for line in deactivate(path):
        print(f"capsule: {line}")


def environment_status(path: Path) -> dict[str, Any]:
    """`env status --json` of the latest environment of `path`; counts as interaction."""
    config = _config_file(path)
    env = _latest_env(config)
    if env is None:
        fail(f"no environment for {config} yet; start one with `capsule env up`", EXIT_NOT_FOUND)
    _touch(env)
    return status_dict(env)


@env_app.command(help="Per process: state, pid, uptime, restarts, last exit, health, CPU %, RSS.")
def status(path: PathArg = Path("."), as_json: JsonOption = False) -> None:
    data = environment_status(path)
    if as_json:
        _print_json(data)
    else:
        _print_status(data)


@env_app.command("ls", help="Every environment on this machine and its state.")
def ls(as_json: JsonOption = False) -> None:
    rows = env_rows()
    if as_json:
        _print_json({"environments": rows})
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("session", "project", "state", "processes", "config"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["session"], r["project"] or "", r["state"], str(r["processes"]), r["config"] or "")
    _console().print(table)


def env_rows() -> list[dict[str, Any]]:
    """`env ls --json`'s rows: every environment on this machine, newest first."""
    from capsule.stages.envproc import env_sessions

    rows: list[dict[str, Any]] = []
    for env in env_sessions(_home()):
        active = env.state.ended is None and env.supervisor_alive
        state = "up" if active else ("supervisor dead" if env.state.ended is None else "down")
        rows.append(
            {
                "session": env.id,
                "project": env.state.project,
                "config": env.config_path,
                "state": state,
                "supervisor": {"pid": env.header.recorder_pid, "alive": env.supervisor_alive},
                "processes": len(env.state.processes),
                "started": env.header.ts,
            }
        )
    return rows


def _env_with(name: str, env_path: Path | None) -> EnvSession:
    from capsule.stages.envproc import open_envs

    if env_path is not None:
        config = _config_file(env_path)
        env = _live(config)
        if env is None:
            fail(f"no running environment for {config}; start it with `capsule env up`", EXIT_NOT_FOUND)
        return env
    live = [e for e in open_envs(_home()) if e.supervisor_alive and name in e.state.processes]
    if not live:
        fail(f"no running environment has a process named {name!r}", EXIT_NOT_FOUND)
    if len(live) > 1:
        fail(f"{name!r} is in {len(live)} environments: say which with --env PATH", 2)
    return live[0]


def _control_one(op: str, name: str, env_path: Path | None) -> None:
    print(f"capsule: {control_process(op, name, env_path)}")


def control_process(op: str, name: str, env_path: Path | None) -> str:
    """start, stop or restart one process of a running environment; returns what was done."""
    from capsule.stages.envproc import ControlError, control

    env = _env_with(name, env_path)
    if name not in env.state.processes:
        fail(f"no process named {name!r} in {env.state.project}", EXIT_NOT_FOUND)
    try:
        reply = control(env.path, op, name)
    except ControlError as exc:
        fail(str(exc), EXIT_ENVIRONMENT)
    if not reply.get("ok"):
        fail(str(reply.get("error")), EXIT_NOT_FOUND)
    if op != "stop" and not reply.get("up"):
        fail(f"{name} did not come up (see `capsule env logs {name}`)", EXIT_CHECK_FAILED)
    return f"{env.state.project}/{name}: {op} done"


@env_app.command(help="Start a stopped process of a running environment.")
@app.command(
    help="Start a stopped process of a running environment.", hidden=True
)  # the old top-level spelling, kept for a release
def start(name: str, env: EnvOption = None) -> None:
    _control_one("start", name, env)


@env_app.command(help="Stop one process of a running environment (it stays stopped).")
@app.command(
    help="Stop one process of a running environment (it stays stopped).", hidden=True
)  # the old top-level spelling, kept for a release
def stop(name: str, env: EnvOption = None) -> None:
    _control_one("stop", name, env)


@env_app.command(help="Stop and start one process of a running environment.")
@app.command(
    help="Stop and start one process of a running environment.", hidden=True
)  # the old top-level spelling, kept for a release
def restart(name: str, env: EnvOption = None) -> None:
    _control_one("restart", name, env)


def read_logs(name: str, env_path: Path | None, lines: int) -> tuple[Path, list[bytes]]:
    """The last `lines` lines of a process's log (and the log's path); counts as interaction."""
    from capsule.stages.envproc import env_sessions

    if env_path is not None:
        found = _latest_env(_config_file(env_path))
    else:
        found = next((e for e in env_sessions(_home()) if name in e.state.processes), None)
    if found is None or name not in found.state.processes:
        fail(f"no environment has a process named {name!r}", EXIT_NOT_FOUND)
    _touch(found)
    log = found.path / "logs" / f"{name}.log"
    old = log.with_name(log.name + ".1")
    data = (old.read_bytes() if old.is_file() else b"") + (log.read_bytes() if log.is_file() else b"")
    return log, data.splitlines(keepends=True)[-lines:] if lines > 0 else []


@env_app.command(help="A process's stdout and stderr, with timestamps and stream.")
@app.command(
    help="A process's stdout and stderr, with timestamps and stream.", hidden=True
)  # the old top-level spelling, kept for a release
def logs(
    name: str,
    env: EnvOption = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    lines: Annotated[int, typer.Option("-n", "--lines", help="How many last lines.")] = 50,
) -> None:
    log, tail = read_logs(name, env, lines)
    out = sys.stdout.buffer
    out.write(b"".join(tail))
    out.flush()
    if not follow:
        return
    pos = log.stat().st_size if log.is_file() else 0
    while True:
        time.sleep(0.2)
        size = log.stat().st_size if log.is_file() else 0
        if size < pos:  # rotated
            pos = 0
        if size > pos:
            with open(log, "rb") as file:
                file.seek(pos)
                out.write(file.read(size - pos))
                out.flush()
            pos = size


@env_app.command(help="Every managed process of every environment.")
@app.command(
    help="Every managed process of every environment.", hidden=True
)  # the old top-level spelling, kept for a release
def ps(as_json: JsonOption = False) -> None:
    rows = ps_rows()
    if as_json:
        _print_json({"processes": rows})
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("project", "name", "state", "pid", "cpu %", "rss"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["project"] or "",
            r["name"],
            r["state"],
            str(r["pid"] or ""),
            f"{r['cpu_percent']:.1f}" if r["cpu_percent"] is not None else "",
            f"{r['rss'] / 2**20:.1f}M" if r["rss"] is not None else "",
        )
    _console().print(table)


def ps_rows() -> list[dict[str, Any]]:
    """`ps --json`'s rows: every managed process of every open environment."""
    from capsule.stages.envproc import open_envs

    rows = []
    for env in open_envs(_home()):
        data = status_dict(env)
        for p in data["processes"]:
            rows.append(  # noqa: PERF401 (one dict per row reads better than a nested comprehension)
                {
                    "project": data["project"],
                    "session": data["session"],
                    "supervisor_alive": env.supervisor_alive,
                    **p,
                }
            )
    return rows


@env_app.command(
    "kill-all", help="Bring down every environment on this machine, orphans of dead supervisors included."
)
@app.command("kill-all", hidden=True, help="Bring down every environment (now `capsule env kill-all`).")
def kill_all() -> None:
    from capsule.stages.envproc import ControlError, control, open_envs
    from capsule.stages.processes import process_if

    for env in open_envs(_home()):
        if env.supervisor_alive:
            try:
                control(env.path, "down", timeout=60)
            except ControlError as exc:
                print(f"capsule: {exc}", file=sys.stderr)
            deadline = time.monotonic() + 10
            while (
                process_if(env.header.recorder_pid, env.header.recorder_started)
                and time.monotonic() < deadline
            ):
                time.sleep(0.02)
            print(f"capsule: {env.state.project} ({env.id}): down")
    for line in _cleanup_dead(None):
        print(f"capsule: {line}")
