"""Derived report snapshots: a finished session's `report --json` bytes kept beside its events.

A cache, never truth. The first line of `report.snapshot` is a JSON key naming everything the report
was derived from: the snapshot format, Capsule's version, the events file (name, size, mtime in ns) and a
digest of the label and workflow rules; the report follows as one zstd frame. A snapshot whose key differs from the session's key now (the
events grew or were archived, the rules or Capsule changed, another format) is ignored and rebuilt;
`replay --check` never reads it. Only ended sessions of at least MIN_EVENTS events get one: a smaller
session folds faster than a snapshot would save.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from capsule import __version__
from capsule.stages.store import EVENTS, open_private, private_output, session_file

if TYPE_CHECKING:  # the report (rich with it) loads only for a session that gets a snapshot: ~50 ms
    from capsule.report.json_stream import Chunk

SNAPSHOT = "report.snapshot"
FORMAT = (
    # bump when the snapshot's layout or the report's bytes change (2: compressed, 3: spawn_failures,
    # 4: a sample of rss 0 is no peak, 5: an argv[0] cut by `-s` is completed from the exec'd path,
    # 6: a process's `stopped`, 7: the session's `stopped_by`, and the terminal's Ctrl-C is a stop)
    7
)
MIN_EVENTS = 20_000
COPY_CHUNK = 1 << 20
# The report is stored compressed: a 1,000,000-event report is 320 MB of JSON, and writing it into the
# page cache took ~0.8 s of the first report here; zstd's fastest level makes it ~10 MB in ~0.15 s
# (reading it back costs the next report ~0.2 s). Its indented JSON repeats itself, so level 1 is enough.
LEVEL = 1


class DamagedSnapshot(Exception):
    """The snapshot's report does not decompress (it was changed by hand: it is written whole or not)."""


def snapshot_key(session_dir: Path, rules_digest: str) -> dict[str, Any] | None:
    """What a snapshot of this session must have been derived from; None without an events file."""
    found = session_file(session_dir, EVENTS)
    if found is None:
        return None
    stat = found.stat()
    return {
        "format": FORMAT,
        "capsule": __version__,
        "events": found.name,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "rules": rules_digest,
    }


def fresh_snapshot(session_dir: Path, rules_digest: str) -> Path | None:
    """The session's snapshot if its key is the session's key now; None if missing, stale or foreign."""
    path = session_dir / SNAPSHOT
    key = snapshot_key(session_dir, rules_digest)
    if key is None:
        return None
    try:
        with open(path, "rb") as file:
            first = file.readline(4096)
    except OSError:
        return None
    try:
        found = orjson.loads(first)
    except orjson.JSONDecodeError:
        return None
    return path if found == key else None


def copy_report(path: Path, out: BinaryIO) -> None:
    """Write a snapshot's report (everything after its key line, decompressed) to `out`."""
    import zstandard

    with open(path, "rb") as file:
        file.readline(4096)
        try:
            zstandard.ZstdDecompressor().copy_stream(file, out, read_size=COPY_CHUNK, write_size=COPY_CHUNK)
        except zstandard.ZstdError as exc:
            raise DamagedSnapshot(f"{path}: {exc}") from None
    out.flush()


def packed(chunks: Iterable[Chunk]) -> Iterator[bytes]:
    """The report's chunks as the snapshot stores them: one zstd frame, compressed as they come."""
    import zstandard

    packer = zstandard.ZstdCompressor(level=LEVEL).compressobj()
    for chunk in chunks:
        if data := packer.compress(chunk):
            yield data
    yield packer.flush()


def write_snapshot(
    session_dir: Path, key: dict[str, Any], chunks: Iterable[Chunk], name: str = SNAPSHOT
) -> Path:
    """Write the snapshot (0600, into a temporary file renamed into place: a reader sees the old one or
    the whole new one); the report's compressed (`packed`), another snapshot's (`name`) as given."""
    path = session_dir / name
    with private_output(path) as out:
        out.write(orjson.dumps(key) + b"\n")
        for chunk in packed(chunks) if name == SNAPSHOT else chunks:
            out.write(chunk)
    return path


def tee_snapshot(session_dir: Path, key: dict[str, Any], chunks: Iterable[Chunk], out: BinaryIO) -> None:
    """Write `chunks` to `out` and, as they go, to a new snapshot (the first report's one pass instead of
    writing the snapshot and then copying it). The snapshot is a cache: if it cannot be written (disk
    full, read-only) the report still goes out whole and no partial snapshot is left behind."""
    import zstandard

    path = session_dir / SNAPSHOT
    temp = path.with_name(f".{SNAPSHOT}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    snap: BinaryIO | None = None
    try:
        snap = os.fdopen(open_private(temp, append=False, new=True), "wb")
        snap.write(orjson.dumps(key) + b"\n")
    except OSError:
        _abandon(snap, temp)
        snap = None
    packer = zstandard.ZstdCompressor(level=LEVEL).compressobj()  # as `packed`, a chunk at a time
    try:
        for chunk in chunks:
            out.write(chunk)
            if snap is not None:
                try:
                    snap.write(packer.compress(chunk))
                except OSError:
                    _abandon(snap, temp)
                    snap = None
        out.flush()
        if snap is not None:
            try:
                snap.write(packer.flush())
            except OSError:
                _abandon(snap, temp)
                snap = None
    except BaseException:
        _abandon(snap, temp)
        raise
    if snap is not None:
        try:
            snap.close()
            os.replace(temp, path)
        except OSError:
            _abandon(None, temp)


def _abandon(snap: BinaryIO | None, temp: Path) -> None:
    if snap is not None:
        with contextlib.suppress(OSError):
            snap.close()
    with contextlib.suppress(OSError):
        temp.unlink()


# An ended agents session's durations by spec hash (`capsule.fold.tasks.durations` of its fold), which
# `agents run`, `check` and `status` take from the last ten runs for estimates and ETAs: folding those ten
# again at every command cost ~80 ms per 1,000-task run here, more than the scheduler's start. The same
# key as the report snapshot, so it is rebuilt when the events change.
DURATIONS = "durations.snapshot"
DURATIONS_RULES = "durations"  # in place of the rules' digest: no rules go into durations


def read_durations(session_dir: Path) -> dict[str, float] | None:
    """The session's durations snapshot if it is fresh, else None."""
    key = snapshot_key(session_dir, DURATIONS_RULES)
    try:
        with open(session_dir / DURATIONS, "rb") as file:
            first, rest = file.readline(4096), file.read()
        if key is None or orjson.loads(first) != key:
            return None
        found = orjson.loads(rest)
    except (OSError, orjson.JSONDecodeError):
        return None
    return found if isinstance(found, dict) else None


def write_durations(session_dir: Path, durations: dict[str, float]) -> None:
    """Keep an ended session's durations beside it; a cache: if it cannot be written, nothing is lost."""
    key = snapshot_key(session_dir, DURATIONS_RULES)
    if key is not None:
        with contextlib.suppress(OSError):
            write_snapshot(session_dir, key, [orjson.dumps(durations)], name=DURATIONS)


def drop_snapshot(session_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(session_dir / SNAPSHOT)
