"""Batches of agent tasks: `capsule agents run|check|status|result|logs|ps|top|kill|resume`.

Exit codes: `run` and `resume` exit 0 only if every task succeeded, 1 otherwise; a malformed plan is 4
(EXIT_BAD_INPUT) with one line naming the task and field; an unknown session or task is 3.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from capsule.cli.base import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_NOT_FOUND,
    HELP_SETTINGS,
    CliError,
    JsonOption,
    _console,
    _home,
    _print_json,
    _resolve,
    app,
    command_line,
    duration,
    fail,
)

if TYPE_CHECKING:
    from capsule.events import Event
    from capsule.fold.tasks import RunState
    from capsule.plan import Plan

agents_app = typer.Typer(
    rich_markup_mode=None,
    context_settings=HELP_SETTINGS,
    help="Run many agent tasks as a DAG, with limits, retries, hooks and policy.",
    no_args_is_help=True,
)
app.add_typer(agents_app, name="agents")

SessionOpt = Annotated[str, typer.Argument(help="An agents session: id, prefix, directory or `latest`.")]


def _load_plan(path: Path, batch: Path | None, parallel: int | None) -> Plan:
    import attrs

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
        fail(f"{exc.filename}: {exc.strerror}", EXIT_BAD_INPUT)
    except PlanError as exc:
        fail(f"{batch or path}: {exc}", EXIT_BAD_INPUT)
    tasks = tuple(attrs.evolve(t, cwd=str((base_dir / t.cwd).resolve())) for t in plan.tasks)
    plan = attrs.evolve(plan, tasks=tasks)
    if parallel is not None:
        if parallel < 1:
            fail("--parallel must be at least 1", 2)
        plan = attrs.evolve(plan, parallel=parallel)
    return plan


def _fold(session_dir: Path) -> RunState:
    from capsule.codec import CodecError
    from capsule.fold.tasks import RunState
    from capsule.stages.reader import iter_events

    state = RunState()
    try:
        for event in iter_events(session_dir):
            state.apply(event)
    except CodecError as exc:
        fail(f"{session_dir / 'events.jsonl'}: {exc}", EXIT_BAD_INPUT)
    return state


def _agents_sessions(limit: int = 50) -> list[Path]:
    from capsule.stages.reader import glance
    from capsule.stages.store import session_dirs

    out = []
    for path in session_dirs(_home()):
        header = glance(path).header
        if header is not None and header.session_kind == "agents":
            out.append(path)
            if len(out) >= limit:
                break
    return out


def _agents_session(ref: str) -> Path:
    if ref == "latest":
        found = _agents_sessions(1)
        if not found:
            fail("no agents sessions yet; start one with `capsule agents run PLAN`", EXIT_NOT_FOUND)
        return found[0]
    path = _resolve(ref)
    from capsule.stages.reader import glance

    header = glance(path).header
    if header is None or header.session_kind != "agents":
        fail(f"session {path.name} is not an agents session", EXIT_NOT_FOUND)
    return path


def _live_state(run: RunState) -> str:
    """The run's state, `interrupted` when its scheduler is gone without finishing."""
    from capsule.stages.processes import process_if

    if (
        run.finished is None
        and run.scheduler_pid is not None
        and process_if(run.scheduler_pid, run.scheduler_started) is None
    ):
        return "interrupted"
    return run.state


def _history(plan: Plan) -> dict[str, float]:
    from capsule.fold.tasks import durations

    return durations(reversed([_fold(p) for p in _agents_sessions(10)]))


def _fmt_s(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}s"


