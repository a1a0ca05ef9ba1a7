"""The driver's side of `executor = "ray"`: each attempt is a Ray task (`ray_node.run_attempt`, a
streaming generator) placed on a node that has the task's named resources as Ray custom resources (one
unit of each name in `uses`); the plan's `parallel` bounds how many are in flight (the machine's slots).

What the node streams comes back here: its observations go to the scheduler's machine as if seen locally,
the guard's events and `task.placed` (where it ran) are written to the agents session, and its logs and
traced session are written under this machine's Capsule home. A node or worker that dies before the
attempt's end was seen gives `obs.task.lost`. Stops, hooks, verify and compensate are Ray tasks too: a
stop goes to the attempt's node (`procs.stop` there), verify runs where the attempt ran, a hook or a
compensate where the task's latest attempt ran (a hook before any attempt: on a node with the task's
resources); a resume reaps leftovers on every live node.

Workspaces (`isolate`) live on the node that ran the attempt: opened there by the scheduler's own code,
from the base commit the driver resolved (every node starts from the same one); the keep step of a
success runs there too (`ray_node.keep`: outputs, the worktree's commit), and its outputs come back here,
under the run, where the cache and the dependents' inputs (sent with their jobs) are taken from.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from capsule.events.observed import ObsExited, ObsLost, ObsSampled, ObsSpawned, ObsSpawnFailed
from capsule.events.placement import RunExecutor, TaskPlaced
from capsule.plan.effects import Leftover, StopTree
from capsule.plan.executor import ExecutorSpec
from capsule.plan.spec import TaskSpec
from capsule.stages import procs
from capsule.stages.executors import ray_node
from capsule.stages.home import runs_dir
from capsule.stages.store import open_private
from capsule.stages.task_workspace import (
    Workspace,
    WorkspaceError,
    base_commit,
    read_outputs,
    write_outputs,
)

if TYPE_CHECKING:
    from capsule.stages.schedule import Scheduler


# no CPU reserved (the plan's `parallel` bounds what runs); no retry by Ray: a lost attempt is the plan's
ONCE: dict[str, Any] = {"num_cpus": 0, "max_retries": 0}


class RayMissing(RuntimeError):
    """`executor = "ray"` without the `ray` extra installed, or no cluster at the address."""


@attrs.define
class Remote:
    """One attempt in flight on a node: where, its tree (members as sampled), whether its end was seen."""

    node: str = ""
    node_id: str = ""
    tree: procs.Tree | None = None
    seen: dict[int, float] = attrs.Factory(dict)
    spawned: bool = False
    ended: bool = False


def connect(address: str | None) -> Any:
    try:
        import ray
    except ImportError:
        raise RayMissing("executor = \"ray\" needs Ray: pip install 'capsule-recorder[ray]'") from None
    if not ray.is_initialized():
        _reachable(address)  # Ray itself would retry an address nobody answers at for minutes
        try:
            ray.init(
                address=address or "auto", namespace="capsule", log_to_driver=False,
                logging_level=logging.ERROR, configure_logging=True,
            )  # fmt: skip
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayMissing(f"no Ray cluster at {address or 'auto'}: {str(exc).splitlines()[0]}") from None
    return ray


def _reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """A `host:port` address must accept a connection; "auto" is Ray's to find; `ray://` is refused."""
    import socket

    if address is None or address == "auto":
        return
    if address.startswith("ray://"):
        raise RayMissing(
            f"{address}: Ray Client addresses are not supported (each task's events come back through "
            "a streaming generator, which Ray Client does not carry); run capsule on a node of the "
            "cluster, with address auto or the head's host:port (6379)"
        )
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise RayMissing(f"bad Ray address {address!r}: use auto or host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise RayMissing(f"no Ray cluster at {address}: {exc.strerror or exc}") from None


class RayExecutor:
    def __init__(self, scheduler: Scheduler, spec: ExecutorSpec) -> None:
        self.s = scheduler
        self.ray = connect(spec.address)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._pin = NodeAffinitySchedulingStrategy
        self._attempt = self.ray.remote(ray_node.run_attempt)
        self._stop = self.ray.remote(ray_node.stop_tree)
        self._reap = self.ray.remote(ray_node.reap)
        self._shell = self.ray.remote(ray_node.shell)
        self._keep = self.ray.remote(ray_node.keep)
        self._discard = self.ray.remote(ray_node.discard)
        self.remotes: dict[tuple[str, int], Remote] = {}
        self.latest: dict[str, str] = {}  # task -> the node its latest attempt ran on (its workspace's)
        # one thread per attempt in flight waits on its stream; hooks, stops and shells on top
        self.limiter = trio.CapacityLimiter(scheduler.plan.parallel * 2 + 8)
        scheduler.writer.write([RunExecutor(ts=time.time(), executor="ray", address=spec.address or "auto")])

    def _resources(self, task: TaskSpec) -> dict[str, float]:
        return dict.fromkeys(task.uses, 1.0)

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter, abandon_on_cancel=True)

    # -- attempts ------------------------------------------------------------------------------------

    async def spawn(self, task: TaskSpec, attempt: int) -> None:
        if task.isolate == "worktree":  # resolved here, once: the node's checkout may have moved on
            with contextlib.suppress(WorkspaceError, OSError):  # the node says why in its spawn failure
                await base_commit(self.s.plan, task, self.s.bases)
        earlier = self.s.workspaces.pop(task.id, None)
        if earlier is not None:  # a retry starts afresh, on whichever node takes it
            await self.close_workspace(task.id, earlier)
        job = ray_node.NodeJob(
            plan=self.s.plan, task=task.id, attempt=attempt, session_id=self.s.state.session_id,
            bases=dict(self.s.bases), inputs={dep: read_outputs(self.s.dir, dep) for dep in task.depends_on},
        )  # fmt: skip
        stream = self._attempt.options(
            **ONCE, resources=self._resources(task), name=f"capsule {task.id}#{attempt}"
        ).remote(job)
        self.remotes[(task.id, attempt)] = Remote()
        self.s._work.start_soon(self._follow, task, attempt, stream)

    async def _follow(self, task: TaskSpec, attempt: int, stream: Any) -> None:
        remote = self.remotes[(task.id, attempt)]
        error = ""
        try:
            while (item := await self._call(self._next, stream)) is not None:
                self._received(task, attempt, remote, *item)
        except self.ray.exceptions.RayError as exc:
            error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if remote.ended:
            return
        if not remote.spawned:  # it never started: the node could not run it
            self.s._send.send_nowait(
                ObsSpawnFailed(
                    ts=time.time(), task=task.id, attempt=attempt, error=error or "no answer from the node"
                )
            )
        else:
            self.s._send.send_nowait(
                ObsLost(
                    ts=time.time(),
                    task=task.id,
                    attempt=attempt,
                    node=remote.node,
                    error=error or "stream ended",
                )
            )
        remote.ended = True

    def _next(self, stream: Any) -> tuple[str, Any] | None:
        try:
            ref = next(stream)
        except StopIteration:
            return None
        item: tuple[str, Any] = self.ray.get(ref)
        return item

    def _received(self, task: TaskSpec, attempt: int, remote: Remote, kind: str, value: Any) -> None:
        match kind:
            case "placed":
                remote.node, remote.node_id = value["node"], value["node_id"]
                self.latest[task.id] = remote.node_id
                self.s.writer.write(
                    [
                        TaskPlaced(
                            ts=time.time(), task=task.id, attempt=attempt, node=value["node"],
                            node_ip=value["node_ip"], node_id=value["node_id"], resources=tuple(task.uses),
                        )
                    ]
                )  # fmt: skip
            case "tree":
                remote.tree = value
            case "workspace":
                self.s.workspaces[task.id] = value
            case "events":
                self.s.writer.write(value)
            case "files":
                self._files(task, attempt, value)
            case "error":
                raise self.ray.exceptions.RayError(value)
            case "obs":
                obs = value
                if isinstance(obs, ObsSpawned | ObsSpawnFailed):
                    remote.spawned = True
                    logs = self.s.dir / "tasks" / task.id
                    logs.mkdir(mode=0o700, parents=True, exist_ok=True)
                    obs = attrs.evolve(obs, log_dir=str(logs))
                    remote.ended = isinstance(obs, ObsSpawnFailed)
                elif isinstance(obs, ObsSampled):
                    remote.seen.update(zip(obs.pids, obs.starts, strict=True))
                elif isinstance(obs, ObsExited):
                    remote.ended = True
                self.s._send.send_nowait(obs)

    def _files(self, task: TaskSpec, attempt: int, files: dict[str, Any]) -> None:
        logs = self.s.dir / "tasks" / task.id
        logs.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, data in files["logs"].items():
            _write_private(logs / name, data)
        if files["trace"] is not None:
            session_id, contents = files["trace"]
            where = runs_dir(self.s.home) / session_id
            where.mkdir(mode=0o700, parents=True, exist_ok=True)
            for name, data in contents.items():
                _write_private(where / name, data)

    async def stop(self, effect: StopTree) -> None:
        remote = self.remotes.get((effect.task, effect.attempt))
        if remote is None or remote.tree is None or remote.ended:
            return  # not started yet (stopped when it is), or swept on its node as it ended
        seen = tuple(procs.Member(pid=p, started=s) for p, s in remote.seen.items())
        tree = attrs.evolve(remote.tree, members=seen)
        ref = self._stop.options(**ONCE, scheduling_strategy=self._pin(remote.node_id, soft=False)).remote(
            tree, effect.signal, effect.grace_s
        )
        with contextlib.suppress(self.ray.exceptions.RayError):  # its node is gone: so is the tree
            await self._call(self.ray.get, ref)

    async def reap(self, found: tuple[Leftover, ...]) -> tuple[int, ...]:
        if not found:
            return ()
        nodes = [n["NodeID"] for n in self.ray.nodes() if n.get("Alive")]
        refs = [
            self._reap.options(**ONCE, scheduling_strategy=self._pin(node, soft=False)).remote(
                self.s.state.session_id, found
            )
            for node in nodes
        ]
        pids: set[int] = set()
        for ref in refs:
            try:
                pids.update(await self._call(self.ray.get, ref))
            except self.ray.exceptions.RayError:
                continue
        return tuple(sorted(pids))

    async def shell(
        self, command: str, task: TaskSpec, stdin: bytes, limit_s: float, attempt: int | None
    ) -> tuple[int | None, bytes]:
        options: dict[str, Any] = {"resources": self._resources(task)}
        remote = self.remotes.get((task.id, attempt)) if attempt is not None else None
        if remote is not None and remote.node_id:  # verify: on the node the attempt ran on
            options = {"scheduling_strategy": self._pin(remote.node_id, soft=False)}
        elif task.id in self.latest:  # a hook or compensate: there too, while that node lives
            options = {"scheduling_strategy": self._pin(self.latest[task.id], soft=True)}
        ref = self._shell.options(**ONCE, **options).remote(command, task, stdin, limit_s)
        try:
            result: tuple[int | None, bytes] = await self._call(self.ray.get, ref)
        except self.ray.exceptions.RayError:
            return None, b""  # as a command that did not finish
        return result

    async def keep(self, task: TaskSpec, attempt: int, ws: Workspace | None) -> tuple[dict[str, Any], bool]:
        remote = self.remotes.get((task.id, attempt))
        node = remote.node if remote is not None else "?"
        if remote is None or not remote.node_id:
            return {"error": f"could not keep the result: no node for {task.id}#{attempt}"}, ws is not None
        ref = self._keep.options(**ONCE, scheduling_strategy=self._pin(remote.node_id, soft=False)).remote(
            task, attempt, self.s.state.session_id, self.s.plan.author, ws
        )
        try:
            found, files, still_open = await self._call(self.ray.get, ref)
        except self.ray.exceptions.RayError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return {"error": f"could not keep the result on node {node}: {reason}"}, ws is not None
        if "outputs" in found:
            stdout = self.s.dir / "tasks" / task.id / f"{attempt}.out"
            try:
                write_outputs(self.s.dir, task.id, {"stdout": stdout.read_bytes(), **files})
            except (OSError, ValueError) as exc:
                found["error"] = f"could not keep the result: {exc}"
        return found, still_open

    async def close_workspace(self, task: str, ws: Workspace) -> None:
        node = self.latest.get(task)
        if node is None:
            return
        ref = self._discard.options(**ONCE, scheduling_strategy=self._pin(node, soft=False)).remote(ws)
        with contextlib.suppress(self.ray.exceptions.RayError):  # its node is gone: so is the workspace
            await self._call(self.ray.get, ref)

    def close(self) -> None:
        self.ray.shutdown()


def stop_on_node(
    address: str | None, node_id: str, tree: procs.Tree, signal_name: str, grace_s: float
) -> None:
    """`agents kill` of a task running on a cluster node: its tree stopped there (`procs.stop`)."""
    ray = connect(address)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    pin = NodeAffinitySchedulingStrategy(node_id, soft=False)
    try:
        ray.get(
            ray.remote(ray_node.stop_tree)
            .options(**ONCE, scheduling_strategy=pin)
            .remote(tree, signal_name, grace_s)
        )
    except ray.exceptions.RayError as exc:
        raise RayMissing(f"cannot reach node {node_id[:12]}: {str(exc).strip().splitlines()[0]}") from None
    finally:
        ray.shutdown()


def _write_private(path: Path, data: bytes) -> None:
    fd = open_private(path, append=False)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
