"""Live recording memory: `capsule run` of an endless fork-heavy loop (`/bin/true` in a shell `while`),
the recorder's RSS sampled after 1 minute and after 10 minutes; flat means <= 1.1x.

Ten minutes is opt-in (CAPSULE_BENCH_LONG=1): by default the second sample is taken after 2 minutes and
the row says so. The recorder is the `capsule run` Python process itself (its RSS, not strace's).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import psutil

from tests.bench._common import CAPSULE, env_for, ratio_row, row, temp_home

FIRST_S = 60.0
LONG_S = 600.0
DEFAULT_S = 120.0
QUICK = (2.0, 4.0)


def run(quick: bool = False) -> dict[str, Any]:
    long = os.environ.get("CAPSULE_BENCH_LONG", "") not in ("", "0")
    first, second = QUICK if quick else (FIRST_S, LONG_S if long else DEFAULT_S)
    samples: list[tuple[float, int]] = []
    with temp_home() as home:
        env = env_for(home)
        proc = subprocess.Popen(
            [CAPSULE, "run", "--", "sh", "-c", "while :; do /bin/true; done"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # the whole tree is stopped by its group at the end
        )
        try:
            recorder = psutil.Process(proc.pid)
            started = time.monotonic()
            for at in (first, second):
                while (elapsed := time.monotonic() - started) < at:
                    time.sleep(min(1.0, at - elapsed))
                    samples.append((time.monotonic() - started, recorder.memory_info().rss))
                samples.append((time.monotonic() - started, recorder.memory_info().rss))
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    at_first = next(r for t, r in samples if t >= first)
    at_second = samples[-1][1]
    return {
        "params": {"first_s": first, "second_s": second, "long": long},
        "samples_s": {"elapsed_s, rss_bytes": samples},
        "rows": [
            row(f"recorder RSS after {first:g} s", at_first / 2**20, "MiB"),
            row(f"recorder RSS after {second:g} s", at_second / 2**20, "MiB"),
            ratio_row(
                f"RSS {second:g} s / {first:g} s"
                + ("" if long or quick else " (10 min: CAPSULE_BENCH_LONG=1)"),
                at_second,
                at_first,
                1.1,
            ),
        ],
    }
