"""Agent runs: 1,000 trivial tasks (`true`) at --parallel 8, untraced, against GNU parallel running the same
jobs (`parallel -j8 true ::: $(seq 1000)`), interleaved, medians: aim capsule <= 1.0x GNU parallel. Also the
per-task overhead with tracing on (every task under strace), against the untraced run.

Scale (issue 15): `agents run` of 10,000 trivial tasks, time and peak RSS per task against the 1,000-task
run, with CAPSULE_BENCH_AGENTS_10K=1 (one run: ~5 minutes here); by default the 1,000-task figures only.

Idle cost: the scheduler's own CPU (% of a core) while 4 tasks sleep, with 400 idle processes beside them
(a workstation's process count): each running task's tree is sampled every 150 ms for its limits and
members, and a sample once read every process of the machine per member. Aim: ≤ 1 % of a core per task.

GNU parallel is the Debian package `parallel`; `just bench` installs it when missing. Without it the
comparison row is left out and the capsule figures are still reported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

from tests.bench._common import CAPSULE, env_for, interleave, median, ratio_row, row, run_once, temp_home

COUNT = 1000
QUICK_COUNT = 100
TRACED_COUNT = 200
SCALE_COUNT = 10_000
IDLE_TASKS = 4
CROWD = 400  # idle processes beside the run
IDLE_WINDOW_S = 10.0


def scheduler_idle_cpu(home: Path, env: dict[str, str], window_s: float, crowd_size: int) -> float:
    """% of a core the scheduler spends while IDLE_TASKS tasks sleep, over `window_s` once they run."""
    plan = home / "idle.toml"
    sleep_s = window_s + 10
    plan.write_text(
        f"[run]\nparallel = {IDLE_TASKS}\n"
        + "".join(f'[[task]]\nid = "s{i}"\ncommand = ["sleep", "{sleep_s:g}"]\n' for i in range(IDLE_TASKS))
    )
    crowd = [subprocess.Popen(["sleep", str(sleep_s + 30)]) for _ in range(crowd_size)]
    run = subprocess.Popen(
        [CAPSULE, "agents", "run", str(plan)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        scheduler = psutil.Process(run.pid)
        deadline = time.monotonic() + 30
        while sum(c.name() == "sleep" for c in scheduler.children(recursive=True)) < IDLE_TASKS:
            if time.monotonic() > deadline:
                raise RuntimeError("the idle run's tasks did not start")
            time.sleep(0.1)
        t0, c0 = time.monotonic(), sum(scheduler.cpu_times()[:2])
        time.sleep(window_s)  # the measured window itself, not a wait for a condition
        return 100.0 * (sum(scheduler.cpu_times()[:2]) - c0) / (time.monotonic() - t0)
    finally:
        run.terminate()  # the run is killed: its tasks' trees are stopped, and it exits 1
        run.wait(timeout=60)
        for proc in crowd:
            proc.kill()
            proc.wait()


def write_batch(path: Path, count: int) -> Path:
    path.write_text(
        "".join(orjson.dumps({"id": f"t{i}", "command": ["true"]}).decode() + "\n" for i in range(count))
    )
    return path


def run(quick: bool = False) -> dict[str, Any]:
    count = QUICK_COUNT if quick else COUNT
    traced_count = QUICK_COUNT if quick else TRACED_COUNT
    reps = 1 if quick else 5
    gnu = shutil.which("parallel")
    with temp_home() as home:
        env = env_for(home)
        batch = write_batch(home / "tasks.jsonl", count)
        traced_batch = write_batch(home / "traced.jsonl", traced_count)
        plain = home / "plain.toml"
        plain.write_text("[run]\nparallel = 8\n")
        traced = home / "traced.toml"
        traced.write_text("[run]\nparallel = 8\ntrace = true\n")
        cmds: dict[str, list[str]] = {
            "capsule": [CAPSULE, "agents", "run", str(plain), "--batch", str(batch)],
        }
        if gnu:
            cmds["gnu"] = [gnu, "-j8", "true", ":::", *map(str, range(1, count + 1))]
        samples = interleave(cmds, reps, env)
        untraced_small = interleave(
            {
                "untraced": [CAPSULE, "agents", "run", str(plain), "--batch", str(traced_batch)],
                "traced": [CAPSULE, "agents", "run", str(traced), "--batch", str(traced_batch)],
            },
            1 if quick else 3,
            env,
        )
        # peak RSS of one run at `count` tasks, and (opt-in) the 10,000-task run
        _wall, peak_kib = run_once([CAPSULE, "agents", "run", str(plain), "--batch", str(batch)], env)
        scale: tuple[float, int] | None = None
        if not quick and os.environ.get("CAPSULE_BENCH_AGENTS_10K", "") not in ("", "0"):
            big = write_batch(home / "big.jsonl", SCALE_COUNT)
            scale = run_once([CAPSULE, "agents", "run", str(plain), "--batch", str(big)], env)
        crowd = 20 if quick else CROWD
        idle = scheduler_idle_cpu(home, env, 1.0 if quick else IDLE_WINDOW_S, crowd)
    t = {name: median(values) for name, values in samples.items()}
    s = {name: median(values) for name, values in untraced_small.items()}
    rows = [row(f"capsule agents run, {count} x true, -j8 (median)", t["capsule"], "s")]
    rows.append(row("capsule per task", t["capsule"] / count * 1000, "ms"))
    if gnu:
        rows.append(row(f"GNU parallel -j8, {count} x true (median)", t["gnu"], "s"))
        rows.append(ratio_row("capsule / GNU parallel", t["capsule"], t["gnu"], 1.0))
    rows.append(
        row(
            "tracing overhead per task (traced - untraced)",
            (s["traced"] - s["untraced"]) / traced_count * 1000,
            "ms",
        )
    )
    rows.append(ratio_row(f"traced / untraced ({traced_count} tasks)", s["traced"], s["untraced"]))
    rows.append(row(f"peak RSS, {count} tasks", peak_kib / 1024, "MiB"))
    rows.append(row(f"  per task, {count} tasks", peak_kib / count, "KiB"))
    if scale is not None:
        wall_10k, rss_10k = scale
        rows.append(row(f"capsule agents run, {SCALE_COUNT:,} x true (one run)", wall_10k, "s"))
        rows.append(row(f"  per task, {SCALE_COUNT:,} tasks", wall_10k / SCALE_COUNT * 1000, "ms"))
        rows.append(ratio_row("  time per task 10,000 / 1,000", wall_10k / SCALE_COUNT, t["capsule"] / count))
        rows.append(row(f"  peak RSS, {SCALE_COUNT:,} tasks", rss_10k / 1024, "MiB"))
        rows.append(ratio_row("  peak RSS 10,000 / 1,000", rss_10k, peak_kib))
    else:
        rows.append(row("10,000 tasks: set CAPSULE_BENCH_AGENTS_10K=1", 0, "s"))
    per_task = idle / IDLE_TASKS
    rows.append(
        row(f"scheduler CPU, {IDLE_TASKS} sleeping tasks, {crowd} other processes", idle, "% of a core")
    )
    rows.append(row("  per running task", per_task, "% of a core", "<= 1", per_task <= 1.0))
    return {
        "params": {"count": count, "traced_count": traced_count, "reps": reps, "gnu_parallel": gnu},
        "samples_s": {**samples, **untraced_small},
        "scheduler_idle_cpu_percent": idle,
        "rows": rows,
    }
