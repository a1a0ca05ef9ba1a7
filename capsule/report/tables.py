"""Reports as flat tables for analytics: one row per session, process, file, connection and task.

Each row carries its `session` id, so the rows of many sessions can be concatenated and queried
together (`capsule export --format parquet --all`, then DuckDB, pandas or Polars). Columns are fixed,
whatever a report holds: a run report without `files` gives no file rows, not a missing table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

# table -> (column, DuckDB type); the order is the files' column order.
COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "sessions": (
        ("session", "VARCHAR"),
        ("kind", "VARCHAR"),
        ("name", "VARCHAR"),
        ("argv", "VARCHAR[]"),
        ("cwd", "VARCHAR"),
        ("host", "VARCHAR"),
        ("started", "DOUBLE"),
        ("duration_s", "DOUBLE"),
        ("exit_code", "BIGINT"),
        ("signal", "VARCHAR"),
        ("status", "VARCHAR"),
        ("processes", "BIGINT"),
        ("failed", "BIGINT"),
    ),
    "processes": (
        ("session", "VARCHAR"),
        ("id", "BIGINT"),
        ("parent", "BIGINT"),
        ("pid", "BIGINT"),
        ("ppid", "BIGINT"),
        ("argv", "VARCHAR[]"),
        ("exe", "VARCHAR"),
        ("label", "VARCHAR"),
        ("workflow", "VARCHAR"),
        ("agent", "VARCHAR"),
        ("start", "DOUBLE"),
        ("end", "DOUBLE"),
        ("duration_s", "DOUBLE"),
        ("exit_code", "BIGINT"),
        ("signal", "VARCHAR"),
        ("failure", "BOOLEAN"),
    ),
    "files": (
        ("session", "VARCHAR"),
        ("path", "VARCHAR"),
        ("ops", "VARCHAR[]"),
        ("pids", "BIGINT[]"),
        ("first", "DOUBLE"),
        ("last", "DOUBLE"),
    ),
    "network": (
        ("session", "VARCHAR"),
        ("family", "VARCHAR"),
        ("address", "VARCHAR"),
        ("port", "BIGINT"),
        ("op", "VARCHAR"),
        ("ok", "BOOLEAN"),
        ("error", "VARCHAR"),
        ("pids", "BIGINT[]"),
    ),
    "tasks": (
        ("session", "VARCHAR"),
        ("task", "VARCHAR"),
        ("state", "VARCHAR"),
        ("attempts", "BIGINT"),
        ("exit_code", "BIGINT"),
        ("duration_s", "DOUBLE"),
        ("reason", "VARCHAR"),
        ("node", "VARCHAR"),  # the cluster node its latest attempt ran on (executor = "ray"); null: local
    ),
}


def _pick(entry: Mapping[str, Any], table: str, **values: Any) -> dict[str, Any]:
    return {name: values[name] if name in values else entry.get(name) for name, _type in COLUMNS[table]}


def run_rows(
    report: Mapping[str, Any], failed: frozenset[int] = frozenset()
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(table, row) pairs of a run, env or import session's `report --json` object. `failed` holds the
    process ids the fold calls failures, for reports whose processes carry no `failure` verdict."""
    s = report["session"]
    sid = s["id"]
    summary = report.get("summary", {})
    yield (
        "sessions",
        _pick(s, "sessions", session=sid, processes=summary.get("processes"), failed=summary.get("failed")),
    )
    for p in report.get("processes") or ():
        failure = p.get("failure")
        verdict = failure if isinstance(failure, bool) else p.get("id") in failed
        yield "processes", _pick(p, "processes", session=sid, failure=verdict)
    for f in report.get("files") or ():
        ops = f.get("ops")
        yield "files", _pick(f, "files", session=sid, ops=[ops] if isinstance(ops, str) else ops)
    for n in report.get("network") or ():
        yield "network", _pick(n, "network", session=sid)


def agents_rows(
    session: Mapping[str, Any], status: Mapping[str, Any]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(table, row) pairs of an agents session: its `session` header fields and `agents status --json`."""
    sid = session["id"]
    tasks = status.get("tasks") or []
    failed = sum(t.get("state") not in ("succeeded", "skipped") for t in tasks)
    yield (
        "sessions",
        _pick(session, "sessions", session=sid, status=status.get("state"), processes=None, failed=failed),
    )
    for t in tasks:
        yield "tasks", _pick(t, "tasks", session=sid, task=t.get("id"))
