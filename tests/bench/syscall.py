"""Syscall-heavy work: `find /usr -type f` repeated in one shell until the bare run takes >= 3 s.

capsule run against the bare command (aim <= 1.15x) and against strace alone,
`strace -f --seccomp-bpf -e trace=%process -o FILE` (aim <= 1.03x, issue 15).
"""

from __future__ import annotations

import math
from typing import Any

from tests.bench._common import (
    bare_strace_capsule,
    env_for,
    ratio_row,
    row,
    run_once,
    temp_home,
)

TARGET_S = 3.0
QUICK_TARGET_S = 0.3
MARGIN = 1.15


def shell(n: int) -> list[str]:
    return ["sh", "-c", f"for i in $(seq {n}); do find /usr -type f >/dev/null; done"]


def run(quick: bool = False) -> dict[str, Any]:
    target = QUICK_TARGET_S if quick else TARGET_S
    reps = 1 if quick else 3
    with temp_home() as home:
        env = env_for(home)
        run_once(shell(1), env)  # warm the dentry cache so calibration sees the steady state
        one = min(run_once(shell(1), env)[0] for _ in range(2))
        n = max(1, math.ceil(target * MARGIN / one))  # calibration runs are warmer than the timed ones
        # strace as the issue states it: `strace -f --seccomp-bpf -e trace=%process -o FILE`
        flags = ["-f", "--seccomp-bpf", "-e", "trace=%process"]
        samples, t = bare_strace_capsule(shell(n), flags, home, env, reps)
    return {
        "params": {"n": n, "reps": reps, "one_find_s": one},
        "samples_s": samples,
        "rows": [
            row("bare (median)", t["bare"], "s"),
            row("strace alone (median)", t["strace"], "s"),
            row("capsule run (median)", t["capsule"], "s"),
            ratio_row("capsule / bare", t["capsule"], t["bare"], 1.15),
            ratio_row("capsule / strace alone", t["capsule"], t["strace"], 1.03),
            ratio_row("strace alone / bare", t["strace"], t["bare"]),
        ],
    }
