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
    notes: tuple[str, ...] = attrs.field(
        default=(), metadata={"doc": "What is valid but probably unmeant (redundant dependencies)."}
    )
    expanded: dict[str, dict[str, str]] = attrs.field(
        factory=dict, metadata={"doc": "Tasks made from a template or matrix: id -> the params they got."}
    )


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
    percent: float = attrs.field(default=0.0, metadata={"doc": "Share of the tasks that have ended."})
    eta_s: float | None = attrs.field(
        default=None,
        metadata={"doc": "Seconds left, from earlier durations of the same specs (None: nothing known)."},
    )


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
    branch: str | None = attrs.field(default=None, metadata={"doc": "isolate = worktree: its branch."})
    commit: str | None = None
    files: tuple[str, ...] = attrs.field(default=(), metadata={"doc": "The files its commit changed."})
    insertions: int = 0
    deletions: int = 0
    workspace: str | None = attrs.field(
        default=None, metadata={"doc": "Where it ran, when kept (keep_worktree, or after a failure)."}
    )
    outputs: tuple[str, ...] = attrs.field(
        default=(), metadata={"doc": "Its stored stdout and outputs (paths under outputs_dir)."}
    )
    outputs_dir: str | None = None
    cached_from: str | None = attrs.field(
        default=None, metadata={"doc": "The run whose result a cached task restored."}
    )


@attrs.frozen(kw_only=True)
class Merged:
    """`capsule agents merge --json`: the branches merged in plan order, and the first conflict."""

    run: str
    merged: tuple[str, ...] = attrs.field(metadata={"doc": "Task ids whose branch was merged."})
    skipped: tuple[str, ...] = attrs.field(
        metadata={"doc": "Succeeded tasks with nothing committed, or already merged."}
    )
    conflict: str | None = attrs.field(default=None, metadata={"doc": "The task whose merge conflicted."})
    conflict_files: tuple[str, ...] = ()


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
    orphaned: bool = attrs.field(
        default=False, metadata={"doc": "Its scheduler died: nobody watches it (`agents kill --all`)."}
    )
    node: str = attrs.field(
        default="",
        metadata={
            "doc": 'The cluster node it runs on (`executor = "ray"`), empty on this machine; its pid is '
            "the node's, its CPU and RSS as last sampled there."
        },
    )


@attrs.frozen(kw_only=True)
class AgentsReport:
    """`capsule report` of an agents session: its fold, live state, and each traced task's tree."""

    run: RunState
    state: str
    trees: dict[str, list[tuple[int, str]]]


# --- plans and sessions -------------------------------------------------------------------------


def load_plan(
    path: Path, batch: Path | None = None, parallel: int | None = None, *, no_cache: bool = False
) -> Plan:
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
    resolved: dict[str, str] = {}  # most tasks share a few cwds: resolve each once
    for t in plan.tasks:
        if t.cwd not in resolved:
            resolved[t.cwd] = str((base_dir / t.cwd).resolve())
    tasks = tuple(attrs.evolve(t, cwd=resolved[t.cwd]) for t in plan.tasks)
    plan = attrs.evolve(plan, tasks=tasks)
    if parallel is not None:
        if parallel < 1:
            raise UsageError("--parallel must be at least 1")
        plan = attrs.evolve(plan, parallel=parallel)
    if no_cache:
        plan = attrs.evolve(plan, use_cache=False)
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
    """Durations by spec hash from the last runs (for ETAs and the critical path's estimate), the newest
    winning; an ended run's are kept beside it (stages.snapshot.DURATIONS) and not folded again."""
    from capsule.fold.tasks import durations
    from capsule.stages.snapshot import read_durations, write_durations

    out: dict[str, float] = {}
    for path in reversed(sessions(10)):
        found = read_durations(path)
        if found is None:
            state = fold(path)
            found = durations([state])
            if state.finished is not None:
                write_durations(path, found)
        out.update(found)
    return out


def estimates(plan: Plan, known: dict[str, float] | None = None) -> dict[str, float]:
    """Each task's expected duration (by id): the last success of the same spec hash."""
    known = history() if known is None else known
    return {t.id: known[t.spec_hash] for t in plan.tasks if t.spec_hash in known}


