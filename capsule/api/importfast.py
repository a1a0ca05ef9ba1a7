"""`capsule import`'s common forms, before the CLI loads anything else (standard library only): the
arguments read as typer would read them, and the second process of a split import (stages/import_part.py)
started at once, so that it starts up, and gets to work, while the importer starts up itself."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# option spelling -> (keyword of import's body, takes a value)
IMPORT_OPTIONS = {
    "--name": ("name", True),
    "-n": ("name", True),
    "--level": ("level", True),
    "-l": ("level", True),
    "--no-redact": ("no_redact", False),
}


def parse_import(args: list[str]) -> tuple[str, dict[str, Any]] | None:
    """`capsule import ARGS` as typer would parse it: LOG and the options of IMPORT_OPTIONS (a value after
    a space, or after `=` for a long one), in any order. None for any other form (typer explains it):
    help, an unknown option, a missing, empty or dash-led value, no LOG or more than one, `--`."""
    options: dict[str, Any] = {}
    found: list[str] = []
    words = iter(args)
    for word in words:
        if not word.startswith("-") or word == "-":
            found.append(word)
            continue
        read = option_value(word, IMPORT_OPTIONS, lambda: next(words, None))
        if read is None:
            return None
        options[read[0]] = read[1]
    if len(found) != 1 or not found[0]:
        return None
    return found[0], options


def option_value(
    word: str, table: dict[str, tuple[str, bool]], following: Callable[[], str | None]
) -> tuple[str, Any] | None:
    """One option `word` as typer reads it, by `table` (spelling -> (keyword, takes a value)):
    (keyword, True) for a flag, (keyword, value) for an option, its value after `=` (long options only)
    or the word `following()` gives (None: no word left). None for a form left to typer: an unknown
    option, `=` where it does not belong, a missing, empty or dash-led value."""
    spelling, equals, value = word.partition("=")
    known = table.get(spelling)
    if known is None or (equals and not (known[1] and spelling.startswith("--"))):
        return None
    keyword, takes_value = known
    if not takes_value:
        return keyword, True
    if not equals:
        value = following() or ""
    if not value or value.startswith("-"):
        return None
    return keyword, value


def prestart(args: list[str]) -> None:
    """Start the second process for `capsule import ARGS` if its log will be split (or do nothing)."""
    parsed = parse_import(args)
    if parsed is None:
        return
    from capsule.stages import import_part
    from capsule.stages.home import RUNS, check_home, home_path

    log, options = parsed
    home = home_path()
    if check_home(home) is None:  # an unsafe home is refused by the import itself, with its reason
        redact = not options.get("no_redact", False)
        import_part.prestart(
            log, home, os.path.join(home, RUNS), redact=redact, level=options.get("level", "process")
        )
