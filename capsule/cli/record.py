"""Record and report: `capsule run`, `report`, `ls`, `import`, `replay`, `doctor`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from capsule.cli.base import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_ENVIRONMENT,
    JsonOption,
    SessionArg,
    _Ansi,
    _console,
    _home,
    _print_json,
    _print_json_streaming,
    _resolve,
    _rules,
    app,
    fail,
)

if TYPE_CHECKING:
    from capsule.fold.labels import RuleSet


@app.command(
    context_settings={"allow_interspersed_args": False},
    help="Run CMD under strace and record every process it spawns as a session.",
)
def run(
    command: Annotated[list[str], typer.Argument(help="The command and its arguments (after `--`).")],
    level: Annotated[
        str, typer.Option("--level", "-l", help="What to trace: process, file, net or all.")
    ] = "process",
    name: Annotated[str | None, typer.Option("--name", "-n", help="A name to find the session by.")] = None,
    no_redact: Annotated[
        bool, typer.Option("--no-redact", help="Keep secret-looking values in argv and the trace.")
    ] = False,
    parent: Annotated[
        str | None,
        typer.Option("--parent", hidden=True, help="The env or agents session this run is recorded for."),
    ] = None,
    timeout: Annotated[
        str | None,
        typer.Option(
            "--timeout",
            metavar="D",
            help="Stop the command's whole tree after D (5s, 10m, 1.5h): SIGTERM, then SIGKILL 2 s later.",
        ),
    ] = None,
) -> None:
    import trio

    from capsule.env.config import parse_duration
    from capsule.stages.run import record_run
    from capsule.stages.tracer import LEVELS, TracerMissing, find_tracer

    if level not in LEVELS:
        fail(f"unknown --level {level!r}: choose one of {', '.join(LEVELS)}", 2)
    try:
        time_limit = parse_duration(timeout) if timeout is not None else None
    except ValueError as exc:
        fail(f"--timeout: {exc}", 2)
    try:
        tracer = find_tracer()
    except TracerMissing as exc:
        fail(str(exc), 125)
    os.umask(0o077)
    try:
        outcome = trio.run(
            lambda: record_run(
                command,
                home=_home(),
                tracer=tracer,
                level=level,
                name=name,
                redact=not no_redact,
                parent=parent,
                time_limit=time_limit,
            )
        )
    except OSError as exc:
        fail(f"cannot record under {_home()}: {exc.strerror or exc}", 125)
    style = _Ansi(sys.stderr)
    if outcome.error:
        style.line(style.bold_red(f"capsule: error: {outcome.error}"))
    t = outcome.tally
    failures = ", " + style.red(f"{t.failed} failed") if t.failed else ""
    status = outcome.signal or f"exit {outcome.exit_code}"
    style.line(
        f"{style.dim('capsule:')} session {style.bold(outcome.session_id)} · {t.processes} process{'es' if t.processes != 1 else ''}{failures}"
        f" · {outcome.duration_s:.2f}s · {status}"
    )
    style.line(f"{style.dim('capsule:')} {outcome.path}  (capsule report {outcome.session_id})")
    raise typer.Exit(outcome.exit_code)


def _load_state(session_dir: Path, rules: RuleSet) -> tuple[Any, list[str]]:
    """Fold a session (recovering it first if its recorder died); returns the state and warnings."""
    import trio

    from capsule.codec import CodecError, LineDecoder
    from capsule.fold import SessionState
    from capsule.stages.derive import recover
    from capsule.stages.reader import glance, iter_events, recorder_alive

    warnings: list[str] = []
    seen = glance(session_dir)
    if seen.header is None:
        fail(f"{session_dir}: not a capsule session (no session.started header)", EXIT_BAD_INPUT)
    if seen.ended is None and not recorder_alive(seen.header):
        try:
            result = trio.run(lambda: recover(session_dir, seen.header, home=_home()))  # type: ignore[arg-type]
        except CodecError as exc:  # a line written by a newer capsule: recovering would misread it
            fail(f"{session_dir / 'events.jsonl'}: {exc}", EXIT_BAD_INPUT)
        warnings.append(
            f"recovered: the recorder died; {result.events_added} events re-derived from the raw trace"
        )
    decoder = LineDecoder()
    fold = SessionState.new(rules)
    try:
        for event in iter_events(session_dir, decoder):
            fold.apply(event)
    except CodecError as exc:
        fail(f"{session_dir / 'events.jsonl'}: {exc}", EXIT_BAD_INPUT)
    warnings += [f"line {n}: skipped, {reason}" for n, reason in decoder.bad_lines]
    if decoder.torn_tail:
        warnings.append("the last line is torn (the recorder was stopped mid-write); it was ignored")
    return fold, warnings


@app.command(help="Analyse a recorded session: process tree, failures, tools, agent phases.")
def report(
    session: SessionArg = "latest",
    as_json: JsonOption = False,
    full: Annotated[bool, typer.Option("--full", help="Show every process; do not collapse.")] = False,
    html_file: Annotated[
        Path | None,
        typer.Option(
            "--html",
            metavar="FILE",
            help="Write a self-contained HTML report (timeline, tree, tables) to FILE, mode 0600.",
        ),
    ] = None,
) -> None:
    from capsule.fold.session import paused_gc
    from capsule.report import render, report_parts

    if html_file is not None and as_json:
        fail("--html and --json: choose one", 2)
    session_dir = _resolve(session)
    if html_file is not None:
        if _is_agents(session_dir):
            fail("--html reports run sessions; report a task's run session (capsule ls --all)", 2)
        with paused_gc():
            state, warnings = _load_state(session_dir, _rules())
        _write_html(html_file, state, warnings)
        return
    if _is_agents(session_dir):
        from capsule.cli.agents import report_agents

        report_agents(session_dir, as_json)
        return
    # A report builds hundreds of thousands of acyclic objects and then exits: the cyclic collector
    # would only rescan them (measured: decode + fold 154k -> 192k events/s on 1M events).
    with paused_gc():
        state, warnings = _load_state(session_dir, _rules())
        if as_json:
            data, processes = report_parts(state)
            data["warnings"] = [*warnings, *data.get("warnings", [])]
            _print_json_streaming(data, "processes", processes)
            return
    console = _console()
    console.print(render(state, full=full))
    for warning in warnings:
        console.print(f"warning: {warning}", style="yellow", markup=False)


def _write_html(path: Path, state: Any, warnings: list[str]) -> None:
    """Write the HTML report 0600 (argv and paths in it can be sensitive, like the session itself)."""
    from capsule.report.html import render_html

    data = render_html(state, warnings=warnings).encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file that already exists
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}", EXIT_BAD_INPUT)
    print(path)


def _is_agents(session_dir: Path) -> bool:
    from capsule.stages.reader import glance

    header = glance(session_dir).header
    return header is not None and header.session_kind == "agents"


def session_rows(limit: int = 20, show_all: bool = False) -> list[dict[str, Any]]:
    """`capsule ls --json`: one row per session, newest first (child run sessions only with `show_all`)."""
    from capsule.stages.reader import glance, recorder_alive
    from capsule.stages.store import session_dirs

    rows: list[dict[str, Any]] = []
    for path in session_dirs(_home()):
        if len(rows) >= max(limit, 0):
            break
        seen = glance(path)
        header, ended = seen.header, seen.ended
        if header is None or (header.parent is not None and not show_all):
            continue
        if ended is not None:
            status = "recovered" if seen.recovered else "complete"
        else:
            status = "running" if recorder_alive(header) else "incomplete"
        rows.append(
            {
                "id": path.name,
                "kind": header.session_kind,
                "name": header.name,
                "parent": header.parent,
                "started": header.ts,
                "duration_s": ended.duration_s if ended else None,
                "argv": list(header.argv),
                "processes": ended.processes if ended else None,
                "failed": ended.failed if ended else None,
                "exit_code": ended.exit_code if ended else None,
                "signal": ended.signal if ended else None,
                "status": status,
            }
        )
    return rows


@app.command(name="ls", help="List recorded sessions, newest first.")
def list_sessions(
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show at most N sessions.")] = 20,
    show_all: Annotated[
        bool,
        typer.Option("--all", "-a", help="Also list the run sessions of traced services and tasks."),
    ] = False,
) -> None:
    rows = session_rows(limit, show_all)
    if as_json:
        _print_json(rows)
        return
    _print_ls(rows)


def _print_ls(rows: list[dict[str, Any]]) -> None:
    import shlex
    import time

    from rich.table import Table

    console = _console()
    if not rows:
        console.print("no sessions yet — record one with `capsule run -- CMD`", markup=False)
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("id", "kind", "started", "duration", "command", "procs", "exit", "status"):
        table.add_column(column, no_wrap=column != "command", overflow="ellipsis")
    for row in rows:
        exit_text = row["signal"] or ("" if row["exit_code"] is None else str(row["exit_code"]))
        exit_style = "red" if row["signal"] or row["exit_code"] else ""
        table.add_row(
            row["id"],
            row["kind"],
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["started"])),
            "" if row["duration_s"] is None else f"{row['duration_s']:.2f}s",
            shlex.join(row["argv"])[:80],
            "" if row["processes"] is None else str(row["processes"]),
            f"[{exit_style}]{exit_text}[/]" if exit_style else exit_text,
            row["status"],
        )
    console.print(table)


@app.command(name="import", help="Turn an `strace -f` log recorded elsewhere into a session.")
def import_(
    log: Annotated[
        Path,
        typer.Argument(
            help="The strace log (-o FILE or stderr; -t/-tt/-ttt/-r or none, -T, -y, any -s), or the "
            "folder or PREFIX of `strace -ff -o PREFIX`."
        ),
    ],
    name: Annotated[str | None, typer.Option("--name", "-n", help="A name for the session.")] = None,
    level: Annotated[
        str, typer.Option("--level", "-l", help="What to derive: process, file, net or all.")
    ] = "process",
    no_redact: Annotated[bool, typer.Option("--no-redact", help="Keep secret-looking values.")] = False,
) -> None:
    import trio

    from capsule.stages.derive import ImportRefused, import_log
    from capsule.stages.tracer import LEVELS

    if level not in LEVELS:
        fail(f"unknown --level {level!r}: choose one of {', '.join(LEVELS)}", 2)
    os.umask(0o077)
    try:
        imported = trio.run(
            lambda: import_log(log, home=_home(), name=name, level=level, redact=not no_redact)
        )
    except ImportRefused as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    except OSError as exc:
        fail(f"{exc.filename or log}: {exc.strerror or exc}", EXIT_BAD_INPUT)
    print(imported.session_id)


@app.command(help="Re-derive a session's events from its raw trace; --check compares them.")
def replay(
    session: SessionArg = "latest",
    check: Annotated[bool, typer.Option("--check", help="Exit 1 with a diff if events differ.")] = False,
    as_json: JsonOption = False,
) -> None:
    import trio

    from capsule.codec import to_dict
    from capsule.fold import SessionState
    from capsule.report import render
    from capsule.stages.derive import from_trace, rederive
    from capsule.stages.reader import glance, iter_events
    from capsule.stages.store import TRACE, session_file

    session_dir = _resolve(session)
    header = glance(session_dir).header
    if header is None:
        fail(f"{session_dir}: not a capsule session", EXIT_BAD_INPUT)
    if session_file(session_dir, TRACE) is None:
        fail(f"{session_dir}: no {TRACE} to replay", EXIT_BAD_INPUT)
    from capsule.codec import CodecError

    derived, _stats = trio.run(lambda: rederive(session_dir / TRACE, level=header.trace_level, header=header))
    try:
        recorded = from_trace(list(iter_events(session_dir)))
    except CodecError as exc:
        fail(f"{session_dir / 'events.jsonl'}: {exc}", EXIT_BAD_INPUT)
    same = derived == recorded
    diff: list[str] = []
    if not same:
        import difflib

        import orjson

        def lines(events: list[Any]) -> list[str]:
            return [
                orjson.dumps({k: v for k, v in to_dict(0, e).items() if k != "seq"}).decode() for e in events
            ]

        diff = list(
            difflib.unified_diff(
                lines(recorded), lines(derived), "events.jsonl", "re-derived", lineterm="", n=1
            )
        )
    if as_json:
        _print_json(
            {"session": session_dir.name, "events": len(derived), "matches": same, "diff": diff[:200]}
        )
    else:
        console = _console()
        if not check:
            fold = SessionState.new(_rules())
            for event in iter_events(session_dir):
                fold.apply(event)
            console.print(render(fold))
        if same:
            console.print(f"replay: {len(derived)} events re-derived from {TRACE}, identical to events.jsonl")
        else:
            console.print(
                f"replay: re-derived events differ from events.jsonl ({len(diff)} diff lines)", style="red"
            )
            for line in diff[:200]:
                console.print(line, markup=False, highlight=False)
    if check and not same:
        raise typer.Exit(EXIT_CHECK_FAILED)


@app.command(help="Check that recording can work here: strace, seccomp-bpf, ptrace, $CAPSULE_HOME.")
def doctor(as_json: JsonOption = False) -> None:
    import tempfile

    from capsule.stages.tracer import INSTALL_HINT, TracerMissing, find_tracer, probe_ptrace

    checks: list[dict[str, Any]] = []
    try:
        tracer = find_tracer()
        checks.append({"check": "strace", "ok": True, "detail": f"{tracer.path} (version {tracer.version})"})
        checks.append(
            {
                "check": "--seccomp-bpf",
                "ok": tracer.seccomp_bpf,
                "detail": "supported" if tracer.seccomp_bpf else "needs strace ≥ 5.3: tracing will be slow",
            }
        )
        problem = probe_ptrace(tracer)
        checks.append(
            {
                "check": "ptrace",
                "ok": problem is None,
                "detail": "permitted" if problem is None else f"{problem} (in a container, allow SYS_PTRACE)",
            }
        )
    except TracerMissing:
        checks.append({"check": "strace", "ok": False, "detail": f"not found; {INSTALL_HINT}"})
    home = _home()
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile(dir=home):
            pass
        checks.append({"check": "$CAPSULE_HOME", "ok": True, "detail": f"{home} is writable"})
    except OSError as exc:
        checks.append({"check": "$CAPSULE_HOME", "ok": False, "detail": f"{home}: {exc.strerror or exc}"})
    ok = all(c["ok"] for c in checks if c["check"] != "--seccomp-bpf")
    if as_json:
        _print_json({"ok": ok, "checks": checks})
    else:
        console = _console()
        for c in checks:
            mark = "[green]ok[/green]  " if c["ok"] else "[red]FAIL[/red]"
            console.print(f"{mark} {c['check']:<14} {c['detail']}", highlight=False)
        console.print("recording works here" if ok else "[red]recording cannot work here[/red]")
    if not ok:
        raise typer.Exit(EXIT_ENVIRONMENT)
