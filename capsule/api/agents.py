"""Agent runs: run and resume a plan, check it, start it in the background; status, result, logs, ps, kill.

A run is an agents session written by the scheduler (capsule/stages/schedule.py); everything shown is a
fold of it (`capsule.fold.tasks.RunState`), so a status is right after the scheduler died (`interrupted`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from capsule.api.errors import BadInput, CheckFailed, NotFound, RecordingFailed, Unavailable, UsageError
from capsule.api.sessions import home, require_tracer, resolve, trace_tree
from capsule.fold.tasks import Attempt, RunState  # real imports: the MCP schemas read these hints

if TYPE_CHECKING:
    from capsule.events import Event
    from capsule.plan import Plan
    from capsule.plan.executor import ExecutorSpec

OnEvent = Callable[["Event", "RunState"], None]


# --- records ------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class PlanCheck:
    """`capsule agents check --json`: a valid plan's shape."""

    name: str
    tasks: int
    parallel: int
    levels: tuple[tuple[str, ...], ...]
    critical_path: tuple[str, ...]
    critical_s: float | None
    max_parallelism: int
    estimated_s: float | None


@attrs.frozen(kw_only=True)
class TaskRow:
    id: str
    state: str = attrs.field(
        metadata={
            "doc": "queued running succeeded failed timed_out killed limit_exceeded skipped denied spawn_failed lost."
        }
    )
    attempts: int
    exit_code: int | None
    duration_s: float | None
    reason: str | None
    pid: int | None
    blocked: int = attrs.field(
        default=0, metadata={"doc": "Execs, opens or writes the guard refused in the task's tree."}
    )
    node: str | None = attrs.field(
        default=None, metadata={"doc": "The cluster node its latest attempt ran on; null: this machine."}
    )


@attrs.frozen(kw_only=True)
class RunStatus:
    """`capsule agents status --json`."""

    run: str
    name: str | None
    state: str = attrs.field(metadata={"doc": "running, succeeded, failed, aborted or interrupted."})
    counts: dict[str, int]
    tasks: tuple[TaskRow, ...]


@attrs.frozen(kw_only=True)
class Verify:
    command: str
    ok: bool
    exit_code: int | None


@attrs.frozen(kw_only=True)
class Hook:
    on: str
    decision: str
    reason: str


@attrs.frozen(kw_only=True)
class Violation:
    rule: str
    argv: tuple[str, ...]
    path: str | None
    live: bool


@attrs.frozen(kw_only=True)
class Limit:
    limit: str
    measured: float
    allowed: float


@attrs.frozen(kw_only=True)
class TaskResult:
    """`capsule agents result --json`: one task's state, every attempt, checks, hooks, policy, limits."""

    id: str
    state: str
    reason: str | None
    exit_code: int | None
    duration_s: float | None
    attempts: tuple[Attempt, ...]
    verified: tuple[Verify, ...]
    hooks: tuple[Hook, ...]
    violations: tuple[Violation, ...]
    limits: tuple[Limit, ...]
    blocked: tuple[dict[str, Any], ...] = attrs.field(
        default=(), metadata={"doc": "What the guard refused in the task's tree (policy.blocked events)."}
    )


@attrs.frozen(kw_only=True)
class RunningTask:
    """One row of `capsule agents ps --json`."""

    session: str
    task: str
    attempt: int
    pid: int
    pgid: int
    started: float
    cpu_s: float
    rss: int
    elapsed_s: float


@attrs.frozen(kw_only=True)
class AgentsReport:
    """`capsule report` of an agents session: its fold, live state, and each traced task's tree."""

    run: RunState
    state: str
    trees: dict[str, list[tuple[int, str]]]


# --- plans and sessions -------------------------------------------------------------------------


def load_plan(path: Path, batch: Path | None = None, parallel: int | None = None) -> Plan:
    """A plan from TOML (or JSONL tasks with `batch`), task cwds resolved against the plan's folder."""
    from capsule.plan import PlanError, parse_batch, parse_plan

    try:
        if batch is not None:
            base = path.read_text(encoding="utf-8") if path.is_file() else None
            plan = parse_batch(batch.read_text(encoding="utf-8"), name=batch.stem, base=base)
            base_dir = batch.resolve().parent
        else:
            plan = parse_plan(path.read_text(encoding="utf-8"), name=path.stem)
            base_dir = path.resolve().parent
    except OSError as exc:
        raise BadInput(f"{exc.filename}: {exc.strerror}") from exc
    except PlanError as exc:
        raise BadInput(f"{batch or path}: {exc}") from exc
    tasks = tuple(attrs.evolve(t, cwd=str((base_dir / t.cwd).resolve())) for t in plan.tasks)
    plan = attrs.evolve(plan, tasks=tasks)
    if parallel is not None:
        if parallel < 1:
            raise UsageError("--parallel must be at least 1")
        plan = attrs.evolve(plan, parallel=parallel)
    return plan


