"""Batches of agent tasks: `capsule agents run|check|status|result|merge|wait|logs|ps|top|kill|resume`.

The work is `capsule.api.agents`; this module parses arguments and renders progress and results.

Exit codes: `run`, `resume` and `wait` exit 0 only if every task succeeded (or was cached), 1 otherwise;
a malformed plan is 4 (EXIT_BAD_INPUT) with one line naming the task and field; an unknown session or task
is 3; `wait --timeout` running out is 5; `merge` stopping at a conflict is 1.
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
    EXIT_CHECK_FAILED,
    HELP_SETTINGS,
    JsonOption,
    _console,
    _print_json,
    app,
    command_line,
    duration,
    fail,
)

if TYPE_CHECKING:
    from capsule.api.agents import RunningTask
    from capsule.events import Event
    from capsule.fold.tasks import RunState

agents_app = typer.Typer(
    rich_markup_mode=None,
    context_settings=HELP_SETTINGS,
    help="Run many agent tasks as a DAG, with limits, retries, hooks and policy.",
    no_args_is_help=True,
)
app.add_typer(agents_app, name="agents")

SessionOpt = Annotated[str, typer.Argument(help="An agents session: id, prefix, directory or `latest`.")]


def _fmt_s(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}s"


class _Progress:
    """Live progress: a rich table on a terminal, one plain line per state change otherwise."""

    def __init__(self, estimates: dict[str, float]) -> None:
        self.tty = sys.stdout.isatty() and not os.environ.get("CAPSULE_PLAIN")
        self.estimates = estimates
        self.live: Any = None
        self.last = 0.0
        self.refused: set[str] = set()  # tasks whose refusal has its line (the rule and the argv)

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
        from rich.text import Text

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
                t.id, Text(t.state, style=colour), str(len(t.attempts)), _fmt_s(elapsed), _fmt_s(eta),
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
            case TaskFailed() if (
                event.outcome == "denied" and event.attempt == 0 and event.task in self.refused
            ):
                pass  # refused before it started: the refusal's line said it all, rule included
            case TaskFailed():
                line = f"{event.outcome:<9} {event.task}: {event.reason}"
            case TaskSkipped():
                line = f"skipped   {event.task}: {event.reason}"
            case TaskRetrying():
                line = f"retrying  {event.task} in {event.delay_s:.2f}s ({event.reason})"
            case TaskLimitExceeded():
                line = f"limit     {event.task}: {event.limit} {event.measured:g} > {event.allowed:g}"
            case PolicyViolated():
                self.refused.add(event.task)
                from capsule.report.argv import short_argv

                shown = short_argv(event.argv, width=200) if event.argv else event.path  # control chars shown
                line = f"denied    {event.task}: {shown} (rule {event.rule!r})"
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


ExecutorOpt = Annotated[
    str | None, typer.Option("--executor", help="local or ray: where the attempts run (overrides [run]).")
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address", help="The Ray cluster: auto (this machine is one of its nodes) or the head's host:port."
    ),
]


def _execute(
    plan: Any,
    *,
    resume_dir: Path | None = None,
    plan_path: str | None = None,
    reuse: Any = None,
    executor: Any = None,
) -> RunState:
    from capsule.api import agents

    progress = _Progress(agents.estimates(plan))
    with progress:
        run = agents.run(
            plan,
            on_event=progress,
            plan_path=plan_path,
            resume=resume_dir,
            argv=command_line(),
            reuse=reuse,
            executor=executor,
        )
        progress.final(run)
    _summary(run)
    return run


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
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Run in the background; print the run id.")
    ] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Run `cache = true` tasks even when a result is cached.")
    ] = False,
    executor: ExecutorOpt = None,
    address: AddressOpt = None,
) -> None:
    from capsule.api import agents

    if detach:
        print(
            agents.spawn(
                plan_file, parallel, batch=batch, no_cache=no_cache, executor=executor, address=address
            )
        )
        return
    plan = agents.load_plan(plan_file, batch, parallel, no_cache=no_cache)
    where = agents.executor_for(plan_file, executor, address)
    state = _execute(plan, plan_path=str(batch or plan_file), executor=where)
    raise typer.Exit(0 if state.state == "succeeded" else EXIT_CHECK_FAILED)


@agents_app.command(help="Wait for a run to end; exit with its status (0 only if it succeeded).")
def wait(
    session: SessionOpt = "latest",
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", parser=duration, metavar="DURATION", help="Give up after (exit 5)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    from capsule.api import agents
    from capsule.api.records import plain

    found = agents.wait(session, timeout)
    if as_json:
        _print_json(plain(found))
    else:
        counts = ", ".join(f"{v} {k}" for k, v in found.counts.items())
        print(f"{found.run}: {found.state} · {counts}")
    raise typer.Exit(0 if found.state == "succeeded" else EXIT_CHECK_FAILED)


@agents_app.command(
    help="Merge succeeded tasks' branches (isolate = worktree) in plan order; stop at a conflict."
)
def merge(
    session: SessionOpt,
    tasks: Annotated[list[str] | None, typer.Argument(help="Only these tasks (default: every one).")] = None,
    repo: Annotated[
        Path | None, typer.Option("--repo", help="The checkout to merge into (default: here).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    from capsule.api import agents
    from capsule.api.records import plain

    found = agents.merge(session, tuple(tasks or ()), repo)
    if as_json:
        _print_json(plain(found))
    else:
        for task in found.merged:
            print(f"merged {task}")
        for task in found.skipped:
            print(f"nothing to merge for {task}")
    if found.conflict is not None:
        files = ", ".join(found.conflict_files) or "unknown files"
        fail(
            f"merging task {found.conflict!r} conflicts in {files}; merge aborted, "
            f"{len(found.merged)} merged before it",
            EXIT_CHECK_FAILED,
        )


@agents_app.command(help="Re-run what a killed run left undone, appending to its session.")
def resume(
    session: SessionOpt,
    plan_file: Annotated[
        Path | None,
        typer.Option("--plan", help="An edited plan: a succeeded task whose spec changed is run again."),
    ] = None,
    executor: ExecutorOpt = None,
    address: AddressOpt = None,
) -> None:
    from capsule.api import agents

    path, plan = agents.resumable(session, plan_file)
    where = agents.executor_for(plan_file, executor, address, resume=path)
    result = _execute(
        plan, resume_dir=path, plan_path=None if plan_file is None else str(plan_file), executor=where
    )
    raise typer.Exit(0 if result.state == "succeeded" else EXIT_CHECK_FAILED)


@agents_app.command(help="Re-run a task and all that depends on it in a new run reusing the rest.")
def rerun(
    session: SessionOpt,
    from_task: Annotated[str, typer.Option("--from", help="The task to run again, with its dependents.")],
    plan_file: Annotated[
        Path | None, typer.Option("--plan", help="An edited plan (else the run's own).")
    ] = None,
) -> None:
    from capsule.api import agents

    plan, reuse = agents.rerunnable(session, from_task, plan_file)
    state = _execute(plan, plan_path=None if plan_file is None else str(plan_file), reuse=reuse)
    raise typer.Exit(0 if state.state == "succeeded" else EXIT_CHECK_FAILED)


@agents_app.command(help="Validate a plan: then its levels, critical path and maximum parallelism.")
def check(
    plan_file: Annotated[Path, typer.Argument(help="The plan (TOML).")],
    batch: Annotated[Path | None, typer.Option("--batch", help="Tasks as JSONL.")] = None,
    as_json: JsonOption = False,
) -> None:
    from capsule.api import agents
    from capsule.api.records import plain

    found = agents.check(plan_file, batch)
    if as_json:
        _print_json(plain(found))
        return
    print(f"plan {found.name}: {found.tasks} tasks, parallel {found.parallel} — valid")
    for task_id, params in list(found.expanded.items())[:50]:
        print(f"  {task_id}: " + ", ".join(f"{k} = {v!r}" for k, v in params.items()))
    if len(found.expanded) > 50:
        print(f"  … (+{len(found.expanded) - 50} expanded tasks)")
    for i, level in enumerate(found.levels):
        shown = ", ".join(level[:12]) + (f" … (+{len(level) - 12})" if len(level) > 12 else "")
        print(f"  level {i}: {shown}")
    crit = f" ({found.critical_s:.1f}s from earlier runs)" if found.critical_s is not None else ""
    print(f"critical path: {' -> '.join(found.critical_path)}{crit}")
    print(f"max parallelism: {found.max_parallelism}")
    if found.estimated_s is not None:
        print(f"estimated run time at parallel {found.parallel}: {found.estimated_s:.1f}s")
    for note in found.notes:
        print(f"note: {note}")


@agents_app.command(help="The state of an agents run (a fold of its session); --watch redraws it live.")
def status(
    session: SessionOpt = "latest",
    as_json: JsonOption = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Redraw until the run ends.")] = False,
) -> None:
    from capsule.api import agents
    from capsule.api.records import plain

    found = agents.status(session)
    if as_json:
        _print_json(plain(found))
        return
    if not watch:
        _console().print(_status_view(found))
        return
    from rich.live import Live

    with contextlib.suppress(KeyboardInterrupt), Live(_status_view(found), console=_console()) as live:
        while found.state == "running":
            time.sleep(0.25)
            found = agents.status(found.run)
            live.update(_status_view(found))


def _status_view(found: Any) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from capsule.api.records import plain

    data = plain(found)
    eta = "" if found.eta_s is None else f" · eta {found.eta_s:.0f}s"
    title = Text.from_markup(f"[bold]{found.name}[/] {found.run} · {data['state']} · {found.percent:g}%{eta}")
    table = Table(box=None, header_style="bold", pad_edge=False)
    guarded = any(t["blocked"] for t in data["tasks"])
    placed = any(t.get("node") for t in data["tasks"])  # ran on a cluster: say where
    for column in (
        "task",
        "state",
        "attempts",
        "exit",
        "duration",
        "reason",
        *(["blocked"] if guarded else []),
        *(["node"] if placed else []),
    ):
        table.add_column(column)
    shown = data["tasks"]
    if len(shown) > 60:  # a big run: the counts, and what runs now
        shown = [t for t in shown if t["state"] == "running"][:40]
        table.caption = " · ".join(f"{k} {v}" for k, v in found.counts.items())
    for t in shown:
        table.add_row(
            t["id"], t["state"], str(t["attempts"]), "" if t["exit_code"] is None else str(t["exit_code"]),
            _fmt_s(t["duration_s"]), t["reason"], *([str(t["blocked"])] if guarded else []),
            *([t.get("node") or ""] if placed else []),
        )  # fmt: skip
    return Group(title, table)


@agents_app.command(help="One task's result: state, attempts, exit codes, checks, hooks, policy.")
def result(task: str, session: SessionOpt = "latest", as_json: JsonOption = False) -> None:
    from capsule.api import agents
    from capsule.api.records import plain
    from capsule.report.argv import full_argv, visible

    t = agents.result(task, session)
    data = plain(t)
    if as_json:
        _print_json(data)
        return
    print(f"{t.id}: {t.state}" + (f" ({t.reason})" if t.reason else ""))
    if t.branch is not None:
        stat = (
            f"{len(t.files)} files changed, +{t.insertions} -{t.deletions}" if t.commit else "nothing changed"
        )
        print(f"  branch {t.branch}" + (f" at {t.commit[:12]}" if t.commit else "") + f": {stat}")
        for name in t.files[:20]:
            print(f"    {name}")
    if t.workspace is not None:
        print(f"  workspace {t.workspace}")
    if t.outputs:
        print(f"  outputs ({t.outputs_dir}): {', '.join(t.outputs)}")
    if t.cached_from is not None:
        print(f"  cached: the result of run {t.cached_from}")
    for a in t.attempts:
        status_text = a.signal or ("" if a.exit_code is None else f"exit {a.exit_code}")
        dur = "" if a.end is None else f"{a.end - a.ts:.2f}s"
        print(
            f"  attempt {a.number}: pid {a.pid} {a.outcome or 'running'} {status_text} {dur} logs {a.log_dir}/{a.number}.out"
        )
    for v in t.verified:
        print(f"  verify: {v.command}: " + ("ok" if v.ok else f"failed (exit {v.exit_code})"))
    for h in t.hooks:
        print(f"  hook {h.on}: {h.decision}" + (f" ({h.reason})" if h.reason else ""))
    for x in t.violations:
        what = full_argv(x.argv) if x.argv else visible(x.path or "")
        print(f"  violation: {x.rule!r} matched {what}" + (" (live)" if x.live else ""))
    for b in t.blocked:
        what = full_argv(b["argv"]) if b["argv"] else visible(b["path"] or "")
        kill = ", killed" if b["action"] == "kill" else ""
        print(f"  blocked: {what} (rule {b['rule']!r}, {b['mechanism']}{kill}, pid {b['pid']})")
    for m in t.limits:
        print(f"  limit: {m.limit} measured {m.measured:g} > {m.allowed:g}")


@agents_app.command(help="A task's stdout and stderr, per attempt; -f follows the running attempt.")
def logs(
    task: str,
    session: Annotated[str, typer.Option("--session", "-s", help="The agents session.")] = "latest",
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow until the task ends.")] = False,
    attempt: Annotated[int | None, typer.Option("--attempt", help="Only this attempt.")] = None,
) -> None:
    from capsule.api import agents

    out = sys.stdout.buffer
    for chunk in agents.task_logs(task, session, follow=follow, attempt=attempt):
        out.write(chunk)
        out.flush()


def _running() -> tuple[RunningTask, ...]:
    from capsule.api import agents

    return agents.ps()


def _ps_table(rows: tuple[RunningTask, ...]) -> Any:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    nodes = any(r.node for r in rows)
    columns = (
        "session",
        "task",
        "attempt",
        *(("node",) if nodes else ()),
        "pid",
        "cpu",
        "rss",
        "elapsed",
        "",
    )
    for column in columns:
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.session, r.task, str(r.attempt), *((r.node or "-",) if nodes else ()), str(r.pid),
            f"{r.cpu_s:.1f}s", f"{r.rss / 2**20:.1f} MiB", f"{r.elapsed_s:.1f}s", "orphaned" if r.orphaned else "",
        )  # fmt: skip
    return table


@agents_app.command(help="Running tasks: pid, CPU, RSS, elapsed (and node, for a task on a Ray cluster).")
def ps(as_json: JsonOption = False) -> None:
    from capsule.api.records import plain

    rows = _running()
    if as_json:
        _print_json(plain(rows))
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
    from capsule.api import agents

    if task is None and not all_:
        fail("name a TASK or pass --all", 2)
    for r in agents.kill(task, grace):
        print(f"killed {r.task} (pid {r.pid}, session {r.session})")


def report_agents(session_dir: Path, as_json: bool) -> None:
    """`capsule report` of an agents session: the DAG, the timeline, each task's process tree."""
    from capsule.api import agents
    from capsule.report.agents import render_agents, report_dict

    found = agents.report(session_dir)
    if as_json:
        _print_json(report_dict(found.run, found.state, found.trees))
        return
    _console().print(render_agents(found.run, found.state, found.trees), markup=False, highlight=False)
