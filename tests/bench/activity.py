"""`capsule report --json` of a large recording at `--level all` against the same work recorded at
`--level process`: what following files and sockets (issue 8) costs a report.

The work is real and agent-like: a shell loop that edits files (create, append, rename, delete, mkdir,
rmdir under a cd), reads them (cat, grep, ls), runs python3 and connects to a loopback server the
benchmark starts. Both sessions are recorded once with `capsule run`; their reports are then timed
interleaved. The ratio is a figure, not an aim.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.bench._common import CAPSULE, env_for, interleave, median, ratio_row, row, run_once, temp_home

ITERATIONS = 200
QUICK_ITERATIONS = 3


def work(iterations: int, port: int) -> list[str]:
    step = (
        "mkdir -p d$i && cd d$i && echo a > f && echo b >> f && mv f g && cat g >/dev/null"
        " && grep -c a g >/dev/null; ls >/dev/null; rm g && cd .. && rmdir d$i;"
        f" exec 3<>/dev/tcp/127.0.0.1/{port}; exec 3>&-;"
        " /usr/bin/python3 -I -S -c pass"
    )
    return ["bash", "-c", f"for i in $(seq {iterations}); do {step}; done"]


def _events(session: Path) -> int:
    with open(session / "events.jsonl", "rb") as file:
        return sum(1 for _ in file)


def run(quick: bool = False) -> dict[str, Any]:
    iterations = QUICK_ITERATIONS if quick else ITERATIONS
    reps = 1 if quick else 3
    with (
        temp_home() as home,
        tempfile.TemporaryDirectory() as cwd,
        socket.create_server(("127.0.0.1", 0)) as srv,
    ):
        srv.listen(1024)
        env = env_for(home)
        sessions: dict[str, Path] = {}
        for level in ("process", "all"):
            before = set((home / "runs").glob("*")) if (home / "runs").is_dir() else set()
            subprocess.run(
                [
                    CAPSULE,
                    "run",
                    "--level",
                    level,
                    "--sample",
                    "0",
                    "--",
                    *work(iterations, srv.getsockname()[1]),
                ],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
            )
            (sessions[level],) = set((home / "runs").glob("*")) - before
        events = {level: _events(path) for level, path in sessions.items()}
        cmds = {level: [CAPSULE, "report", str(path), "--json"] for level, path in sessions.items()}
        run_once(cmds["all"], env)  # warm the page cache for both
        samples = interleave(cmds, reps, env)
    t = {level: median(values) for level, values in samples.items()}
    return {
        "params": {"iterations": iterations, "reps": reps, "events": events},
        "samples_s": samples,
        "rows": [
            row("events at --level process", events["process"], "events"),
            row("events at --level all", events["all"], "events"),
            row("report --json, level process (median)", t["process"], "s"),
            row("report --json, level all (median)", t["all"], "s"),
            row("report --json throughput at level all", events["all"] / t["all"], "events/s"),
            ratio_row("report --json: level all / level process", t["all"], t["process"]),
        ],
    }