def fold(session_dir: Path) -> RunState:
    """An agents session folded (the one truth about a run)."""
    from capsule.codec import CodecError
    from capsule.fold.tasks import RunState
    from capsule.stages.reader import iter_events

    state = RunState()
    try:
        for event in iter_events(session_dir):
            state.apply(event)
    except CodecError as exc:
        raise BadInput(f"{session_dir / 'events.jsonl'}: {exc}") from exc
    return state


def sessions(limit: int = 50) -> list[Path]:
    """Agents sessions, newest first."""
    from capsule.stages.reader import glance
    from capsule.stages.store import session_dirs

    out = []
    for path in session_dirs(home()):
        header = glance(path).header
        if header is not None and header.session_kind == "agents":
            out.append(path)
            if len(out) >= limit:
                break
    return out


def session(ref: str) -> Path:
    """An agents session by id, prefix, directory or `latest` (the newest agents session)."""
    from capsule.stages.reader import glance

    if ref == "latest":
        found = sessions(1)
        if not found:
            raise NotFound("no agents sessions yet; start one with `capsule agents run PLAN`")
        return found[0]
    path = resolve(ref)
    header = glance(path).header
    if header is None or header.session_kind != "agents":
        raise NotFound(f"session {path.name} is not an agents session")
    return path


def live_state(run: RunState) -> str:
    """The run's state, `interrupted` when its scheduler is gone without finishing."""
    from capsule.stages.procs import process_if

    if (
        run.finished is None
        and run.scheduler_pid is not None
        and process_if(run.scheduler_pid, run.scheduler_started) is None
    ):
        return "interrupted"
    return run.state


def history() -> dict[str, float]:
    """Task durations of the last runs (for ETAs and the critical path's estimate)."""
    from capsule.fold.tasks import durations

    return durations(reversed([fold(p) for p in sessions(10)]))


# --- running ------------------------------------------------------------------------------------


def run(
    plan: Plan,
    *,
    on_event: OnEvent | None = None,
    plan_path: str | None = None,
    resume: Path | None = None,
    argv: tuple[str, ...] | None = None,
    executor: ExecutorSpec | None = None,
) -> RunState:
    """Run `plan` in this process until it ends (appending to session `resume` if given); its fold.

    `on_event` sees every event with the run's state as it is written (live progress)."""
    import trio

    from capsule.stages.reader import iter_events
    from capsule.stages.schedule import Scheduler, close_run, open_run, reopen_run

    tracer = require_tracer() if plan.trace else None
    enforcement = None
    if not plan.policy.empty:
        from capsule.stages.guard_probe import GuardRefused, enforcement_for

        try:
            enforcement = enforcement_for(plan.policy)  # refused before anything is created
        except GuardRefused as exc:
            raise RecordingFailed(str(exc)) from None
        if enforcement.detected and not plan.trace:  # detection reads the task's trace: never silently weaker
            raise RecordingFailed(
                f"{enforcement.warning}; detecting needs the tasks traced: set [run] trace = true"
            )
    os.umask(0o077)
    from capsule.stages.executors.ray_driver import RayMissing

    if executor is not None and executor.kind == "ray":  # no cluster: refused before a session is made
        from capsule.stages.executors.ray_driver import connect

        try:
            connect(executor.address)
        except RayMissing as exc:
            raise Unavailable(str(exc)) from None
    started = time.time()
    state = None
    if resume is not None:
        state = fold(resume)
        count = sum(1 for _ in iter_events(resume))
        writer = reopen_run(resume, count)
        path = resume
    else:
        # the user's command (`capsule agents run plan.toml`), not the interpreter's argv
        _id, path, writer = open_run(
            home(), plan, argv or ("capsule", "agents", "run", plan_path or plan.name)
        )
    scheduler = Scheduler(
        plan,
        writer,
        path,
        home=home(),
        tracer=tracer,
        state=state,
        on_event=on_event,
        enforcement=enforcement,
        executor=executor,
    )
    if state is None:
        scheduler.state.apply(next(iter(iter_events(path))))
    try:
        return trio.run(lambda: scheduler.run(resume=resume is not None, plan_path=plan_path))
    except RayMissing as exc:
        raise Unavailable(str(exc)) from None
    finally:
        close_run(writer, started, scheduler.state)
        from capsule.api.shipping import ship_closed

        ship_closed(path)  # to the [export] collector of $CAPSULE_HOME/config.toml, if there is one


