"""Where a task runs and what it leaves: its workspace (a `git worktree` on branch `capsule/<run>/<task>`
from the plan's base commit, or a copy of a non-git folder), its outputs stored under the run for its
dependents (`CAPSULE_INPUTS`), and the cache of earlier results under `$CAPSULE_HOME/cache/`.

The user's checkout is never written: a worktree is added beside it (under `$CAPSULE_HOME/worktrees/`),
its branch committed from inside the worktree. Every git call is a real `git` process (trio.run_process).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio

from capsule.plan.spec import Plan, TaskSpec

OUTPUTS = "outputs"  # <run>/outputs/<task>/: stdout and the task's `outputs`
CACHE = "cache"  # $CAPSULE_HOME/cache/<key>/: outputs/ and meta.json
_REF_UNSAFE = re.compile(r"[^A-Za-z0-9._/-]|\.\.|^[./]|/$")


class WorkspaceError(Exception):
    """A workspace could not be made or committed; the message says which git command and why."""


@attrs.define
class Workspace:
    kind: str  # worktree | copy
    path: Path  # the worktree's (or copy's) root
    cwd: Path  # where the task runs: the task's cwd at the same place inside the workspace
    repo: Path | None = None  # the checkout it was added to (worktree)
    branch: str | None = None
    base: str | None = None  # the commit it started from


def branch_name(run: str, task: str) -> str:
    """`capsule/<run>/<task>` with what git refuses in a ref (`[`, `,`, `..`) made `_`."""
    return f"capsule/{run}/{_REF_UNSAFE.sub('_', task)}"


async def git(*args: str, cwd: Path) -> str:
    done = await trio.run_process(
        ["git", *args], cwd=cwd, capture_stdout=True, capture_stderr=True, check=False,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
    )  # fmt: skip
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()
        raise WorkspaceError(f"git {args[0]}: {err[-1] if err else f'exit {done.returncode}'}")
    return str(done.stdout.decode(errors="replace").strip())


async def open_workspace(
    home: Path, run: str, plan: Plan, task: TaskSpec, bases: dict[Path, str]
) -> Workspace:
    """A fresh workspace for an attempt of `task` (a retry starts again from the base)."""
    source = Path(task.cwd)
    if task.isolate == "copy":
        path = home / "workspaces" / run / task.id
        if path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        await trio.to_thread.run_sync(lambda: shutil.copytree(source, path, symlinks=True))
        return Workspace(kind="copy", path=path, cwd=path)
    repo, base = await base_commit(plan, task, bases)
    rel = os.path.relpath(os.path.realpath(source), os.path.realpath(repo))  # noqa: ASYNC240 (no I/O: a name)
    path = home / "worktrees" / run / task.id
    branch = branch_name(run, task.id)
    if path.exists():
        await git("reset", "-q", "--hard", base, cwd=path)
        await git("clean", "-q", "-fdx", cwd=path)
    else:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        await git("worktree", "add", "-q", "-B", branch, str(path), base, cwd=repo)
    return Workspace(kind="worktree", path=path, cwd=path / rel, repo=repo, branch=branch, base=base)


async def base_commit(plan: Plan, task: TaskSpec, bases: dict[Path, str]) -> tuple[Path, str]:
    """The repository holding the task's cwd, and the commit its worktrees start from (resolved once
    per repository and run, in `bases`: every task starts from the same commit)."""
    repo = Path(await git("rev-parse", "--show-toplevel", cwd=Path(task.cwd)))
    if repo not in bases:
        bases[repo] = await git("rev-parse", "--verify", f"{plan.base}^{{commit}}", cwd=repo)
    return repo, bases[repo]


@attrs.frozen(kw_only=True)
class Committed:
    commit: str | None
    files: tuple[str, ...]
    insertions: int
    deletions: int


async def commit_workspace(ws: Workspace, run: str, task: str, author: str | None) -> Committed:
    """Commit everything the task changed in its worktree on its branch; the diff stat of that commit."""
    await git("add", "-A", cwd=ws.path)
    numstat = await git("diff", "--cached", "--numstat", cwd=ws.path)
    files, ins, dels = [], 0, 0
    for line in numstat.splitlines():
        added, removed, name = line.split("\t", 2)
        files.append(name)
        ins += int(added) if added.isdigit() else 0
        dels += int(removed) if removed.isdigit() else 0
    if not files:
        return Committed(commit=None, files=(), insertions=0, deletions=0)
    name, email = "Capsule", "capsule@localhost"
    if author is not None and (m := re.match(r"^\s*(.*?)\s*<([^>]*)>\s*$", author)):
        name, email = m[1], m[2]
    who = ["-c", f"user.name={name}", "-c", f"user.email={email}"]
    if author is None:  # the user's identity when git has one, Capsule's otherwise
        with contextlib.suppress(WorkspaceError):
            email = await git("config", "user.email", cwd=ws.path)
            name = await git("config", "user.name", cwd=ws.path)
            who = []
    message = f"capsule: run {run} task {task}"
    await git(*who, "commit", "-q", "--no-verify", "-m", message, cwd=ws.path)
    commit = await git("rev-parse", "HEAD", cwd=ws.path)
    return Committed(commit=commit, files=tuple(files), insertions=ins, deletions=dels)


async def close_workspace(ws: Workspace) -> None:
    """Remove the workspace (its branch stays)."""
    if ws.kind == "worktree" and ws.repo is not None:
        await git("worktree", "remove", "--force", str(ws.path), cwd=ws.repo)
    else:
        await trio.to_thread.run_sync(lambda: shutil.rmtree(ws.path, ignore_errors=True))


def store_outputs(run_dir: Path, task: TaskSpec, cwd: Path, stdout: Path) -> tuple[str, ...]:
    """Copy the attempt's stdout and the task's `outputs` globs (relative to `cwd`) to
    `<run>/outputs/<task>/`; the stored paths, relative to that folder, stdout first."""
    dest = _fresh(run_dir / OUTPUTS / task.id)
    shutil.copyfile(stdout, dest / "stdout")
    stored = ["stdout"]
    for pattern in task.outputs:
        for found in sorted(glob.glob(pattern, root_dir=cwd, recursive=True)):
            source = cwd / found
            if not source.is_file() or found == "stdout":
                continue
            (dest / found).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest / found)
            stored.append(found)
    return tuple(stored)


async def keep_result(
    run_dir: Path, run: str, task: TaskSpec, attempt: int, ws: Workspace | None, author: str | None
) -> tuple[dict[str, Any], bool]:
    """The keep step of a succeeded attempt, where it ran: its outputs stored under `run_dir`, then its
    worktree committed; the workspace closed unless kept or compensate may still need it (closed at the
    run's end). What was kept (obs.task.collected's fields), and whether the workspace is still open."""
    found: dict[str, Any] = {}
    try:
        stdout = run_dir / "tasks" / task.id / f"{attempt}.out"
        found["outputs"] = store_outputs(run_dir, task, Path(task.cwd), stdout)
        if ws is not None and ws.kind == "worktree":
            done = await commit_workspace(ws, run, task.id, author)
            found.update(
                branch=ws.branch, commit=done.commit, files=done.files, insertions=done.insertions,
                deletions=done.deletions,
            )  # fmt: skip
        if ws is not None:
            if task.keep_worktree:
                found["workspace"] = str(ws.path)
            elif task.compensate is None:
                await close_workspace(ws)
                return found, False
    except (WorkspaceError, OSError) as exc:
        found["error"] = f"could not keep the result: {exc}"
    return found, ws is not None


def read_outputs(run_dir: Path, task: str) -> dict[str, bytes]:
    """A task's stored outputs, by path relative to its folder: what a cluster node is sent, or sends."""
    root = run_dir / OUTPUTS / task
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_outputs(run_dir: Path, task: str, files: dict[str, bytes]) -> None:
    """A task's outputs as `read_outputs` gave them, stored under `<run>/outputs/<task>/`."""
    dest = _fresh(run_dir / OUTPUTS / task)
    for name, data in files.items():
        path = dest / name
        if not path.resolve().is_relative_to(dest.resolve()):
            raise ValueError(f"{task}: output {name!r} is outside its folder")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_bytes(data)