class _Progress:
    """Live progress: a rich table on a terminal, one plain line per state change otherwise."""

    def __init__(self, estimates: dict[str, float]) -> None:
        self.tty = sys.stdout.isatty() and not os.environ.get("CAPSULE_PLAIN")
        self.estimates = estimates
        self.live: Any = None
        self.last = 0.0

    def __enter__(self) -> _Progress:
        if self.tty:
            from rich.live import Live

            self.live = Live(console=_console(), refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def table(self, run: RunState) -> Any:
        from rich.table import Table

        now = time.time()
        table = Table(
            box=None, header_style="bold", title=f"{run.name} · {run.session_id}", title_justify="left"
        )
        for column in ("task", "state", "attempt", "elapsed", "eta", "exit"):
            table.add_column(column)
        rows = [run.tasks[i] for i in run.order]
        if len(rows) > 40:  # a big batch: show what is running and the counts
            rows = [t for t in rows if t.state == "running"][:30]
            table.caption = " · ".join(f"{k} {v}" for k, v in run.counts().items() if v)
        for t in rows:
            a = t.current
            elapsed = (a.end or now) - a.ts if a else None
            est = self.estimates.get(t.id)
            eta = (
                max(0.0, est - elapsed)
                if est is not None and elapsed is not None and t.state == "running"
                else None
            )
            colour = {"succeeded": "green", "running": "cyan", "queued": "dim"}.get(t.state, "red")
            table.add_row(
                t.id, f"[{colour}]{t.state}[/]", str(len(t.attempts)), _fmt_s(elapsed), _fmt_s(eta),
                "" if t.exit_code is None else str(t.exit_code),
            )  # fmt: skip
        return table

    def __call__(self, event: Event, run: RunState) -> None:
        from capsule.events.tasks import (
            PolicyViolated,
            TaskFailed,
            TaskLimitExceeded,
            TaskRetrying,
            TaskSkipped,
            TaskStarted,
            TaskSucceeded,
        )

        if self.live is not None:
            now = time.monotonic()
            if now - self.last > 0.2:
                self.last = now
                self.live.update(self.table(run))
            return
        line = None
        match event:
            case TaskStarted():
                line = f"started   {event.task} (attempt {event.attempt}, pid {event.pid})"
            case TaskSucceeded():
                line = f"succeeded {event.task} in {event.duration_s:.2f}s"
            case TaskFailed():
                line = f"{event.outcome:<9} {event.task}: {event.reason}"
            case TaskSkipped():
                line = f"skipped   {event.task}: {event.reason}"
            case TaskRetrying():
                line = f"retrying  {event.task} in {event.delay_s:.2f}s ({event.reason})"
            case TaskLimitExceeded():
                line = f"limit     {event.task}: {event.limit} {event.measured:g} > {event.allowed:g}"
            case PolicyViolated():
                line = f"denied    {event.task}: {' '.join(event.argv) or event.path} (rule {event.rule!r})"
        if line is not None:
            print(line, flush=True)

    def final(self, run: RunState) -> None:
        if self.live is not None:
            self.live.update(self.table(run))


def _summary(run: RunState) -> None:
    counts = ", ".join(f"{v} {k}" for k, v in run.counts().items() if v)
    print(
        f"capsule: agents run {run.session_id} · {run.state} · {counts} · `capsule agents status {run.session_id}`",
        file=sys.stderr,
    )


def _execute(plan: Plan, *, resume_dir: Path | None = None, plan_path: str | None = None) -> RunState:
    import trio

    from capsule.stages.schedule import Scheduler, close_run, open_run, reopen_run
    from capsule.stages.tracer import TracerMissing, find_tracer

    tracer = None
    if plan.trace:
        try:
            tracer = find_tracer()
        except TracerMissing as exc:
            fail(str(exc), 5)
    os.umask(0o077)
    started = time.time()
    state = None
    if resume_dir is not None:
        state = _fold(resume_dir)
        from capsule.stages.reader import iter_events

        count = sum(1 for _ in iter_events(resume_dir))
        writer = reopen_run(resume_dir, count)
        path = resume_dir
    else:
        _id, path, writer = open_run(_home(), plan, command_line())
    progress = _Progress(_history(plan))
    scheduler = Scheduler(plan, writer, path, home=_home(), tracer=tracer, state=state, on_event=progress)
    if state is None:
        scheduler.state.apply(_first_event(path))
    try:
        with progress:
            run = trio.run(lambda: scheduler.run(resume=resume_dir is not None, plan_path=plan_path))
            progress.final(run)
    finally:
        close_run(writer, started, scheduler.state)
    _summary(run)
    return run


def _first_event(path: Path) -> Event:
    from capsule.stages.reader import iter_events

    return next(iter(iter_events(path)))


@agents_app.command(help="Run a plan of tasks; exit 0 only if every task succeeded.")
def run(
    plan_file: Annotated[
        Path, typer.Argument(help="The plan (TOML), or with --batch its defaults (optional).")
    ],
    parallel: Annotated[
        int | None, typer.Option("--parallel", "-j", help="Tasks at once (overrides [run]).")
    ] = None,
    batch: Annotated[
        Path | None, typer.Option("--batch", help="Tasks as JSONL, one object per line.")
    ] = None,
) -> None:
    plan = _load_plan(plan_file, batch, parallel)
    state = _execute(plan, plan_path=str(batch or plan_file))
    raise typer.Exit(0 if state.state == "succeeded" else EXIT_CHECK_FAILED)


@agents_app.command(help="Re-run what a killed run left undone, appending to its session.")
def resume(
    session: SessionOpt,
    plan_file: Annotated[
        Path | None,
        typer.Option("--plan", help="An edited plan: a succeeded task whose spec changed is run again."),
    ] = None,
) -> None:
    from capsule.plan import plan_from_json

    path = _agents_session(session)
    state = _fold(path)
    if not state.plan:
        fail(f"session {path.name} has no plan to resume", EXIT_BAD_INPUT)
    if _live_state(state) == "running":
        fail(f"session {path.name} is still running (scheduler pid {state.scheduler_pid})", EXIT_CHECK_FAILED)
    plan = plan_from_json(state.plan) if plan_file is None else _load_plan(plan_file, None, None)
    result = _execute(plan, resume_dir=path, plan_path=None if plan_file is None else str(plan_file))
    raise typer.Exit(0 if result.state == "succeeded" else EXIT_CHECK_FAILED)


@agents_app.command(help="Validate a plan: then its levels, critical path and maximum parallelism.")
def check(
    plan_file: Annotated[Path, typer.Argument(help="The plan (TOML).")],
    batch: Annotated[Path | None, typer.Option("--batch", help="Tasks as JSONL.")] = None,
    as_json: JsonOption = False,
) -> None:
    from capsule.plan.dag import analyse

    plan = _load_plan(plan_file, batch, None)
    found = analyse(plan, _history(plan))
    data = {
        "name": plan.name,
        "tasks": len(plan.tasks),
        "parallel": plan.parallel,
        "levels": [list(level) for level in found.levels],
        "critical_path": list(found.critical_path),
        "critical_s": found.critical_s,
        "max_parallelism": found.max_parallelism,
        "estimated_s": found.estimated_s,
    }
    if as_json:
        _print_json(data)
        return
    print(f"plan {plan.name}: {len(plan.tasks)} tasks, parallel {plan.parallel} — valid")
    for i, level in enumerate(found.levels):
        shown = ", ".join(level[:12]) + (f" … (+{len(level) - 12})" if len(level) > 12 else "")
        print(f"  level {i}: {shown}")
    crit = f" ({found.critical_s:.1f}s from earlier runs)" if found.critical_s is not None else ""
    print(f"critical path: {' -> '.join(found.critical_path)}{crit}")
    print(f"max parallelism: {found.max_parallelism}")
    if found.estimated_s is not None:
        print(f"estimated run time at parallel {plan.parallel}: {found.estimated_s:.1f}s")


@agents_app.command(help="The state of an agents run (a fold of its session).")
def status(session: SessionOpt = "latest", as_json: JsonOption = False) -> None:
    from capsule.fold.tasks import status_dict

    run = _fold(_agents_session(session))
    data = status_dict(run, _live_state(run))
    if as_json:
        _print_json(data)
        return
    from rich.table import Table

    console = _console()
    console.print(f"[bold]{run.name}[/] {run.session_id} · {data['state']}", highlight=False)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("task", "state", "attempts", "exit", "duration", "reason"):
        table.add_column(column)
    for t in data["tasks"]:  # type: ignore[attr-defined]
        table.add_row(
            t["id"], t["state"], str(t["attempts"]), "" if t["exit_code"] is None else str(t["exit_code"]),
            _fmt_s(t["duration_s"]), t["reason"],
        )  # fmt: skip
    console.print(table)


def _task_state(run: RunState, task: str) -> Any:
    if task not in run.tasks:
        fail(f"no task {task!r} in run {run.session_id}", EXIT_NOT_FOUND)
    return run.tasks[task]


@agents_app.command(help="One task's result: state, attempts, exit codes, checks, hooks, policy.")
def result(task: str, session: SessionOpt = "latest", as_json: JsonOption = False) -> None:
    run = _fold(_agents_session(session))
    t = _task_state(run, task)
    data = task_result(run, task)
    if as_json:
        _print_json(data)
        return
    print(f"{t.id}: {t.state}" + (f" ({t.reason})" if t.reason else ""))
    for a in t.attempts:
        status_text = a.signal or ("" if a.exit_code is None else f"exit {a.exit_code}")
        dur = "" if a.end is None else f"{a.end - a.ts:.2f}s"
        print(
            f"  attempt {a.number}: pid {a.pid} {a.outcome or 'running'} {status_text} {dur} logs {a.log_dir}/{a.number}.out"
        )
    for key in ("verified", "hooks", "violations", "limits"):
        for item in data[key]:
            print(f"  {key[:-1] if key != 'verified' else 'verify'}: {item}")


def task_result(run: RunState, task: str) -> dict[str, Any]:
    """`agents result --json`: state, attempts, exit codes, checks, hooks, policy of one task."""
    import attrs

    t = _task_state(run, task)
    return {
        "id": t.id,
        "state": t.state,
        "reason": t.reason,
        "exit_code": t.exit_code,
        "duration_s": t.duration_s,
        "attempts": [attrs.asdict(a) for a in t.attempts],
        "verified": [{"command": v.command, "ok": v.ok, "exit_code": v.exit_code} for v in t.verified],
        "hooks": [{"on": h.on, "decision": h.decision, "reason": h.reason} for h in t.hooks],
        "violations": [
            {"rule": v.rule, "argv": list(v.argv), "path": v.path, "live": v.live} for v in t.violations
        ],
        "limits": [{"limit": x.limit, "measured": x.measured, "allowed": x.allowed} for x in t.limits],
    }


@agents_app.command(help="A task's stdout and stderr, per attempt; -f follows the running attempt.")
def logs(
    task: str,
    session: Annotated[str, typer.Option("--session", "-s", help="The agents session.")] = "latest",
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow until the task ends.")] = False,
    attempt: Annotated[int | None, typer.Option("--attempt", help="Only this attempt.")] = None,
) -> None:
    path = _agents_session(session)
    run = _fold(path)
    t = _task_state(run, task)
    attempts = [a.number for a in t.attempts if attempt is None or a.number == attempt]
    if not attempts:
        fail(f"task {task!r} has not started", EXIT_NOT_FOUND)
    logs_dir = path / "tasks" / task
    for n in attempts[:-1] if follow else attempts:
        print(f"== {task} attempt {n} ==", flush=True)
        for suffix in ("out", "err"):
            f = logs_dir / f"{n}.{suffix}"
            if f.is_file():
                sys.stdout.buffer.write(f.read_bytes())
        sys.stdout.flush()
    if not follow:
        return
    n = attempts[-1]
    print(f"== {task} attempt {n} ==", flush=True)
    offset = 0
    out = logs_dir / f"{n}.out"
    while True:
        if out.is_file():
            with open(out, "rb") as stream:
                stream.seek(offset)
                data = stream.read()
                offset += len(data)
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
        current = _fold(path).tasks[task]
        if current.state != "running" or len(current.attempts) != n:
            if current.state == "queued" or len(current.attempts) != n:
                n = len(current.attempts)
                offset = 0
                out = logs_dir / f"{n}.out"
                if current.state != "running":
                    time.sleep(0.2)
                    continue
                print(f"== {task} attempt {n} ==", flush=True)
                continue
            break
        time.sleep(0.2)


def _running() -> list[dict[str, Any]]:
    import psutil

    from capsule.stages.processes import process_if

    rows = []
    for path in _agents_sessions(20):
        run = _fold(path)
        if _live_state(run) != "running":
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
                {"session": run.session_id, "task": t.id, "attempt": a.number, "pid": a.pid, "pgid": a.pgid,
                 "started": a.started, "cpu_s": round(cpu, 2), "rss": int(rss), "elapsed_s": round(time.time() - a.ts, 1)}
            )  # fmt: skip
    return rows


