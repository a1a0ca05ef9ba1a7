"""The node's side of `executor = "ray"`: one task attempt, run on the Ray node that took it by the
scheduler's own attempt code (`Scheduler._spawn`, `_watch`, `_sample`, `_follow`, `_stop`: the recorder
when the plan traces, the guard for its policy, the limits' sampling, the final sweep of its tree through
`capsule.stages.procs`), with what it observes streamed back to the driver instead of to a machine.

`run_attempt` is a Ray streaming generator (`run_attempt_to` puts the same items, in batches, into the
driver's `Mailbox` actor: over Ray Client, then `("end", None)`); each item is one of
    ("placed", {"node", "node_ip", "node_id"})    first, where the attempt runs
    ("workspace", Workspace)                      its isolated workspace, opened here (before spawned)
    ("tree", procs.Tree)                          the attempt's tree (before its obs.task.spawned)
    ("obs", Observation)                          spawned / spawn_failed, sampled, violation, exited
    ("events", [Event, ...])                      the guard's decisions, for the agents session
    ("files", {"logs": {name: bytes}, "trace": (session id, {name: bytes}) | None})  before exited
    ("error", message)                            the node could not run it (no tracer, guard refused)
The node keeps nothing of the run but the attempt's workspace (`isolate`): its logs and the traced
session go to the driver, then are removed, with the attempt's scratch folder (`_Scratch`: claimed by
its worker's flock, swept by a later attempt once that worker is gone). The dependencies' outputs come in the job (`CAPSULE_INPUTS`
is filled from them here); the keep step of a success (`keep`: its outputs, the worktree's commit) and
the closing of its workspace are Ray tasks sent to the node that holds that workspace.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import trio

from capsule.events import Event
from capsule.events.observed import Observation, ObsExited, ObsSpawned, ObsSpawnFailed
from capsule.fold.tasks import RunState
from capsule.plan.effects import Leftover, StopTree
from capsule.plan.spec import Plan, TaskSpec
from capsule.stages import procs
from capsule.stages.home import capsule_home, runs_dir
from capsule.stages.schedule import Scheduler
from capsule.stages.task_units import run_shell, stop_leftovers
from capsule.stages.task_workspace import (
    Workspace,
    WorkspaceError,
    close_workspace,
    keep_result,
    read_outputs,
    write_outputs,
)

Put = Callable[[tuple[str, Any]], None]
_DONE = ("done", None)
END = ("end", None)  # the mailbox's last item of an attempt


@attrs.frozen(kw_only=True)
class NodeJob:
    """What the driver sends with an attempt: the plan (with its env values: held in memory by Ray,
    never stored), which attempt, the agents session it belongs to, the commit each repository's
    worktrees start from (resolved once, by the driver), and its dependencies' stored outputs."""

    plan: Plan
    task: str
    attempt: int
    session_id: str
    bases: dict[Path, str] = attrs.Factory(dict)
    inputs: dict[str, dict[str, bytes]] = attrs.Factory(dict)


class _Forward:
    """The writer the scheduler's code writes the guard's events to: they go to the driver."""

    def __init__(self, put: Put) -> None:
        self.put = put

    def write(self, events: list[Event]) -> None:
        self.put(("events", list(events)))


