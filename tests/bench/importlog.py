"""`capsule import` of a ~400,000-line `strace -f` log against the PyPI tool `strace-process-tree`.

The log is real: a shell doing agent-like work (ls, cat | grep, sh -c, /bin/true, find, python3 -c)
traced with `strace -f -ttt -s 256` and *every* syscall, enough iterations to pass the target, then cut at
the target line (a cut trace is still a valid trace: the processes alive there simply never exit).
It is cached under `.bench/`. Aim (issue 15): capsule at least twice as fast (ratio <= 0.5).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from tests.bench._common import (
    BENCH_DIR,
    CAPSULE,
    STRACE,
    VENV_BIN,
    env_for,
    interleave,
    median,
    ratio_row,
    row,
    run_once,
    temp_home,
)

LINES = 400_000
QUICK_LINES = 20_000

ITERATION = (
    "ls /usr/lib >/dev/null; cat /etc/passwd | grep -c root >/dev/null; sh -c 'echo x; true' >/dev/null;"
    " for j in 1 2 3 4 5; do /bin/true; done; find /usr/share/doc -maxdepth 1 >/dev/null;"
    " python3 -c pass; false || true"
)


def work(iterations: int) -> list[str]:
    return ["sh", "-c", f"for i in $(seq {iterations}); do {ITERATION}; done"]


def _trace(iterations: int, out: Path) -> int:
    run_once([STRACE, "-f", "-ttt", "-s", "256", "-o", str(out), "--", *work(iterations)])
    with open(out, "rb") as file:
        return sum(1 for _ in file)


def make_log(lines: int) -> Path:
    """The cached log of exactly `lines` lines (generated on first use)."""
    BENCH_DIR.mkdir(exist_ok=True)
    log = BENCH_DIR / f"import-{lines}.strace"
    if log.is_file():
        return log
    raw = BENCH_DIR / f"import-{lines}.raw"
    iterations = 2
    got = _trace(iterations, raw)
    while got < lines:
        iterations = math.ceil(iterations * lines / max(got, 1) * 1.1)
        got = _trace(iterations, raw)
    tmp = log.with_suffix(".tmp")
    with open(raw, "rb") as src, open(tmp, "wb") as dst:
        for n, line in enumerate(src):
            if n >= lines:
                break
            dst.write(line)
    raw.unlink()
    tmp.replace(log)
    return log


def run(quick: bool = False) -> dict[str, Any]:
    lines = QUICK_LINES if quick else LINES
    reps = 1 if quick else 3
    log = make_log(lines)
    peer = str(VENV_BIN / "strace-process-tree") if (VENV_BIN / "strace-process-tree").exists() else None
    peer = peer or shutil.which("strace-process-tree") or "strace-process-tree"
    with temp_home() as home:
        env = env_for(home)
        cmds = {
            "strace-process-tree": [peer, str(log)],
            "capsule import": [CAPSULE, "import", str(log)],
        }
        samples = interleave(cmds, reps, env)
    t = {name: median(values) for name, values in samples.items()}
    return {
        "params": {"lines": lines, "reps": reps, "log": str(log)},
        "samples_s": samples,
        "rows": [
            row("strace-process-tree (median)", t["strace-process-tree"], "s"),
            row("capsule import (median)", t["capsule import"], "s"),
            row("capsule import throughput", lines / t["capsule import"], "lines/s"),
            ratio_row(
                "capsule import / strace-process-tree", t["capsule import"], t["strace-process-tree"], 0.5
            ),
        ],
    }