def _fresh(dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True, mode=0o700)
    return dest


def inputs_dir(run_dir: Path, task: TaskSpec) -> Path:
    """`<run>/tasks/<task>/inputs/`: one link per dependency to its stored outputs (CAPSULE_INPUTS)."""
    where = run_dir / "tasks" / task.id / "inputs"
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    for dep in task.depends_on:
        link = where / dep
        if not link.is_symlink():
            link.symlink_to(run_dir / OUTPUTS / dep)
    return where


# -- the cache -----------------------------------------------------------------------------------


def _hash_files(digest: hashlib._Hash, root: Path, names: list[str]) -> None:
    for name in sorted(set(names)):
        path = root / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())


def cache_key(run_dir: Path, task: TaskSpec) -> str:
    """The task's spec (with env values) and its inputs: its dependencies' stored outputs and the files
    its `inputs` globs match now."""
    digest = hashlib.sha256(task.cache_hash.encode())
    for dep in sorted(task.depends_on):
        root = run_dir / OUTPUTS / dep
        digest.update(b"\1dep " + dep.encode())
        names = [str(p.relative_to(root)) for p in root.rglob("*")] if root.is_dir() else []
        _hash_files(digest, root, names)
    cwd = Path(task.cwd)
    for pattern in task.inputs:
        digest.update(b"\1glob " + pattern.encode())
        _hash_files(digest, cwd, glob.glob(pattern, root_dir=cwd, recursive=True))
    return digest.hexdigest()[:32]


