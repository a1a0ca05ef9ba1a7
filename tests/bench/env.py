"""Environments: supervisor CPU with 10 healthy services, crash -> restart latency vs the configured
backoff, and `capsule env status` latency against `python -c pass`."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

from tests.bench._common import CAPSULE, PYTHON, env_for, interleave, median, ratio_row, row, temp_home

BACKOFF = 0.2


def _config(root: Path, services: int) -> None:
    lines = ['[project]\nname = "bench"\n']
    for i in range(services):
        lines.append(  # noqa: PERF401
            f'[[process]]\nname = "s{i}"\ncommand = "sleep 3600"\nhealth_check = "cmd:true"\nhealth_check_interval = "5s"\n'
        )
    lines.append(
        f'[[process]]\nname = "crash"\ncommand = "sleep 0.3"\nrestart = "always"\nbackoff = "{BACKOFF}s"\nmax_backoff = "{BACKOFF}s"\nmax_restarts = 1000\nrestart_window = "1s"\n'
    )
    (root / "capsule.toml").write_text("".join(lines))


def run(quick: bool = False) -> dict[str, Any]:
    duration = 3.0 if quick else 60.0
    reps = 2 if quick else 10
    with temp_home() as home:
        root = home / "project"
        root.mkdir()
        _config(root, 10)
        env = env_for(home)
        subprocess.run([CAPSULE, "env", "up", str(root)], env=env, check=False, capture_output=True)
        try:
            status = orjson.loads(
                subprocess.run(
                    [CAPSULE, "env", "status", str(root), "--json"], env=env, capture_output=True, check=True
                ).stdout
            )
            sup = psutil.Process(status["supervisor"]["pid"])
            t0, c0 = time.monotonic(), sum(sup.cpu_times()[:2])
            time.sleep(duration)
            cpu = 100.0 * (sum(sup.cpu_times()[:2]) - c0) / (time.monotonic() - t0)
            samples = interleave(
                {
                    "python -c pass": [PYTHON, "-c", "pass"],
                    "capsule env status": [CAPSULE, "env", "status", str(root)],
                },
                reps,
                env,
            )
            session = home / "runs" / status["session"] / "events.jsonl"
            evs = [orjson.loads(line) for line in session.read_bytes().splitlines()]
        finally:
            subprocess.run([CAPSULE, "kill-all"], env=env, check=False, capture_output=True)
    latencies = []
    exited = None
    for e in evs:
        if e.get("name") != "crash":
            continue
        if e["kind"] == "svc.exited":
            exited = e["ts"]
        elif e["kind"] == "svc.started" and exited is not None:
            latencies.append(e["ts"] - exited - BACKOFF)
            exited = None
    over = median(latencies) if latencies else float("nan")
    t = {name: median(values) for name, values in samples.items()}
    return {
        "params": {"services": 10, "duration_s": duration, "backoff_s": BACKOFF, "reps": reps},
        "samples_s": {**samples, "restart_over_backoff": latencies},
        "rows": [
            row("supervisor CPU, 10 services (% of a core)", cpu, "%", "<= 1", cpu <= 1.0),
            row("crash -> restart minus backoff (median)", over, "s", "<= 0.1", over <= 0.1),
            row("python -c pass (median)", t["python -c pass"], "s"),
            row("capsule env status (median)", t["capsule env status"], "s"),
            ratio_row("env status / python -c pass", t["capsule env status"], t["python -c pass"], 3.0),
        ],
    }
