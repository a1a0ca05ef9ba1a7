"""The human report: rich renderables for a folded session (header, process tree, summary, agents).

Nothing here prints: the CLI prints `render(state)` with a Console that honours NO_COLOR and non-TTY
output. Big runs stay readable: siblings with the same command and no failure in their subtree are
collapsed after the first few ("… 4,997 more `true` (all exit 0)") unless `full=True`; failures are
never collapsed away. What a single-purpose tool (a test runner, a compiler, git) runs inside itself is
summarised in one line (a pyenv shim alone spawns 60 processes). Times are shown in UTC so a report reads the same on every machine.
"""

from __future__ import annotations

import shlex
from collections import Counter
from datetime import UTC, datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from capsule.fold.agents import AgentRun, agent_runs
from capsule.fold.labels import basename
from capsule.fold.process_tree import ProcessNode, ProcessTree
from capsule.fold.session import SessionState
from capsule.report.json_report import sorted_nodes, tool_stats
from capsule.report.policy import policy_table

COLLAPSE_AFTER = 3  # siblings of one kind shown before the rest are summarised
COLLAPSE_MIN = 6  # ... when there are more than this many of them
ARGV_WIDTH = 72
TOP_TOOLS = 20
TOP_FAILURES = 30
TOP_PHASES = 40
MAX_DEPTH = 16  # tree levels drawn nested; deeper ones are drawn flat with their depth

LABEL_STYLES = {"agent": "bold magenta", "tool": "cyan", "system": "dim", "unknown": "yellow"}


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def format_time(ts: float | None) -> str:
    if ts is None:
        return "?"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# Control characters in argv are shown, not obeyed: a terminal would drop, expand or act on them.
_VISIBLE = {c: f"\\x{c:02x}" for c in (*range(32), 127)} | {ord("\n"): "⏎", ord("\t"): "\\t"}


def short_argv(argv: tuple[str, ...] | list[str] | None, width: int = ARGV_WIDTH) -> str:
    """argv as a shell would read it, the program as its basename, cut to `width` characters."""
    if not argv:
        return "?"
    text = " ".join([basename(argv[0]) or argv[0], *(shlex.quote(a) for a in argv[1:])])
    text = text.translate(_VISIBLE)
    return text if len(text) <= width else text[: width - 1] + "…"


def outcome_parts(node: ProcessNode) -> tuple[str, str]:
    """(text, style) of how a process ended: `exit 0`, `exit 2`, `SIGKILL`, `exec ENOENT`, `no exit seen`."""
    if node.signal is not None:
        return node.signal + (" (core dumped)" if node.core_dumped else ""), "bold red"
    if node.exec_failed:
        errno = node.execs[-1].errno or "failed"
        code = f", exit {node.exit_code}" if node.exit_code is not None else ""
        return f"exec {errno}{code}", "bold red"
    if node.exit_code is not None:
        return f"exit {node.exit_code}", "bold red" if node.exit_code else "green"
    if node.end is None:
        return "no exit seen", "yellow"
    return "exited", "green"


def outcome(node: ProcessNode) -> Text:
    """How a process ended, failures in red."""
    text, style = outcome_parts(node)
    return Text(text, style=style)


def _node_line(node: ProcessNode) -> Text:
    line = Text()
    line.append(f"{node.pid} ", style="dim")
    argv_style = "red" if node.failed else ""
    line.append(short_argv(node.display_argv), style=argv_style)
    if node.argv is None and not node.execs:
        line.append(" (fork)", style="dim")
    label = node.agent if node.label == "agent" and node.agent else node.label
    line.append(f"  [{label}", style=LABEL_STYLES.get(node.label, ""))
    if node.workflow is not None and node.label != "agent":
        line.append(f"·{node.workflow}", style=LABEL_STYLES.get(node.label, ""))
    line.append("]", style=LABEL_STYLES.get(node.label, ""))
    line.append(f"  {format_duration(node.duration)}  ", style="dim")
    line.append_text(outcome(node))
    return line


