"""The guard's glob walk kept between starts (stages/guard_walk.py): with the cache or without it, the
same paths are protected, whatever changed in between; a cache file that is not ours is ignored."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import hypothesis
import orjson
import pytest
from hypothesis import strategies as st

from capsule.policy import Policy
from capsule.policy.paths import is_glob, protected_path
from capsule.stages import guard_walk
from capsule.stages.guard_files import expand_paths
from capsule.stages.guard_probe import GuardRefused

HOME = "/home/someone"
POLICY = Policy(protect_paths=("*.key", "vault*", "*/deep/*.pem"))
NAMES = ["a", "b", "vault1", "x.key", "deep", "k.pem", "n"]


def _walked(policy: Policy, cwd: Path, home: str) -> list[tuple[str, bool]]:
    """expand_paths as it was before the cache (os.walk over cwd): the oracle."""
    found: dict[str, bool] = {}
    scoped = Policy(protect_paths=tuple(r for r in policy.protect_paths if is_glob(r)))
    for root, dirs, files in os.walk(cwd):
        for name in (*dirs, *files):
            full = os.path.join(root, name)
            if protected_path(scoped, full, home=home) is not None:
                found[os.path.realpath(full)] = name in dirs
    return sorted(found.items())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _apply(root: Path, op: tuple[str, str, str]) -> None:
    """One edit of the tree; an edit the tree does not allow (a parent that is a file) is skipped."""
    what, rel, other = op
    path = root / rel
    with contextlib.suppress(OSError):
        if what in ("file", "dir", "link"):
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove(path)
        if what == "file":
            path.write_text("secret")
        elif what == "dir":
            path.mkdir()
        elif what == "link":  # to a file, a directory or nothing, relative or absolute
            os.symlink(other if len(other) % 2 else str(root / other), path)
        elif what == "remove":
            _remove(path)
        elif what == "rename" and os.path.lexists(path) and not (root / other).is_relative_to(path):
            _remove(root / other)
            os.rename(path, root / other)


_rel = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
_op = st.tuples(st.sampled_from(["file", "dir", "link", "remove", "rename"]), _rel, _rel)


def _next_tick(probe: Path) -> None:
    """Wait until the filesystem stamps later than now: every edit from here on has a newer mtime."""
    now = time.time_ns()
    while True:
        probe.touch()
        if probe.stat().st_mtime_ns > now:
            return


@pytest.mark.parametrize("racy_ns", [guard_walk.RACY_NS, 0], ids=["racy-2s", "trusting"])
@hypothesis.settings(
    max_examples=60, deadline=None, suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture]
)
@hypothesis.given(
    initial=st.lists(_op, max_size=20), rounds=st.lists(st.lists(_op, max_size=6), min_size=1, max_size=4)
)
def test_the_cache_never_changes_the_expansion(
    initial: list[tuple[str, str, str]],
    rounds: list[list[tuple[str, str, str]]],
    racy_ns: int,
    capsule_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Expansion with the cache == expansion without it, over random trees and random edits between
    starts (files and directories made, removed, renamed, replaced by the other kind, symlinks).
    "trusting": no racy margin, each edit a clock tick after the last start, so kept directories are
    reused; "racy-2s": edits right after a start, which the racy rule must catch."""
    monkeypatch.setattr(guard_walk, "RACY_NS", racy_ns)
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    for op in initial:
        _apply(root, op)
    for edits in [*rounds, []]:
        assert expand_paths(POLICY, root, HOME) == _walked(POLICY, root, HOME)
        if racy_ns == 0:
            _next_tick(tmp_path / "tick")
        for op in edits:
            _apply(root, op)


