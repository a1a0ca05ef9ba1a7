"""Who performs a task attempt for the scheduler (`capsule.stages.schedule`): the seam between the agent-run
driver and where the attempt's processes live.

- `local` (the default): this machine, by the scheduler's own code (`executors/local.py`).
- `ray`: a node of a Ray cluster that has the task's resources (`executors/ray_driver.py` on the driver's
  side, `executors/ray_node.py` on the node's). On the node, the attempt runs by the same code as locally;
  what it observes comes back to the driver as observations.

An executor answers `spawn` with `obs.task.spawned` or `obs.task.spawn_failed` (locally at once, on a
cluster once a node took it), stops trees, runs a task's shell commands (hooks, verify, compensate) and
its keep step (outputs, the worktree's commit) where the task runs, closes its workspace there, and stops
what a dead scheduler left (`reap`, on resume).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from capsule.plan.effects import Leftover, StopTree
from capsule.plan.executor import ExecutorSpec
from capsule.plan.spec import TaskSpec
from capsule.stages.task_workspace import Workspace

if TYPE_CHECKING:
    from capsule.stages.schedule import Scheduler


class Executor(Protocol):
    async def spawn(self, task: TaskSpec, attempt: int) -> None: ...

    async def stop(self, effect: StopTree) -> None: ...

    async def reap(self, found: tuple[Leftover, ...]) -> tuple[int, ...]: ...

    async def shell(
        self, command: str, task: TaskSpec, stdin: bytes, limit_s: float, attempt: int | None
    ) -> tuple[int | None, bytes]: ...

    async def keep(
        self, task: TaskSpec, attempt: int, ws: Workspace | None
    ) -> tuple[dict[str, Any], bool]: ...

    async def close_workspace(self, task: str, ws: Workspace) -> None: ...

    def close(self) -> None: ...


def open_executor(spec: ExecutorSpec, scheduler: Scheduler) -> Executor:
    if spec.kind == "ray":
        from capsule.stages.executors.ray_driver import RayExecutor  # imports ray: only when used

        return RayExecutor(scheduler, spec)
    from capsule.stages.executors.local import LocalExecutor

    return LocalExecutor(scheduler)
