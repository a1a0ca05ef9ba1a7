"""CLI latency against `python -c pass`: `capsule --help` (aim <= 0.15 s), and `capsule ls` over 10,000
synthetic sessions (aim <= 0.5 s: it reads each session's first line and last 16 KiB, never a whole file)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.bench._common import CAPSULE, PYTHON, env_for, interleave, median, ratio_row, row, temp_home

SESSIONS = 10_000
AIM_HELP_S = 0.15
AIM_LS_S = 0.5
QUICK_SESSIONS = 50
REPS = 10
QUICK_REPS = 2


def make_sessions(home: Path, count: int) -> None:
    """`count` small complete sessions (header, a process spawned/exec'd/exited, end)."""
    from capsule.codec import encode_lines
    from capsule.events import ProcExec, ProcExited, ProcSpawned, SessionEnded, SessionStarted, kind_versions

    runs = home / "runs"
    runs.mkdir(parents=True, mode=0o700)
    t0 = time.time() - count * 60
    for i in range(count):
        ts = t0 + i * 60
        session_id = time.strftime("%Y%m%d-%H%M%S", time.localtime(ts)) + f"-{i:04x}"
        argv = ("make", "test", f"-j{i % 8 + 1}")
        events = [
            SessionStarted(
                ts=ts,
                capsule_version="0.1.0",
                session_id=session_id,
                session_kind="run",
                argv=argv,
                cwd="/work/project",
                host="bench",
                tracer="/usr/bin/strace",
                tracer_version="6.1",
                kinds=kind_versions(),
            ),
            ProcSpawned(ts=ts, pid=100, ppid=None, via="root"),
            ProcExec(ts=ts, pid=100, path="/usr/bin/make", argv=argv, ok=True),
            ProcExited(ts=ts + 1.5, pid=100, exit_code=int(i % 3 == 0)),
            SessionEnded(
                ts=ts + 1.5, exit_code=int(i % 3 == 0), duration_s=1.5, lines=3, events=4, processes=1
            ),
        ]
        path = runs / session_id
        path.mkdir(mode=0o700)
        (path / "events.jsonl").write_bytes(encode_lines(0, events))


def run(quick: bool = False) -> dict[str, Any]:
    count = QUICK_SESSIONS if quick else SESSIONS
    reps = QUICK_REPS if quick else REPS
    with temp_home() as home:
        make_sessions(home, count)
        env = env_for(home)
        cmds = {
            "python -c pass": [PYTHON, "-c", "pass"],
            "capsule --help": [CAPSULE, "--help"],
            "capsule ls": [CAPSULE, "ls"],
            "capsule ls --json --limit all": [CAPSULE, "ls", "--json", "--limit", str(count)],
        }
        samples = interleave(cmds, reps, env)
    t = {name: median(values) for name, values in samples.items()}
    base = t["python -c pass"]
    return {
        "params": {"sessions": count, "reps": reps},
        "samples_s": samples,
        "rows": [
            row("python -c pass (median)", base, "s"),
            row(
                "capsule --help (median)",
                t["capsule --help"],
                "s",
                f"<= {AIM_HELP_S}",
                t["capsule --help"] <= AIM_HELP_S,
            ),
            row("capsule ls (median, newest 20)", t["capsule ls"], "s"),
            row(
                f"capsule ls --json --limit {count} (median)",
                t["capsule ls --json --limit all"],
                "s",
                f"<= {AIM_LS_S}",
                t["capsule ls --json --limit all"] <= AIM_LS_S,
            ),
            ratio_row("--help / python -c pass", t["capsule --help"], base),
            ratio_row("ls / python -c pass", t["capsule ls"], base),
            ratio_row(f"ls --limit {count} / python -c pass", t["capsule ls --json --limit all"], base),
        ],
    }
