"""Fixed start-up cost: `capsule run -- true` minus `true` (aim <= 0.2 s), median of ~10, broken down."""

from __future__ import annotations

from typing import Any

from tests.bench._common import (
    CAPSULE,
    PYTHON,
    STRACE,
    env_for,
    interleave,
    median,
    row,
    session_header,
    temp_home,
)

REPS = 10
QUICK_REPS = 2
AIM_S = 0.2


def run(quick: bool = False) -> dict[str, Any]:
    reps = QUICK_REPS if quick else REPS
    with temp_home() as home:
        env = env_for(home)
        flags = list(session_header(env)["tracer_flags"])
        cmds = {
            "true": ["true"],
            "python -c pass": [PYTHON, "-c", "pass"],
            # what `capsule run` imports before it records: its typer-free parser (capsule/cli/fast.py)
            "import capsule.cli": [PYTHON, "-c", "from capsule.cli import fast"],
            "strace -- true": [STRACE, *flags, "-o", str(home / "s.strace"), "--", "true"],
            "capsule run -- true": [CAPSULE, "run", "--", "true"],
        }
        samples = interleave(cmds, reps, env)
    t = {name: median(values) for name, values in samples.items()}
    overhead = t["capsule run -- true"] - t["true"]
    return {
        "params": {"reps": reps},
        "samples_s": samples,
        "rows": [
            row("capsule run -- true  minus  true", overhead, "s", f"<= {AIM_S}", overhead <= AIM_S),
            row("  python -c pass", t["python -c pass"], "s"),
            row("  python -c: capsule.cli.fast (run's parser)", t["import capsule.cli"], "s"),
            row(
                "  capsule.cli.fast minus python",
                t["import capsule.cli"] - t["python -c pass"],
                "s",
            ),
            row("  strace -- true", t["strace -- true"], "s"),
            row("  true", t["true"], "s"),
            row(
                "  rest (capsule - import - strace)",
                t["capsule run -- true"] - t["import capsule.cli"] - t["strace -- true"],
                "s",
            ),
        ],
    }
