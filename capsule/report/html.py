"""The HTML report: a folded session as one self-contained page (`capsule report --html FILE`).

The page's template, CSS and JS are files in `capsule/report/assets/` (package data, the JS linted by
ESLint in `just lint`); the shell reads them once (`capsule.stages.assets.html_assets`) and passes them
in as `HtmlAssets`, since the core reads no files.

The page needs no network: CSS and JS are inline, and a Content-Security-Policy forbids every fetch and
every script but the page's own (pinned by its sha256), so an argv that slipped through escaping could
still not run. The data is embedded once as JSON in a non-executed <script> block with `<`, `>` and `&`
written as \\u escapes, so no argv can close it; the page writes argv into the DOM with textContent only.

Big sessions stay usable: the timeline is a <canvas> that draws only the rows in view, the tree renders a
node's children when it is expanded (in chunks), and the summary tables are capped.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import orjson

from capsule.duration import format_duration
from capsule.fold.activity import FILE_OPS
from capsule.fold.agents import agent_runs
from capsule.fold.interrupts import what_was_done
from capsule.fold.process_tree import ProcessNode
from capsule.fold.session import SessionState, paused_gc
from capsule.report.argv import short_argv
from capsule.report.json_report import sorted_nodes, tool_stats
from capsule.report.order import tree_order
from capsule.report.policy import blocked_row, policy_title
from capsule.report.supervised import Supervised, supervised_rows
from capsule.report.text import format_time, outcome_parts, sender_name

TOP_FAILURES = 200
TOP_TOOLS = 50
TOP_PHASES = 200
TOP_BLOCKED = 200
_PLACEHOLDER = re.compile(r"%([A-Z]+)%")

# Columns of one timeline row, in the order the page's JS reads them (see `const K = 0, …` there).
COLUMNS = (
    "id",
    "parent",
    "pid",
    "depth",
    "start",  # seconds after the session's start
    "end",  # seconds after the session's start; null when no exit was seen
    "exit_code",
    "signal",
    "label",
    "workflow",
    "failed",  # 1 or 0
    "argv",  # its own argv, else the last attempted one, else its spawner's
    "note",  # "exec ENOENT", "fork", "attached", "core dumped", "by kill (3)" (who sent the fatal signal) or null
)


@attrs.frozen(kw_only=True)
class HtmlAssets:
    """The page's template (with %PLACEHOLDER%s), stylesheet and script, as the shell read them."""

    page: str
    css: str
    js: str

    @property
    def csp(self) -> str:
        """The Content-Security-Policy: nothing from outside, and no script but this one (by hash)."""
        digest = base64.b64encode(hashlib.sha256(self.js.encode()).digest()).decode()
        return f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"


TOP_FILES = 5000  # file rows embedded in the page (changed files first); the JSON report has them all


def _note(node: ProcessNode, sender: Callable[[ProcessNode, int], str]) -> str | None:
    if node.answered:
        return "answer"
    if node.exec_failed:
        return f"exec {node.execs[-1].errno or 'failed'}"
    if node.core_dumped:
        return "core dumped"
    if node.interrupted and node.terminal_signal is not None:  # not "by itself": a shell re-raises it
        return what_was_done(node.terminal_signal)
    if node.broken_pipe:  # not "by itself": the kernel's SIGPIPE names the writer as its sender
        return "reader closed"
    if node.killed_by is not None:
        return f"by {sender(node, node.killed_by)}"
    if node.argv is None and not node.execs:
        return "attached" if node.via == "root" else "fork"  # a root never exec'd: `strace -p`
    return None


def _span(state: SessionState) -> tuple[float, float]:
    """(start, length) of the timeline: the session, stretched to cover every process."""
    nodes = state.tree.nodes
    t0 = state.started
    if t0 is None:
        t0 = min((n.start for n in nodes), default=0.0)
    t0 = min([t0, *(n.start for n in nodes)]) if nodes else t0
    ends = [n.end for n in nodes if n.end is not None]
    t1 = max([t0, *ends, *(n.start for n in nodes)])
    if state.duration is not None:
        t1 = max(t1, (state.started or t0) + state.duration)
    return t0, t1 - t0


def timeline_data(state: SessionState) -> dict[str, Any]:
    """The JSON embedded in the page: session fields, the time span and one row per process."""
    t0, length = _span(state)
    rows = []
    by_pid: dict[int, ProcessNode] = {}  # built at the first process another killed

    def sender(node: ProcessNode, pid: int) -> str:
        if not by_pid:
            by_pid.update((n.pid, n) for n in state.tree.nodes)
        return sender_name(state, node, pid, by_pid)

    for node, depth in tree_order(state):
        c = node.classification
        argv = node.display_argv
        rows.append(
            [
                node.key,
                node.parent,
                node.pid,
                depth,
                round(node.start - t0, 6),
                None if node.end is None else round(node.end - t0, 6),
                node.exit_code,
                node.signal,
                c.label,
                c.workflow,
                1 if node.failed else 0,
                list(argv) if argv is not None else None,
                _note(node, sender),
            ]
        )
    h = state.header
    return {
        "session": {
            "id": h.session_id if h is not None else None,
            "argv": list(h.argv) if h is not None else None,
            "started": t0,
        },
        "span": round(length, 6),
        "columns": COLUMNS,
        "procs": rows,
        "files": _files_rows(state, t0),
        "network": [
            [e.op, e.family, e.address, e.port, e.ok, e.error, e.count, e.keys] for e in state.activity.peers
        ],
    }


