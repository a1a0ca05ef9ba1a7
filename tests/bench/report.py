"""`capsule report --json` of a synthetic session of ~1,000,000 events: events/s and peak RSS, the first
report (no snapshot: it folds the events, as after a crash) and the next ones (from the derived snapshot),
and the scaling curve: the first report's time at 10k, 100k and 1M events (10M with CAPSULE_BENCH_10M=1).

The session is a realistic tree: a root agent (node …/claude-code/cli.js) spawning 1,000 shells, each
running 332 short tools (git, rg, ls, pytest, gcc, cat, …; some fail, a few are killed) — about 333,000
processes, each a proc.spawned, a proc.exec and a proc.exited — written with `capsule.codec.encode_lines`.
Aims: without a snapshot >= 300,000 events/s, with one <= 1 s; <= 512 MiB peak RSS either way; the curve
linear (log-log slope ~1). The reference is the floor: `python -c` reading the same file and
`orjson.loads` on every line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.bench._common import (
    CAPSULE,
    PYTHON,
    env_for,
    median,
    ratio_row,
    row,
    run_once,
    temp_home,
)

SHELLS = 1000
LEAVES = 332  # 1 + 1,000 + 332,000 processes, 3 events each: 999,003 events + header + end
QUICK_SHELLS = 20
AIM_EVENTS_PER_S = 300_000
AIM_SNAPSHOT_S = 1.0
AIM_RSS_KIB = 512 * 1024
CURVE_SHELLS = (10, 100, 1000)  # ~10k, ~100k, ~1M events
CURVE_10M = 10_000  # ~10M events, with CAPSULE_BENCH_10M=1 (about 1.4 GB and minutes per report)

TOOLS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("/usr/bin/git", ("git", "status", "--porcelain")),
    ("/usr/bin/git", ("git", "diff", "HEAD~1")),
    ("/usr/bin/rg", ("rg", "-n", "def main", "src/")),
    ("/usr/bin/ls", ("ls", "-la", "src")),
    ("/usr/bin/cat", ("cat", "README.md")),
    ("/usr/bin/python3", ("python3", "-m", "pytest", "-q", "tests/test_x.py")),
    ("/usr/bin/gcc", ("gcc", "-O2", "-c", "main.c", "-o", "main.o")),
    ("/usr/bin/make", ("make", "-j2")),
    ("/usr/bin/sed", ("sed", "-i", "s/foo/bar/", "src/app.py")),
    ("/usr/bin/npm", ("npm", "install")),
    ("/usr/bin/grep", ("grep", "-rn", "TODO", ".")),
    ("/usr/bin/find", ("find", ".", "-name", "*.py")),
)

CAPSULE_FLAGS = ("-f", "-ttt", "-q", "-s", "4096", "--seccomp-bpf", "-e", "trace=%process")


def _events(shells: int, leaves: int, t0: float) -> Iterator[Any]:
    from capsule.events import ProcExec, ProcExited, ProcSpawned

    ts = t0
    root = 1000
    yield ProcSpawned(ts=ts, pid=root, ppid=None, via="root")
    yield ProcExec(
        ts=ts,
        pid=root,
        path="/usr/bin/node",
        argv=("node", "/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js", "-p", "fix the test"),
        ok=True,
    )
    pid = root + 1
    k = 0
    for _s in range(shells):
        sh = pid
        pid += 1
        ts += 0.001
        yield ProcSpawned(ts=ts, pid=sh, ppid=root, via="clone")
        yield ProcExec(ts=ts, pid=sh, path="/bin/bash", argv=("bash", "-c", "run the tools"), ok=True)
        for _l in range(leaves):
            child = pid
            pid += 1
            k += 1
            path, argv = TOOLS[k % len(TOOLS)]
            ts += 0.0002
            yield ProcSpawned(ts=ts, pid=child, ppid=sh, via="clone" if k % 3 else "vfork")
            yield ProcExec(ts=ts, pid=child, path=path, argv=argv, ok=True)
            ts += 0.0001
            if k % 97 == 0:
                yield ProcExited(ts=ts, pid=child, signal="SIGKILL")
            else:
                yield ProcExited(ts=ts, pid=child, exit_code=1 if k % 13 == 0 else 0)
        ts += 0.0005
        yield ProcExited(ts=ts, pid=sh, exit_code=0)
    ts += 0.001
    yield ProcExited(ts=ts, pid=root, exit_code=0)


def make_session(home: Path, shells: int, leaves: int) -> tuple[Path, int]:
    """Write the session under home/runs/<id>/; returns its directory and its number of lines."""
    from capsule.codec import encode_line, encode_lines
    from capsule.events import SessionEnded, SessionStarted, kind_versions

    t0 = time.time() - 3600
    session_id = time.strftime("%Y%m%d-%H%M%S", time.localtime(t0)) + "-be00"
    path = home / "runs" / session_id
    path.mkdir(parents=True, mode=0o700)
    header = SessionStarted(
        ts=t0,
        capsule_version="0.1.0",
        session_id=session_id,
        session_kind="run",
        argv=("claude", "-p", "fix the test"),
        cwd="/work/project",
        host="bench",
        tracer="/usr/bin/strace",
        tracer_version="6.1",
        tracer_flags=CAPSULE_FLAGS,
        kinds=kind_versions(),
    )
    seq = 0
    processes = 0
    failed = 0
    last_ts = t0
    with open(path / "events.jsonl", "wb") as out:
        out.write(encode_line(seq, header))
        seq += 1
        batch: list[Any] = []
        for event in _events(shells, leaves, t0):
            batch.append(event)
            if len(batch) == 10_000:
                out.write(encode_lines(seq, batch))
                seq += len(batch)
                batch.clear()
        out.write(encode_lines(seq, batch))
        seq += len(batch)
        last_ts = t0 + 1 + shells * (leaves * 0.0003 + 0.0015)
        processes = 1 + shells * (1 + leaves)
        failed = sum(1 for k in range(1, shells * leaves + 1) if k % 97 == 0 or k % 13 == 0)
        ended = SessionEnded(
            ts=last_ts,
            exit_code=0,
            duration_s=last_ts - t0,
            lines=seq,
            events=seq,
            processes=processes,
            failed=failed,
        )
        out.write(encode_line(seq, ended))
        seq += 1
    os.chmod(path / "events.jsonl", 0o600)
    return path, seq


FLOOR = (
    "import sys, orjson\n"
    "n = 0\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    for line in f:\n"
    "        orjson.loads(line); n += 1\n"
)


def _first_and_next(session: Path, env: dict[str, str], reps: int) -> dict[str, list[Any]]:
    """Time the first report (snapshot removed before each) and the next (from the snapshot), interleaved
    with the floor; peak RSS of each."""
    from capsule.stages.snapshot import SNAPSHOT

    report_cmd = [CAPSULE, "report", "--json", str(session)]
    floor_cmd = [PYTHON, "-c", FLOOR, str(session / "events.jsonl")]
    out: dict[str, list[Any]] = {"first": [], "first_rss": [], "next": [], "next_rss": [], "floor": []}
    for _ in range(reps):
        (session / SNAPSHOT).unlink(missing_ok=True)
        wall, peak = run_once(report_cmd, env)
        out["first"].append(wall)
        out["first_rss"].append(peak)
        wall, peak = run_once(report_cmd, env)
        out["next"].append(wall)
        out["next_rss"].append(peak)
        out["floor"].append(run_once(floor_cmd, env)[0])
    return out


def _curve(home: Path, env: dict[str, str], sizes: tuple[int, ...], reps: int) -> list[tuple[int, float]]:
    """(events, median first-report seconds) for sessions of each size (shells x 332 tools)."""
    from capsule.stages.snapshot import SNAPSHOT

    points = []
    for shells in sizes:
        session, events = make_session(home / f"curve-{shells}", shells, LEAVES)
        times = []
        for _ in range(reps):
            (session / SNAPSHOT).unlink(missing_ok=True)
            times.append(run_once([CAPSULE, "report", "--json", str(session)], env)[0])
        points.append((events, median(times)))
        import shutil

        shutil.rmtree(session.parent.parent)
    return points


def _slope(points: list[tuple[int, float]]) -> float:
    """log(t2/t1) / log(e2/e1) over the two largest points (1.0 is linear; the smaller points are mostly
    start-up, which would flatten a fit over all of them)."""
    import math

    (e1, t1), (e2, t2) = points[-2], points[-1]
    return math.log(t2 / t1) / math.log(e2 / e1) if e2 > e1 and t1 > 0 else float("nan")


def run(quick: bool = False) -> dict[str, Any]:
    shells = QUICK_SHELLS if quick else SHELLS
    reps = 1 if quick else 3
    with temp_home() as home:
        env = env_for(home)
        started = time.perf_counter()
        session, events = make_session(home, shells, LEAVES)
        generated_s = time.perf_counter() - started
        got = _first_and_next(session, env, reps)
        sizes = (1, 5) if quick else CURVE_SHELLS[:-1]  # the 1M point is the measurement above
        if not quick and os.environ.get("CAPSULE_BENCH_10M", "") not in ("", "0"):
            sizes = (*sizes, CURVE_10M)
        curve = _curve(home, env, sizes, reps)
    t_first, t_next, t_floor = median(got["first"]), median(got["next"]), median(got["floor"])
    curve = sorted([*curve, (events, t_first)])
    rate = events / t_first
    first_kib, next_kib = max(got["first_rss"]), max(got["next_rss"])
    slope = _slope(curve)
    per_million = [row(f"  first report, {e:,} events", t, "s") for e, t in curve]
    return {
        "params": {
            "events": events,
            "processes": 1 + shells * (1 + LEAVES),
            "reps": reps,
            "generate_s": generated_s,
            "curve": curve,
        },
        "samples_s": {
            "capsule report --json, first (no snapshot)": got["first"],
            "capsule report --json, next (snapshot)": got["next"],
            "floor (orjson.loads per line)": got["floor"],
            "peak RSS KiB, first": got["first_rss"],
            "peak RSS KiB, next": got["next_rss"],
        },
        "rows": [
            row("first report, no snapshot (median)", t_first, "s"),
            row(
                "  events per second", rate, "events/s", f">= {AIM_EVENTS_PER_S:,}", rate >= AIM_EVENTS_PER_S
            ),
            row("  peak RSS", first_kib / 1024, "MiB", "<= 512", first_kib <= AIM_RSS_KIB),
            row(
                "next report, from the snapshot (median)",
                t_next,
                "s",
                f"<= {AIM_SNAPSHOT_S:g}",
                t_next <= AIM_SNAPSHOT_S,
            ),
            row("  peak RSS", next_kib / 1024, "MiB", "<= 512", next_kib <= AIM_RSS_KIB),
            row("floor: read + orjson.loads (median)", t_floor, "s"),
            ratio_row("first report / floor", t_first, t_floor),
            ratio_row("next report / floor", t_next, t_floor),
            *per_million,
            row("  log-log slope, two largest sizes (1.0 = linear)", slope, "x", "<= 1.1", slope <= 1.1),
        ],
    }
