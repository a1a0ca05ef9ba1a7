"""`executor = "local"`: attempts run on this machine by the scheduler's own code (`Scheduler._spawn`,
`_stop`; `task_units.run_shell`, `stop_leftovers`; `task_workspace.keep_result`). A Ray node runs this same code for its attempts."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from capsule.plan.effects import Leftover, StopTree
from capsule.plan.spec import TaskSpec
from capsule.stages.task_units import run_shell, stop_leftovers
from capsule.stages.task_workspace import Workspace, WorkspaceError, close_workspace, keep_result

if TYPE_CHECKING:
    from capsule.stages.schedule import Scheduler


class LocalExecutor:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    async def spawn(self, task: TaskSpec, attempt: int) -> None:
        await self.scheduler._spawn(task, attempt)

    async def stop(self, effect: StopTree) -> None:
        await self.scheduler._stop(effect)

    async def reap(self, found: tuple[Leftover, ...]) -> tuple[int, ...]:
        stopped = stop_leftovers(self.scheduler.state.session_id, found)
        return tuple(sorted(x.pid for x, _pids in stopped))

    async def shell(
        self, command: str, task: TaskSpec, stdin: bytes, limit_s: float, attempt: int | None
    ) -> tuple[int | None, bytes]:
        return await run_shell(command, task, stdin, limit_s)

    async def keep(self, task: TaskSpec, attempt: int, ws: Workspace | None) -> tuple[dict[str, Any], bool]:
        s = self.scheduler
        return await keep_result(s.dir, s.state.session_id, task, attempt, ws, s.plan.author)

    async def close_workspace(self, task: str, ws: Workspace) -> None:
        with contextlib.suppress(WorkspaceError, OSError):
            await close_workspace(ws)

    def close(self) -> None:
        pass
