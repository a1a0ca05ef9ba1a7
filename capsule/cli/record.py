"""Record and report: `capsule run`, `report`, `ls`, `import`, `replay`, `doctor`."""

from __future__ import annotations

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
    _console,
    _print_json,
    _resolve,
    app,
    fail,
)

if TYPE_CHECKING:
    from capsule.api.sessions import SessionRow


@app.command(
    context_settings={"allow_interspersed_args": False},
    help="Run CMD under strace (or eBPF: --tracer) and record every process it spawns as a session.",
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
    sample: Annotated[
        float,
        typer.Option(
            "--sample", metavar="SECONDS", help="Sample CPU and memory of the tree this often; 0: off."
        ),
    ] = 0.5,
    parent: Annotated[
        str | None,
        typer.Option("--parent", hidden=True, help="The env or agents session this run is recorded for."),
    ] = None,
    tracer_name: Annotated[
        str,
        typer.Option(
            "--tracer",
            help="strace (default), ebpf (root, BTF, tracefs; built once with clang) or auto (ebpf where it works).",
        ),
    ] = "strace",
    timeout: Annotated[
        str | None,
        typer.Option(
            "--timeout",
            metavar="D",
            help="Stop the command's whole tree after D (5s, 10m, 1.5h): SIGTERM, then SIGKILL 2 s later.",
        ),
    ] = None,
    policy_file: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            help="A TOML file with a [policy] table, enforced in the kernel (default: [policy] in "
            "$CAPSULE_HOME/config.toml).",
        ),
    ] = None,
    policy_fallback: Annotated[
        str | None,
        typer.Option(
            "--policy-fallback",
            help="When the policy needs a mechanism this machine lacks: refuse to start (exit 125), or "
            "detect (detect and kill after the fact, with a warning in the session). Default: the "
            "policy's own `fallback` key, else refuse.",
        ),
    ] = None,
) -> None:
    # `capsule run …` itself mostly takes the typer-free path (capsule/cli/fast.py) to the same body.
    from capsule.cli.fast import record_and_report

    code = record_and_report(
        command,
        level=level,
        name=name,
        no_redact=no_redact,
        sample=sample,
        parent=parent,
        tracer_name=tracer_name,
        timeout=timeout,
        policy_file=policy_file,
        policy_fallback=policy_fallback,
    )
    raise typer.Exit(code)


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
    from capsule.api import sessions
    from capsule.fold.session import paused_gc
    from capsule.report import render

    if html_file is not None and as_json:
        fail("--html and --json: choose one", 2)
    session_dir = _resolve(session)
    if html_file is not None:
        if sessions.is_supervised(session_dir):
            from capsule.report.html import render_supervised_html

            sup = sessions.load_supervised(session_dir)
            assets = sessions.html_assets()
            _write_page(
                html_file, render_supervised_html(sup.timeline, sup.children, assets, warnings=sup.warnings)
            )
            return
        with paused_gc():
            loaded = sessions.load(session_dir)
        _write_html(html_file, loaded.state, list(loaded.warnings))
        return
    if sessions.is_agents(session_dir):
        from capsule.cli.agents import report_agents

        report_agents(session_dir, as_json)
        return
    if sessions.is_supervised(session_dir):  # an env session: its services, not a process tree
        from capsule.report.services import render_services

        if as_json:
            _print_json(sessions.report(session_dir).data)
            return
        sup = sessions.load_supervised(session_dir)
        console = _console()
        console.print(render_services(sup.timeline, sup.children))
        for warning in sup.warnings:
            console.print(f"warning: {warning}", style="yellow", markup=False)
        return
    if as_json:  # from the session's derived snapshot when it is fresh (stages/snapshot.py)
        kept: list[object] = []
        sessions.write_report_json(session_dir, sys.stdout.buffer, keep=kept)
        from capsule.cli.fast import exiting_with_heap

        exiting_with_heap(kept)
        return
    # A report builds hundreds of thousands of acyclic objects and then exits: the cyclic collector
    # would only rescan them (measured: decode + fold 154k -> 192k events/s on 1M events).
    with paused_gc():
        loaded = sessions.load(session_dir)
        state, warnings = loaded.state, list(loaded.warnings)
    console = _console()
    console.print(render(state, full=full))
    for warning in warnings:
        console.print(f"warning: {warning}", style="yellow", markup=False)


def _write_html(path: Path, state: Any, warnings: list[str]) -> None:
    from capsule.api.sessions import html_assets
    from capsule.report.html import render_html

    _write_page(path, render_html(state, html_assets(), warnings=warnings))


def _write_page(path: Path, page: str) -> None:
    """Write the HTML report 0600 (argv and paths in it can be sensitive, like the session itself)."""
    from capsule.api.sessions import private_output

    data = page.encode("utf-8")
    try:
        with private_output(path) as out:
            out.write(data)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}", EXIT_BAD_INPUT)
    print(path)


