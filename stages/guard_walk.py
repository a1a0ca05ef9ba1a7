"""The names under the working directory that `protect_paths` globs cover, walked as `os.walk` walks
(symlinked directories not followed, at most MAX_WALK entries) and kept between guarded starts.

Theory of operation. A directory's names change only with its mtime and ctime, so each directory
listed is kept under `$CAPSULE_HOME/guard-walk/` with its (st_dev, st_ino, st_mtime_ns, st_ctime_ns),
its entry count, the subdirectories the walk goes into and the entries of it the globs match. The
next start stats each directory it reaches (no listing): one whose four numbers are the same is taken
from the cache, any other (changed, new, racy, unlistable) is listed and matched again, and its
subdirectories are reached in turn. The matches are unresolved paths: the caller resolves them, and a
symlink's is_dir is asked again, at use time (a link's target changes without its directory changing).
The file is a cache: unreadable, not ours, malformed or of another version, the tree is walked afresh.
Like config.toml beside it, it is trusted as this user's own: a process that can write $CAPSULE_HOME
can make a later start protect less, as it can by editing the [policy] there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from capsule.policy import Policy
from capsule.policy.paths import protected_path
from capsule.stages import cache_file
from capsule.stages.guard_probe import GuardRefused
from capsule.stages.home import home_path

MAX_WALK = 200_000  # entries looked at when expanding protect_paths globs under the working directory
VERSION = 1
FOLDER = "guard-walk"  # under $CAPSULE_HOME
MAX_FILE = 64 << 20  # a larger cache file is not ours to trust (200k entries take a few MB)
MAX_KEPT = 64  # walks kept (one per working directory and globs): the least recently written go first

# Racy timestamps (git's "racy index" problem). The kernel stamps a directory with its coarse clock
# (a jiffy on ext4, xfs, btrfs, tmpfs; a second on some; two seconds on FAT), so a change made just
# after the listing, in the same tick, can leave mtime and ctime as they were when listed: that
# directory would look unchanged forever. A change after `start` (taken before any stat of the walk)
# is stamped at least `start - RACY_NS`; so a directory whose mtime and ctime are both older than that
# cannot have changed unseen, and any other is listed again at the next start.
RACY_NS = 2_000_000_000

FILE, DIR, LINK = 0, 1, 2  # what an entry is: a link's is_dir is asked again at use time


class _Stale(Exception):
    """A cache entry that is not what this module writes: drop the cache and walk afresh."""


def glob_matches(
    policy: Policy, cwd: os.PathLike[str] | str, home: str, *, cache: bool = True
) -> list[tuple[str, bool]]:
    """(path, is_dir) of each name under `cwd` a `protect_paths` glob of `policy` covers, unresolved,
    in os.walk's order; `cache`: keep the walk under $CAPSULE_HOME and reuse what has not changed."""
    top = os.fspath(cwd)
    key = [VERSION, top, list(policy.protect_paths), home, os.geteuid(), sorted(os.getgroups())]
    path = _cache_path(key) if cache else None
    kept = _load(path, key) if path is not None else None
    start = time.time_ns()
    try:
        walk = _Walk(policy, home, kept)
        matches = walk.run(top)
    except _Stale:
        walk = _Walk(policy, home, None)
        matches = walk.run(top)
    if path is not None and walk.listed:
        _save(path, {"version": VERSION, "key": key, "start": start, "dirs": walk.memo})
    return matches


class _Walk:
    def __init__(self, policy: Policy, home: str, kept: dict[str, Any] | None) -> None:
        self.policy = policy
        self.home = home
        self.old: dict[str, Any] = kept["dirs"] if kept is not None else {}
        self.trusted_before = kept["start"] - RACY_NS if kept is not None else 0
        self.memo: dict[str, list[Any]] = {}
        self.listed = False  # whether a directory was listed (else the kept cache is still exact)
        self.seen = 0
        self.top = ""

    def run(self, top: str) -> list[tuple[str, bool]]:
        self.top = top
        matches: list[tuple[str, bool]] = []
        base = top if top.endswith("/") else top + "/"  # os.path.join(top, rel), as os.walk joins
        stack = [""]
        while stack:
            rel = stack.pop()
            subdirs = self._directory(base + rel if rel else top, rel, matches)
            stack += [f"{rel}/{name}" if rel else name for name in reversed(subdirs)]
        return matches

    def _directory(self, full: str, rel: str, matches: list[tuple[str, bool]]) -> Sequence[str]:
        """The subdirectories to go into; the directory's matches appended to `matches`."""
        try:
            st = os.lstat(full) if rel else os.stat(full)  # before listing, so a change after it shows
        except OSError:
            st = None
        sign = [st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns] if st is not None else None
        entry = self.old.get(rel) if st is not None and stat.S_ISDIR(st.st_mode) else None
        if (
            entry is not None
            and sign is not None
            and _sign(entry) == sign
            and max(sign[2:]) < self.trusted_before
        ):
            count, subdirs, found = _unpack(entry)
            self._count(count)
            for name, kind in found:
                match = os.path.join(full, name)
                matches.append((match, kind == DIR or (kind == LINK and os.path.isdir(match))))
            self.memo[rel] = entry
            return subdirs
        listing = _list(full)
        if listing is None:
            return ()  # unreadable: skipped, as os.walk does, and never kept (listed again next time)
        self.listed = True
        self._count(len(listing))
        subdirs, kept = [], []
        for name, kind, is_dir in listing:
            match = os.path.join(full, name)
            if protected_path(self.policy, match, home=self.home) is not None:
                matches.append((match, is_dir))
                kept += [name, kind]
            if kind == DIR:
                subdirs.append(name)
        if sign is not None:
            self.memo[rel] = [*sign, len(listing), subdirs, kept]
        return subdirs

    def _count(self, entries: int) -> None:
        self.seen += entries
        if self.seen > MAX_WALK:
            raise GuardRefused(
                f"protect_paths: more than {MAX_WALK} entries under {self.top} to match globs against; "
                "name the paths instead"
            )


