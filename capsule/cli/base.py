"""The typer app, its exit codes and errors, and the helpers every command group shares.

Heavy modules are imported inside the commands that need them: `capsule --help` and `capsule ls` must
start fast. Errors are one line on stderr and a documented exit code (see `EXIT CODES` in the README):

    0  success                    3  no such session (or an ambiguous prefix)
    1  a check failed             4  unreadable input: malformed log/session/rules, newer format
    2  usage error                5  recording cannot work here: strace missing, ptrace denied, home unwritable,
                                     home owned by another user or writable by group/others
                                  6  an export was not delivered: -o not writable, collector refused
    `capsule run` exits with the command's own code (128+N for signal N), 125 if recording failed,
    126 if the command is not executable, 127 if it was not found.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, NoReturn, cast

import typer

from capsule.api.errors import CapsuleError, error
from capsule.cli.fast import answer

if TYPE_CHECKING:
    from rich.console import Console

    from capsule.fold.labels import RuleSet

EXIT_CHECK_FAILED = 1
EXIT_NOT_FOUND = 3
EXIT_BAD_INPUT = 4
EXIT_ENVIRONMENT = 5

# Help is plain click text: rich markup would eat `[run]` in "(overrides [run])"; errors are one line
# (see `main`), never a boxed panel. `--install-completion`/`--show-completion` are typer's.
HELP_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

app = typer.Typer(
    name="capsule",
    help="A flight recorder for AI coding agents and the commands they run.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings=HELP_SETTINGS,
)


def _version(value: bool) -> None:
    if value:
        from capsule import __version__

        print(f"capsule {__version__}")
        raise typer.Exit()


@app.callback()
def _app_options(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """A flight recorder for AI coding agents and the commands they run."""


JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object (a stable shape).")]
SessionArg = Annotated[
    str, typer.Argument(help="Session id, unique id prefix, session directory, or `latest`.")
]


# The CLI's one-line errors are the application door's error family (capsule/api/errors.py).
CliError = CapsuleError


def duration(value: str) -> float:
    """A typer `parser` for duration options: `500ms`, `90s`, `1h30m`, `2w`, or seconds."""
    from capsule.duration import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def fail(message: str, code: int) -> NoReturn:
    raise error(message, code)


def _home() -> Path:
    from capsule.api.sessions import home

    return home()


def output_width(stream: Any) -> int | None:
    """The width to render for: the terminal's (rich finds it), else $COLUMNS, else no limit.

    Output to a pipe or a file is never cut at rich's default 80 columns: `capsule ls | cat` shows
    whole commands. (rich tables size to their content, so a huge width only removes the limit.)"""
    if stream.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else 100_000


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = output_width(stream)
    file = (
        None if width is None else cast("IO[str]", TrimmedLines(stream))
    )  # duck-typed: write, flush, the rest
    # markup off: a recorded argv such as `echo "[/]"` is text, not a style tag (it raised MarkupError
    # from `ls` and `report`); what is styled is styled with Text
    return Console(file=file, stderr=stderr, highlight=False, soft_wrap=False, width=width, markup=False)


class TrimmedLines:
    """A text stream that drops the spaces ending each line: rich pads every cell to its column's width,
    so a table or a header grid sent to a file or a pipe had lines ending in runs of spaces (a diff of
    two reports, or `grep 'exit 3$'`, tripped on them). A terminal is left as rich draws it."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._held = ""  # the unfinished last line: its spaces may yet be followed by text

    def write(self, text: str) -> int:
        head, newline, self._held = (self._held + text).rpartition("\n")
        if newline:
            self._stream.write("\n".join(line.rstrip(" ") for line in head.split("\n")) + newline)
        return len(text)

    def flush(self) -> None:
        if self._held:  # a line without its end yet (a prompt): written as it is
            self._stream.write(self._held)
            self._held = ""
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: the stream's own
        return getattr(self._stream, name)


def _print_json(obj: Any) -> None:
    import orjson

    sys.stdout.buffer.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    sys.stdout.flush()


def _print_json_streaming(obj: dict[str, Any], key: str, items: Iterator[Any]) -> None:
    """Print `obj` as `_print_json` would, with `obj[key]` written from `items` in batches."""
    from capsule.report.json_stream import json_chunks

    out = sys.stdout.buffer
    for chunk in json_chunks(obj, key, items):
        out.write(chunk)
    out.flush()


def command_line(*fallback: str) -> tuple[str, ...]:
    """The user's command as they typed it (`capsule env up .`), for env and agents session headers:
    not the interpreter or module path sys.argv starts with. `fallback` (e.g. `env up PATH`) when
    this process is not that command (the MCP server starting an environment)."""
    args = sys.argv[1:]
    if fallback and args[: len(fallback[:1])] != list(fallback[:1]):
        args = list(fallback)
    return ("capsule", *args)


def _rules(packaged: tuple[str, ...] | None = None) -> RuleSet:
    from capsule.api.sessions import rules

    return rules(packaged)


def _resolve(ref: str) -> Path:
    from capsule.api.sessions import resolve

    return resolve(ref)


def main() -> None:
    """Console entry point: one clear line and an exit code for every expected failure (`answer`)."""
    # typer 0.28 vendors click (typer._click); older ones use click itself: take the classes from the
    # exception typer exports rather than naming either module.
    errors = sys.modules[typer.BadParameter.__mro__[2].__module__]

    def through_click() -> int:
        try:
            code = app(standalone_mode=False, prog_name="capsule")
        except errors.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError":  # `capsule` or `capsule env` alone: the help
                print(ctx.get_help() if ctx is not None else exc.format_message())
                return 2
            # click's usage errors (unknown command or option, a bad value): one line, exit 2, with the
            # command whose help to read. Never click's "Usage: … Try …" block or a rich panel.
            message = " ".join(exc.format_message().split())
            hint = f" (see `{ctx.command_path} --help`)" if isinstance(exc, errors.UsageError) and ctx else ""
            print(f"capsule: error: {message}{hint}", file=sys.stderr)
            return int(exc.exit_code)
        except typer.Abort:
            raise KeyboardInterrupt from None
        return code if isinstance(code, int) else 0

    code = answer(through_click)
    if code:
        sys.exit(code)
