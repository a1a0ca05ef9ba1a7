"""The plan as a graph: validation (missing dependencies, unknown resources, cycles named task by task),
levels, the critical path and the widest level, with durations estimated from earlier runs."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from capsule.plan.spec import Plan, PlanError


def validate_graph(plan: Plan) -> None:
    ids = [t.id for t in plan.tasks]
    seen: set[str] = set()
    for task_id in ids:
        if task_id in seen:
            raise PlanError(f"task {task_id!r}: id: defined twice")
        seen.add(task_id)
    resources = dict(plan.resources)
    for task in plan.tasks:
        for dep in task.depends_on:
            if dep not in seen:
                raise PlanError(f"task {task.id!r}: depends_on: no task {dep!r}")
            if dep == task.id:
                raise PlanError(f"task {task.id!r}: depends_on: a task cannot depend on itself")
        for name in task.uses:
            if name not in resources:
                raise PlanError(
                    f"task {task.id!r}: uses: unknown resource {name!r} (declare it in [resources])"
                )
    cycle = find_cycle(plan)
    if cycle:
        raise PlanError(f"dependency cycle: {' -> '.join(cycle)}")


def find_cycle(plan: Plan) -> list[str] | None:
    """A cycle as task ids, first repeated at the end (`a -> b -> a`), or None."""
    deps = {t.id: t.depends_on for t in plan.tasks}
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(deps, white)
    for root in deps:
        if color[root] != white:
            continue
        # iterative DFS: a long chain of tasks must not hit the recursion limit
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        color[root] = grey
        while stack:
            node, index = stack[-1]
            children = deps.get(node, ())
            if index < len(children):
                stack[-1] = (node, index + 1)
                child = children[index]
                if child not in color:
                    continue
                if color[child] == grey:
                    return [*path[path.index(child) :], child]
                if color[child] == white:
                    color[child] = grey
                    stack.append((child, 0))
                    path.append(child)
            else:
                color[node] = black
                stack.pop()
                path.pop()
    return None


def levels(plan: Plan) -> list[list[str]]:
    """Tasks grouped by depth: level 0 has no dependencies, level n depends on level n-1 at most."""
    depth: dict[str, int] = {}
    order = topological(plan)
    deps = {t.id: t.depends_on for t in plan.tasks}
    for task_id in order:
        depth[task_id] = 1 + max((depth[d] for d in deps[task_id]), default=-1)
    out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for task_id in order:
        out[depth[task_id]].append(task_id)
    return out


def topological(plan: Plan) -> list[str]:
    """Task ids with every dependency before its dependents, plan order kept among peers."""
    deps = {t.id: list(t.depends_on) for t in plan.tasks}
    placed: set[str] = set()
    out: list[str] = []
    pending = [t.id for t in plan.tasks]
    while pending:
        rest = []
        for task_id in pending:
            if all(d in placed for d in deps[task_id]):
                out.append(task_id)
            else:
                rest.append(task_id)
        placed.update(out[len(placed) :])
        if len(rest) == len(pending):
            raise PlanError(f"dependency cycle among: {', '.join(rest)}")
        pending = rest
    return out


@attrs.frozen(kw_only=True)
class Analysis:
    levels: tuple[tuple[str, ...], ...]
    critical_path: tuple[str, ...]
    critical_s: float | None  # None when no task has an estimate
    max_parallelism: int  # the widest level: more slots than this never help
    estimated_s: float | None  # the whole run at the plan's parallelism, from the estimates
    estimates: Mapping[str, float]


def analyse(plan: Plan, durations: Mapping[str, float], parallel: int | None = None) -> Analysis:
    """Levels, critical path and a list-scheduling estimate; tasks without an estimate count 0 s."""
    order = topological(plan)
    deps = {t.id: t.depends_on for t in plan.tasks}
    finish: dict[str, float] = {}
    hops: dict[str, int] = {}  # tasks on the longest chain: the path when no task has an estimate
    via: dict[str, str | None] = {}
    for task_id in order:
        best = max(deps[task_id], key=lambda d: (finish[d], hops[d]), default=None)
        finish[task_id] = (finish[best] if best else 0.0) + durations.get(task_id, 0.0)
        hops[task_id] = (hops[best] if best else 0) + 1
        via[task_id] = best
    position = {t: i for i, t in enumerate(order)}
    end = max(order, key=lambda t: (finish[t], hops[t], -position[t]))
    path = [end]
    while (prev := via[path[-1]]) is not None:
        path.append(prev)
    path.reverse()
    known = any(t in durations for t in order)
    grouped = levels(plan)
    return Analysis(
        levels=tuple(tuple(level) for level in grouped),
        critical_path=tuple(path),
        critical_s=finish[end] if known else None,
        max_parallelism=max(len(level) for level in grouped),
        estimated_s=_simulate(plan, durations, parallel or plan.parallel) if known else None,
        estimates=dict(durations),
    )


def _simulate(plan: Plan, durations: Mapping[str, float], parallel: int) -> float:
    """Greedy list scheduling in plan order: a fair ETA, not an optimum."""
    deps = {t.id: t.depends_on for t in plan.tasks}
    done: dict[str, float] = {}
    running: list[tuple[float, str]] = []
    waiting = topological(plan)
    now = 0.0
    while waiting or running:
        started = True
        while started and len(running) < parallel:
            started = False
            for task_id in waiting:
                if all(d in done and done[d] <= now for d in deps[task_id]):
                    running.append((now + durations.get(task_id, 0.0), task_id))
                    waiting.remove(task_id)
                    started = True
                    break
        running.sort()
        now, task_id = running.pop(0)
        done[task_id] = now
    return now
