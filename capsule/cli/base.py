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
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from capsule.api.errors import CapsuleError, error

if TYPE_CHECKING:
    from rich.console import Console

    from capsule.fold.labels import RuleSet

EXIT_CHECK_FAILED = 1
EXIT_NOT_FOUND = 3
EXIT_BAD_INPUT = 4
EXIT_ENVIRONMENT = 5

app = typer.Typer(
    name="capsule",
    help="A flight recorder for AI coding agents and the commands they run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object (a stable shape).")]
SessionArg = Annotated[
    str, typer.Argument(help="Session id, unique id prefix, session directory, or `latest`.")
]


# The CLI's one-line errors are the application door's error family (capsule/api/errors.py).
CliError = CapsuleError


def fail(message: str, code: int) -> NoReturn:
    raise error(message, code)


def _home() -> Path:
    from capsule.api.sessions import home

    return home()


def _tidy_spools() -> None:
    """Before any command: spools that no live recorder owns are recovered into their sessions (or
    removed), so an unredacted trace never outlives the recording that made it."""
    from capsule.api.sessions import tidy_spools

    tidy_spools()


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


class _Ansi:
    """Styling for `capsule run`'s one summary line, by the rules rich follows: colour only on a
    terminal and never with NO_COLOR set. Importing rich for one line cost 28 ms of every run."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.enabled = stream.isatty() and not os.environ.get("NO_COLOR")

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def red(self, text: str) -> str:
        return self._wrap("31", text)

    def bold_red(self, text: str) -> str:
        return self._wrap("1;31", text)

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def _print_json(obj: Any) -> None:
    import orjson

    sys.stdout.buffer.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    sys.stdout.flush()


def _print_json_streaming(obj: dict[str, Any], key: str, items: Iterator[Any]) -> None:
    """Print `obj` as `_print_json` would, with `obj[key]` written from `items` in batches."""
    import orjson

    option = orjson.OPT_INDENT_2
    out = sys.stdout.buffer
    keys = list(obj)
    out.write(b"{\n")
    for i, name in enumerate(keys):
        comma = b"," if i < len(keys) - 1 else b""
        out.write(b"  " + orjson.dumps(name) + b": ")
        if name != key:
            out.write(orjson.dumps(obj[name], option=option).replace(b"\n", b"\n  ") + comma + b"\n")
            continue
        out.write(b"[")
        first = True
        batch: list[bytes] = []
        for item in items:
            text = orjson.dumps(item, option=option).replace(b"\n", b"\n    ")
            batch.append((b"\n    " if first else b",\n    ") + text)
            first = False
            if len(batch) >= 1000:
                out.write(b"".join(batch))
                batch.clear()
        out.write(b"".join(batch) + (b"]" if first else b"\n  ]") + comma + b"\n")
    out.write(b"}\n")
    out.flush()


def _rules(packaged: tuple[str, ...] | None = None) -> RuleSet:
    from capsule.api.sessions import rules

    return rules(packaged)


def _resolve(ref: str) -> Path:
    from capsule.api.sessions import resolve

    return resolve(ref)


def main() -> None:
    """Console entry point: one clear line and an exit code for every expected failure."""
    try:
        _tidy_spools()
        app()
    except CliError as exc:
        print(f"capsule: error: {exc}", file=sys.stderr)
        sys.exit(exc.code)
    except KeyboardInterrupt:
        print("capsule: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # `capsule report | head`: the reader left; that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
