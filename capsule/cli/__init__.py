"""The front door: the typer app, a peer of the MCP server over `capsule.api`: arguments in, rendering out.

`base` holds the app, exit codes and shared helpers; each command group registers itself on it:
`record` (run, report, ls, import, replay, doctor), `export` (perfetto, otlp, jsonl, parquet), `retention`
(prune, archive), `env` (project environments), `agents` (batches of
agent tasks). Heavy modules are imported inside the commands that need them.

Registration is lazy: `capsule run …` imports only the module that registers `run` (typer then builds
one click command, not thirty-five); `capsule --help`, an unknown name or `capsule.cli.app` load them all.
`COMMANDS` names the module of every top-level command; tests/cli/test_cli_lazy.py checks it against
what the modules really register, so a command added to a module without a line here still works (the
fallback loads everything) and the test says which line is missing.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~5 ms of every command)
if TYPE_CHECKING:
    from typing import Any

if TYPE_CHECKING:
    import typer

# top-level command or group name -> the capsule.cli module that registers it
COMMANDS: dict[str, str] = {
    "run": "record",
    "report": "record",
    "ls": "record",
    "import": "record",
    "replay": "record",
    "doctor": "record",
    "export": "export",
    "prune": "retention",
    "archive": "retention",
    "mcp": "mcp",
    "env": "env",
    "start": "env",
    "stop": "env",
    "restart": "env",
    "logs": "env",
    "ps": "env",
    "kill-all": "env",
    "agents": "agents",
}

MODULES = ("agents", "env", "export", "mcp", "record", "retention")


def load(module: str | None = None) -> None:
    """Register the commands of one module (None: of every module) on `capsule.cli.base.app`."""
    # Static imports, one per module, so the layering check sees what the CLI loads.
    match module:
        case "record":
            from capsule.cli import record
        case "export":
            from capsule.cli import export
        case "retention":
            from capsule.cli import retention
        case "mcp":
            from capsule.cli import mcp
        case "env":
            from capsule.cli import env
        case "agents":
            from capsule.cli import agents
        case _:
            from capsule.cli import agents, env, export, mcp, record, retention  # noqa: F401


def command_of(argv: list[str]) -> str | None:
    """The module registering the command `argv` names (the first word that is not an option), or None
    when it names none we know (`--help`, `--version`, a typo: load everything, click explains)."""
    for word in argv:
        if word.startswith("-"):
            return None  # a global option comes first: let the whole app handle it
        return COMMANDS.get(word)
    return None


def main() -> None:
    """Console entry point (`capsule`): register what the command line needs, then run the app."""
    import gc
    import sys

    try:
        _main(sys.argv[1:])
    finally:
        # The interpreter's exit would otherwise run the collector over every object still alive
        # (~40 ms after `capsule run`, whose start built ~300,000): frozen ones it skips.
        gc.freeze()


def _main(argv: list[str]) -> None:
    import gc
    import sys

    if argv[:1] == ["import"]:
        from capsule.api.importfast import prestart
        from capsule.cli import fast

        prestart(argv[1:])  # a large log's second process starts up (and works) while this one does
        code = fast.import_(argv[1:])
        if code is not None:
            sys.exit(code)
    if argv[:1] == ["report"] and "--json" in argv:
        from capsule.cli import fast

        code = fast.report_json(argv[1:])
        if code is not None:
            sys.exit(code)
    if argv[:2] == ["env", "status"] or argv[:1] == ["run"]:
        from capsule.cli import fast

        code = fast.env_status(argv[2:]) if argv[0] == "env" else fast.run(argv[1:])
        if code is not None:
            sys.exit(code)
    # The CLI's modules load with the collector off: everything they build lives to the exit.
    gc.disable()
    load(command_of(argv))
    from capsule.cli.base import main as run_main

    gc.freeze()
    gc.enable()
    run_main()


def __getattr__(name: str) -> Any:
    if name == "app":
        load()
        from capsule.cli.base import app

        typed: typer.Typer = app
        return typed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["COMMANDS", "app", "command_of", "load", "main"]