@app.command(name="ls", help="List recorded sessions, newest first.")
def list_sessions(
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show at most N sessions.")] = 20,
    show_all: Annotated[
        bool,
        typer.Option("--all", "-a", help="Also list the run sessions of traced services and tasks."),
    ] = False,
) -> None:
    import attrs

    from capsule.api.sessions import SessionRow as Row
    from capsule.api.sessions import list_sessions as rows_of

    unreadable: list[str] = []
    rows = rows_of(limit, show_all, unreadable=unreadable)
    if unreadable:  # said, not silently left out: `capsule report ID` tells what is wrong with each
        some = ", ".join(unreadable[:3]) + (", …" if len(unreadable) > 3 else "")
        plural = "s" if len(unreadable) != 1 else ""
        sys.stderr.write(
            f"capsule: {len(unreadable)} session{plural} could not be read ({some}); "
            "`capsule report ID` says why\n"
        )
    if as_json:  # the fields are JSON values already: no attrs.asdict walk per row (10,000 rows: 0.3 s)
        names = [f.name for f in attrs.fields(Row)]
        _print_json([{name: getattr(row, name) for name in names} for row in rows])
        return
    _print_ls(rows)


def _print_ls(rows: tuple[SessionRow, ...]) -> None:
    import time

    from rich.table import Table
    from rich.text import Text

    from capsule.report.argv import full_argv

    console = _console()
    if not rows:
        console.print("no sessions yet — record one with `capsule run -- CMD`", markup=False)
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("id", "kind", "name", "started", "duration", "command", "procs", "exit", "status"):
        table.add_column(column, no_wrap=column != "command", overflow="ellipsis")
    for row in rows:
        exit_text = row.signal or ("" if row.exit_code is None else str(row.exit_code))
        exit_style = "red" if row.signal or row.exit_code or row.timed_out_s else ""
        if row.timed_out_s is not None:  # why it ended, before how: as `capsule run` says it
            exit_text = f"timed out ({exit_text})" if exit_text else "timed out"
        table.add_row(
            row.id,
            row.kind,
            row.name or "",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.started)),
            "" if row.duration_s is None else f"{row.duration_s:.2f}s",
            full_argv(row.argv),  # whole (the terminal wraps it; a pipe gets all of it), as one types it
            _procs(row),
            Text(exit_text, style=exit_style),
            row.status,
        )
    console.print(table)


def _procs(row: SessionRow) -> str:
    """The processes column: blank where nothing was counted. An env or agents session records its
    services' and tasks' lives as events, their processes in child sessions when traced, so its 0 is not
    "nothing ran"."""
    if row.processes is None or (row.kind in ("env", "agents") and not row.processes):
        return ""
    return str(row.processes)


@app.command(name="import", help="Turn an `strace -f` log recorded elsewhere into a session.")
def import_(
    log: Annotated[
        Path,
        typer.Argument(
            help="The strace log (-o FILE or stderr; -t/-tt/-ttt/-r or none, -T, -y, -Y, -n, -i, -k, -C, "
            "any -s), or the folder or PREFIX of `strace -ff -o PREFIX`."
        ),
    ],
    name: Annotated[str | None, typer.Option("--name", "-n", help="A name for the session.")] = None,
    level: Annotated[
        str, typer.Option("--level", "-l", help="What to derive: process, file, net or all.")
    ] = "process",
    no_redact: Annotated[bool, typer.Option("--no-redact", help="Keep secret-looking values.")] = False,
) -> None:
    from capsule.cli.fast import import_and_print

    import_and_print(str(log), name=name, level=level, no_redact=no_redact)


@app.command(help="Re-derive a session's events from its raw trace; --check compares them.")
def replay(
    session: SessionArg = "latest",
    check: Annotated[bool, typer.Option("--check", help="Exit 1 with a diff if events differ.")] = False,
    as_json: JsonOption = False,
) -> None:
    from capsule.api import sessions
    from capsule.api.records import plain
    from capsule.report import render

    session_dir = _resolve(session)
    replayed = sessions.replay(session_dir)
    same, diff = replayed.matches, replayed.diff
    if as_json:
        _print_json(plain(replayed))
    else:
        console = _console()
        if not check and replayed.kind not in ("env", "agents"):
            console.print(render(sessions.fold(session_dir)))
        if same:
            console.print(
                f"replay: {replayed.events} events re-derived from {replayed.source}, identical to events.jsonl"
            )
        else:
            console.print(
                f"replay: events.jsonl does not match its re-derivation (below, {len(diff)} lines)",
                style="red",
            )
            if replayed.derived_elsewhere:
                console.print(f"replay: {replayed.derived_elsewhere}", style="yellow", markup=False)
            for line in diff[:200]:
                console.print(line, markup=False, highlight=False)
    if check and not same:
        raise typer.Exit(EXIT_CHECK_FAILED)


@app.command(
    help="Check that recording can work here: strace, seccomp-bpf, ptrace, eBPF, $CAPSULE_HOME; and which "
    "policy mechanisms (seccomp notify, bubblewrap, network namespaces) work."
)
def doctor(as_json: JsonOption = False) -> None:
    from rich.text import Text

    from capsule.api.records import plain
    from capsule.api.sessions import doctor as check_here

    found = check_here()

    ok, checks = found.ok, plain(found.checks)
    if as_json:
        _print_json({"ok": ok, "checks": checks})
    else:
        console = _console()
        for c in checks:
            mark = Text("ok  ", style="green") if c["ok"] else Text("FAIL", style="red")
            console.print(Text.assemble(mark, f" {c['check']:<17} {c['detail']}"))
        console.print(Text("recording works here") if ok else Text("recording cannot work here", style="red"))
    if not ok:
        raise typer.Exit(EXIT_ENVIRONMENT)
