"""A task attempt as a unit of `capsule.stages.procs`: its marker, its cgroup, its tree; and stopping what
a dead scheduler left behind, found by what its session recorded (pid + start time, group, members).

Every attempt runs with `CAPSULE_UNIT=<session>/<task>/<attempt>` in its environment and, where cgroup v2
is available, in a cgroup of its own named after the same three; so a later command (`agents resume`,
`agents kill --all`, `kill-all`) finds every process of it even after its leader and its scheduler died.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import trio

from capsule.fold.tasks import RunState
from capsule.plan.effects import Leftover, leftovers
from capsule.plan.spec import TaskSpec
from capsule.stages import procs


def marker(session_id: str, task: str, attempt: int) -> str:
    """The value of `procs.MARKER` in the attempt's environment."""
    return f"{session_id}/{task}/{attempt}"


def cgroup_name(session_id: str, task: str, attempt: int) -> str:
    return f"capsule-{session_id}-{task}-{attempt}"


def leftover_tree(session_id: str, x: Leftover) -> tuple[procs.Tree, procs.Cgroup | None]:
    """The tree of an attempt its scheduler may have left: the recorded leader and members, and, if it
    never ended, its group, its marker and its cgroup (opened to be emptied: remove it afterwards)."""
    cgroup = procs.open_cgroup(cgroup_name(session_id, x.task, x.attempt)) if x.interrupted else None
    tree = procs.Tree(
        pid=x.pid if x.pid > 0 else None,
        started=x.started if x.pid > 0 else None,
        pgid=x.pgid if x.interrupted and x.pgid > 0 else None,
        members=tuple(procs.Member(pid=p, started=s) for p, s in x.members),
        cgroup=str(cgroup.path) if cgroup is not None else None,
        marker=f"{procs.MARKER}={marker(session_id, x.task, x.attempt)}" if x.interrupted else None,
    )
    return tree, cgroup


def stop_leftovers(session_id: str, found: tuple[Leftover, ...]) -> list[tuple[Leftover, list[int]]]:
    """SIGKILL what is left of each attempt; for each one that had anything left, the pids stopped.

    The members are listed before the signal: a process killed at once is gone by the time anyone could
    look again, and must still be reported (it was: `run.resumed` used to say `reaped: []`)."""
    out = []
    for x in found:
        tree, cgroup = leftover_tree(session_id, x)
        alive = sorted(p.pid for p in procs.members(tree))
        if alive:
            procs.stop(tree, signal.SIGKILL, grace=0.0)
            out.append((x, alive))
        if cgroup is not None:
            remove_when_empty(cgroup)
    return out


def remove_when_empty(cgroup: procs.Cgroup, wait_s: float = 1.0) -> bool:
    """Remove a cgroup whose processes were just killed: they leave it as they finish dying."""
    deadline = time.monotonic() + wait_s
    while not cgroup.remove():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def stop_run_leftovers(run: RunState) -> list[tuple[Leftover, list[int]]]:
    """Everything a run whose scheduler died left running, stopped."""
    return stop_leftovers(run.session_id, leftovers(run))


def measure(tree: procs.Tree, seen: dict[int, float]) -> tuple[int, float]:
    """RSS and CPU seconds summed over the tree now (the leader's count its reaped children's CPU too);
    every member is added to `seen` (pid -> start time)."""
    rss, cpu = 0, 0.0
    for proc in procs.members(tree):
        try:
            with proc.oneshot():
                seen.setdefault(proc.pid, proc.create_time())
                rss += proc.memory_info().rss
                t = proc.cpu_times()
                cpu += t.user + t.system
                if proc.pid == tree.pid:
                    cpu += t.children_user + t.children_system
        except psutil.Error:
            pass
    return rss, cpu


async def run_shell(command: str, task: TaskSpec, stdin: bytes, limit_s: float) -> tuple[int | None, bytes]:
    """`sh -c command` as the task would run it (cwd, env): (exit code, stdout); code None when it did
    not finish within `limit_s`, and then its whole tree is stopped."""

    async def stop(process: trio.Process) -> None:
        tree = procs.Tree(pid=process.pid, started=procs.started_at(process.pid), pgid=process.pid)
        await procs.stop_async(tree, signal.SIGKILL, 0.0, keep_leader=True)

    env = {**os.environ, **dict(task.env), "CAPSULE_TASK": task.id}
    with trio.move_on_after(limit_s):
        done = await trio.run_process(
            ["sh", "-c", command], cwd=task.cwd, env=env, stdin=stdin, capture_stdout=True,
            capture_stderr=True, check=False, start_new_session=True, deliver_cancel=stop,
        )  # fmt: skip
        return done.returncode, done.stdout
    return None, b""
