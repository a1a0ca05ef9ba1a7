"""Retention: `capsule prune` deletes old sessions, `capsule archive` compresses finished ones (zstd).

A running session (no end yet, its recorder alive) is never touched by either. The work is done by
`capsule.stages.retention`; archived sessions stay readable by every command.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from capsule.cli.base import JsonOption, _home, _print_json, _resolve, app, fail

AgeOption = Annotated[
    str | None,
    typer.Option(
        "--older-than",
        help="Only sessions started longer ago than this: 30d, 12h, 90m, 2w, 1d12h (a bare number is seconds).",
    ),
]


def _age(text: str | None) -> float | None:
    from capsule.stages.retention import parse_age

    if text is None:
        return None
    try:
        return parse_age(text)
    except ValueError as exc:
        fail(f"--older-than: {exc}", 2)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@app.command(help="Delete old sessions (never a running one). --dry-run shows what would go.")
def prune(
    older_than: AgeOption = None,
    keep: Annotated[int, typer.Option("--keep", help="Always keep the N newest sessions.", min=0)] = 0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be deleted; delete nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    from capsule.stages.retention import candidate, delete_session, select_prunable
    from capsule.stages.store import session_dirs

    if older_than is None and keep == 0:
        fail("say what to prune: --older-than AGE and/or --keep N", 2)
    age = _age(older_than)
    home = _home()
    found = [candidate(path) for path in session_dirs(home)]
    doomed = select_prunable(found, now=time.time(), older_than=age, keep=keep)
    rows: list[dict[str, Any]] = []
    freed = 0
    for c in doomed:
        size = _dir_size(c.path)
        if not dry_run:
            try:
                delete_session(c.path, home)
            except OSError as exc:
                fail(f"cannot delete {c.path}: {exc.strerror or exc}", 5)
        freed += size
        rows.append({"id": c.id, "started": c.started, "archived": c.archived, "bytes": size})
    running = [c.id for c in found if c.running]
    if as_json:
        _print_json(
            {
                "dry_run": dry_run,
                "deleted": rows,
                "kept": len(found) - len(rows),
                "running_skipped": running,
                "bytes_freed": freed,
            }
        )
        return
    verb = "would delete" if dry_run else "deleted"
    for row in rows:
        print(f"{verb} {row['id']} ({_size(row['bytes'])})")
    print(
        f"prune: {verb} {len(rows)} session{'s' if len(rows) != 1 else ''}, {_size(freed)}; "
        f"kept {len(found) - len(rows)}" + (f" ({len(running)} running)" if running else ""),
        file=sys.stderr,
    )


@app.command(help="Compress finished sessions with zstd; every command still reads them.")
def archive(
    sessions: Annotated[
        list[str] | None, typer.Argument(help="Sessions to archive (id, prefix, path, `latest`).")
    ] = None,
    older_than: AgeOption = None,
    as_json: JsonOption = False,
) -> None:
    from capsule.stages.retention import archive_session, candidate
    from capsule.stages.store import session_dirs

    if not sessions and older_than is None:
        fail("say what to archive: SESSION... or --older-than AGE", 2)
    if sessions and older_than is not None:
        fail("give sessions or --older-than, not both", 2)
    if sessions:
        chosen = [candidate(_resolve(ref)) for ref in sessions]
    else:
        age = _age(older_than)
        assert age is not None
        now = time.time()
        chosen = [c for c in map(candidate, session_dirs(_home())) if now - c.started >= age]
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for c in chosen:
        if c.running:
            skipped.append({"id": c.id, "reason": "running"})
            continue
        try:
            done = archive_session(c.path)
        except OSError as exc:
            fail(f"cannot archive {c.path}: {exc.strerror or exc}", 5)
        rows.append(
            {
                "id": done.id,
                "files": list(done.files),
                "already_archived": done.already,
                "bytes_before": done.bytes_before,
                "bytes_after": done.bytes_after,
            }
        )
    if as_json:
        _print_json({"archived": rows, "skipped": skipped})
        return
    for row in rows:
        if row["already_archived"]:
            print(f"{row['id']}: already archived")
        else:
            print(f"{row['id']}: {_size(row['bytes_before'])} -> {_size(row['bytes_after'])}")
    for skip in skipped:
        print(f"{skip['id']}: skipped ({skip['reason']})", file=sys.stderr)
    if sessions and skipped:
        raise typer.Exit(1)
