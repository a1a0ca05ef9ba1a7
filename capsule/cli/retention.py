"""Retention: `capsule prune` deletes old sessions, `capsule archive` compresses finished ones (zstd).

A running session (no end yet, its recorder alive) is never touched by either. The work is done by
`capsule.api.retention`; archived sessions stay readable by every command.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from capsule.cli.base import JsonOption, _print_json, app

AgeOption = Annotated[
    str | None,
    typer.Option(
        "--older-than",
        help="Only sessions started longer ago than this: 30d, 12h, 90m, 2w, 1d12h (a bare number is seconds).",
    ),
]


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


@app.command(help="Delete old sessions (never a running one). --dry-run shows what would go.")
def prune(
    older_than: AgeOption = None,
    keep: Annotated[int, typer.Option("--keep", help="Always keep the N newest sessions.", min=0)] = 0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be deleted; delete nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    from capsule.api import retention
    from capsule.api.records import plain

    pruned = retention.prune(older_than, keep, dry_run)
    if as_json:
        _print_json(plain(pruned))
        return
    rows = plain(pruned.deleted)
    freed, running, kept = pruned.bytes_freed, pruned.running_skipped, pruned.kept
    verb = "would delete" if dry_run else "deleted"
    for row in rows:
        print(f"{verb} {row['id']} ({_size(row['bytes'])})")
    print(
        f"prune: {verb} {len(rows)} session{'s' if len(rows) != 1 else ''}, {_size(freed)}; "
        f"kept {kept}"
        + (f" ({len(running)} running)" if running else "")
        + (f"; {pruned.cache_entries} cache entries" if pruned.cache_entries else ""),
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
    from capsule.api import retention
    from capsule.api.records import plain

    done = plain(retention.archive(sessions, older_than))
    if as_json:
        _print_json(done)
        return
    rows, skipped = done["archived"], done["skipped"]
    for row in rows:
        if row["already_archived"]:
            print(f"{row['id']}: already archived")
        else:
            print(f"{row['id']}: {_size(row['bytes_before'])} -> {_size(row['bytes_after'])}")
    for skip in skipped:
        print(f"{skip['id']}: skipped ({skip['reason']})", file=sys.stderr)
    if sessions and skipped:
        raise typer.Exit(1)