# --- running ------------------------------------------------------------------------------------


def run(
    plan: Plan,
    *,
    on_event: OnEvent | None = None,
    plan_path: str | None = None,
    resume: Path | None = None,
    argv: tuple[str, ...] | None = None,
    reuse: dict[str, Any] | None = None,
    executor: ExecutorSpec | None = None,
) -> RunState:
    """Run `plan` in this process until it ends (appending to session `resume` if given); its fold.

    `on_event` sees every event with the run's state as it is written (live progress)."""
    import trio

    from capsule.stages.reader import iter_events
    from capsule.stages.schedule import Scheduler, close_run, open_run, reopen_run

    tracer = require_tracer(plan.tracer) if plan.trace else None
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
            home(), plan, argv or ("capsule", "agents", "run", plan_path or plan.name), plan.reuse_from
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
        reuse=reuse,
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


def rerunnable(ref: str, from_task: str, plan_file: Path | None = None) -> tuple[Plan, dict[str, Any]]:
    """`agents rerun RUN --from TASK`: the plan of a new run that re-runs `from_task` and everything that
    depends on it, and the earlier results the rest reuse (succeeded or cached tasks: outputs, branch)."""
    from capsule.stages.task_workspace import CacheHit

    path, plan = resumable(ref, plan_file)
    run = fold(path)
    if from_task not in {t.id for t in plan.tasks}:
        raise NotFound(f"no task {from_task!r} in the plan of run {run.session_id}")
    dependents: dict[str, list[str]] = {t.id: [] for t in plan.tasks}
    for t in plan.tasks:
        for dep in t.depends_on:
            dependents[dep].append(t.id)
    todo, again = [from_task], {from_task}
    while todo:
        for child in dependents[todo.pop()]:
            if child not in again:
                again.add(child)
                todo.append(child)
    reuse = {}
    for done in run.tasks.values():
        if done.id in again or done.state not in ("succeeded", "cached"):
            continue
        branch, commit, outputs = done.kept
        from_run = done.cached.from_run if done.cached is not None else run.session_id
        reuse[done.id] = CacheHit(from_run=from_run, outputs=outputs, branch=branch, commit=commit)
    rerun = tuple(t.id for t in plan.tasks if t.id in again)
    return attrs.evolve(plan, reuse_from=run.session_id, rerun=rerun), reuse


def check(plan_file: Path, batch: Path | None = None) -> PlanCheck:
    """Validate a plan; its levels, critical path and maximum parallelism."""
    from capsule.plan.dag import analyse, past_timeout, redundant_edges

    plan = load_plan(plan_file, batch)
    known = estimates(plan)
    found = analyse(plan, known)
    notes = tuple(
        f"task {task!r}: depends_on {dep!r} is redundant (already through {via!r})"
        for task, dep, via in redundant_edges(plan)
    ) + tuple(
        f"task {task!r} is unreachable: at earlier durations it starts {at:.1f}s into the run at the "
        f"earliest, past [run] timeout ({plan.timeout_s:g}s)"
        + (f"; so are the {n} tasks that depend on it" if n else "")
        for task, at, n in past_timeout(plan, known)
    )
    if (plan.policy.protect_paths or plan.policy.read_only_paths) and not plan.trace:
        notes += (
            "[policy] path rules on untraced tasks: a refused open fails in the kernel but is no "
            'policy.blocked event, as no trace sees it; [run] trace = true or "ebpf" records each',
        )
    return PlanCheck(
        notes=notes,
        expanded={t.id: dict(t.params) for t in plan.tasks if t.params},
        name=plan.name,
        tasks=len(plan.tasks),
        parallel=plan.parallel,
        levels=tuple(tuple(level) for level in found.levels),
        critical_path=tuple(found.critical_path),
        critical_s=found.critical_s,
        max_parallelism=found.max_parallelism,
        estimated_s=found.estimated_s,
    )