class AttemptHost(Scheduler):
    """The scheduler's attempt code on a node; no machine here: observations go to the driver."""

    def __init__(self, job: NodeJob, put: Put, scratch: Path) -> None:
        home = capsule_home()
        work = scratch / job.session_id  # named after the agents session: the traced runs' parent
        work.mkdir(mode=0o700)
        for dep, files in job.inputs.items():  # read by the task through CAPSULE_INPUTS, {inputs.…}
            write_outputs(work, dep, files)
        tracer = enforcement = None
        if job.plan.trace:
            from capsule.stages.tracer import find_recorder

            tracer = find_recorder(job.plan.tracer)
        if not job.plan.policy.empty:
            from capsule.stages.guard_probe import enforcement_for

            enforcement = enforcement_for(job.plan.policy)
        super().__init__(
            job.plan, _Forward(put), work, home=home, tracer=tracer,  # type: ignore[arg-type]
            state=RunState(session_id=job.session_id), enforcement=enforcement,
        )  # fmt: skip
        self.put = put
        self.job = job
        self.bases.update(job.bases)
        self.trace_session: str | None = None

    async def _observe(self, obs: Observation) -> None:
        if isinstance(obs, ObsSpawned | ObsSpawnFailed) and (ws := self.workspaces.get(obs.task)):
            self.put(("workspace", ws))
        if isinstance(obs, ObsSpawned):
            self.trace_session = obs.trace_session
            self.put(("tree", self.attempts[(obs.task, obs.attempt)].tree))
        self.put(("obs", obs))

    async def host(self) -> None:
        procs.become_subreaper()  # orphans of the task come back to this worker, stopped with its tree
        task = self.plan.task(self.job.task)
        if task.cwd and not os.path.isdir(task.cwd):  # noqa: ASYNC240 (one stat, before anything runs)
            failed = ObsSpawnFailed(
                ts=time.time(), task=task.id, attempt=self.job.attempt, error=_elsewhere(task)
            )
            await self._observe(failed)
            self.put(("files", self._files(task, None)))
            return
        async with trio.open_nursery() as work:
            self._work = work
            await self._spawn(task, self.job.attempt)
            handle = self.attempts.get((task.id, self.job.attempt))
            if handle is None:  # it could not start: obs.task.spawn_failed went
                self.put(("files", self._files(task, None)))
                return
            async for obs in self._receive:
                if isinstance(obs, ObsExited):
                    await self._stop(
                        StopTree(task=task.id, attempt=obs.attempt, signal="SIGKILL", grace_s=0.0)
                    )
                    self.put(("files", self._files(task, self.trace_session)))
                    self.put(("obs", obs))
                    break
                self.put(("obs", obs))

    def _files(self, task: TaskSpec, trace: str | None) -> dict[str, Any]:
        logs = self.dir / "tasks" / task.id
        out: dict[str, Any] = {"logs": {}, "trace": None}
        for name in (f"{self.job.attempt}.out", f"{self.job.attempt}.err"):
            path = logs / name
            if path.is_file():
                out["logs"][name] = path.read_bytes()
                path.unlink()
        if trace is not None:
            where = runs_dir(self.home) / trace
            out["trace"] = (trace, {p.name: p.read_bytes() for p in where.iterdir() if p.is_file()})
            shutil.rmtree(where, ignore_errors=True)
        return out


class _Scratch:
    """A private folder for one Ray task under the node's `$CAPSULE_HOME/ray/`, claimed by this worker
    while it lives: an flock on the folder, taken before the folder gets its name (made as `.new-…`,
    then renamed), released when the worker ends, however it ends. Made after a sweep of the folders
    whose worker is gone (killed before it could remove its own); `close` removes it."""

    def __init__(self, home: Path, prefix: str) -> None:
        root = home / "ray"
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        sweep(root)
        made = Path(tempfile.mkdtemp(prefix=".new-", dir=root))
        self.fd = os.open(made, os.O_RDONLY | os.O_DIRECTORY)  # not inherited by the task (O_CLOEXEC)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.path = root / f"{prefix}{made.name.removeprefix('.new-')}"
        os.rename(made, self.path)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self.fd)


def sweep(root: Path) -> list[Path]:
    """The scratch folders under `root` whose worker is gone (their flock is free), removed. One being
    made (`.new-…`, not yet claimed) is left be: so is one whose worker died in that instant."""
    swept = []
    for entry in sorted(root.iterdir()) if root.is_dir() else ():
        if entry.name.startswith(".") or not entry.is_dir() or entry.is_symlink():
            continue
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue  # removed meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its worker lives
        else:
            shutil.rmtree(entry, ignore_errors=True)
            swept.append(entry)
        finally:
            os.close(fd)
    return swept


def _elsewhere(task: TaskSpec) -> str:
    what = "its repository" if task.isolate == "worktree" else "its folder"
    return (
        f"{task.cwd} is not on node {_where()['node']}: on a Ray cluster the task's cwd ({what}) must be "
        "at the same path on every node that may take it"
    )


def _where() -> dict[str, str]:
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    name = _names.get(node_id)
    if name is None:
        for node in ray.nodes():  # type: ignore[no-untyped-call]
            _names[node["NodeID"]] = node.get("NodeName") or node.get("NodeManagerAddress", "")
        name = _names.get(node_id, "")
    return {
        "node": os.environ.get("CAPSULE_NODE") or name,
        "node_ip": ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
        "node_id": node_id,
    }


_names: dict[str, str] = {}


def _batches(job: NodeJob) -> Iterator[list[tuple[str, Any]]]:
    """The attempt run here, on a thread of its own; what it observes, in batches: each what came since
    the last one was taken (one item while the attempt is quiet, many when it is busy)."""
    items: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    items.put(("placed", _where()))

    def host() -> None:
        scratch = None
        try:
            scratch = _Scratch(capsule_home(), "attempt-")  # this attempt's alone: removed when it ends
            trio.run(AttemptHost(job, items.put, scratch.path).host)
        except BaseException as exc:
            items.put(("error", f"{type(exc).__name__}: {exc}"))
        finally:
            if scratch is not None:
                scratch.close()
            items.put(_DONE)

    thread = threading.Thread(target=host, name=f"capsule {job.task}#{job.attempt}", daemon=True)
    thread.start()
    done = False
    while not done:
        batch = [items.get()]
        with contextlib.suppress(queue.Empty):
            while batch[-1] != _DONE:
                batch.append(items.get_nowait())
        if done := batch[-1] == _DONE:
            batch.pop()
        if batch:
            yield batch
    thread.join()


