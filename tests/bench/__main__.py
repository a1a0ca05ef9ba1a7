"""`just bench`: run every benchmark (or those named), print a table of figures and ratios, and write
`.bench/results.json`. `--quick` (or CAPSULE_BENCH_QUICK=1) runs small versions, as a smoke test.

    python -m tests.bench [--quick] [syscall fork startup import report activity exports html cli mcp ebpf guard ray]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

from tests.bench._common import BENCH_DIR, compile_sources, load_average, quick_mode

# name -> module; cheapest first so a broken benchmark shows up early
BENCHMARKS: dict[str, str] = {
    "startup": "tests.bench.startup",
    "cli": "tests.bench.cli",
    "fork": "tests.bench.fork",
    "syscall": "tests.bench.syscall",
    "import": "tests.bench.importlog",
    "report": "tests.bench.report",
    "activity": "tests.bench.activity",
    "exports": "tests.bench.exports",
    "html": "tests.bench.html",
    "agents": "tests.bench.agents",
    "agents_scale": "tests.bench.agents_scale",
    "env": "tests.bench.env",
    "mcp": "tests.bench.mcp",
    "ebpf": "tests.bench.ebpf",
    "guard": "tests.bench.guard",
    "rss": "tests.bench.rss",
    "ray": "tests.bench.ray",
}


def load(name: str) -> Callable[..., dict[str, Any]]:
    run: Callable[..., dict[str, Any]] = importlib.import_module(BENCHMARKS[name]).run
    return run


def fmt(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.3f}x"
    if unit == "s":
        return f"{value:.3f} s"
    if unit in ("events/s", "lines/s"):
        return f"{value:,.0f} {unit}"
    return f"{value:,.1f} {unit}"


def print_table(results: dict[str, dict[str, Any]]) -> None:
    lines: list[tuple[str, str, str, str]] = []
    for name, result in results.items():
        if "error" in result:
            lines.append((name, "ERROR", result["error"], ""))
            continue
        for r in result["rows"]:
            met = "" if r["met"] is None else ("met" if r["met"] else "MISSED")
            aim = f"{r['aim']} {met}".strip() if r["aim"] else ""
            lines.append((name, r["figure"], fmt(r["value"], r["unit"]), aim))
    widths = [
        max(len(line[i]) for line in [*lines, ("benchmark", "figure", "value", "aim")]) for i in range(4)
    ]
    header = ("benchmark", "figure", "value", "aim")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    previous = None
    for line in lines:
        shown = (line[0] if line[0] != previous else "", *line[1:])
        previous = line[0]
        print(
            "  ".join(
                cell.ljust(w) if i != 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(shown, widths, strict=True))
            )
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", choices=[[], *BENCHMARKS], metavar="NAME", help=", ".join(BENCHMARKS)
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not a measurement")
    args = parser.parse_args(argv)
    quick = args.quick or quick_mode()
    names = args.names or list(BENCHMARKS)
    results: dict[str, dict[str, Any]] = {}
    compile_sources()
    for name in names:
        print(f"running {name}{' (quick)' if quick else ''}…", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            result = load(name)(quick=quick)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result["elapsed_s"] = time.perf_counter() - started
        result["load_average"] = load_average()  # after it ran: the load it ran under
        results[name] = result
        print(
            f"  {name}: {result['elapsed_s']:.1f} s (load {result['load_average'][0]:.2f})",
            file=sys.stderr,
            flush=True,
        )
    print_table(results)
    one, five, fifteen = load_average()
    print(f"\nload average now: {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cores)")
    BENCH_DIR.mkdir(exist_ok=True)
    out = BENCH_DIR / "results.json"
    if args.names and out.is_file():  # a partial run updates the figures of the benchmarks it ran
        try:
            previous = json.loads(out.read_text())
            if previous.get("quick") == quick:
                results = {**previous.get("results", {}), **results}
        except (OSError, ValueError):
            pass
    payload = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": quick,
        "host": platform.node(),
        "python": platform.python_version(),
        "results": results,
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwritten {out}", file=sys.stderr)
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