def spawn(
    plan_file: Path,
    parallel: int | None = None,
    wait_s: float = 15.0,
    *,
    batch: Path | None = None,
    no_cache: bool = False,
    executor: str | None = None,
    address: str | None = None,
) -> str:
    """Start `capsule agents run PLAN` detached (its own session, no terminal); its session id.

    The plan is checked here first, so a missing or broken plan fails at once with its one line."""
    import subprocess

    from capsule.stages.reader import glance
    from capsule.stages.store import session_dirs

    load_plan(plan_file, batch, parallel)
    where = home()
    (where / "spool").mkdir(parents=True, exist_ok=True, mode=0o700)
    argv = [sys.executable, "-m", "capsule", "agents", "run", str(plan_file.resolve())]
    if parallel is not None:
        argv += ["--parallel", str(parallel)]
    if batch is not None:
        argv += ["--batch", str(batch.resolve())]
    if no_cache:
        argv += ["--no-cache"]
    executor_for(plan_file, executor, address)  # a bad --executor fails here, in one line
    argv += [*(["--executor", executor] if executor else []), *(["--address", address] if address else [])]
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
    from capsule.fold.tasks import progress, status_dict

    run = fold(session(ref))
    data: dict[str, Any] = status_dict(run, live_state(run))
    return RunStatus(
        percent=progress(run),
        # an interrupted run (its scheduler died) makes no progress until `agents resume`
        eta_s=_eta(run) if data["state"] == "running" else None,
        run=data["run"],
        name=data["name"],
        state=data["state"],
        counts=data["counts"],
        tasks=tuple(TaskRow(**t) for t in data["tasks"]),
    )


def _eta(run: RunState) -> float | None:
    """Seconds left (`capsule.fold.tasks.eta`), with the durations of the last runs and the clock now."""
    from capsule.fold.tasks import eta
    from capsule.plan import PlanError, plan_from_json

    if run.finished is not None or not run.plan:
        return None
    try:
        plan = plan_from_json(run.plan)
    except PlanError:
        return None
    return eta(run, plan, estimates(plan), time.time())


def result(task: str, ref: str = "latest") -> TaskResult:
    """One task's result: with its branch and diff stat (isolate = worktree) and its stored outputs."""
    from capsule.report.policy import blocked_dict

    path = session(ref)
    run = fold(path)
    if task not in run.tasks:
        raise NotFound(f"no task {task!r} in run {run.session_id}")
    t = run.tasks[task]
    c = t.collected
    kept = c.workspace if c is not None else None
    if kept is None and t.state != "succeeded":  # a failed isolated task's workspace stays for inspection
        for where in (
            home() / "worktrees" / run.session_id / task,
            home() / "workspaces" / run.session_id / task,
        ):
            if where.is_dir():
                kept = str(where)
    return TaskResult(
        branch=t.kept[0],
        commit=t.kept[1],
        files=c.files if c is not None else (),
        insertions=c.insertions if c is not None else 0,
        deletions=c.deletions if c is not None else 0,
        workspace=kept,
        outputs=t.kept[2],
        outputs_dir=str(path / "outputs" / task) if c is not None or t.cached else None,
        cached_from=t.cached.from_run if t.cached else None,
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
    """Running tasks: on this machine (pid, CPU and RSS measured now, elapsed), then those of live runs
    on cluster nodes (as last sampled on the node)."""
    import psutil

    from capsule.stages.procs import process_if

    rows = []
    for path in sessions(20):
        run = fold(path)
        live = live_state(run)  # interrupted: the fold says running, its scheduler is gone (orphaned)
        if live not in ("running", "interrupted"):
            continue
        for t in run.tasks.values():
            a = t.current
            if t.state != "running" or a is None or a.number in t.placed:  # on a node: `_on_nodes`
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
                    orphaned=live == "interrupted",
                )
            )  # fmt: skip
    return (*rows, *_on_nodes())


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
                sampled = a.sampled
                rows.append(
                    RunningTask(
                        session=run.session_id, task=t.id, attempt=a.number, pid=a.pid, pgid=a.pgid,
                        started=a.started, cpu_s=round(sampled.cpu_s, 2) if sampled else 0.0,
                        rss=sampled.rss if sampled else 0, elapsed_s=round(time.time() - a.ts, 1),
                        node=t.placed[a.number].node,
                    )
                )  # fmt: skip
    return rows


