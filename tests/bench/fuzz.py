"""The hostile-input campaign (issue 11): N mutated real traces and sessions through the real commands.

    .venv/bin/python -m tests.bench.fuzz [N] [--seed S] [--cli]   # default 10,000 inputs, half each kind

Each input is a real trace or a real session with one to four structured mutations from
`tests/hostile.py`. By default each goes through the library the commands call (import_log; the fold;
the JSON, text, HTML, Perfetto and OTLP renderers; re-derivation compared as replay --check does): a
trace is imported, reported, exported and replayed; a session is decoded as `report` reads it, folded and
rendered. `--cli` runs the real commands in-process instead (import, report --json/text/--html, export x3,
replay --check, ls), as `tests/test_hostile_input.py` does, about ten times slower. Prints inputs tried, commands run, one-line errors, imports accepted,
exceptions escaped (the aim: 0) and accepted imports whose replay --check failed (the aim: 0), and the first
escapes. Not in the default suite: it takes a while (about 20 inputs a second here, unloaded).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from tests import golden, hostile


def campaign(n: int, seed: int, *, cli: bool = False) -> dict[str, object]:
    rng = random.Random(seed)
    traces = {p: p.read_bytes() for p in hostile.TRACE_SEEDS}
    sessions = {
        s: ((s / golden.EVENTS).read_bytes(), (s / golden.TRACE).read_bytes()) for s in hostile.SESSION_SEEDS
    }
    tried = commands = errors = imported = replay_failed = 0
    escaped: list[str] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        for i in range(n):
            k = rng.randint(1, 4)
            if i % 2 == 0:
                path = rng.choice(list(traces))
                mutations = [
                    (rng.choice(sorted(hostile.TRACE_MUTATIONS)), rng.randrange(10**6)) for _ in range(k)
                ]
                mutated = hostile.mutate_trace(traces[path], mutations)
                feed = hostile.feed_trace if cli else hostile.feed_trace_lib
                outcome = feed(mutated, Path(work))
                what = f"trace {path.parent.name}/{path.name} {mutations}"
            else:
                path = rng.choice(list(sessions))
                mutations = [
                    (rng.choice(sorted(hostile.SESSION_MUTATIONS)), rng.randrange(10**6)) for _ in range(k)
                ]
                events, trace = sessions[path]
                bad = hostile.mutate_session(events, mutations)
                if cli:
                    outcome = hostile.feed_session(bad, trace, Path(work))
                else:
                    outcome = hostile.feed_session_lib(bad, Path(work))
                what = f"session {path.name} {mutations}"
            tried += 1
            commands += outcome.commands
            errors += len(outcome.errors)
            imported += outcome.imported
            replay_failed += outcome.replay_failed
            escaped += [f"{what}: {e}" for e in outcome.escaped]
            if outcome.replay_failed:
                escaped.append(f"{what}: replay --check failed on an accepted import")
            if (i + 1) % 500 == 0:
                rate = (i + 1) / (time.perf_counter() - started)
                print(f"  {i + 1} inputs, {len(escaped)} escaped ({rate:.1f} inputs/s)", file=sys.stderr)
    return {
        "inputs": tried,
        "commands": commands,
        "one_line_errors": errors,
        "imports_accepted": imported,
        "escaped": len(escaped),
        "replay_failed": replay_failed,
        "first_escapes": escaped[:5],
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.fuzz")
    parser.add_argument("n", nargs="?", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--cli", action="store_true", help="run the real commands in-process (slower)")
    args = parser.parse_args(argv)
    result = campaign(args.n, args.seed, cli=args.cli)
    for key, value in result.items():
        if key != "first_escapes":
            print(f"{key:>18}: {value}")
    for line in result["first_escapes"]:  # type: ignore[attr-defined]
        print(f"escaped: {line}")
    return 1 if result["escaped"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