_CHANGES = frozenset(("create", "write", "delete", "rename", "chmod"))


def _files_rows(state: SessionState, t0: float) -> list[list[Any]]:
    """[first (s after start), path, ops, renamed_to, process ids, processes] — changed files first."""
    order = {op: i for i, op in enumerate(FILE_OPS)}
    files = sorted(state.activity.files, key=lambda e: (not (e.ops & _CHANGES), e.first))
    return [
        [
            round(e.first - t0, 6),
            e.path,
            sorted(e.ops, key=lambda op: order.get(op, 99)),
            e.renamed_to,
            e.keys,
            e.processes,
        ]
        for e in files[:TOP_FILES]
    ]


def script_json(obj: Any) -> str:
    """JSON that is safe inside a <script> element: nothing in it can end the element or open a comment."""
    text = orjson.dumps(obj).decode()
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(
    caption: str, head: Sequence[str], rows: Sequence[Sequence[object]], note: str = "", *, wide: bool = False
) -> str:
    """A summary table; `wide` (command lines) takes the grid's whole row instead of one column."""
    kind = "tbl wide" if wide else "tbl"
    if not rows:
        return f'<section class="{kind}"><h3>{_e(caption)}</h3><p class="dim">none</p></section>'
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    extra = f'<p class="dim">{_e(note)}</p>' if note else ""
    return (
        f'<section class="{kind}"><h3>{_e(caption)}</h3>'
        f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>{extra}</section>"
    )


def _summary(state: SessionState, nodes: list[ProcessNode], t0: float) -> str:
    total = len(nodes) or 1
    labels: dict[str, int] = {}
    workflows: dict[str, int] = {}
    for n in nodes:
        labels[n.label] = labels.get(n.label, 0) + 1
        if n.workflow is not None:
            workflows[n.workflow] = workflows.get(n.workflow, 0) + 1
    parts = []
    title = policy_title(state)
    if title is not None:  # first: what the guard refused is what a reader of a guarded run looks for
        parts.append(
            _table(
                title[0].upper() + title[1:],
                ("pid", "blocked", "rule", "by", "at"),
                [(*blocked_row(b), f"+{format_duration(b.ts - t0)}") for b in state.blocked[:TOP_BLOCKED]],
                f"… {state.blocked_count - TOP_BLOCKED:,} more (the JSON report lists them)"
                if state.blocked_count > TOP_BLOCKED
                else "",
                wide=True,
            )
        )
    parts += [
        _table(
            "Processes by label",
            ("label", "processes", "share"),
            [(k, f"{v:,}", f"{v / total:.0%}") for k, v in sorted(labels.items(), key=lambda kv: -kv[1])],
        ),
        _table(
            "Processes by workflow",
            ("workflow", "processes"),
            [(k, f"{v:,}") for k, v in sorted(workflows.items(), key=lambda kv: -kv[1])],
        ),
    ]
    tools = tool_stats(nodes, state.tree)
    parts.append(
        _table(
            "Tools",
            ("tool", "runs", "wall", "self", "failed"),
            [
                (
                    t["name"],
                    f"{t['count']:,}",
                    format_duration(t["wall_s"]),
                    format_duration(t["self_s"]),
                    t["failed"],
                )
                for t in tools[:TOP_TOOLS]
            ],
            f"… {len(tools) - TOP_TOOLS:,} more tools" if len(tools) > TOP_TOOLS else "",
        )
    )
    failed = [n for n in nodes if n.failed]
    parts.append(
        _table(
            f"Failures ({len(failed):,})",
            ("pid", "command", "outcome", "at", "duration"),
            [
                (
                    n.pid,
                    short_argv(n.display_argv, width=160),
                    outcome_parts(n)[0],
                    f"+{format_duration(n.start - t0)}",
                    format_duration(n.duration),
                )
                for n in failed[:TOP_FAILURES]
            ],
            f"… {len(failed) - TOP_FAILURES:,} more failures (the timeline marks them all)"
            if len(failed) > TOP_FAILURES
            else "",
            wide=True,
        )
    )
    for run in agent_runs(state.tree):
        rows = [
            (
                p.workflow,
                f"+{format_duration(p.start - t0)}",
                format_duration(max(0.0, p.end - p.start)),
                p.tools,
                p.failed,
            )
            for p in run.phases[:TOP_PHASES]
        ]
        failed_calls = sum(c.failed for c in run.tool_calls)
        parts.append(
            _table(
                f"Agent {run.name} (pid {run.pid}): {len(run.tool_calls):,} tool calls, {failed_calls:,} failed — phases",
                ("workflow", "at", "duration", "tools", "failed"),
                rows,
                f"… {len(run.phases) - TOP_PHASES:,} more phases" if len(run.phases) > TOP_PHASES else "",
            )
        )
    return "".join(parts)