def header(state: SessionState) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    h = state.header
    command = short_argv(h.argv, width=200) if h is not None and h.argv else "?"
    grid.add_row("command", command)
    if h is not None:
        grid.add_row("session", f"{h.session_id} ({h.session_kind})" + (f" {h.name}" if h.name else ""))
    grid.add_row("started", format_time(state.started))
    grid.add_row("duration", format_duration(state.duration))
    status = Text(state.status, style="green" if state.status == "complete" else "yellow")
    if state.signal is not None:
        status.append(f" · {state.signal}", style="bold red")
    elif state.exit_code is not None:
        status.append(f" · exit {state.exit_code}", style="bold red" if state.exit_code else "green")
    grid.add_row("status", status)
    return grid


def _subtree_failures(tree: ProcessTree) -> set[int]:
    """Keys of nodes that failed or have a failure below them."""
    marked: set[int] = set()
    for node in tree.nodes:
        if not (node.failed):
            continue
        key: int | None = node.key
        while key is not None and key not in marked:
            marked.add(key)
            key = tree.nodes[key].parent
    return marked


def _collapsed_note(tree: ProcessTree, hidden: list[ProcessNode], name: str) -> Text:
    outcomes = Counter(outcome_parts(n)[0] for n in hidden)
    below = sum(sum(1 for _ in tree.descendants(n)) for n in hidden)
    total = sum(n.duration or 0.0 for n in hidden)
    if len(outcomes) == 1:
        what = f"all {next(iter(outcomes))}"
    else:
        what = ", ".join(f"{c:,} {o}" for o, c in outcomes.most_common())
    note = f"… {len(hidden):,} more `{name}` ({what}, {format_duration(total)} in all"
    note += f", {below:,} processes below them)" if below else ")"
    return Text(note, style="dim italic")


def _is_leaf_tool(node: ProcessNode) -> bool:
    """A tool with one job (test, build, vcs…): what it runs inside is its business, not the run's.

    Shells, scripts and agents (workflow `execute`, label `agent`) stay expanded: their children are
    the commands the run chose to run.
    """
    return node.label == "tool" and node.workflow not in (None, "execute")


def _without_shim_children(
    tree: ProcessTree, node: ProcessNode, children: list[ProcessNode]
) -> tuple[list[ProcessNode], Text | None]:
    """Children spawned before a node's last successful exec ran under an earlier program: a shim
    (pyenv, asdf, npx, env) working out what to exec. Summarise them in one line."""
    images = [e for e in node.execs if e.ok]
    if len(images) < 2:
        return children, None
    became = images[-1].ts
    early = [c for c in children if c.start is not None and c.start < became]
    if not early:
        return children, None
    # The first image is what was invoked (`/root/.pyenv/shims/python3`), the last what it became.
    shim, target = images[0].path, images[-1].path
    under = [n for c in early for n in (c, *tree.descendants(c))]
    failed = sum(1 for n in under if n.failed)
    plural = "es" if len(under) != 1 else ""
    note = f"… {len(under):,} process{plural} run by {shim} before it became {target}"
    if failed:
        note += f" ({failed:,} exited non-zero)"
    note_text = Text(note, style="dim italic")
    hidden = {c.key for c in early}
    return [c for c in children if c.key not in hidden], note_text


def _inside_note(tree: ProcessTree, children: list[ProcessNode]) -> Text:
    inside = [n for c in children for n in (c, *tree.descendants(c))]
    failed = sum(1 for n in inside if n.failed)
    note = f"… {len(inside):,} process{'es' if len(inside) != 1 else ''} inside"
    if failed:
        note += f" ({failed:,} exited non-zero)"
    return Text(note + " — --full shows them", style="dim italic")


