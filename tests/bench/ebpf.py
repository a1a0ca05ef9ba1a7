"""The eBPF tracer against strace and the bare command: fork-heavy and syscall-heavy work.

In one run, interleaved: the work bare, under strace alone (capsule's flags, to a file), under
`capsule run` (strace) and under `capsule run --tracer ebpf`. Aims (issue: eBPF tracer):
ebpf fork-heavy <= 1.10x bare, syscall-heavy <= 1.02x bare. The recorder's start-up (loading and
attaching its programs, Capsule's own start) is a fixed cost per recording and is measured apart, as
`capsule run --tracer ebpf -- true` minus `true`, so the ratios show the per-process cost too.
"""

from __future__ import annotations

import math
from typing import Any

from tests.bench import fork, syscall
from tests.bench._common import (
    CAPSULE,
    STRACE,
    env_for,
    interleave,
    median,
    ratio_row,
    row,
    run_once,
    session_header,
    temp_home,
)


def run(quick: bool = False) -> dict[str, Any]:
    reps = 1 if quick else 3
    count = fork.QUICK_COUNT if quick else fork.COUNT
    rows: list[dict[str, Any]] = []
    samples: dict[str, dict[str, list[float]]] = {}
    with temp_home() as home:
        env = env_for(home)
        flags = list(session_header(env)["tracer_flags"])
        run_once(syscall.shell(1), env)  # warm the dentry cache
        one = min(run_once(syscall.shell(1), env)[0] for _ in range(2))
        n = max(1, math.ceil((syscall.QUICK_TARGET_S if quick else syscall.TARGET_S) / one))
        for name, work, aim in (("fork", fork.shell(count), 1.10), ("syscall", syscall.shell(n), 1.02)):
            cmds = {
                "bare": work,
                "strace": [STRACE, *flags, "-o", str(home / "s.strace"), "--", *work],
                "capsule": [CAPSULE, "run", "--", *work],
                "ebpf": [CAPSULE, "run", "--tracer", "ebpf", "--", *work],
            }
            got = interleave(cmds, reps, env)
            samples[name] = got
            t = {k: median(v) for k, v in got.items()}
            rows += [
                row(f"{name}: bare (median)", t["bare"], "s"),
                ratio_row(f"{name}: strace alone / bare", t["strace"], t["bare"]),
                ratio_row(f"{name}: capsule run (strace) / bare", t["capsule"], t["bare"]),
                ratio_row(f"{name}: capsule run --tracer ebpf / bare", t["ebpf"], t["bare"], aim),
                ratio_row(
                    f"{name}: capsule run --tracer ebpf / capsule run (strace)", t["ebpf"], t["capsule"]
                ),
            ]
        # 9 reps (`true` is short): one start in several waits ~0.1 s longer for the loader (seen here,
        # cause not found), and a median of 3 swung between the two
        startup = interleave(
            {"true": ["true"], "ebpf": [CAPSULE, "run", "--tracer", "ebpf", "--", "true"]},
            reps * 3,
            env,
        )
        samples["startup"] = startup
        rows.append(
            row(
                "ebpf start-up: run --tracer ebpf -- true minus true",
                median(startup["ebpf"]) - median(startup["true"]),
                "s",
            )
        )
    return {
        "params": {"reps": reps, "fork_count": count, "find_repeats": n},
        "samples_s": samples,
        "rows": rows,
    }
