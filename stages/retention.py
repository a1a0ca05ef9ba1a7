"""Retention: delete old sessions (`capsule prune`) and compress finished ones (`capsule archive`).

Neither ever touches a running session (no `session.ended` and its recorder alive). Archiving replaces
`events.jsonl` and `trace.strace` by zstd frames (`*.zst`, level 10: ~1/15 of the size on real
sessions) that every reader opens through `capsule.stages.store.open_readable`. The order of operations is
what keeps a crash from losing data: compress to a temporary name, fsync, rename, fsync the directory,
and only then remove the plain file. A crash between the rename and the removal leaves both forms,
both complete; readers take the plain one and the next `archive` finishes the job.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import attrs

from capsule.duration import parse_duration
from capsule.stages.reader import glance, recorder_alive
from capsule.stages.snapshot import drop_snapshot
from capsule.stages.store import EVENTS, TRACE, ZST, open_private, spool_path

ARCHIVED_FILES = (EVENTS, TRACE)
LEVEL = 10  # measured on a recorded 2.4 MB events.jsonl: level 3 -> 8.6%, 10 -> 6.9%, 19 -> 6.4% (10x slower)


def parse_age(text: str) -> float:
    """`30d`, `12h`, `90m`, `2w`, `1d12h`, `45s` -> seconds; a bare number is seconds, as every
    duration (it was days before 0.2: `--older-than 30` now means 30 seconds). ValueError otherwise."""
    return parse_duration(text)


@attrs.frozen(kw_only=True)
class Candidate:
    """A session as retention sees it: when it started and whether it may be touched."""

    path: Path
    started: float  # from its header; the directory's mtime when it has none
    running: bool
    archived: bool

    @property
    def id(self) -> str:
        return self.path.name


def candidate(path: Path) -> Candidate:
    seen = glance(path)
    header = seen.header
    running = seen.ended is None and header is not None and recorder_alive(header)
    started = header.ts if header is not None else path.stat().st_mtime
    archived = not (path / EVENTS).is_file()
    return Candidate(path=path, started=started, running=running, archived=archived)


def select_prunable(
    sessions: Iterable[Candidate], *, now: float, older_than: float | None, keep: int
) -> list[Candidate]:
    """The sessions to delete: beyond the `keep` newest, older than `older_than`, and not running."""
    ordered = sorted(sessions, key=lambda c: (c.started, c.id), reverse=True)
    doomed = []
    for rank, c in enumerate(ordered):
        if rank < keep or c.running:
            continue
        if older_than is not None and now - c.started < older_than:
            continue
        doomed.append(c)
    return doomed


def delete_session(path: Path, home: Path) -> None:
    """Remove a session: renamed out of sight first (readers skip it at once), then deleted."""
    hidden = path.with_name(f".deleting-{path.name}")
    os.rename(path, hidden)
    shutil.rmtree(hidden)
    spool_path(home, path.name).unlink(missing_ok=True)  # kept only for a recorder that died


@attrs.frozen(kw_only=True)
class Archived:
    """What archiving one session did: bytes before and after, files compressed now."""

    id: str
    files: tuple[str, ...]
    bytes_before: int
    bytes_after: int
    already: bool  # it was archived before: nothing to do


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _compress(plain: Path) -> int:
    """Write plain.zst atomically (0600), then remove plain; returns the compressed size."""
    import zstandard

    final = plain.with_name(plain.name + ZST)
    temp = plain.with_name(f".{plain.name}{ZST}.tmp")
    fd = open_private(temp, append=False)
    try:
        with open(plain, "rb") as source, os.fdopen(fd, "wb", closefd=False) as sink:
            zstandard.ZstdCompressor(level=LEVEL, write_checksum=True).copy_stream(source, sink)
            sink.flush()
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.rename(temp, final)
    _fsync_dir(plain.parent)
    plain.unlink()
    _fsync_dir(plain.parent)
    return final.stat().st_size


def archive_session(path: Path) -> Archived:
    """Compress a session's events and raw trace; idempotent. The caller checks it is finished."""
    files: list[str] = []
    before = after = 0
    for name in ARCHIVED_FILES:
        plain, packed = path / name, path / (name + ZST)
        if not plain.is_file():
            continue
        if packed.is_file():
            # A crash after the rename: the .zst is complete (it was fsynced before the rename).
            plain.unlink()
            _fsync_dir(path)
            continue
        before += plain.stat().st_size
        after += _compress(plain)
        files.append(name)
    if files:  # the report snapshot names the plain events file: stale now, and often bigger than them
        drop_snapshot(path)
    return Archived(
        id=path.name, files=tuple(files), bytes_before=before, bytes_after=after, already=not files
    )