def process_tree(state: SessionState, *, full: bool = False) -> RenderableType:
    """The process tree, siblings in start order; similar successful siblings collapsed unless `full`."""
    tree = state.tree
    top = Tree(Text("processes", style="bold"), guide_style="dim")
    if not tree.nodes:
        top.add(Text("no processes recorded", style="dim"))
        return top
    failing = set() if full else _subtree_failures(tree)
    order = sorted(tree.roots, key=lambda k: (tree.nodes[k].start, k))
    # Depth first with an explicit stack (trees can be deeper than Python's recursion limit). An item is
    # a node key to add under a branch, or a note; pushing notes first makes them come after the children.
    # Below MAX_DEPTH levels the tree is drawn flat, each line marked with its depth: deeper indentation
    # would leave no room for the text.
    stack: list[tuple[Tree, int | Text, int]] = [(top, k, 1) for k in reversed(order)]
    while stack:
        parent_branch, item, depth = stack.pop()
        if isinstance(item, Text):
            parent_branch.add(item)
            continue
        node = tree.nodes[item]
        line = _node_line(node)
        if depth > MAX_DEPTH:
            line = Text(f"[level {depth}] ", style="dim") + line
        added = parent_branch.add(line)
        branch = added if depth <= MAX_DEPTH else parent_branch
        children = sorted(tree.children(node), key=lambda n: (n.start, n.key))
        notes: list[Text] = []
        if not full:
            children, shim_note = _without_shim_children(tree, node, children)
            if shim_note is not None:
                notes.append(shim_note)
            if children and _is_leaf_tool(node):
                notes.append(_inside_note(tree, children))
                children = []
        shown = children
        if not full and len(children) > COLLAPSE_MIN:
            groups: dict[tuple[str, str], list[ProcessNode]] = {}
            for child in children:
                if child.key not in failing:
                    argv = child.display_argv
                    name = basename(argv[0]) if argv else "?"
                    groups.setdefault((name, child.label), []).append(child)
            hidden: set[int] = set()
            for (name, _label), members in groups.items():
                if len(members) > COLLAPSE_MIN:
                    rest = members[COLLAPSE_AFTER:]
                    hidden.update(n.key for n in rest)
                    notes.append(_collapsed_note(tree, rest, name))
            shown = [c for c in children if c.key not in hidden]
        stack.extend((branch, note, depth + 1) for note in reversed(notes))
        stack.extend((branch, c.key, depth + 1) for c in reversed(shown))
    return top


def _labels_table(state: SessionState, nodes: list[ProcessNode]) -> Table:
    table = Table(title="processes by label", title_justify="left", show_edge=False)
    table.add_column("label")
    table.add_column("processes", justify="right")
    table.add_column("failed", justify="right")
    counts = Counter(n.label for n in nodes)
    failed = Counter(n.label for n in nodes if n.failed)
    for label, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        bad = failed[label]
        table.add_row(
            Text(label, style=LABEL_STYLES.get(label, "")),
            f"{count:,}",
            Text(f"{bad:,}", style="bold red") if bad else "0",
        )
    return table


def _tools_table(nodes: list[ProcessNode]) -> Table | None:
    tools = tool_stats(nodes)
    if not tools:
        return None
    table = Table(title="tools", title_justify="left", show_edge=False)
    table.add_column("tool")
    table.add_column("runs", justify="right")
    table.add_column("total time", justify="right")
    table.add_column("failed", justify="right")
    for tool in tools[:TOP_TOOLS]:
        table.add_row(
            tool["name"],
            f"{tool['count']:,}",
            format_duration(tool["total_s"]),
            Text(f"{tool['failed']:,}", style="bold red") if tool["failed"] else "0",
        )
    if len(tools) > TOP_TOOLS:
        table.add_row(Text(f"… {len(tools) - TOP_TOOLS} more tools", style="dim"), "", "", "")
    return table


