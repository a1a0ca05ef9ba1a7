"""Environments: supervisor CPU with 50 healthy services (real loopback listeners, tcp and http health
checks every 5 s), crash -> restart latency vs the configured backoff, and `capsule env status` latency
against `python -c pass` (issue 14: <= 1 % of a core, <= 3x)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

from tests.bench._common import CAPSULE, PYTHON, env_for, interleave, median, ratio_row, row, temp_home

BACKOFF = 0.2
SERVICES = 50
LISTENER = (  # a service that answers: accepts and closes, or a minimal HTTP 200
    "import socket,sys\n"
    "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind(('127.0.0.1',int(sys.argv[1])));s.listen(64)\n"
    "while True:\n"
    "    c=s.accept()[0]\n"
    "    if sys.argv[2]=='http':\n"
    "        c.recv(4096);c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok')\n"
    "    c.close()\n"
)


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(root: Path, services: int) -> None:
    (root / "listen.py").write_text(LISTENER)
    lines = ['[project]\nname = "bench"\n']
    for i in range(services):
        port, kind = _port(), ("http" if i % 2 else "tcp")
        check = f"http://127.0.0.1:{port}/" if kind == "http" else f"tcp://127.0.0.1:{port}"
        lines.append(
            f'[[process]]\nname = "s{i}"\ncommand = "{PYTHON} listen.py {port} {kind}"\n'
            f'health_check = "{check}"\nhealth_check_interval = "5s"\n'
        )
    (root / "capsule.toml").write_text("".join(lines))


def _crash_config(root: Path) -> None:
    lines = ['[project]\nname = "bench-crash"\n']
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
        _config(root, SERVICES)
        crash_root = home / "crash"
        crash_root.mkdir()
        _crash_config(crash_root)
        env = env_for(home)
        subprocess.run([CAPSULE, "env", "up", str(root)], env=env, check=False, capture_output=True)
        time.sleep(2.0)  # the start-up's own work (50 spawns, first checks) is not the steady state
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
            # the crash loop runs in an environment of its own: it is not one of the healthy 50
            subprocess.run([CAPSULE, "env", "up", str(crash_root)], env=env, check=False, capture_output=True)
            time.sleep(3.0 if quick else 10.0)
            crash = orjson.loads(
                subprocess.run(
                    [CAPSULE, "env", "status", str(crash_root), "--json"],
                    env=env,
                    capture_output=True,
                    check=True,
                ).stdout
            )
            session = home / "runs" / crash["session"] / "events.jsonl"
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
        "params": {"services": SERVICES, "duration_s": duration, "backoff_s": BACKOFF, "reps": reps},
        "samples_s": {**samples, "restart_over_backoff": latencies},
        "rows": [
            row(f"supervisor CPU, {SERVICES} healthy services (% of a core)", cpu, "%", "<= 1", cpu <= 1.0),
            row("crash -> restart minus backoff (median)", over, "s", "<= 0.1", over <= 0.1),
            row("python -c pass (median)", t["python -c pass"], "s"),
            row("capsule env status (median)", t["capsule env status"], "s"),
            ratio_row("env status / python -c pass", t["capsule env status"], t["python -c pass"], 3.0),
        ],
    }
