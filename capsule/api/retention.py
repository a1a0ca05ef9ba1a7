"""Retention: delete old sessions (`prune`) and compress finished ones (`archive`); never a running one."""

from __future__ import annotations

import time
from pathlib import Path

import attrs

from capsule.api.errors import Unavailable, UsageError
from capsule.api.sessions import home, resolve


@attrs.frozen(kw_only=True)
class Deleted:
    id: str
    started: float
    archived: bool
    bytes: int


@attrs.frozen(kw_only=True)
class Pruned:
    """`capsule prune --json`."""

    dry_run: bool
    deleted: tuple[Deleted, ...]
    kept: int
    running_skipped: tuple[str, ...]
    bytes_freed: int
    cache_entries: int = attrs.field(
        default=0,
        metadata={"doc": "Agent-run cache entries unused for --older-than, deleted (bytes counted)."},
    )


@attrs.frozen(kw_only=True)
class ArchivedSession:
    id: str
    files: tuple[str, ...]
    already_archived: bool
    bytes_before: int
    bytes_after: int


@attrs.frozen(kw_only=True)
class Skipped:
    id: str
    reason: str


@attrs.frozen(kw_only=True)
class ArchiveResult:
    """`capsule archive --json`."""

    archived: tuple[ArchivedSession, ...]
    skipped: tuple[Skipped, ...]


def parse_age(text: str | None) -> float | None:
    """Seconds from `30d`, `12h`, `90m`, `2w` (None stays None)."""
    from capsule.stages.retention import parse_age as parse

    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from exc


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def prune(older_than: str | None = None, keep: int = 0, dry_run: bool = False) -> Pruned:
    """Delete sessions older than `older_than` beyond the `keep` newest (never a running one)."""
    from capsule.stages.retention import candidate, delete_session, select_prunable
    from capsule.stages.store import session_dirs

    if older_than is None and keep == 0:
        raise UsageError("say what to prune: --older-than AGE and/or --keep N")
    age = parse_age(older_than)
    where = home()
    found = [candidate(path) for path in session_dirs(where)]
    doomed = select_prunable(found, now=time.time(), older_than=age, keep=keep)
    rows: list[Deleted] = []
    freed = 0
    for c in doomed:
        size = _dir_size(c.path)
        if not dry_run:
            try:
                delete_session(c.path, where)
            except OSError as exc:
                raise Unavailable(f"cannot delete {c.path}: {exc.strerror or exc}") from exc
        freed += size
        rows.append(Deleted(id=c.id, started=c.started, archived=c.archived, bytes=size))
    cached = []
    if age is not None:
        from capsule.stages.task_workspace import prune_cache

        found_cache = prune_cache(where, age, time.time(), dry_run=True)
        freed += sum(_dir_size(p) for p in found_cache)
        cached = found_cache if dry_run else prune_cache(where, age, time.time())
    return Pruned(
        cache_entries=len(cached),
        dry_run=dry_run,
        deleted=tuple(rows),
        kept=len(found) - len(rows),
        running_skipped=tuple(c.id for c in found if c.running),
        bytes_freed=freed,
    )


def archive(sessions: list[str] | None = None, older_than: str | None = None) -> ArchiveResult:
    """Compress the named sessions, or those older than `older_than`, with zstd (running ones skipped)."""
    from capsule.stages.retention import archive_session, candidate
    from capsule.stages.store import session_dirs

    if not sessions and older_than is None:
        raise UsageError("say what to archive: SESSION... or --older-than AGE")
    if sessions and older_than is not None:
        raise UsageError("give sessions or --older-than, not both")
    if sessions:
        chosen = [candidate(resolve(ref)) for ref in sessions]
    else:
        age = parse_age(older_than)
        assert age is not None
        now = time.time()
        chosen = [c for c in map(candidate, session_dirs(home())) if now - c.started >= age]
    rows: list[ArchivedSession] = []
    skipped: list[Skipped] = []
    for c in chosen:
        if c.running:
            skipped.append(Skipped(id=c.id, reason="running"))
            continue
        try:
            done = archive_session(c.path)
        except OSError as exc:
            raise Unavailable(f"cannot archive {c.path}: {exc.strerror or exc}") from exc
        rows.append(
            ArchivedSession(
                id=done.id,
                files=tuple(done.files),
                already_archived=done.already,
                bytes_before=done.bytes_before,
                bytes_after=done.bytes_after,
            )
        )
    return ArchiveResult(archived=tuple(rows), skipped=tuple(skipped))
