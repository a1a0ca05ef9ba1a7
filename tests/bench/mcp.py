"""MCP `list_sessions` latency over 1,000 synthetic sessions, against `capsule ls --json` of the same home.

The MCP figure is one tool call to a warm `capsule mcp` (stdio, the SDK's own client): what an assistant
waits for. `capsule ls --json` pays interpreter start-up on every call, so it is the reference a shell
user knows, not an equal footing; both list the same number of sessions.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import trio

from tests.bench._common import CAPSULE, env_for, interleave, median, ratio_row, row, temp_home
from tests.bench.cli import make_sessions

SESSIONS = 1000
QUICK_SESSIONS = 50
REPS = 20
QUICK_REPS = 3


async def _mcp_samples(home: Path, limits: dict[str, int], reps: int) -> tuple[dict[str, list[float]], float]:
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=sys.executable, args=["-m", "capsule", "mcp"], env=env_for(home))
    samples: dict[str, list[float]] = {name: [] for name in limits}
    started = time.perf_counter()
    with open(os.devnull, "w") as errlog:  # noqa: ASYNC230 (opening /dev/null does not block)
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            ready = time.perf_counter() - started
            for _ in range(reps):
                for name, limit in limits.items():
                    t0 = time.perf_counter()
                    result = await session.call_tool("list_sessions", {"limit": limit})
                    samples[name].append(time.perf_counter() - t0)
                    assert not result.is_error
                    assert result.structured_content is not None
                    assert len(result.structured_content["sessions"]) == limit
    return samples, ready


def run(quick: bool = False) -> dict[str, Any]:
    count = QUICK_SESSIONS if quick else SESSIONS
    reps = QUICK_REPS if quick else REPS
    with temp_home() as home:
        make_sessions(home, count)
        limits = {"list_sessions limit 20": 20, f"list_sessions limit {count}": count}
        mcp, ready = trio.run(_mcp_samples, home, limits, reps)
        cli = interleave(
            {
                "capsule ls --json": [CAPSULE, "ls", "--json"],
                f"capsule ls --json --limit {count}": [CAPSULE, "ls", "--json", "--limit", str(count)],
            },
            max(2, reps // 4),
            env_for(home),
        )
    t = {name: median(values) for name, values in {**mcp, **cli}.items()}
    full_mcp, full_cli = t[f"list_sessions limit {count}"], t[f"capsule ls --json --limit {count}"]
    return {
        "params": {"sessions": count, "reps": reps},
        "samples_s": {**mcp, **cli},
        "rows": [
            row("capsule mcp: start + initialize", ready, "s"),
            row("MCP list_sessions limit 20 (median)", t["list_sessions limit 20"], "s"),
            row(f"MCP list_sessions limit {count} (median)", full_mcp, "s"),
            row("capsule ls --json (median)", t["capsule ls --json"], "s"),
            row(f"capsule ls --json --limit {count} (median)", full_cli, "s"),
            ratio_row(f"MCP list_sessions / capsule ls --json, {count} sessions", full_mcp, full_cli),
        ],
    }
