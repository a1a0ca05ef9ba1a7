"""`capsule env status` as text: a head line and one row per process, in aligned columns.

Plain string work, no rich: the same function renders for the CLI (from the session's fold) and for a
live supervisor answering `env status`'s fast path, whose client imports nothing but the standard
library. Colour (ANSI) only when the caller says so: on a terminal without NO_COLOR.
"""

from __future__ import annotations

from typing import Any

COLUMNS = ("name", "state", "pid", "uptime", "restarts", "last exit", "health", "error", "cpu %", "rss")
STATE_COLORS = {
    "ready": "32",
    "running": "32",
    "gave_up": "31",
    "lost": "31",
    "unhealthy": "33",
    "backoff": "33",
}
BOLD, BOLD_RED = "1", "1;31"


def _paint(text: str, code: str | None, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color and code and text else text


def head_line(data: dict[str, Any], color: bool) -> str:
    sup = data["supervisor"]
    project = _paint(str(data["project"]), BOLD, color)
    where = f"{project} · session {data['session']}"
    if data["active"]:
        return f"{where} · supervisor {sup['pid']}"
    if not sup["alive"] and data["deactivated"] is None:
        return f"{where} · " + _paint(f"supervisor {sup['pid']} is dead", BOLD_RED, color)
    return f"{where} · down ({data['deactivated'] or 'ended'})"


def process_row(p: dict[str, Any]) -> tuple[str, ...]:
    last = p["signal"] or (f"code {p['exit_code']}" if p["exit_code"] is not None else "")
    state = p["state"] + (f" ({p['stop_reason']})" if p.get("stop_reason") else "")
    return (
        p["name"],
        state,
        str(p["pid"] or ""),
        f"{p['uptime_s']:.0f}s" if p["uptime_s"] is not None else "",
        str(p["restarts"]),
        last,
        p["health"] or "",
        p["error"] or "",
        f"{p['cpu_percent']:.1f}" if p["cpu_percent"] is not None else "",
        f"{p['rss'] / 2**20:.1f}M" if p["rss"] is not None else "",
    )


def render_status(data: dict[str, Any], color: bool = False) -> str:
    """The status text of `data` (an EnvironmentStatus as plain JSON-able dicts), ending in a newline."""
    rows = [process_row(p) for p in data["processes"]]
    widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]

    def line(cells: tuple[str, ...], codes: tuple[str | None, ...]) -> str:
        padded = (
            _paint(cell, code, color) + " " * (width - len(cell))
            for cell, width, code in zip(cells, widths, codes, strict=True)
        )
        return "  ".join(padded).rstrip()

    out = [head_line(data, color), line(COLUMNS, (BOLD,) * len(COLUMNS))]
    for p, cells in zip(data["processes"], rows, strict=True):
        out.append(line(cells, (None, STATE_COLORS.get(p["state"])) + (None,) * (len(COLUMNS) - 2)))
    return "\n".join(out) + "\n"
