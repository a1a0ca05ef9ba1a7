"""Agent runs on Ray: 1,000 trivial tasks (`true`, half placed by resource on each of 2 local Ray nodes)
against the same batch with `executor = "local"`, interleaved, medians: the overhead per task of running
each attempt as a Ray task. Also 200 traced tasks on the cluster against 200 traced tasks locally.

The cluster is the tests' own (tests/ray/conftest.py): two `ray start` nodes in a network namespace made
for the run (root, unshare, nsenter), stopped by the PID of its holder. Both drivers run inside it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import orjson

from tests.bench._common import CAPSULE, env_for, interleave, median, ratio_row, row, temp_home

COUNT = 1000
QUICK_COUNT = 60
TRACED_COUNT = 200
QUICK_TRACED = 20


def write_batch(path: Path, count: int) -> Path:
    path.write_text(
        "".join(
            orjson.dumps(
                {"id": f"t{i}", "command": ["true"], "uses": ["alpha" if i % 2 else "beta"]}
            ).decode()
            + "\n"
            for i in range(count)
        )
    )
    return path


def run(quick: bool = False) -> dict[str, Any]:
    from tests.ray.conftest import Cluster

    count = QUICK_COUNT if quick else COUNT
    traced_count = QUICK_TRACED if quick else TRACED_COUNT
    reps = 1 if quick else 3
    with temp_home() as home, tempfile.TemporaryDirectory(prefix="capsule-bench-ray-") as root:
        cluster = Cluster(Path(root))
        try:
            cluster.start("node-a", {"alpha": 8}, head=True)
            cluster.start("node-b", {"beta": 8})
            env = env_for(home)
            batch = write_batch(home / "tasks.jsonl", count)
            traced_batch = write_batch(home / "traced.jsonl", traced_count)
            base = "[run]\nparallel = 8\n{extra}[resources]\nalpha = 8\nbeta = 8\n"
            plans = {}
            for name, extra in {
                "local": "",
                "ray": f'executor = "ray"\naddress = "{cluster.address}"\n',
                "local traced": "trace = true\n",
                "ray traced": f'trace = true\nexecutor = "ray"\naddress = "{cluster.address}"\n',
            }.items():
                plans[name] = home / f"{name.replace(' ', '-')}.toml"
                plans[name].write_text(base.format(extra=extra))

            def agents(name: str, tasks: Path) -> list[str]:
                return cluster.command([CAPSULE, "agents", "run", str(plans[name]), "--batch", str(tasks)])

            trivial = interleave({"local": agents("local", batch), "ray": agents("ray", batch)}, reps, env)
            traced = interleave(
                {
                    "local traced": agents("local traced", traced_batch),
                    "ray traced": agents("ray traced", traced_batch),
                },
                1 if quick else 2,
                env,
            )
        finally:
            cluster.close()
    t = {name: median(values) for name, values in {**trivial, **traced}.items()}
    rows = [
        row(f"executor = local, {count} x true, -j8 (median)", t["local"], "s"),
        row(f"executor = ray (2 nodes), {count} x true, -j8 (median)", t["ray"], "s"),
        row("Ray overhead per task (ray - local)", (t["ray"] - t["local"]) / count * 1000, "ms"),
        ratio_row("ray / local", t["ray"], t["local"]),
        row(f"executor = ray, {traced_count} traced tasks (median)", t["ray traced"], "s"),
        ratio_row(f"ray traced / local traced ({traced_count} tasks)", t["ray traced"], t["local traced"]),
    ]
    return {
        "params": {"count": count, "traced_count": traced_count, "reps": reps},
        "samples_s": {**trivial, **traced},
        "rows": rows,
    }