def _ps_table(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("session", "task", "attempt", "pid", "cpu", "rss", "elapsed"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["session"], r["task"], str(r["attempt"]), str(r["pid"]), f"{r['cpu_s']:.1f}s",
            f"{r['rss'] / 2**20:.1f} MiB", f"{r['elapsed_s']:.1f}s",
        )  # fmt: skip
    return table


@agents_app.command(help="Running tasks on this machine: pid, CPU, RSS, elapsed.")
def ps(as_json: JsonOption = False) -> None:
    rows = _running()
    if as_json:
        _print_json(rows)
    elif not rows:
        print("no agent tasks running")
    else:
        _console().print(_ps_table(rows))


@agents_app.command(help="`agents ps`, live, until Ctrl-C.")
def top(
    interval: Annotated[
        float,
        typer.Option("--interval", "-n", parser=duration, metavar="DURATION", help="Between refreshes."),
    ] = 1.0,
) -> None:
    from rich.live import Live

    with (
        contextlib.suppress(KeyboardInterrupt),
        Live(  # Ctrl-C is how top is meant to end
            _ps_table(_running()), console=_console(), refresh_per_second=4
        ) as live,
    ):
        while True:
            time.sleep(max(interval, 0.2))
            live.update(_ps_table(_running()))


@agents_app.command(help="Kill a running task's whole process group (or every running task).")
def kill(
    task: Annotated[str | None, typer.Argument(help="The task id.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every running task.")] = False,
    grace: Annotated[
        float,
        typer.Option(
            "--grace", parser=duration, metavar="DURATION", help="Between SIGTERM and SIGKILL (500ms, 5s)."
        ),
    ] = 2.0,
) -> None:
    if task is None and not all_:
        fail("name a TASK or pass --all", 2)
    for r in kill_tasks(task, grace):
        print(f"killed {r['task']} (pid {r['pid']}, session {r['session']})")


def kill_tasks(task: str | None, grace: float = 2.0) -> list[dict[str, Any]]:
    """Kill the process group of running task `task` (None: every running task); the rows killed."""
    import signal

    import psutil

    rows = [r for r in _running() if task is None or r["task"] == task]
    if not rows:
        fail(f"no running task {task!r}" if task else "no running tasks", EXIT_NOT_FOUND)
    for r in rows:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(r["pgid"], signal.SIGTERM)
    deadline = time.time() + grace
    for r in rows:
        try:
            p = psutil.Process(r["pid"])
            p.wait(max(0.0, deadline - time.time()))
        except psutil.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r["pgid"], signal.SIGKILL)
        except psutil.Error:
            pass
    return rows


