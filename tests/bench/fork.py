"""Fork-heavy work: 5,000 `/bin/true` from a shell loop.

capsule run against strace alone with the very flags capsule uses (read from a recorded session's
`tracer_flags`), writing to a file: aim <= 1.15x. The bare loop is timed too, for context. Capsule's own
CPU: (CPU of `capsule run` and its waited-for descendants) minus (CPU of strace alone and the loop), per
1,000 trace lines of the session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from tests.bench._common import (
    CAPSULE,
    STRACE,
    env_for,
    median,
    ratio_row,
    row,
    run_usage,
    session_header,
    temp_home,
)

COUNT = 5000
QUICK_COUNT = 200


def shell(count: int) -> list[str]:
    return ["sh", "-c", f"i=0; while [ $i -lt {count} ]; do /bin/true; i=$((i+1)); done"]


def trace_lines(home: Path) -> int:
    """The trace lines of the newest session (its session.ended `lines`)."""
    newest = sorted((home / "runs").iterdir())[-1]
    last = (newest / "events.jsonl").read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return int(orjson.loads(last).get("lines", 0))


def run(quick: bool = False) -> dict[str, Any]:
    count = QUICK_COUNT if quick else COUNT
    reps = 1 if quick else 3
    work = shell(count)
    with temp_home() as home:
        env = env_for(home)
        flags = list(session_header(env)["tracer_flags"])
        cmds = {
            "bare": work,
            "strace": [STRACE, *flags, "-o", str(home / "s.strace"), "--", *work],
            "capsule": [CAPSULE, "run", "--", *work],
        }
        wall: dict[str, list[float]] = {name: [] for name in cmds}
        cpu: dict[str, list[float]] = {name: [] for name in cmds}
        lines: list[int] = []
        for _ in range(reps):  # interleaved: bare, strace, capsule, bare, …
            for name, cmd in cmds.items():
                w, _rss, c = run_usage(cmd, env)
                wall[name].append(w)
                cpu[name].append(c)
                if name == "capsule":
                    lines.append(trace_lines(home))
    t = {name: median(v) for name, v in wall.items()}
    own_cpu = median([c - s for c, s in zip(cpu["capsule"], cpu["strace"], strict=True)])
    per_k = own_cpu / median(lines) * 1000 if lines and median(lines) else float("nan")
    return {
        "params": {"count": count, "reps": reps, "tracer_flags": flags, "trace_lines": lines},
        "samples_s": {**wall, **{f"cpu {k}": v for k, v in cpu.items()}},
        "rows": [
            row("bare loop (median)", t["bare"], "s"),
            row("strace alone, capsule's flags (median)", t["strace"], "s"),
            row("capsule run (median)", t["capsule"], "s"),
            ratio_row("capsule / strace alone", t["capsule"], t["strace"], 1.15),
            ratio_row("strace alone / bare", t["strace"], t["bare"]),
            row("capsule's own CPU (capsule run - strace alone)", own_cpu, "s"),
            row("capsule's own CPU per 1,000 trace lines", per_k * 1000, "ms"),
        ],
    }