def _header(state: SessionState, nodes: list[ProcessNode], warnings: Sequence[str]) -> str:
    h = state.header
    status = state.status
    if state.timed_out is not None:
        status += f" · timed out after {format_duration(state.timed_out.limit_s)}"
    if state.signal is not None:
        status += f" · {state.signal}"
    elif state.exit_code is not None:
        status += f" · exit {state.exit_code}"
    if (stopper := state.stopped_by) is not None:
        status += f" · stopped by {stopper}"
    failed = sum(n.failed for n in nodes)
    rows = [
        ("command", short_argv(h.argv, width=300) if h is not None and h.argv else "?"),
        ("session", f"{h.session_id} ({h.session_kind})" + (f" {h.name}" if h.name else "") if h else "?"),
        ("host · cwd", f"{h.host} · {h.cwd}" if h is not None else "?"),
        ("started", format_time(state.started)),
        ("duration", format_duration(state.duration)),
        ("status", status),
        ("processes", f"{len(nodes):,} ({failed:,} failed)"),
    ]
    grid = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    warn = "".join(f"<li>{_e(w)}</li>" for w in warnings)
    return f'<dl class="meta">{grid}</dl>' + (f'<ul class="warnings">{warn}</ul>' if warn else "")


def render_html(state: SessionState, assets: HtmlAssets, *, warnings: Sequence[str] = ()) -> str:
    """The whole page as one string. `warnings` are the reader's (torn tail, skipped lines)."""
    with paused_gc():
        nodes = sorted_nodes(state)
        data = timeline_data(state)
        h = state.header
        title = f"capsule · {h.session_id}" if h is not None else "capsule report"
        parts = {
            "TITLE": _e(title),
            "CSP": assets.csp,
            "CSS": assets.css,
            "HEADER": _header(state, nodes, [*warnings, *state.warnings]),
            "SUMMARY": _summary(state, nodes, data["session"]["started"]),
            "JS": assets.js,
            "DATA": script_json(data),
        }
        # One pass over the template: text put in (argv among it) is never scanned for placeholders.
        return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], assets.page)


def render_supervised_html(
    sup: Supervised,
    children: dict[str, SessionState],
    assets: HtmlAssets,
    *,
    warnings: Sequence[str] = (),
) -> str:
    """The page of an env or agents session: a timeline row per service or task, its starts or attempts
    beneath it, and each traced run's processes beneath the attempt that ran it."""
    with paused_gc():
        rows, span = supervised_rows(sup, {sid: timeline_data(st) for sid, st in children.items()})
        h = sup.header
        data = {
            "session": {
                "id": h.session_id if h is not None else None,
                "argv": [sup.title],
                "started": sup.start,
            },
            "span": span,
            "columns": COLUMNS,
            "procs": rows,
            "files": [],
            "network": [],
        }
        title = f"capsule · {h.session_id}" if h is not None else "capsule report"
        meta = [
            ("session", f"{h.session_id} ({sup.kind})" if h is not None else "?"),
            ("name", sup.title),
            ("host · cwd", f"{h.host} · {h.cwd}" if h is not None else "?"),
            ("started", format_time(sup.start)),
            ("duration", format_duration(sup.end - sup.start)),
            ("outcome", sup.shown_outcome),
            ("traced runs", f"{len(children):,}"),
        ]
        grid = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in meta)
        warn = "".join(f"<li>{_e(w)}</li>" for w in warnings)
        header = f'<dl class="meta">{grid}</dl>' + (f'<ul class="warnings">{warn}</ul>' if warn else "")
        placed = bool(sup.placed)  # ran on a cluster: a column says where each task's last attempt ran
        units = _table(
            "Services" if sup.kind == "env" else "Tasks",
            ("name", "state", "runs", "restarts", "last exit", *(["node"] if placed else [])),
            [
                (
                    u.name,
                    u.state,
                    len(u.runs),
                    u.restarts,
                    (
                        lambda r: (
                            ""
                            if r is None
                            else r.signal or ("" if r.exit_code is None else f"exit {r.exit_code}")
                        )
                    )(u.run_of()),
                    *([(lambda r: (r.node or "") if r is not None else "")(u.run_of())] if placed else []),
                )
                for u in sup.units.values()
            ],
        )
        marks = sorted((ts, u.name, what, detail) for u in sup.units.values() for ts, what, detail in u.marks)
        events = _table(
            "What happened: exits, restarts, health, retries, hooks, policy",
            ("at", "name", "what", "detail"),
            [(f"+{format_duration(ts - sup.start)}", n, w, d) for ts, n, w, d in marks[:TOP_FAILURES]],
        )
        parts = {
            "TITLE": _e(title),
            "CSP": assets.csp,
            "CSS": assets.css,
            "HEADER": header,
            "SUMMARY": units + events,
            "JS": assets.js,
            "DATA": script_json(data),
        }
        return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], assets.page)
