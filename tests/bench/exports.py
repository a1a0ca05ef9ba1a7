"""`capsule export` of a synthetic 10,000-process session: Perfetto and OTLP time and file size, and what
`capsule archive` makes of it, against `capsule report --json` of the same session in the same run.

The session is tests/bench/report.py's tree at a tenth of a percent of its size: a root agent spawning
100 shells of 99 tools each (10,001 processes, ~30,000 events). Times are medians of interleaved runs.
Aims: a Perfetto export costs at most 2x the JSON report, and its file is at most 2x the report's size.
"""

from __future__ import annotations

import subprocess
import tempfile
from typing import Any

from tests.bench._common import CAPSULE, env_for, interleave, median, ratio_row, row, run_once, temp_home
from tests.bench.report import make_session

SHELLS, LEAVES = 100, 99  # 1 + 100 * (1 + 99) = 10,001 processes
QUICK_SHELLS, QUICK_LEAVES = 10, 9
AIM_TIME_RATIO = 2.0
AIM_SIZE_RATIO = 2.0


def _size_of(cmd: list[str], env: dict[str, str]) -> int:
    with tempfile.TemporaryFile() as out:
        subprocess.run(cmd, stdout=out, stderr=subprocess.DEVNULL, env=env, check=True)
        return out.tell()


def run(quick: bool = False) -> dict[str, Any]:
    shells, leaves = (QUICK_SHELLS, QUICK_LEAVES) if quick else (SHELLS, LEAVES)
    reps = 1 if quick else 5
    with temp_home() as home:
        env = env_for(home)
        session, events = make_session(home, shells, leaves)
        ref = str(session)
        cmds = {
            "report --json": [CAPSULE, "report", "--json", ref],
            "export perfetto": [CAPSULE, "export", ref, "-f", "perfetto", "-o", str(home / "trace.json")],
            "export otlp": [CAPSULE, "export", ref, "-f", "otlp", "-o", str(home / "otlp.json")],
        }
        samples = interleave(cmds, reps, env)
        sizes = {
            "report --json": _size_of(cmds["report --json"], env),
            "perfetto": (home / "trace.json").stat().st_size,
            "otlp": (home / "otlp.json").stat().st_size,
        }
        events_bytes = (session / "events.jsonl").stat().st_size
        archive_s = run_once([CAPSULE, "archive", ref], env)[0]
        archived_bytes = (session / "events.jsonl.zst").stat().st_size
        report_archived_s = median(
            [run_once(cmds["report --json"], env)[0] for _ in range(max(1, reps // 2))]
        )
    t = {name: median(values) for name, values in samples.items()}
    time_ratio = t["export perfetto"] / t["report --json"]
    size_ratio = sizes["perfetto"] / sizes["report --json"]
    mib = 1 << 20
    return {
        "params": {"processes": 1 + shells * (1 + leaves), "events": events, "reps": reps},
        "samples_s": samples,
        "bytes": {**sizes, "events.jsonl": events_bytes, "events.jsonl.zst": archived_bytes},
        "rows": [
            row("report --json (median, reference)", t["report --json"], "s"),
            row("export perfetto (median)", t["export perfetto"], "s"),
            row("export otlp (median)", t["export otlp"], "s"),
            row("report --json size", sizes["report --json"] / mib, "MiB"),
            row("perfetto file size", sizes["perfetto"] / mib, "MiB"),
            row("otlp file size", sizes["otlp"] / mib, "MiB"),
            ratio_row("perfetto / report time", t["export perfetto"], t["report --json"], AIM_TIME_RATIO),
            ratio_row("perfetto / report size", sizes["perfetto"], sizes["report --json"], AIM_SIZE_RATIO),
            ratio_row("otlp / report time", t["export otlp"], t["report --json"]),
            row("archive (zstd) time", archive_s, "s"),
            ratio_row("events.jsonl.zst / events.jsonl size", archived_bytes, events_bytes),
            ratio_row("report --json archived / plain time", report_archived_s, t["report --json"]),
        ],
        "aims_met": time_ratio <= AIM_TIME_RATIO and size_ratio <= AIM_SIZE_RATIO,
    }