@pytest.fixture
def tree(tmp_path: Path, capsule_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small project with matches at several depths, its cache trusted at once (no racy margin)."""
    monkeypatch.setattr(guard_walk, "RACY_NS", 0)
    root = tmp_path / "project"
    for rel in ("a/b/c", "a/deep", "vault1/inner", "n"):
        (root / rel).mkdir(parents=True)
    for rel in ("a/b/c/one.key", "a/deep/k.pem", "vault1/inner/f", "n/plain", "top.key"):
        (root / rel).write_text("secret")
    os.symlink("a/b", root / "link.key")
    return root


def _listed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    listed: list[str] = []
    real = guard_walk._list

    def spy(full: str) -> list[tuple[str, int, bool]] | None:
        listed.append(full)
        return real(full)

    monkeypatch.setattr(guard_walk, "_list", spy)
    return listed


def test_an_unchanged_tree_is_not_listed_again(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second start stats the directories and lists none; a change lists that directory alone."""
    expected = _walked(POLICY, tree, HOME)
    assert expand_paths(POLICY, tree, HOME) == expected
    _next_tick(tmp_path / "tick")
    listed = _listed(monkeypatch)
    assert expand_paths(POLICY, tree, HOME) == expected
    assert listed == []
    (tree / "a/b/c/two.key").write_text("secret")
    assert expand_paths(POLICY, tree, HOME) == _walked(POLICY, tree, HOME) != expected
    assert listed == [str(tree / "a/b/c")]


def test_a_symlink_retargeted_elsewhere_is_resolved_at_use(tree: Path, tmp_path: Path) -> None:
    """A kept match that is a symlink: its target and is_dir are asked again though its directory is
    unchanged."""
    (tree / "t").write_text("x")
    os.symlink("../t", tree / "n" / "l.key")
    assert expand_paths(POLICY, tree, HOME) == _walked(POLICY, tree, HOME)
    _next_tick(tmp_path / "tick")
    (tree / "t").unlink()
    (tree / "t").mkdir()
    assert (str(tree / "t"), True) in expand_paths(POLICY, tree, HOME)
    assert expand_paths(POLICY, tree, HOME) == _walked(POLICY, tree, HOME)


def test_a_directory_changed_in_the_same_tick_is_listed_again(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the racy margin, a directory stamped within it of the last start is listed again (its
    change could be in the same clock tick as that listing)."""
    monkeypatch.setattr(guard_walk, "RACY_NS", 2_000_000_000)
    expand_paths(POLICY, tree, HOME)
    listed = _listed(monkeypatch)
    expand_paths(POLICY, tree, HOME)
    assert str(tree / "a/b/c") in listed  # made just now: not trusted yet


def _cache_file(capsule_home: Path) -> Path:
    (path,) = (capsule_home / guard_walk.FOLDER).iterdir()
    return path


def _omit_matches(kept: dict) -> dict:
    """The cache as a liar would write it: every directory as it is, no match anywhere."""
    for entry in kept["dirs"].values():
        entry[6] = []
    return kept


def _poison(kept: dict, field: int, value: object) -> dict:
    for entry in kept["dirs"].values():
        entry[field] = value
    return kept


HOSTILE = {
    "garbage": lambda data: b"\x00\xffnot json",
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "a list": lambda data: b"[]",
    "deep nesting": lambda data: b"[" * 100_000,
    "other version": lambda data: orjson.dumps({**orjson.loads(data), "version": 0}),
    "other key": lambda data: orjson.dumps({**orjson.loads(data), "key": ["elsewhere"]}),
    "start not an int": lambda data: orjson.dumps({**orjson.loads(data), "start": "soon"}),
    "dirs not a dict": lambda data: orjson.dumps({**orjson.loads(data), "dirs": []}),
    "short entry": lambda data: orjson.dumps({**orjson.loads(data), "dirs": {"": [1]}}),
    "count not an int": lambda data: orjson.dumps(_poison(orjson.loads(data), 4, "1")),
    "negative count": lambda data: orjson.dumps(_poison(orjson.loads(data), 4, -1)),
    "subdirs not a list": lambda data: orjson.dumps(_poison(orjson.loads(data), 5, "a")),
    "subdir with a slash": lambda data: orjson.dumps(_poison(orjson.loads(data), 5, ["../../etc"])),
    "subdir ..": lambda data: orjson.dumps(_poison(orjson.loads(data), 5, [".."])),
    "subdir with NUL": lambda data: orjson.dumps(_poison(orjson.loads(data), 5, ["a\u0000b"])),
    "subdir not a str": lambda data: orjson.dumps(_poison(orjson.loads(data), 5, [7])),
    "match of an odd length": lambda data: orjson.dumps(_poison(orjson.loads(data), 6, ["x.key"])),
    "match of another kind": lambda data: orjson.dumps(_poison(orjson.loads(data), 6, ["x.key", 9])),
    "match empty name": lambda data: orjson.dumps(_poison(orjson.loads(data), 6, ["", 0])),
}


@pytest.mark.parametrize("mangle", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_malformed_cache_costs_a_walk(
    tree: Path, capsule_home: Path, tmp_path: Path, mangle: object
) -> None:
    """A cache file that is not what the module writes is ignored (the tree walked afresh), never an
    error and never fewer paths."""
    expected = _walked(POLICY, tree, HOME)
    expand_paths(POLICY, tree, HOME)
    _next_tick(tmp_path / "tick")
    path = _cache_file(capsule_home)
    path.write_bytes(mangle(path.read_bytes()))  # type: ignore[operator]
    assert expand_paths(POLICY, tree, HOME) == expected
    assert expand_paths(POLICY, tree, HOME) == expected  # and what was written over it is sound


@pytest.mark.parametrize("how", ["group-writable", "world-readable", "other owner", "symlink"])
def test_a_cache_file_not_private_to_us_is_ignored(
    tree: Path, capsule_home: Path, tmp_path: Path, how: str
) -> None:
    """A lying cache (every directory as it is, no matches) is not believed unless it is this user's
    own 0600 regular file: group/other bits, another owner or a symlink, and the tree is walked."""
    expected = _walked(POLICY, tree, HOME)
    expand_paths(POLICY, tree, HOME)
    _next_tick(tmp_path / "tick")
    path = _cache_file(capsule_home)
    lie = orjson.dumps(_omit_matches(orjson.loads(path.read_bytes())))
    if how == "symlink":
        path.unlink()
        (tmp_path / "lie").write_bytes(lie)
        (tmp_path / "lie").chmod(0o600)
        path.symlink_to(tmp_path / "lie")
    else:
        path.write_bytes(lie)
        path.chmod({"group-writable": 0o620, "world-readable": 0o604, "other owner": 0o600}[how])
        if how == "other owner":
            if os.geteuid() != 0:
                pytest.skip("chown needs root")
            os.chown(path, 65534, 65534)
    assert expand_paths(POLICY, tree, HOME) == expected


def test_the_cache_file_is_private_and_written_whole(tree: Path, capsule_home: Path) -> None:
    """Mode 0600 in a 0700 folder under $CAPSULE_HOME, no temporary file left beside it."""
    expand_paths(POLICY, tree, HOME)
    path = _cache_file(capsule_home)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_names_that_are_not_utf8_are_kept(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file name with bytes that are not UTF-8 (a surrogate escape in Python) is cached and matched."""
    odd = os.fsdecode(b"caf\xe9.key")
    (tree / "n" / odd).write_text("secret")
    expected = _walked(POLICY, tree, HOME)
    assert (str(tree / "n" / odd), False) in expected
    assert expand_paths(POLICY, tree, HOME) == expected
    _next_tick(tmp_path / "tick")
    listed = _listed(monkeypatch)
    assert expand_paths(POLICY, tree, HOME) == expected
    assert listed == []


def test_more_than_max_walk_entries_is_refused_cached_or_not(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal line stands whether the entries were listed now or counted from the cache."""
    entries = sum(len(dirs) + len(files) for _, dirs, files in os.walk(tree))
    monkeypatch.setattr(guard_walk, "MAX_WALK", entries)
    expand_paths(POLICY, tree, HOME)  # exactly the limit: allowed, and kept
    _next_tick(tmp_path / "tick")
    (tree / "n" / "one-more").write_text("")
    with pytest.raises(GuardRefused, match=f"more than {entries} entries under {tree} "):
        expand_paths(POLICY, tree, HOME)
    (tree / "n" / "one-more").unlink()
    expand_paths(POLICY, tree, HOME)
    _next_tick(tmp_path / "tick")
    monkeypatch.setattr(guard_walk, "MAX_WALK", entries - 1)
    listed = _listed(monkeypatch)
    with pytest.raises(GuardRefused, match="name the paths instead"):
        expand_paths(POLICY, tree, HOME)
    assert listed == []  # counted from the cache alone


def test_symlinked_directories_are_not_followed(tree: Path, tmp_path: Path) -> None:
    """A link to a directory is matched by its own name, never walked into (os.walk's default)."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "far.key").write_text("secret")
    os.symlink(tmp_path / "outside", tree / "n" / "out")
    for _ in range(2):
        found = expand_paths(POLICY, tree, HOME)
        assert found == _walked(POLICY, tree, HOME)
        assert str(tmp_path / "outside" / "far.key") not in dict(found)
        _next_tick(tmp_path / "tick")


def test_only_the_latest_walks_are_kept(
    tree: Path, capsule_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each new working directory leaves a walk; past MAX_KEPT the least recently written are removed."""
    monkeypatch.setattr(guard_walk, "MAX_KEPT", 3)
    folder = capsule_home / guard_walk.FOLDER
    folder.mkdir(parents=True, mode=0o700)
    for i in range(5):
        (folder / f"old{i}.json").write_text("{}")
        os.utime(folder / f"old{i}.json", ns=(i, i))
    expand_paths(POLICY, tree, HOME)
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 3
    assert names[1:] == ["old3.json", "old4.json"]  # after this walk's own file, a hex digest


def test_an_unlistable_directory_is_tried_again_at_every_start(
    tree: Path, tmp_path: Path, capsule_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory that cannot be listed is skipped as os.walk skips it, never kept as empty: the next
    start lists it again (and finds what it holds once it can), without rewriting the cache for it."""
    real = guard_walk._list
    refused = {str(tree / "a/b")}
    monkeypatch.setattr(guard_walk, "_list", lambda full: None if full in refused else real(full))
    found = dict(expand_paths(POLICY, tree, HOME))
    assert str(tree / "a/b/c/one.key") not in found
    _next_tick(tmp_path / "tick")
    written = _cache_file(capsule_home).stat().st_mtime_ns
    listed = _listed(monkeypatch)
    assert dict(expand_paths(POLICY, tree, HOME)) == found
    assert listed == [str(tree / "a/b")]
    assert _cache_file(capsule_home).stat().st_mtime_ns == written
    refused.clear()
    assert expand_paths(POLICY, tree, HOME) == _walked(POLICY, tree, HOME)
