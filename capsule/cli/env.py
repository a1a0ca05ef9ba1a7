"""Project environments: `capsule env up|down|status|ls|config`, `start|stop|restart|logs|ps|kill-all`.

Exit codes (capsule/api/errors.py): 1 `env up` brought up an environment where something failed (or a
start/restart did not come up), 3 no config file, no such environment or process, 4 a broken config
file, 5 the supervisor could not be started or does not answer. The work is `capsule.api.environments`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from capsule.cli.base import (
    EXIT_CHECK_FAILED,
    HELP_SETTINGS,
    JsonOption,
    _console,
    _print_json,
    app,
    command_line,
    duration,
    fail,
)
from capsule.cli.fast import Ansi

if TYPE_CHECKING:
    from capsule.api.environments import EnvironmentStatus, Op

env_app = typer.Typer(
    rich_markup_mode=None,
    context_settings=HELP_SETTINGS,
    help="Project environments: supervised services from capsule.toml.",
    no_args_is_help=True,
)
app.add_typer(env_app, name="env")

PathArg = Annotated[Path, typer.Argument(help="The project directory or its capsule.toml / .runcept.toml.")]
EnvOption = Annotated[Path | None, typer.Option("--env", "-e", help="The project directory or config file.")]


def _note(line: str) -> None:
    print(f"capsule: {line}", file=sys.stderr)


def _print_status(status: EnvironmentStatus) -> None:
    from capsule.api.records import plain
    from capsule.report.envstatus import render_status

    sys.stdout.write(render_status(plain(status), color=Ansi(sys.stdout).enabled))
    sys.stdout.flush()


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
    from capsule.api import environments

    if foreground:
        code = environments.up_foreground(path, note=_note, argv=command_line())
        if code is not None:
            raise typer.Exit(code)
    status = environments.up(path, timeout, note=_note, argv=command_line())
    if status.reloaded is not None:
        r = status.reloaded
        for what, names in (("added", r.added), ("removed", r.removed), ("restarted", r.changed)):
            if names:
                _note(f"config changed: {what} {', '.join(names)}")
        if r.unchanged:
            _note(f"unchanged (still running): {', '.join(r.unchanged)}")
    if as_json:
        from capsule.api.records import plain

        _print_json(plain(status))
    else:
        _print_status(status)
    if status.not_up:
        print(
            f"capsule: error: not up: {', '.join(status.not_up)} (see `capsule env logs NAME`)",
            file=sys.stderr,
        )
        raise typer.Exit(EXIT_CHECK_FAILED)


@env_app.command(help="Stop every process (reverse dependency order), grandchildren included.")
def down(path: PathArg = Path(".")) -> None:
    from capsule.api import environments

    for line in environments.down(path):
        print(f"capsule: {line}")


@env_app.command(help="Per process: state, pid, uptime, restarts, last exit, health, CPU %, RSS.")
def status(path: PathArg = Path("."), as_json: JsonOption = False) -> None:
    from capsule.api import environments
    from capsule.api.records import plain

    found = environments.status(path)
    if as_json:
        _print_json(plain(found))
    else:
        _print_status(found)


@env_app.command("ls", help="Every environment on this machine (its latest session) and its state.")
def ls(
    name: Annotated[str | None, typer.Argument(help="Only projects of this name (a glob: 'web-*').")] = None,
    all_sessions: Annotated[
        bool, typer.Option("--all", "-a", help="Every session of every environment, not the latest.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    from capsule.api import environments
    from capsule.api.records import plain

    rows = plain(environments.ls(all=all_sessions, name=name))
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


def _control_one(op: Op, name: str, env_path: Path | None) -> None:
    from capsule.api import environments

    print(f"capsule: {environments.control(op, name, env_path)}")


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


@env_app.command(help="A process's stdout and stderr, with timestamps and stream.")
@app.command(
    help="A process's stdout and stderr, with timestamps and stream.", hidden=True
)  # the old top-level spelling, kept for a release
def logs(
    name: Annotated[str, typer.Argument(help="The process; or the project, then the process.")],
    process: Annotated[
        str | None, typer.Argument(help="The process, after the project.", show_default=False)
    ] = None,
    env: EnvOption = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    lines: Annotated[int, typer.Option("-n", "--lines", help="How many last lines.")] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line: time, process, stream, text.")
    ] = False,
) -> None:
    from capsule.api import environments

    if process is not None:  # `env logs DIR NAME`, as `env up DIR` and `env status DIR` take it
        if env is not None:
            fail(f"give the project once: {name!r} or --env {env}", 2)
        env, name = Path(name), process
    found = environments.logs(name, env, lines)
    out = sys.stdout.buffer

    def write(data: bytes) -> None:
        if as_json:
            import orjson

            from capsule.api.records import plain

            data = b"".join(
                orjson.dumps(plain(environments.log_line(name, line))) + b"\n" for line in data.splitlines()
            )
        out.write(data)
        out.flush()

    write(b"".join(found.lines))
    if not follow:
        return
    pending = b""
    for chunk in environments.follow(found.path, start=(found.inode, found.offset)):
        *whole, pending = (pending + chunk).split(b"\n")
        if whole:
            write(b"\n".join(whole) + b"\n")


@env_app.command(
    help="The project config as it runs (global defaults merged under it) and where each value came from."
)
def config(path: PathArg = Path("."), as_json: JsonOption = False) -> None:
    from capsule.api import environments
    from capsule.api.records import plain

    merged = environments.merged_config(path)
    if as_json:
        _print_json(plain(merged))
        return
    print(f"# {merged.config} (global defaults: {merged.global_config})")
    width = max((len(v.key) for v in merged.values), default=0)
    for v in merged.values:
        import json

        print(f"{v.key.ljust(width)} = {json.dumps(v.value, ensure_ascii=False, default=str)}  # {v.origin}")


@env_app.command(help="Every managed process of every environment.")
@app.command(
    help="Every managed process of every environment.", hidden=True
)  # the old top-level spelling, kept for a release
def ps(as_json: JsonOption = False) -> None:
    from capsule.api import environments
    from capsule.api.records import plain

    rows = plain(environments.ps())
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


@env_app.command(
    "kill-all", help="Bring down every environment on this machine, orphans of dead supervisors included."
)
@app.command("kill-all", hidden=True, help="Bring down every environment (now `capsule env kill-all`).")
def kill_all() -> None:
    from capsule.api import environments

    done = environments.kill_all()
    for line in done.errors:
        print(f"capsule: {line}", file=sys.stderr)
    for line in done.done:
        print(f"capsule: {line}")
