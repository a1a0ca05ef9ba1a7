"""Commands answered before typer is imported, when their common form allows it.

`capsule env status [PATH] [--json]` of a running environment is read by scripts and dashboards in a
loop; through typer, rich and the session's fold it took ~40x `python -c pass`. Any other form (help,
another option, no running supervisor) returns None and the ordinary command runs, with its checks and
errors, so the two paths never differ in what they print.
"""

from __future__ import annotations

import os
import sys


def env_status(args: list[str]) -> int | None:
    """Print `env status`'s output from the live supervisor and return 0, or None to take the slow path."""
    words = [a for a in args if a != "--json"]
    if len(words) > 1 or any(w.startswith("-") for w in words):
        return None
    from capsule.api.envfast import live_status

    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    out = live_status(words[0] if words else ".", "json" if "--json" in args else "text", color)
    if out is None:
        return None
    sys.stdout.write(out)
    sys.stdout.flush()
    return 0
