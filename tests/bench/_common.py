"""Shared helpers: a temporary CAPSULE_HOME, interleaved timing, peak RSS of a child, result rows.

Every figure is a ratio against a reference timed in the same run, interleaved (A, B, A, B, …) and taken
as medians, because the machine is shared and absolute times are noise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO / ".bench"  # caches and results.json (git-ignored)
VENV_BIN = Path(sys.executable).parent
PYTHON = sys.executable
CAPSULE = (
    str(VENV_BIN / "capsule") if (VENV_BIN / "capsule").exists() else shutil.which("capsule") or "capsule"
)
STRACE = shutil.which("strace") or "/usr/bin/strace"

Command = Sequence[str]


def quick_mode() -> bool:
    """CAPSULE_BENCH_QUICK=1 (or `--quick` on the command line) shrinks every benchmark to a smoke test."""
    return os.environ.get("CAPSULE_BENCH_QUICK", "") not in ("", "0")


@contextlib.contextmanager
def temp_home() -> Iterator[Path]:
    """A throwaway CAPSULE_HOME; the real one is never touched."""
    path = Path(tempfile.mkdtemp(prefix="capsule-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def env_for(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CAPSULE_HOME"] = str(home)
    env["NO_COLOR"] = "1"
    # An installed capsule has its bytecode (pip compiles at install): with PYTHONDONTWRITEBYTECODE set
    # (as on this machine) every start would compile ~60 modules from source, 0.3 s that no user pays.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def compile_sources() -> None:
    """Write the bytecode of capsule (and the venv) once, as `pip install` does, before any timing."""
    import compileall

    compileall.compile_dir(str(REPO / "capsule"), quiet=1)
    compileall.compile_dir(str(REPO / "stages"), quiet=1)


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages now (the machine is shared: figures come with it)."""
    return os.getloadavg()


def run_once(
    cmd: Command, env: Mapping[str, str] | None = None, *, check: bool = True, stdout: Any = None
) -> tuple[float, int]:
    """Run cmd with stdio to /dev/null (unless stdout given); return (wall seconds, peak RSS in KiB).

    os.wait4 gives the rusage of this child alone (its peak RSS), unlike RUSAGE_CHILDREN.
    """
    wall, rss, _cpu = run_usage(cmd, env, check=check, stdout=stdout)
    return wall, rss


def run_usage(
    cmd: Command, env: Mapping[str, str] | None = None, *, check: bool = True, stdout: Any = None
) -> tuple[float, int, float]:
    """As `run_once`, plus the CPU seconds (user + system) of the child and the descendants it waited
    for (strace and its traced command, for `capsule run`)."""
    out = subprocess.DEVNULL if stdout is None else stdout
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.DEVNULL, env=env
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if check and proc.returncode != 0:
        raise RuntimeError(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}")
    return elapsed, int(usage.ru_maxrss), usage.ru_utime + usage.ru_stime


def interleave(
    cmds: Mapping[str, Command], reps: int, env: Mapping[str, str] | None = None
) -> dict[str, list[float]]:
    """Time every command `reps` times, round-robin (A, B, C, A, B, C, …); wall seconds per command."""
    samples: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(reps):
        for name, cmd in cmds.items():
            samples[name].append(run_once(cmd, env)[0])
    return samples


def bare_strace_capsule(
    work: list[str], strace_flags: Sequence[str], home: Path, env: Mapping[str, str], reps: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Time `work` bare, under strace alone (writing to a file) and under `capsule run`, interleaved;
    the samples and their medians by name: "bare", "strace", "capsule"."""
    cmds = {
        "bare": work,
        "strace": [STRACE, *strace_flags, "-o", str(home / "s.strace"), "--", *work],
        "capsule": [CAPSULE, "run", "--", *work],
    }
    samples = interleave(cmds, reps, env)
    return samples, {name: median(values) for name, values in samples.items()}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def row(
    figure: str, value: float, unit: str, aim: str | None = None, met: bool | None = None
) -> dict[str, Any]:
    """One line of the results table. `aim` is text such as '<= 1.15'; `met` whether value meets it."""
    return {"figure": figure, "value": value, "unit": unit, "aim": aim, "met": met}


def ratio_row(figure: str, num: float, den: float, limit: float | None = None) -> dict[str, Any]:
    value = num / den if den > 0 else float("inf")
    if limit is None:
        return row(figure, value, "x")
    return row(figure, value, "x", f"<= {limit:g}", value <= limit)


def session_header(cli_env: Mapping[str, str]) -> dict[str, Any]:
    """Record `capsule run -- true` and return its session.started header (for tracer_flags)."""
    import orjson

    run_once([CAPSULE, "run", "--", "true"], cli_env)
    runs = Path(cli_env["CAPSULE_HOME"]) / "runs"
    newest = sorted(runs.iterdir())[-1]
    with open(newest / "events.jsonl", "rb") as file:
        header: dict[str, Any] = orjson.loads(file.readline())
    return header
