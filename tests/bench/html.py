"""`capsule report --html` of a synthetic 10,000-process session: export time and file size.

The session is the report benchmark's tree (tests/bench/report.py: an agent, shells, short tools, some
failing, a few killed) cut to 31 shells of 332 tools: 10,324 processes. The reference is `capsule report
--json` of the same session, timed interleaved with it in the same run; both fold the whole session.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from tests.bench._common import CAPSULE, env_for, median, ratio_row, row, run_once, temp_home
from tests.bench.report import LEAVES, make_session

SHELLS = 31  # 1 + 31 * (1 + 332) = 10,324 processes
QUICK_SHELLS = 2


def run(quick: bool = False) -> dict[str, Any]:
    shells = QUICK_SHELLS if quick else SHELLS
    reps = 1 if quick else 5
    processes = 1 + shells * (1 + LEAVES)
    with temp_home() as home:
        env = env_for(home)
        session, events = make_session(home, shells, LEAVES)
        page = Path(home) / "report.html"
        html_cmd = [CAPSULE, "report", str(session), "--html", str(page)]
        json_cmd = [CAPSULE, "report", str(session), "--json"]
        html_s: list[float] = []
        json_s: list[float] = []
        json_size = 0
        for _ in range(reps):
            html_s.append(run_once(html_cmd, env)[0])
            with tempfile.TemporaryFile() as out:
                json_s.append(run_once(json_cmd, env, stdout=out)[0])
                json_size = os.fstat(out.fileno()).st_size
        html_size = page.stat().st_size
    t_html, t_json = median(html_s), median(json_s)
    return {
        "params": {"processes": processes, "events": events, "reps": reps},
        "samples_s": {"capsule report --html": html_s, "capsule report --json": json_s},
        "rows": [
            row(f"report --html, {processes:,} processes (median)", t_html, "s"),
            row("report --json, same session (median)", t_json, "s"),
            ratio_row("html / json time", t_html, t_json),
            row("HTML file size", html_size / 1024, "KiB"),
            row("JSON report size", json_size / 1024, "KiB"),
            ratio_row("html / json size", html_size, json_size),
        ],
    }
