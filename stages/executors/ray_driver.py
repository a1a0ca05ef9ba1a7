"""The driver's side of `executor = "ray"`: each attempt is a Ray task placed on a node that has the
task's named resources as Ray custom resources (one unit of each name in `uses`); the plan's `parallel`
bounds how many are in flight (the machine's slots). What the attempt observes comes back, in order, by
one of two transports chosen when connecting, read by the same consumer (`_follow`): on a node of the
cluster, the Ray task is a streaming generator (`ray_node.run_attempt`, `_Stream`); through Ray Client
(`ray://`), which carries no streaming generators, it puts batches into the driver's mailbox actor on
the driver's node (`ray_node.run_attempt_to`, `ray_node.Mailbox`, `_Mail`), and `agents kill` asks this
driver to stop a task (`request_stop`) rather than opening a second client connection.

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
from typing import TYPE_CHECKING, Any, Protocol

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
# Ray Client's proxy forks a server for each connection, and that server sometimes dies as it starts
# while other clients are busy (ray-project/ray#63202): the connection is tried again, at once
CLIENT_TRIES = 5
STOP_POLL_S = 0.2


def stop_requests(run_dir: Path) -> Path:
    """Where `agents kill` leaves a Ray Client driver its requests: one file per attempt, `<task>#<n>`,
    holding the grace in seconds."""
    return run_dir / "stop-requests"


def request_stop(run_dir: Path, task: str, attempt: int, grace_s: float) -> None:
    where = stop_requests(run_dir)
    where.mkdir(mode=0o700, exist_ok=True)
    _write_private(where / f".{task}#{attempt}", str(grace_s).encode())
    os.replace(where / f".{task}#{attempt}", where / f"{task}#{attempt}")  # whole, or not seen


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
        for tries in range(CLIENT_TRIES, 0, -1):
            try:
                ray.init(
                    address=address or "auto", namespace="capsule", log_to_driver=False,
                    logging_level=logging.ERROR, configure_logging=True,
                )  # fmt: skip
                break
            except ConnectionAbortedError as exc:  # Ray Client: its server for us died as it started
                if tries == 1:
                    raise RayMissing(f"no Ray cluster at {address}: {_first(exc)}") from None
                with contextlib.suppress(Exception):
                    ray.shutdown()
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise RayMissing(f"no Ray cluster at {address or 'auto'}: {_first(exc)}") from None
    return ray


def _first(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """A `host:port` address (the GCS's, or a Ray Client server's after `ray://`) must accept a
    connection; "auto" is Ray's to find."""
    import socket

    if address is None or address == "auto":
        return
    where = address.removeprefix("ray://")
    host, sep, port = where.rpartition(":")
    if not sep or not port.isdigit():
        raise RayMissing(f"bad Ray address {address!r}: use auto, host:port or ray://host:port")
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
        self._attempt_to = self.ray.remote(ray_node.run_attempt_to)
        self.mailbox = _mailbox(self.ray) if _client(self.ray) else None
        self._asked = False
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
        options = {**ONCE, "resources": self._resources(task), "name": f"capsule {task.id}#{attempt}"}
        items: _Items
        if self.mailbox is None:
            items = _Stream(self.ray, self._attempt.options(**options).remote(job))
        else:
            key = f"{task.id}#{attempt}"
            ref = self._attempt_to.options(**options).remote(job, self.mailbox, key)
            items = _Mail(self.ray, self.mailbox, key, ref)
        self.remotes[(task.id, attempt)] = Remote()
        if self.mailbox is not None and not self._asked:
            self._asked = True
            self.s._work.start_soon(self._stop_requests)
        self.s._work.start_soon(self._follow, task, attempt, items)

    async def _stop_requests(self) -> None:
        """Ray Client: `agents kill` of a task of this run asks this driver (`request_stop`), which stops
        it through its own connection: a second Ray Client connection while this one is busy may take
        Ray's proxy tens of seconds (ray-project/ray#63202)."""
        where = trio.Path(stop_requests(self.s.dir))
        while any(not r.ended for r in self.remotes.values()):  # while attempts run (then started again)
            await trio.sleep(STOP_POLL_S)
            for request in await where.glob("*#*") if await where.is_dir() else ():
                task, _, attempt = request.name.rpartition("#")
                grace = await request.read_text()
                await request.unlink(missing_ok=True)
                if attempt.isdigit():
                    stop = StopTree(
                        task=task, attempt=int(attempt), signal="SIGTERM", grace_s=float(grace or 2)
                    )
                    self.s._work.start_soon(self.stop, stop)
        self._asked = False

    async def _follow(self, task: TaskSpec, attempt: int, items: _Items) -> None:
        remote = self.remotes[(task.id, attempt)]
        error = ""
        try:
            while (batch := await self._call(items.next)) is not None:
                for item in batch:
                    self._received(task, attempt, remote, *item)
        except self.ray.exceptions.RayError as exc:
            error = _first(exc)
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
            reason = _first(exc)
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


class _Items(Protocol):
    def next(self) -> list[tuple[str, Any]] | None:
        """The attempt's next items (blocking: called in a thread), None once it has sent them all;
        raises the Ray error of a node or worker that died before."""


class _Stream:
    """A cluster node's driver: the attempt's items through its streaming generator, one at a time."""

    def __init__(self, ray: Any, stream: Any) -> None:
        self.ray, self.stream = ray, stream

    def next(self) -> list[tuple[str, Any]] | None:
        try:
            ref = next(self.stream)
        except StopIteration:
            return None
        return [self.ray.get(ref)]


class _Mail:
    """A Ray Client driver: the attempt's items taken from the driver's mailbox (`ray_node.Mailbox`),
    with the attempt's Ray task looked at when none came within `wait_s`: one that ended without its last
    put (`("end", None)`) died, and its Ray error is raised once what it did put is taken."""

    def __init__(self, ray: Any, mailbox: Any, key: str, ref: Any, wait_s: float = 1.0) -> None:
        self.ray, self.mailbox, self.key, self.ref, self.wait_s = ray, mailbox, key, ref, wait_s
        self.over = self.finished = False

    def next(self) -> list[tuple[str, Any]] | None:
        while not self.over:
            if self.finished:  # what it put is taken: its end (raises how it died)
                self.over = True
                self.mailbox.drop.remote(self.key)
                self.ray.get(self.ref)
                return None
            items: list[tuple[str, Any]] = self.ray.get(self.mailbox.take.remote(self.key, self.wait_s))
            if items and items[-1] == ray_node.END:
                items.pop()
                self.over = True
            if items:
                return items
            if not self.over:
                ready, _ = self.ray.wait([self.ref], timeout=0)
                self.finished = bool(ready)
        return None


def _client(ray: Any) -> bool:
    """Connected through Ray Client (`ray://`): no streaming generators there."""
    return bool(ray.util.client.ray.is_connected())


def _mailbox(ray: Any) -> Any:
    """The driver's mailbox, on the driver's node (Ray Client: the client server's node, the head), so
    a task's node dying leaves it be; owned by the driver, it ends with the driver's Ray job."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    return (
        ray.remote(ray_node.Mailbox)
        .options(
            num_cpus=0, max_restarts=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)
        )
        .remote()
    )


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
        raise RayMissing(f"cannot reach node {node_id[:12]}: {_first(exc)}") from None
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
