"""Process trees of two recordings of the same work, in a form that can be compared: pids and times
differ between runs, so each process is its argv, exe, how it was made, how it ended and its exec
attempts, and its children are sorted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Canon = tuple[Any, ...]


def canonical(report: dict[str, Any], *, via: dict[int, str] | None = None) -> list[Canon]:
    """The report's process forest; `via` (pid -> fork|vfork|clone|clone3, from proc.spawned) adds how
    each process was made."""
    processes = report["processes"]
    pids = {p["pid"] for p in processes}
    children: dict[int | None, list[dict[str, Any]]] = {}
    for p in processes:
        children.setdefault(p["ppid"] if p["ppid"] in pids else None, []).append(p)

    def node(p: dict[str, Any]) -> Canon:
        execs = tuple(
            (e.get("path"), tuple(e.get("argv") or ()), e.get("ok"), e.get("errno")) for e in p["execs"]
        )
        own = (tuple(p["argv"] or ()), p["exe"], p["exit_code"], p["signal"], execs)
        if via is not None:
            own += (via.get(p["pid"]),)
        return (own, tuple(sorted((node(c) for c in children.get(p["pid"], [])), key=repr)))

    return sorted((node(p) for p in children.get(None, [])), key=repr)


def spawn_kinds(events_file: Path) -> dict[int, str]:
    """pid -> how it was made, from a session's proc.spawned events."""
    rows = (json.loads(line) for line in events_file.read_text().splitlines())
    return {r["pid"]: r["via"] for r in rows if r["kind"] == "proc.spawned"}


def differences(a: list[Canon], b: list[Canon], path: str = "") -> list[str]:
    """Human-readable differences between two canonical forests (empty when they are the same)."""
    out: list[str] = []
    if len(a) != len(b):
        out.append(
            f"{path}: {len(a)} vs {len(b)} children: {[x[0][0][:2] for x in a]} vs {[x[0][0][:2] for x in b]}"
        )
        return out
    for x, y in zip(a, b, strict=True):
        if x[0] != y[0]:
            out.append(f"{path}: {x[0]!r}\n  vs {y[0]!r}")
        out += differences(list(x[1]), list(y[1]), f"{path}/{' '.join(x[0][0][:2])}")
    return out