def kill(task: str | None, grace: float = 2.0) -> tuple[RunningTask, ...]:
    """Stop running task `task` (None: every running task, and whatever dead schedulers left) with its
    whole tree: SIGTERM, then SIGKILL after `grace`. The tasks stopped."""
    import signal

    from capsule.stages import procs
    from capsule.stages.task_units import leftover_tree

    rows = [r for r in ps() if task is None or r.task == task]  # this machine's, then the nodes'
    left = stop_dead_runs() if task is None else ()
    if not rows and not left:
        raise NotFound(f"no running task {task!r}" if task else "no running tasks")
    for r in rows:
        tree, _cgroup = leftover_tree(r.session, _attempt_of(r))  # the scheduler removes its cgroup
        run = fold(session(r.session))
        placed = run.tasks[r.task].placed.get(r.attempt)
        if placed is not None and run.executor is not None:  # on a cluster node: stopped there
            from capsule.stages.executors.ray_driver import RayMissing, request_stop, stop_on_node

            if (run.executor.address or "").startswith("ray://"):  # its driver stops it, connected
                request_stop(session(r.session), r.task, r.attempt, grace)
                continue
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


# --- workspaces and waiting -----------------------------------------------------------------------


def merge(ref: str, tasks: tuple[str, ...] = (), repo: Path | None = None) -> Merged:
    """Merge the branches of the run's succeeded isolated tasks (all, or `tasks`) into the checkout `repo`
    (the current folder's) in plan order; at the first conflict the merge is aborted and the rest left.

    The one command that writes the user's checkout, because the user asked for it."""
    import subprocess

    run = fold(session(ref))
    wanted = set(tasks)
    unknown = sorted(wanted - set(run.tasks))
    if unknown:
        raise NotFound(f"no task {unknown[0]!r} in run {run.session_id}")
    where = str(repo or Path.cwd())

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", where, *args], capture_output=True, text=True, check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
        )  # fmt: skip

    if git("rev-parse", "--git-dir").returncode != 0:
        raise UsageError(f"{where} is not a git checkout (run merge inside the repository, or pass --repo)")
    if git("status", "--porcelain", "--untracked-files=no").stdout.strip():
        raise CheckFailed(f"{where} has uncommitted changes: commit or stash them before merging")
    merged: list[str] = []
    skipped: list[str] = []
    for task_id in run.order:
        t = run.tasks[task_id]
        if wanted and task_id not in wanted:
            continue
        branch, commit, _outputs = t.kept
        if t.state not in ("succeeded", "cached") or branch is None:
            if wanted:
                raise CheckFailed(f"task {task_id!r} is {t.state} with no branch to merge")
            continue
        if commit is None or git("merge-base", "--is-ancestor", commit, "HEAD").returncode == 0:
            skipped.append(task_id)
            continue
        done = git(
            "merge", "--no-edit", "--no-ff", "-m", f"capsule: merge {task_id} of run {run.session_id}", commit
        )
        if done.returncode != 0:
            files = git("diff", "--name-only", "--diff-filter=U").stdout.split()
            git("merge", "--abort")
            return Merged(
                run=run.session_id, merged=tuple(merged), skipped=tuple(skipped), conflict=task_id,
                conflict_files=tuple(files),
            )  # fmt: skip
        merged.append(task_id)
    return Merged(run=run.session_id, merged=tuple(merged), skipped=tuple(skipped))


def wait(ref: str, timeout_s: float | None = None, poll_s: float = 0.1) -> RunStatus:
    """Block until the run ends (finished, or its scheduler died: `interrupted`); its status.

    Past `timeout_s`, Unavailable (the run goes on)."""
    path = session(ref)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        run = fold(path)
        if live_state(run) != "running":
            return status(str(path))
        if deadline is not None and time.monotonic() > deadline:
            raise Unavailable(f"run {run.session_id} still running after {timeout_s:g}s")
        time.sleep(poll_s)