def executor_for(
    plan_file: Path | None, kind: str | None, address: str | None, resume: Path | None = None
) -> ExecutorSpec:
    """Who performs the attempts: `--executor`/`--address` over the plan's `[run]` (or, resuming without
    a plan file, over what the session was run with)."""
    from capsule.plan import PlanError
    from capsule.plan.executor import ExecutorSpec, choose, executor_of

    try:
        if plan_file is not None and plan_file.is_file():
            base = executor_of(plan_file.read_text(encoding="utf-8"))
        elif resume is not None and (was := fold(resume).executor) is not None:
            base = ExecutorSpec(kind=was.executor, address=was.address)
        else:
            base = ExecutorSpec()
        return choose(base, kind, address)
    except OSError as exc:
        raise BadInput(f"{exc.filename}: {exc.strerror}") from exc
    except PlanError as exc:
        raise BadInput(f"{plan_file or 'plan'}: {exc}") from exc


def resumable(ref: str, plan_file: Path | None = None) -> tuple[Path, Plan]:
    """The session to resume and the plan to resume it with (its own, or an edited `plan_file`)."""
    from capsule.plan import PlanError, plan_from_json

    path = session(ref)
    state = fold(path)
    if not state.plan:
        raise BadInput(f"session {path.name} has no plan to resume")
    if live_state(state) == "running":
        raise CheckFailed(f"session {path.name} is still running (scheduler pid {state.scheduler_pid})")
    try:
        plan = plan_from_json(state.plan) if plan_file is None else load_plan(plan_file)
    except PlanError as exc:  # a stored plan whose commands had secrets masked
        raise BadInput(str(exc)) from None
    return path, plan


def check(plan_file: Path, batch: Path | None = None) -> PlanCheck:
    """Validate a plan; its levels, critical path and maximum parallelism."""
    from capsule.plan.dag import analyse

    plan = load_plan(plan_file, batch)
    found = analyse(plan, history())
    return PlanCheck(
        name=plan.name,
        tasks=len(plan.tasks),
        parallel=plan.parallel,
        levels=tuple(tuple(level) for level in found.levels),
        critical_path=tuple(found.critical_path),
        critical_s=found.critical_s,
        max_parallelism=found.max_parallelism,
        estimated_s=found.estimated_s,
    )


def spawn(plan_file: Path, parallel: int | None = None, wait_s: float = 15.0) -> str:
    """Start `capsule agents run PLAN` detached (its own session, no terminal); its session id.

    The plan is checked here first, so a missing or broken plan fails at once with its one line."""
    import subprocess

    from capsule.stages.reader import glance
    from capsule.stages.store import session_dirs

    load_plan(plan_file, None, parallel)
    where = home()
    (where / "spool").mkdir(parents=True, exist_ok=True, mode=0o700)
    argv = [sys.executable, "-m", "capsule", "agents", "run", str(plan_file.resolve())]
    if parallel is not None:
        argv += ["--parallel", str(parallel)]
    err_path = where / "spool" / f"agents-{os.getpid()}-{time.monotonic_ns()}.log"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, "CAPSULE_PLAIN": "1"},
        )
    _spawned.append(proc)
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline:
            for path in session_dirs(where)[:20]:
                header = glance(path).header
                if (
                    header is not None
                    and header.session_kind == "agents"
                    and header.recorder_pid == proc.pid
                    and _planned(path)
                ):
                    return path.name
            if proc.poll() is not None and proc.returncode != 0:
                lines = err_path.read_text(errors="replace").strip().splitlines()
                raise Unavailable(
                    f"the scheduler exited with {proc.returncode}: {lines[-1] if lines else 'no output'}"
                )
            time.sleep(0.02)
    finally:
        err_path.unlink(missing_ok=True)  # the scheduler keeps its open file; nobody reads it later
    raise Unavailable(f"the scheduler (pid {proc.pid}) did not open a session within {wait_s:g}s")