def _failures_table(state: SessionState, nodes: list[ProcessNode]) -> Table | None:
    """Failures grouped by command and outcome: fifteen identical `readlink` probes are one row."""
    failures = [n for n in nodes if n.failed]
    if not failures and not state.spawn_failures:
        return None
    groups: dict[tuple[str, str], list[ProcessNode]] = {}
    for node in failures:
        groups.setdefault((short_argv(node.display_argv), outcome(node).plain), []).append(node)
    table = Table(title="failures", title_justify="left", show_edge=False, title_style="bold red")
    table.add_column("pid", justify="right")
    table.add_column("command")
    table.add_column("result")
    table.add_column("times", justify="right")
    for spawn in state.spawn_failures:
        table.add_row(
            "-", short_argv(spawn.argv), Text(f"not started: {spawn.message}", style="bold red"), "1"
        )
    for (command, _result), members in list(groups.items())[:TOP_FAILURES]:
        first = members[0]
        pids = str(first.pid) if len(members) == 1 else f"{first.pid}…"
        table.add_row(pids, command, outcome(first), f"{len(members):,}")
    if len(groups) > TOP_FAILURES:
        rest = sum(len(m) for m in list(groups.values())[TOP_FAILURES:])
        table.add_row("", Text(f"… {rest:,} more failures", style="dim"), "", "")
    return table


def agent_section(run: AgentRun, session_start: float | None) -> RenderableType:
    origin = session_start if session_start is not None else run.start
    failed = sum(c.failed for c in run.tool_calls)
    title = Text()
    title.append(f"agent {run.name}", style="bold magenta")
    title.append(f" (pid {run.pid}) · {format_duration(run.duration)} · ")
    title.append(f"{len(run.tool_calls):,} tool calls")
    if failed:
        title.append(f", {failed:,} failed", style="bold red")
    workflows = ", ".join(f"{w} {c:,}" for w, c in run.workflows.items())
    parts: list[RenderableType] = [title]
    if workflows:
        parts.append(Text(f"  workflows: {workflows}", style="dim"))
    if run.phases:
        table = Table(show_edge=False, box=None, padding=(0, 2))
        table.add_column("at", justify="right")
        table.add_column("phase")
        table.add_column("for", justify="right")
        table.add_column("tools", justify="right")
        table.add_column("failed", justify="right")
        for phase in run.phases[:TOP_PHASES]:
            table.add_row(
                "+" + format_duration(phase.start - origin),
                phase.workflow,
                format_duration(phase.end - phase.start),
                f"{phase.tools:,}",
                Text(str(phase.failed), style="bold red") if phase.failed else "0",
            )
        if len(run.phases) > TOP_PHASES:
            table.add_row(
                "", Text(f"… {len(run.phases) - TOP_PHASES:,} more phases", style="dim"), "", "", ""
            )
        parts.append(table)
    return Group(*parts)


def summary(state: SessionState) -> RenderableType:
    nodes = sorted_nodes(state)
    sections: list[RenderableType | None] = [
        policy_table(state),
        _labels_table(state, nodes),
        _tools_table(nodes),
        _failures_table(state, nodes),
        *(agent_section(run, state.started) for run in agent_runs(state.tree)),
    ]
    parts: list[RenderableType] = []
    for section in sections:
        if section is not None:
            parts.extend((section, Text("")))
    warnings = state.warnings
    if warnings:
        text = Text("warnings\n", style="bold yellow")
        for warning in warnings[:10]:
            text.append(f"  {warning}\n", style="yellow")
        if len(warnings) > 10:
            text.append(f"  … {len(warnings) - 10} more\n", style="yellow")
        parts.append(text)
    return Group(*parts)


def render(state: SessionState, *, full: bool = False) -> RenderableType:
    """The whole human report: header, process tree, summary."""
    return Group(header(state), Text(""), process_tree(state, full=full), Text(""), summary(state))


def summary_line(state: SessionState) -> str:
    """One line for the end of `capsule run`: session id, processes, failures, duration, result."""
    nodes = state.tree.nodes
    failed = sum(n.failed for n in nodes)
    session = state.header.session_id if state.header is not None else "?"
    parts = [
        f"capsule: session {session}",
        f"{len(nodes):,} process{'es' if len(nodes) != 1 else ''}",
        f"{failed:,} failed",
        format_duration(state.duration),
    ]
    if state.signal is not None:
        parts.append(f"killed by {state.signal}")
    elif state.exit_code is not None:
        parts.append(f"exit {state.exit_code}")
    if state.status != "complete":
        parts.append(state.status)
    if state.spawn_failures:
        parts.append(f"not started: {state.spawn_failures[0].message}")
    return " · ".join(parts)
