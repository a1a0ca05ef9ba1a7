"""Agent runs at scale: a 10,000-task plan as a chain (each task depends on the one before) and wide (no
dependencies): `capsule agents check` and `capsule agents run` wall time and peak RSS, the machine alone
in memory (no processes), against references measured in the same run: `agents check` of a one-task plan
(the CLI's start-up) and GNU parallel running as many `true` at -j8 (for the wide run). `--quick` uses 50
tasks. The 1,000-task comparison with GNU parallel, interleaved with medians, is tests/bench/agents.py.
"""

from __future__ import annotations

import shutil
import time
from collections import deque
from typing import Any

from tests.bench._common import CAPSULE, env_for, ratio_row, row, run_once, temp_home

COUNT = 10_000
QUICK_COUNT = 50


def plan_text(count: int, chain: bool) -> str:
    tasks = "".join(
        f'[[task]]\nid = "t{i}"\ncommand = ["true"]\n'
        + (f'depends_on = ["t{i - 1}"]\n' if chain and i else "")
        for i in range(count)
    )
    return "[run]\nparallel = 8\n" + tasks


def machine_alone(text: str) -> float:
    """Seconds for the pure machine to run the plan with processes that exit at once (no I/O)."""
    from capsule.events import SessionStarted
    from capsule.events.observed import ObsBegin, ObsExited, ObsSpawned
    from capsule.fold.tasks import RunState
    from capsule.plan.config import Config
    from capsule.plan.effects import Finish, Spawn
    from capsule.plan.machine import Machine
    from capsule.plan.spec import parse_plan

    plan = parse_plan(text)
    start = time.perf_counter()
    state = RunState()
    state.apply(
        SessionStarted(
            ts=0.0, capsule_version="bench", session_id="bench", session_kind="agents", recorder_pid=1
        )
    )
    machine = Machine(Config.of(plan), state)
    queue: deque[Any] = deque([ObsBegin(ts=0.0)])
    done = False
    now = 0.0
    while queue and not done:
        now += 0.001
        _events, effects = machine.handle(queue.popleft(), now)
        for effect in effects:
            if isinstance(effect, Spawn):
                queue.appendleft(
                    ObsSpawned(ts=now, task=effect.task, attempt=effect.attempt, pid=2, started=now, pgid=2)
                )
                queue.append(ObsExited(ts=now, task=effect.task, attempt=effect.attempt, exit_code=0))
            elif isinstance(effect, Finish):
                done = True
    if machine.state.state != "succeeded":
        raise RuntimeError(f"the in-memory run ended {machine.state.state}")
    return time.perf_counter() - start


def run(quick: bool = False) -> dict[str, Any]:
    count = QUICK_COUNT if quick else COUNT
    gnu = shutil.which("parallel")
    rows = []
    samples: dict[str, Any] = {}
    with temp_home() as home:
        env = {**env_for(home), "CAPSULE_PLAIN": "1"}
        one = home / "one.toml"
        one.write_text('[[task]]\nid = "t"\ncommand = ["true"]\n')
        startup, _rss = run_once([CAPSULE, "agents", "check", str(one)], env)
        rows.append(row("capsule agents check, 1 task (reference)", startup, "s"))
        gnu_s = None
        if gnu and not quick:
            gnu_s, _ = run_once([gnu, "-j8", "true", ":::", *map(str, range(count))], env)
            rows.append(row(f"GNU parallel -j8, {count} x true", gnu_s, "s"))
        for shape in ("chain", "wide"):
            text = plan_text(count, chain=shape == "chain")
            path = home / f"{shape}.toml"
            path.write_text(text)
            check_s, check_kib = run_once([CAPSULE, "agents", "check", str(path)], env)
            alone = machine_alone(text)
            run_s, run_kib = run_once([CAPSULE, "agents", "run", str(path)], env)
            samples[shape] = {"check_s": check_s, "check_kib": check_kib, "machine_s": alone, "run_s": run_s}
            rows += [
                row(f"agents check, {count}-task {shape}", check_s, "s"),
                ratio_row(f"agents check {shape} / 1-task check", check_s, startup),
                row(f"agents check {shape}: peak RSS", check_kib / 1024, "MiB"),
                row(f"the machine alone, {count}-task {shape} (no processes)", alone, "s"),
                row(f"agents run, {count}-task {shape}, -j8", run_s, "s"),
                row(f"agents run {shape}: per task", run_s / count * 1000, "ms"),
                row(f"agents run {shape}: peak RSS", run_kib / 1024, "MiB"),
            ]
            if shape == "wide" and gnu_s is not None:
                rows.append(ratio_row(f"agents run wide / GNU parallel ({count} tasks)", run_s, gnu_s, 1.0))
    return {"params": {"count": count, "gnu_parallel": gnu}, "samples": samples, "rows": rows}


if __name__ == "__main__":  # pragma: no cover
    for r in run(quick=True)["rows"]:
        print(r)