def _planned(session_dir: Path) -> bool:
    """Has the scheduler written its plan (`run.planned`, right after the header)? Until then a status
    of the new run would list no tasks."""
    from capsule.stages.store import EVENTS

    with open(session_dir / EVENTS, "rb") as events:
        return b'{"kind":"run.planned"' in events.read(1 << 20)


_spawned: list[Any] = []  # schedulers started by a long-lived caller (the MCP server): reaped by reap()


def reap() -> None:
    """Collect exited schedulers this process started, so none lingers as a zombie."""
    _spawned[:] = [p for p in _spawned if p.poll() is None]


# --- looking ------------------------------------------------------------------------------------


def status(ref: str = "latest") -> RunStatus:
    """An agents run's state and each task's state, attempts, exit code and duration."""
    from capsule.fold.tasks import status_dict

    run = fold(session(ref))
    data: dict[str, Any] = status_dict(run, live_state(run))
    return RunStatus(
        run=data["run"],
        name=data["name"],
        state=data["state"],
        counts=data["counts"],
        tasks=tuple(TaskRow(**t) for t in data["tasks"]),
    )


def result(task: str, ref: str = "latest") -> TaskResult:
    """One task's result."""
    from capsule.report.policy import blocked_dict

    run = fold(session(ref))
    if task not in run.tasks:
        raise NotFound(f"no task {task!r} in run {run.session_id}")
    t = run.tasks[task]
    return TaskResult(
        id=t.id,
        state=t.state,
        reason=t.reason,
        exit_code=t.exit_code,
        duration_s=t.duration_s,
        attempts=tuple(t.attempts),
        verified=tuple(Verify(command=v.command, ok=v.ok, exit_code=v.exit_code) for v in t.verified),
        hooks=tuple(Hook(on=h.on, decision=h.decision, reason=h.reason) for h in t.hooks),
        violations=tuple(
            Violation(rule=v.rule, argv=tuple(v.argv), path=v.path, live=v.live) for v in t.violations
        ),
        limits=tuple(Limit(limit=x.limit, measured=x.measured, allowed=x.allowed) for x in t.limits),
        blocked=tuple(blocked_dict(b) for b in t.blocked),
    )


def task_logs(
    task: str, ref: str = "latest", *, follow: bool = False, attempt: int | None = None
) -> Iterator[bytes]:
    """A task's stdout and stderr per attempt, each after a `== TASK attempt N ==` line.

    With `follow`, the running attempt's stdout is followed (and the next attempt's) until the task ends."""
    path = session(ref)
    run = fold(path)
    if task not in run.tasks:
        raise NotFound(f"no task {task!r} in run {run.session_id}")
    attempts = [a.number for a in run.tasks[task].attempts if attempt is None or a.number == attempt]
    if not attempts:
        raise NotFound(f"task {task!r} has not started")
    return _task_log_chunks(path, task, attempts, follow)


def _task_log_chunks(path: Path, task: str, attempts: list[int], follow: bool) -> Iterator[bytes]:
    logs_dir = path / "tasks" / task
    for n in attempts[:-1] if follow else attempts:
        yield f"== {task} attempt {n} ==\n".encode()
        for suffix in ("out", "err"):
            f = logs_dir / f"{n}.{suffix}"
            if f.is_file():
                yield f.read_bytes()
    if not follow:
        return
    n = attempts[-1]
    yield f"== {task} attempt {n} ==\n".encode()
    offset = 0
    out = logs_dir / f"{n}.out"
    while True:
        if out.is_file():
            with open(out, "rb") as stream:
                stream.seek(offset)
                data = stream.read()
                offset += len(data)
                yield data
        current = fold(path).tasks[task]
        if current.state != "running" or len(current.attempts) != n:
            if current.state == "queued" or len(current.attempts) != n:
                n = len(current.attempts)
                offset = 0
                out = logs_dir / f"{n}.out"
                if current.state != "running":
                    time.sleep(0.2)
                    continue
                yield f"== {task} attempt {n} ==\n".encode()
                continue
            break
        time.sleep(0.2)