def run_attempt(job: NodeJob) -> Iterator[tuple[str, Any]]:
    """The Ray task (a streaming generator): run the attempt here, yielding what it observes."""
    for batch in _batches(job):
        for item in batch:  # noqa: UP028 (Ray drives the generator with send(): a list's iterator has none)
            yield item


def run_attempt_to(job: NodeJob, mailbox: Any, key: str) -> None:
    """The Ray task (over Ray Client, which carries no streaming generator): run the attempt here, each
    batch of what it observes put in the driver's mailbox (in order: one put in flight at a time), then
    `("end", None)`. A put that fails (the mailbox's node, or the driver that owns it, gone) ends it."""
    import ray

    for batch in _batches(job):
        ray.get(mailbox.put.remote(key, batch))
    ray.get(mailbox.put.remote(key, [END]))


class Mailbox:
    """A Ray actor (asyncio) of the driver's, on the driver's node (Ray Client: its client server's, the
    head): each attempt's items, put by its node, taken by the driver. `take` answers as soon as there
    are items for the key, else after `wait_s` with none (the driver then looks whether the attempt's Ray
    task has ended without its last put: its node or worker died)."""

    def __init__(self) -> None:
        import asyncio

        self.boxes: dict[str, list[tuple[str, Any]]] = {}
        self.ready: dict[str, asyncio.Event] = {}
        self.asyncio = asyncio

    def _ready(self, key: str) -> Any:
        return self.ready.setdefault(key, self.asyncio.Event())

    async def put(self, key: str, items: list[tuple[str, Any]]) -> None:
        self.boxes.setdefault(key, []).extend(items)
        self._ready(key).set()

    async def take(self, key: str, wait_s: float) -> list[tuple[str, Any]]:
        ready = self._ready(key)
        if not ready.is_set() and wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await self.asyncio.wait_for(ready.wait(), wait_s)
        items = self.boxes.pop(key, [])
        ready.clear()
        if items and items[-1] == END:  # the last of it: nothing more comes for this key
            self.ready.pop(key, None)
        return items

    async def drop(self, key: str) -> None:
        self.boxes.pop(key, None)
        self.ready.pop(key, None)


def stop_tree(tree: procs.Tree, signal_name: str, grace_s: float) -> None:
    """The Ray task the driver sends to the attempt's node to stop its tree (StopTree)."""
    import signal

    procs.stop(tree, signal.Signals[signal_name], grace_s, keep_leader=True)


def reap(session_id: str, found: tuple[Leftover, ...]) -> list[int]:
    """Resume: what a dead scheduler's attempts left on this node, stopped (pid + start time, marker,
    cgroup: nothing of another node can match); the leading pids stopped. The scratch folders of
    workers killed here are swept too."""
    sweep(capsule_home() / "ray")
    return sorted(x.pid for x, _pids in stop_leftovers(session_id, found))


def shell(command: str, task: TaskSpec, stdin: bytes, limit_s: float) -> tuple[int | None, bytes]:
    """A hook, verify or compensate command of the task, run on a node as the task runs there."""
    return trio.run(run_shell, command, task, stdin, limit_s)


def keep(
    task: TaskSpec, attempt: int, session_id: str, author: str | None, ws: Workspace | None
) -> tuple[dict[str, Any], dict[str, bytes], bool]:
    """The keep step of a succeeded attempt, on the node that ran it (`task_workspace.keep_result`, as
    locally): what was kept, the outputs' contents for the driver (stdout aside: the driver has it), and
    whether the workspace is still open."""
    claim = _Scratch(capsule_home(), "keep-")
    scratch = claim.path
    try:
        logs = scratch / "tasks" / task.id
        logs.mkdir(parents=True, mode=0o700)
        (logs / f"{attempt}.out").write_bytes(b"")  # a stand-in: the driver stores its own copy of stdout
        found, still_open = trio.run(keep_result, scratch, session_id, task, attempt, ws, author)
        files = read_outputs(scratch, task.id)
        files.pop("stdout", None)
        return found, files, still_open
    finally:
        claim.close()


def discard(ws: Workspace) -> None:
    """The end of a run: a workspace this node holds, removed (its branch stays)."""
    with contextlib.suppress(WorkspaceError, OSError):
        trio.run(close_workspace, ws)