def _list(full: str) -> list[tuple[str, int, bool]] | None:
    """(name, kind, is_dir) of each entry as os.walk sorts them: directories (links to one included)
    first, then the rest, each in the directory's order; None when it cannot be listed."""
    dirs: list[tuple[str, int, bool]] = []
    files: list[tuple[str, int, bool]] = []
    try:
        with os.scandir(full) as entries:
            for entry in entries:
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                try:
                    link = entry.is_symlink()
                except OSError:
                    link = False
                kind = LINK if link else DIR if is_dir else FILE
                (dirs if is_dir else files).append((entry.name, kind, is_dir))
    except OSError:
        return None
    return dirs + files


def _sign(entry: Any) -> Any:
    if not isinstance(entry, list) or len(entry) != 7:
        raise _Stale
    return entry[:4]


def _unpack(entry: list[Any]) -> tuple[int, list[str], list[tuple[str, int]]]:
    """(entry count, subdirectories, matches) of a kept directory, checked: a file that is not what
    this module writes costs a fresh walk, never a wrong one (nor a path outside the directory)."""
    count, subdirs, found = entry[4:]
    if not (
        type(count) is int and count >= 0 and _names(subdirs) and type(found) is list and len(found) % 2 == 0
    ):
        raise _Stale
    if found and not (_names(found[::2]) and set(found[1::2]) <= {FILE, DIR, LINK}):
        raise _Stale
    return count, subdirs, list(zip(found[::2], found[1::2], strict=True))


def _names(names: Any) -> bool:
    """Whether `names` is a list of file names: no slash, no NUL, not empty, `.` or `..`."""
    if type(names) is not list:
        return False
    if not names:
        return True
    try:
        joined = "\0".join(names)
    except TypeError:
        return False
    return "/" not in joined and joined.count("\0") == len(names) - 1 and not {"", ".", ".."} & set(names)


def _cache_path(key: list[Any]) -> str:
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]
    return os.path.join(home_path(), FOLDER, f"{digest}.json")


def _load(path: str, key: list[Any]) -> dict[str, Any] | None:
    """The kept walk for `key`, or None: missing, unreadable, not this user's private file, too large,
    malformed, of another version or for another key."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (
            not stat.S_ISREG(st.st_mode)
            or st.st_uid != os.geteuid()
            or st.st_mode & 0o077
            or st.st_size > MAX_FILE
        ):
            return None
        with os.fdopen(os.dup(fd), "rb") as file:
            data = file.read(MAX_FILE + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        kept = orjson.loads(data)
    except orjson.JSONDecodeError:
        try:  # names that are not UTF-8 (surrogate escapes) are written by json, which orjson refuses
            kept = json.loads(data)
        except (ValueError, RecursionError):
            return None
    if not (
        isinstance(kept, dict)
        and kept.get("version") == VERSION
        and kept.get("key") == key
        and type(kept.get("start")) is int
        and isinstance(kept.get("dirs"), dict)
    ):
        return None
    return kept


def _save(path: str, kept: dict[str, Any]) -> None:
    try:
        data = orjson.dumps(kept)
    except TypeError:  # a name with surrogate escapes: orjson writes only valid UTF-8
        data = json.dumps(kept, separators=(",", ":")).encode()
    cache_file.keep(Path(path), data)
    _prune(os.path.dirname(path))


def _prune(folder: str) -> None:
    """Keep the MAX_KEPT walks written last: every guarded start in a new directory (a temporary one,
    each test's) leaves one, and nothing else would ever remove them."""
    try:
        with os.scandir(folder) as entries:
            kept = [
                (entry.stat().st_mtime_ns, entry.path) for entry in entries if entry.name.endswith(".json")
            ]
    except OSError:
        return
    for _, stale in sorted(kept)[:-MAX_KEPT]:
        with contextlib.suppress(OSError):
            os.unlink(stale)
