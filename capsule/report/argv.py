"""argv as a person reads it: each argument in the quotes one would type, control characters shown.

Plain string work, no rich: the text report, `agents run`'s progress lines and the agents report share it.
"""

from __future__ import annotations

import shlex

ARGV_WIDTH = 72

# Control characters in argv are shown, not obeyed: a terminal would drop, expand or act on them.
_VISIBLE = {c: f"\\x{c:02x}" for c in (*range(32), 127)} | {ord("\n"): "⏎", ord("\t"): "\\t"}


def quote_arg(arg: str) -> str:
    """One argument as a shell would read it, in the quotes a person would write: `sh -c "echo 'a'"`
    rather than shlex's `sh -c 'echo '"'"'a'"'"''` (double quotes only where nothing in them expands)."""
    quoted = shlex.quote(arg)
    if quoted == arg or "'" not in arg or any(c in arg for c in '"$`\\!'):
        return quoted
    return f'"{arg}"'


def short_argv(argv: tuple[str, ...] | list[str] | None, width: int = ARGV_WIDTH) -> str:
    """argv as a shell would read it, the program as its basename, cut to `width` characters."""
    if not argv:
        return "?"
    program = argv[0].rsplit("/", 1)[-1]  # (fold.labels' basename: not imported, for `capsule ls`)
    text = " ".join([program or argv[0], *(quote_arg(a) for a in argv[1:])])
    text = visible(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def full_argv(argv: tuple[str, ...] | list[str]) -> str:
    """The whole argv as a shell would read it, the program as given (what a refusal names)."""
    return visible(" ".join(quote_arg(a) for a in argv))


def visible(text: str) -> str:
    """`text` with its control characters shown (`\\x1b`), never sent to a terminal as they are."""
    return text.translate(_VISIBLE)