@attrs.frozen(kw_only=True)
class CacheHit:
    from_run: str
    outputs: tuple[str, ...]
    branch: str | None
    commit: str | None


def cache_lookup(home: Path, key: str, run_dir: Path, task: TaskSpec) -> CacheHit | None:
    """An earlier success under `key`: its outputs restored to `<run>/outputs/<task>/` (and, for a task
    that is not isolated, its `outputs` files back into its cwd)."""
    entry = home / CACHE / key
    try:
        meta = orjson.loads((entry / "meta.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    dest = run_dir / OUTPUTS / task.id
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(entry / OUTPUTS, dest)
    outputs = tuple(meta["outputs"])
    if task.isolate is None:
        for name in outputs[1:]:
            (Path(task.cwd) / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(dest / name, Path(task.cwd) / name)
    os.utime(entry)  # used: pruning goes by age of last use
    return CacheHit(
        from_run=meta["run"], outputs=outputs, branch=meta.get("branch"), commit=meta.get("commit")
    )


def reuse_result(
    home: Path, run: str, run_dir: Path, task: str, found: dict[str, CacheHit]
) -> CacheHit | None:
    """A rerun: the earlier run's result of `task` (from `found`), its stored outputs copied over."""
    hit = found.get(task)
    if hit is None:
        return None
    source = home / "runs" / run / OUTPUTS / task
    dest = run_dir / OUTPUTS / task
    if source.is_dir() and not dest.exists():
        shutil.copytree(source, dest)
    return hit


def cache_store(
    home: Path, key: str, run: str, run_dir: Path, task: TaskSpec, collected: dict[str, object]
) -> None:
    """Keep the task's stored outputs under `key` (written aside, then renamed: readers see all or none)."""
    entry = home / CACHE / key
    tmp = home / CACHE / f".{key}.{os.getpid()}.{time.monotonic_ns()}"
    tmp.mkdir(parents=True, mode=0o700)
    shutil.copytree(run_dir / OUTPUTS / task.id, tmp / OUTPUTS)
    (tmp / "meta.json").write_bytes(orjson.dumps({"run": run, "task": task.id, **collected}))
    if entry.exists():
        shutil.rmtree(entry)
    tmp.rename(entry)


def prune_cache(home: Path, older_than_s: float, now: float, *, dry_run: bool = False) -> list[Path]:
    """Cache entries not used for `older_than_s`: removed (unless `dry_run`); the ones found."""
    root = home / CACHE
    if not root.is_dir():
        return []
    old = [p for p in root.iterdir() if p.is_dir() and now - p.stat().st_mtime > older_than_s]
    if not dry_run:
        for p in old:
            shutil.rmtree(p, ignore_errors=True)
    return old
