"""Fork-heavy work: 5,000 `/bin/true` from a shell loop.

capsule run against strace alone with the very flags capsule uses (read from a recorded session's
`tracer_flags`), writing to a file: aim <= 1.15x. The bare loop is timed too, for context.
"""

from __future__ import annotations

from typing import Any

from tests.bench._common import (
    bare_strace_capsule,
    env_for,
    ratio_row,
    row,
    session_header,
    temp_home,
)

COUNT = 5000
QUICK_COUNT = 200


def shell(count: int) -> list[str]:
    return ["sh", "-c", f"i=0; while [ $i -lt {count} ]; do /bin/true; i=$((i+1)); done"]


def run(quick: bool = False) -> dict[str, Any]:
    count = QUICK_COUNT if quick else COUNT
    reps = 1 if quick else 3
    with temp_home() as home:
        env = env_for(home)
        flags = list(session_header(env)["tracer_flags"])
        samples, t = bare_strace_capsule(shell(count), flags, home, env, reps)
    return {
        "params": {"count": count, "reps": reps, "tracer_flags": flags},
        "samples_s": samples,
        "rows": [
            row("bare loop (median)", t["bare"], "s"),
            row("strace alone, capsule's flags (median)", t["strace"], "s"),
            row("capsule run (median)", t["capsule"], "s"),
            ratio_row("capsule / strace alone", t["capsule"], t["strace"], 1.15),
            ratio_row("strace alone / bare", t["strace"], t["bare"]),
        ],
    }