def ps() -> tuple[RunningTask, ...]:
    """Running tasks on this machine: pid, CPU, RSS, elapsed."""
    import psutil

    from capsule.stages.procs import process_if

    rows = []
    for path in sessions(20):
        run = fold(path)
        if live_state(run) != "running":
            continue
        for t in run.tasks.values():
            a = t.current
            if t.state != "running" or a is None:
                continue
            cpu = rss = 0.0
            root = process_if(a.pid, a.started)
            if root is None:
                continue
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        with p.oneshot():
                            ct = p.cpu_times()
                            cpu += ct.user + ct.system
                            rss += p.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                continue
            rows.append(
                RunningTask(
                    session=run.session_id, task=t.id, attempt=a.number, pid=a.pid, pgid=a.pgid,
                    started=a.started, cpu_s=round(cpu, 2), rss=int(rss), elapsed_s=round(time.time() - a.ts, 1),
                )
            )  # fmt: skip
    return tuple(rows)


def _on_nodes() -> list[RunningTask]:
    """Running tasks of live runs placed on cluster nodes (their processes are not on this machine)."""
    rows = []
    for path in sessions(20):
        run = fold(path)
        if run.executor is None or live_state(run) != "running":
            continue
        for t in run.tasks.values():
            a = t.current
            if t.state == "running" and a is not None and a.number in t.placed:
                rows.append(
                    RunningTask(
                        session=run.session_id, task=t.id, attempt=a.number, pid=a.pid, pgid=a.pgid,
                        started=a.started, cpu_s=0.0, rss=0, elapsed_s=round(time.time() - a.ts, 1),
                    )
                )  # fmt: skip
    return rows


def kill(task: str | None, grace: float = 2.0) -> tuple[RunningTask, ...]:
    """Stop running task `task` (None: every running task, and whatever dead schedulers left) with its
    whole tree: SIGTERM, then SIGKILL after `grace`. The tasks stopped."""
    import signal

    from capsule.stages import procs
    from capsule.stages.task_units import leftover_tree

    rows = [r for r in ps() if task is None or r.task == task]
    here = {(r.session, r.task, r.attempt) for r in rows}
    rows += [
        r
        for r in _on_nodes()
        if (task is None or r.task == task) and (r.session, r.task, r.attempt) not in here
    ]
    left = stop_dead_runs() if task is None else ()
    if not rows and not left:
        raise NotFound(f"no running task {task!r}" if task else "no running tasks")
    for r in rows:
        tree, _cgroup = leftover_tree(r.session, _attempt_of(r))  # the scheduler removes its cgroup
        run = fold(session(r.session))
        placed = run.tasks[r.task].placed.get(r.attempt)
        if placed is not None and run.executor is not None:  # on a cluster node: stopped there
            from capsule.stages.executors.ray_driver import RayMissing, stop_on_node

            try:
                stop_on_node(run.executor.address, placed.node_id, tree, "SIGTERM", grace)
            except RayMissing as exc:
                raise Unavailable(str(exc)) from None
            continue
        procs.stop(tree, signal.SIGTERM, grace)
    return tuple(rows) + left


def _attempt_of(row: RunningTask) -> Any:
    """A running task's attempt as the machine's Leftover record: what its tree is made of."""
    from capsule.plan.effects import Leftover

    run = fold(session(row.session))
    members = run.tasks[row.task].members.get(row.attempt, {})
    return Leftover(
        task=row.task, attempt=row.attempt, pid=row.pid, started=row.started, pgid=row.pgid,
        members=tuple(sorted(members.items())), interrupted=True,
    )  # fmt: skip


def stop_dead_runs() -> tuple[RunningTask, ...]:
    """Stop what the agent runs whose scheduler died left running (`agents kill --all`, `kill-all`)."""
    from capsule.stages.task_units import stop_run_leftovers

    rows = []
    for path in sessions(50):
        run = fold(path)
        if live_state(run) != "interrupted":
            continue
        for x, _pids in stop_run_leftovers(run):
            rows.append(
                RunningTask(
                    session=run.session_id, task=x.task, attempt=x.attempt, pid=x.pid, pgid=x.pgid or 0,
                    started=x.started or 0.0, cpu_s=0.0, rss=0, elapsed_s=0.0,
                )
            )  # fmt: skip
    return tuple(rows)


def report(session_dir: Path) -> AgentsReport:
    """An agents session for `capsule report`: the fold, its live state and each traced task's tree."""
    run = fold(session_dir)
    trees = {}
    for t in run.tasks.values():
        a = t.current
        if a is not None and a.trace_session:
            with contextlib.suppress(NotFound, OSError, StopIteration):
                trees[t.id] = trace_tree(a.trace_session)
    return AgentsReport(run=run, state=live_state(run), trees=trees)