def spawn_run(plan_file: Path, parallel: int | None = None, wait_s: float = 15.0) -> str:
    """Start `capsule agents run PLAN` detached (its own session, no terminal); its session id.

    The plan is checked here first, so a missing or broken plan fails at once with its one line."""
    import subprocess

    from capsule.stages.reader import glance
    from capsule.stages.store import session_dirs

    _load_plan(plan_file, None, parallel)
    home = _home()
    (home / "spool").mkdir(parents=True, exist_ok=True, mode=0o700)
    argv = [sys.executable, "-m", "capsule", "agents", "run", str(plan_file.resolve())]
    if parallel is not None:
        argv += ["--parallel", str(parallel)]
    err_path = home / "spool" / f"agents-{os.getpid()}-{time.monotonic_ns()}.log"
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
            for path in session_dirs(home)[:20]:
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
                fail(f"the scheduler exited with {proc.returncode}: {lines[-1] if lines else 'no output'}", 5)
            time.sleep(0.02)
    finally:
        err_path.unlink(missing_ok=True)  # the scheduler keeps its open file; nobody reads it later
    raise CliError(f"the scheduler (pid {proc.pid}) did not open a session within {wait_s:g}s", 5)


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


def report_agents(session_dir: Path, as_json: bool) -> None:
    """`capsule report` of an agents session: the DAG, the timeline, each task's process tree."""
    from capsule.report.agents import render_agents, report_dict

    run = _fold(session_dir)
    trees = {}
    for t in run.tasks.values():
        a = t.current
        if a is not None and a.trace_session:
            with contextlib.suppress(SystemExit, OSError, StopIteration):
                trees[t.id] = _trace_tree(a.trace_session)
    if as_json:
        _print_json(report_dict(run, _live_state(run), trees))
        return
    _console().print(render_agents(run, _live_state(run), trees), markup=False, highlight=False)


def _trace_tree(session_id: str) -> list[tuple[int, str]]:
    """A traced attempt's process tree as (depth, line) rows."""
    from capsule.cli.base import _rules
    from capsule.fold import SessionState
    from capsule.stages.reader import iter_events
    from capsule.stages.store import resolve_session

    fold = SessionState.new(_rules())
    for event in iter_events(resolve_session(_home(), session_id)):
        fold.apply(event)
    tree = fold.tree
    rows: list[tuple[int, str]] = []
    roots = [tree.nodes[k] for k in tree.roots]
    stack = [(0, n) for n in reversed(roots)]
    while stack and len(rows) < 200:
        depth, node = stack.pop()
        argv = node.display_argv or ()
        end = node.signal or ("" if node.exit_code is None else f"exit {node.exit_code}")
        rows.append((depth, f"{node.pid} {' '.join(argv)[:100]} {end}".rstrip()))
        stack.extend((depth + 1, c) for c in reversed(list(tree.children(node))))
    return rows
