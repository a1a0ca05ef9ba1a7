"""The plan as a graph: validation (missing dependencies, unknown resources, cycles named task by task),
the order (`graphlib.TopologicalSorter`, level by level, plan order among peers), levels, redundant edges,
the critical path and the widest level, with durations estimated from earlier runs.

Everything here is linear in tasks plus edges (a 10,000-task chain is checked in milliseconds), except the
redundant-edge search, which keeps one bitset of ancestors per task (ints: n²/8 bytes at worst).
"""

from __future__ import annotations

import graphlib
import heapq
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
        for ref in sorted(task.input_refs() - set(task.depends_on)):
            raise PlanError(f"task {task.id!r}: {{inputs.{ref}...}}: {ref!r} is not in its depends_on")
    cycle = find_cycle(plan)
    if cycle:
        raise PlanError(f"dependency cycle: {' -> '.join(cycle)}")


def find_cycle(plan: Plan) -> list[str] | None:
    """A cycle as task ids, first repeated at the end (`a -> b -> a`: a depends on b), or None."""
    sorter = graphlib.TopologicalSorter({t.id: t.depends_on for t in plan.tasks})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        # graphlib lists each node before the one that depends on it: reversed, it reads as depends_on
        return list(reversed(exc.args[1]))
    return None


def _batches(plan: Plan) -> list[list[str]]:
    """Task ids level by level (each level's tasks depend on earlier levels only), plan order within."""
    index = {t.id: i for i, t in enumerate(plan.tasks)}
    sorter = graphlib.TopologicalSorter({t.id: t.depends_on for t in plan.tasks})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        raise PlanError(f"dependency cycle: {' -> '.join(reversed(exc.args[1]))}") from None
    out = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=index.__getitem__)
        out.append(ready)
        sorter.done(*ready)
    return out


def levels(plan: Plan) -> list[list[str]]:
    """Tasks grouped by depth: level 0 has no dependencies, level n depends on level n-1 at most."""
    return _batches(plan)


def topological(plan: Plan) -> list[str]:
    """Task ids with every dependency before its dependents, plan order kept among peers."""
    return [task_id for level in _batches(plan) for task_id in level]


def redundant_edges(plan: Plan) -> list[tuple[str, str, str]]:
    """(task, dep, via): `task` depends on `dep` directly and through `via` too (a→c when a→b→c)."""
    order = topological(plan)
    bit = {task_id: 1 << i for i, task_id in enumerate(order)}
    deps = {t.id: t.depends_on for t in plan.tasks}
    ancestors: dict[str, int] = {}
    out = []
    for task_id in order:
        mask = 0
        for d in deps[task_id]:
            mask |= ancestors[d] | bit[d]
        ancestors[task_id] = mask
        for d in deps[task_id]:
            via = next((o for o in deps[task_id] if o != d and ancestors[o] & bit[d]), None)
            if via is not None:
                out.append((task_id, d, via))
    return out


def past_timeout(plan: Plan, durations: Mapping[str, float]) -> list[tuple[str, float, int]]:
    """Tasks the run cannot reach: at `durations` (earlier runs; unknown ones count 0) their dependencies
    end no earlier than `[run] timeout`, so the run's deadline skips them before they start. Each as
    (task, its earliest start in seconds, how many tasks depend on it, all unreachable too), for the
    first such task of each branch only. Empty without a run timeout or any known duration.

    The earliest start is a longest path over dependencies alone: slots and resources only delay it."""
    timeout = plan.timeout_s
    if timeout is None or not any(t.id in durations for t in plan.tasks):
        return []
    deps = {t.id: t.depends_on for t in plan.tasks}
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    for task_id in topological(plan):
        start[task_id] = max((end[d] for d in deps[task_id]), default=0.0)
        end[task_id] = start[task_id] + durations.get(task_id, 0.0)
    late = {t for t, at in start.items() if at >= timeout}
    dependents: dict[str, list[str]] = {t: [] for t in deps}
    for task_id, ds in deps.items():
        for d in ds:
            dependents[d].append(task_id)
    out = []
    for task_id in start:  # in dependency order
        if task_id in late and not any(d in late for d in deps[task_id]):
            below, todo = set(), list(dependents[task_id])
            while todo:
                if (t := todo.pop()) not in below:
                    below.add(t)
                    todo.extend(dependents[t])
            out.append((task_id, start[task_id], len(below)))
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
    """Levels, critical path and a list-scheduling estimate; tasks without an estimate count 0 s.

    `durations` is by task id (callers map spec hashes of earlier runs to the plan's ids)."""
    grouped = _batches(plan)
    order = [task_id for level in grouped for task_id in level]
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
    return Analysis(
        levels=tuple(tuple(level) for level in grouped),
        critical_path=tuple(path),
        critical_s=finish[end] if known else None,
        max_parallelism=max(len(level) for level in grouped),
        estimated_s=simulate(plan, durations, parallel or plan.parallel) if known else None,
        estimates=dict(durations),
    )


def dispatch_order(plan: Plan) -> list[str]:
    """The order ready tasks get slots in: higher `priority` first, then plan order."""
    index = {t.id: i for i, t in enumerate(plan.tasks)}
    return [t.id for t in sorted(plan.tasks, key=lambda t: (-t.priority, index[t.id]))]


def simulate(
    plan: Plan,
    durations: Mapping[str, float],
    parallel: int,
    done: Mapping[str, float] | None = None,
    running: Mapping[str, float] | None = None,
) -> float:
    """Greedy list scheduling in dispatch order, as the scheduler dispatches: a fair ETA. `done`: tasks
    already over at time 0; `running`: tasks holding a slot at time 0, with the seconds they have left."""
    rank = {task_id: i for i, task_id in enumerate(dispatch_order(plan))}
    finished = set(done or ())
    deps = {t.id: [d for d in t.depends_on if d not in finished] for t in plan.tasks}
    started = dict(running or {})
    waiting = {t.id: len(deps[t.id]) for t in plan.tasks if t.id not in finished and t.id not in started}
    dependents: dict[str, list[str]] = {t.id: [] for t in plan.tasks}
    for task_id, ds in deps.items():
        for d in ds:
            dependents[d].append(task_id)
    ready = [(rank[t], t) for t, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    slots = [(left, task_id) for task_id, left in started.items()]  # (when it ends, task)
    heapq.heapify(slots)
    now = 0.0
    while ready or slots:
        while ready and len(slots) < parallel:
            _rank, task_id = heapq.heappop(ready)
            heapq.heappush(slots, (now + durations.get(task_id, 0.0), task_id))
        now, task_id = heapq.heappop(slots)
        for child in dependents[task_id]:
            if child in waiting:  # not one of `running` (whose dependencies are all over)
                waiting[child] -= 1
                if waiting[child] == 0:
                    heapq.heappush(ready, (rank[child], child))
    return now
