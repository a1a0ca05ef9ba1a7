"""The human report: rich renderables for a folded session (header, process tree, summary, agents).

Nothing here prints: the CLI prints `render(state)` with a Console that honours NO_COLOR and non-TTY
output. Big runs stay readable: siblings with the same command and no failure in their subtree are
collapsed after the first few ("… 4,997 more `true` (all exit 0)") unless `full=True`; failures are
never collapsed away. What a single-purpose tool (a test runner, a compiler, git) runs inside itself is
summarised in one line (a pyenv shim alone spawns 60 processes). Times are shown in UTC so a report reads the same on every machine.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from capsule.duration import format_duration
from capsule.fold.agents import AgentRun, agent_runs
from capsule.fold.interrupts import what_was_done
from capsule.fold.labels import basename
from capsule.fold.process_tree import ProcessNode, ProcessTree
from capsule.fold.session import SessionState
from capsule.report.argv import ARGV_WIDTH, short_argv
from capsule.report.json_report import resources, sorted_nodes, tool_stats
from capsule.report.policy import policy_table

COLLAPSE_AFTER = 3  # siblings of one kind shown before the rest are summarised
COLLAPSE_MIN = 6  # ... when there are more than this many of them
TOP_TOOLS = 20
TOP_FAILURES = 30
TOP_PHASES = 40
MAX_DEPTH = 16  # tree levels drawn nested; deeper ones are drawn flat with their depth

LABEL_STYLES = {"agent": "bold magenta", "tool": "cyan", "system": "dim", "unknown": "yellow"}


def format_time(ts: float | None) -> str:
    if ts is None:
        return "?"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def outcome_parts(node: ProcessNode, live: bool = False) -> tuple[str, str]:
    """(text, style) of how a process ended: `exit 0`, `exit 2`, `exit 1 (an answer)` (an exit rule says
    so: `grep` found nothing), `SIGKILL`, `exec ENOENT`, `no exit seen` (`running` in a live session)."""
    ctrl = f" ({what_was_done(node.terminal_signal)})" if node.interrupted and node.terminal_signal else ""
    if node.broken_pipe:  # its reader had gone (`yes | head -1`): no failure
        return f"{node.signal} (reader closed)", "yellow"
    if node.signal is not None:  # a stop the supervisor or the terminal made is no failure: not red
        return node.signal + ctrl + (
            " (core dumped)" if node.core_dumped else ""
        ), "yellow" if node.stopped else "bold red"
    if node.exec_failed:
        errno = node.execs[-1].errno or "failed"
        code = f", exit {node.exit_code}" if node.exit_code is not None else ""
        return f"exec {errno}{code}", "bold red"
    if node.answered:
        return f"exit {node.exit_code} (an answer)", "green"
    if node.exit_code is not None:  # 130 after the terminal's Ctrl-C: interrupted, not failed
        return (
            f"exit {node.exit_code}{ctrl}",
            "yellow" if node.stopped else "bold red" if node.exit_code else "green",
        )
    if node.end is None:
        return "running" if live else "no exit seen", "yellow"
    return "exited", "green"


def outcome(node: ProcessNode, live: bool = False) -> Text:
    """How a process ended, failures in red."""
    text, style = outcome_parts(node, live)
    return Text(text, style=style)


def format_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _node_line(node: ProcessNode, live_until: float | None = None) -> Text:
    """One process of the tree; `live_until`: a live session's last event, which a process still
    running has lived to at least (its duration so far, not `?`)."""
    line = Text()
    line.append(f"{node.pid} ", style="dim")
    argv_style = "red" if node.failed else ""
    shell = shell_before_exec(node)
    if node.exec_ok and node.argv is None:  # `strace -s 0`: the program is known, its argv is not
        line.append(f"{basename(node.exe or '') or '?'} …", style=argv_style)
    elif shell is not None:
        # The shell ran its command line, then exec'd its last command: both are shown.
        line.append(short_argv(shell, width=ARGV_WIDTH))
        line.append(" → exec ", style="dim")
        line.append(short_argv(node.display_argv, width=ARGV_WIDTH // 2), style=argv_style)
    else:
        shown = short_argv(node.display_argv)
        if node.argv_truncated and node.argv is not None and not shown.endswith("…"):
            shown += " …"  # strace cut the argv (`-s`): more followed
        line.append(shown, style=argv_style)
    if node.argv is None and not node.execs:
        # a root that never exec'd was running when the trace began (`strace -p`): not a fork
        line.append(" (attached)" if node.via == "root" else " (fork)", style="dim")
    label = node.agent if node.label == "agent" and node.agent else node.label
    line.append(f"  [{label}", style=LABEL_STYLES.get(node.label, ""))
    if node.workflow is not None and node.label != "agent":
        line.append(f"·{node.workflow}", style=LABEL_STYLES.get(node.label, ""))
    line.append("]", style=LABEL_STYLES.get(node.label, ""))
    if node.end is None and live_until is not None and not node.untimed:
        line.append(f"  {format_duration(max(0.0, live_until - node.start))} so far  ", style="dim")
    else:
        line.append(f"  {format_duration(node.duration)}  ", style="dim")
    line.append_text(outcome(node, live_until is not None))
    if node.peak_rss_bytes is not None:
        line.append(f"  {format_bytes(node.peak_rss_bytes)}", style="dim")
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
    status = Text(state.status, style="green" if state.status in ("complete", "running") else "yellow")
    if state.timed_out is not None:
        status.append(f" · timed out after {format_duration(state.timed_out.limit_s)}", style="bold red")
    how = state.signal or (f"exit {state.exit_code}" if state.exit_code is not None else None)
    if how is not None and (stopper := state.stopped_by) is not None:
        status.append(f" · {how} · stopped by {stopper}", style="yellow")
    elif state.signal is not None:
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


SHELLS = frozenset(("sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "busybox"))


def shell_before_exec(node: ProcessNode) -> tuple[str, ...] | None:
    """The argv of the shell a process was before its last exec (`bash -c 'A && B; C'` that exec'd
    into C), or None. What such a shell ran are commands someone wrote: never summarised away."""
    images = [e for e in node.execs if e.ok]
    if len(images) < 2:
        return None
    for image in reversed(images[:-1]):
        if image.argv is not None and _is_command_line(image.path, image.argv):
            return image.argv
    return None


def _is_command_line(path: str, argv: tuple[str, ...]) -> bool:
    """A shell given a command string (`sh -c …`, `bash -lc …`); a shell running a script file is a
    shim or a program like any other."""
    if basename(path) not in SHELLS and not (argv and basename(argv[0]) in SHELLS):
        return False
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-o", "-O", "+o", "+O"):  # `bash -o pipefail -c …`: the option's value follows
            next(args, None)
        elif arg.startswith("--") and arg != "--":  # `bash --norc -c …`
            continue
        elif arg == "--" or not arg.startswith(("-", "+")):
            return False
        elif arg.startswith("-") and "c" in arg[1:]:
            return True
    return False


def _runs_command_line(node: ProcessNode) -> bool:
    """It is, or was before its last exec, a shell given a command line."""
    images = [e for e in node.execs if e.ok]
    return any(e.argv is not None and _is_command_line(e.path, e.argv) for e in images)


def _split_at_exec(
    node: ProcessNode, children: list[ProcessNode]
) -> tuple[list[ProcessNode], list[ProcessNode]]:
    """(children started before its last successful exec, the rest)."""
    images = [e for e in node.execs if e.ok]
    if len(images) < 2:
        return [], children
    became = images[-1].ts
    early = [c for c in children if c.start < became]
    return early, [c for c in children if c.start >= became]


def _without_shim_children(
    tree: ProcessTree, node: ProcessNode, children: list[ProcessNode]
) -> tuple[list[ProcessNode], Text | None]:
    """Children spawned before a node's last successful exec ran under an earlier program: a shim
    (pyenv, asdf, npx, env) working out what to exec. Summarise them in one line — unless that program
    was a shell: its children are the commands of a command line (`bash -c 'A && B; exec C'`)."""
    images = [e for e in node.execs if e.ok]
    if len(images) < 2 or shell_before_exec(node) is not None:
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
        line = _node_line(node, state.last_ts if state.live else None)
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
                # What a shell ran before it exec'd the tool is not the tool's inside.
                early, inside = (
                    _split_at_exec(node, children) if shell_before_exec(node) is not None else ([], children)
                )
                if inside:
                    notes.append(_inside_note(tree, inside))
                children = early
        shown = children
        if not full and len(children) > COLLAPSE_MIN:
            # Under a shell running a command line only identical commands (a loop's) are collapsed:
            # `git status; git diff; git log; …` are each written there and each shown.
            exact = _runs_command_line(node)
            groups: dict[tuple[str, str], list[ProcessNode]] = {}
            for child in children:
                if child.key not in failing:
                    argv = child.display_argv
                    name = basename(argv[0]) if argv else "?"
                    what = "\0".join(argv) if exact and argv else name
                    groups.setdefault((what, child.label), []).append(child)
            hidden: set[int] = set()
            for (what, _label), members in groups.items():
                if len(members) > COLLAPSE_MIN:
                    name = short_argv(what.split("\0"), width=40) if exact else what
                    rest = members[COLLAPSE_AFTER:]
                    hidden.update(n.key for n in rest)
                    notes.append(_collapsed_note(tree, rest, name))
            shown = [c for c in children if c.key not in hidden]
        stack.extend((branch, note, depth + 1) for note in reversed(notes))
        stack.extend((branch, c.key, depth + 1) for c in reversed(shown))
    return top


def _labels_table(state: SessionState, nodes: list[ProcessNode]) -> Table | None:
    if not nodes:  # a command that never started: its failure is the report's, not an empty table
        return None
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


def _tools_table(nodes: list[ProcessNode], tree: ProcessTree) -> Table | None:
    """Wall: the time any run of the tool was alive (nested runs once); self: its own time, what its
    children did left out."""
    tools = tool_stats(nodes, tree)
    if not tools:
        return None
    table = Table(title="tools", title_justify="left", show_edge=False)
    table.add_column("tool")
    table.add_column("runs", justify="right")
    table.add_column("wall", justify="right")
    table.add_column("self", justify="right")
    table.add_column("failed", justify="right")
    for tool in tools[:TOP_TOOLS]:
        table.add_row(
            tool["name"],
            f"{tool['count']:,}",
            format_duration(tool["wall_s"]),
            format_duration(tool["self_s"]),
            Text(f"{tool['failed']:,}", style="bold red") if tool["failed"] else "0",
        )
    if len(tools) > TOP_TOOLS:
        table.add_row(Text(f"… {len(tools) - TOP_TOOLS} more tools", style="dim"), "", "", "", "")
    return table


def sender_name(state: SessionState, node: ProcessNode, pid: int, by_pid: Mapping[int, ProcessNode]) -> str:
    """Who sent `node` a signal, as a report names it, short (it shares a row with the command): itself,
    capsule, the supervisor of the env or agents session this one is part of, a process of the tree by
    its command's name, or the pid of a process outside the tree."""
    header = state.header
    if pid == node.pid:
        return "itself"
    if header is not None and pid == header.recorder_pid:
        return f"capsule ({pid})"
    if state.parent_writer is not None and pid == state.parent_writer[0]:
        return f"{state.parent_writer[1]} ({pid})"
    sender = by_pid.get(pid)
    argv = sender.display_argv if sender is not None else None
    return f"{basename(argv[0])} ({pid})" if argv else f"pid {pid}"


def _failures_table(state: SessionState, nodes: list[ProcessNode]) -> Table | None:
    """Failures grouped by command and outcome: fifteen identical `readlink` probes are one row."""
    failures = [n for n in nodes if n.failed]
    if not failures and not state.spawn_failures:
        return None
    by_pid: dict[int, ProcessNode] = {}  # the latest process of each pid, built only if one was killed

    def result(node: ProcessNode) -> Text:
        """How it ended, and who sent the signal it died of when a process did."""
        text = outcome(node)
        if node.killed_by is not None:
            if not by_pid:
                by_pid.update((n.pid, n) for n in nodes)
            text.append(f" by {sender_name(state, node, node.killed_by, by_pid)}")
        return text

    groups: dict[tuple[str, str], list[ProcessNode]] = {}
    for node in failures:
        groups.setdefault((short_argv(node.display_argv), result(node).plain), []).append(node)
    table = Table(title="failures", title_justify="left", show_edge=False, title_style="bold red")
    table.add_column("pid", justify="right")
    table.add_column("command")
    table.add_column("result", no_wrap=True)
    table.add_column("times", justify="right")
    for spawn in state.spawn_failures:
        table.add_row(
            "-", short_argv(spawn.argv), Text(f"not started: {spawn.message}", style="bold red"), "1"
        )
    for (command, _result), members in list(groups.items())[:TOP_FAILURES]:
        first = members[0]
        pids = str(first.pid) if len(members) == 1 else f"{first.pid}…"
        # one line per failure, to scan them: a long command is cut to the width its column gets
        cell = Text(command, no_wrap=True, overflow="ellipsis")
        table.add_row(pids, cell, result(first), f"{len(members):,}")
    if len(groups) > TOP_FAILURES:
        rest = sum(len(m) for m in list(groups.values())[TOP_FAILURES:])
        table.add_row("", Text(f"… {rest:,} more failures", style="dim"), "", "")
    return table


FILES_LISTED = 8  # changed files listed one by one; beyond this many, grouped by directory
TOP_DIRS = 15
TOP_PEERS = 20
_CHANGE_OPS = ("create", "write", "delete", "rename", "chmod")


def _resources_line(nodes: list[ProcessNode]) -> Text | None:
    res = resources(nodes)
    if not res["sampled"]:
        return None
    line = Text("resources", style="bold")
    line.append(f"  peak RSS {format_bytes(res['peak_rss'])}")
    if res["cpu_s"] is not None:
        line.append(f" · CPU {format_duration(res['cpu_s'])}")
    sampled = res["sampled"]
    line.append(f" · {sampled:,} process{'es' if sampled != 1 else ''} sampled", style="dim")
    return line


def _device(path: str) -> bool:
    """Writes to /dev/null, a terminal or /proc are plumbing, not edits."""
    return path.startswith(("/dev/", "/proc/", "/sys/"))


_PER_PROCESS = re.compile(r"/proc/\d+(?:/task/\d+)?/")


def _dir(path: str) -> str:
    """The directory a file is counted under; every process's own /proc/PID counts as one, `/proc/<pid>`
    (`ps` reads four files of each process on the machine: 100 rows of one read otherwise)."""
    if _PER_PROCESS.match(path):
        return "/proc/<pid>"
    head, _, _ = path.rpartition("/")
    return head or ("/" if path.startswith("/") else ".")


def _files_sections(state: SessionState) -> list[RenderableType | None]:
    """ "Files changed": the agent's edits at a glance; "Files read": counts by directory."""
    files = state.activity.files
    if not files:
        return []
    changed = [f for f in files if f.ops.intersection(_CHANGE_OPS) and not _device(f.path)]
    read = [f for f in files if f.ops == {"read"}]
    out: list[RenderableType | None] = []
    if changed:
        table = Table(title=f"files changed ({len(changed):,})", title_justify="left", show_edge=False)
        if len(changed) <= FILES_LISTED:
            table.add_column("path")
            table.add_column("what")
            table.add_column("by", justify="right")
            for f in changed:
                what = ", ".join(op for op in _CHANGE_OPS if op in f.ops)
                if f.renamed_to:
                    what += f" → {f.renamed_to}"
                table.add_row(f.path, what, _pids_text(f.pids, f.processes))
        else:
            table.add_column("directory")
            for op in _CHANGE_OPS:
                table.add_column(op, justify="right")
            by_dir: dict[str, Counter[str]] = {}
            for f in changed:
                counts = by_dir.setdefault(_dir(f.path), Counter())
                counts.update(op for op in _CHANGE_OPS if op in f.ops)
            ordered = sorted(by_dir.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
            for directory, counts in ordered[:TOP_DIRS]:
                table.add_row(directory, *(f"{counts[op]:,}" if counts[op] else "" for op in _CHANGE_OPS))
            if len(ordered) > TOP_DIRS:
                table.add_row(Text(f"… {len(ordered) - TOP_DIRS:,} more directories", style="dim"))
        out.append(table)
    if read:
        dirs = Counter(_dir(f.path) for f in read)
        table = Table(title=f"files read ({len(read):,})", title_justify="left", show_edge=False)
        table.add_column("directory")
        table.add_column("files", justify="right")
        for directory, count in sorted(dirs.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_DIRS]:
            table.add_row(directory, f"{count:,}")
        if len(dirs) > TOP_DIRS:
            table.add_row(Text(f"… {len(dirs) - TOP_DIRS:,} more directories", style="dim"), "")
        out.append(table)
    return out


def _pids_text(pids: list[int], processes: int) -> str:
    shown = ", ".join(str(p) for p in pids[:3])
    return shown + (f" +{processes - 3}" if processes > 3 else "")


def _network_table(state: SessionState) -> Table | None:
    peers = state.activity.peers
    if not peers:
        return None
    table = Table(title=f"network ({len(peers):,})", title_justify="left", show_edge=False)
    table.add_column("op")
    table.add_column("peer")
    table.add_column("result")
    table.add_column("times", justify="right")
    table.add_column("by", justify="right")
    for p in peers[:TOP_PEERS]:
        where = p.address or "?"
        if p.port is not None:
            where = f"[{where}]:{p.port}" if p.family == "inet6" else f"{where}:{p.port}"
        if p.family == "unix":
            where = f"unix {where or '(unnamed)'}"
        result = Text("ok", style="green") if p.ok else Text(p.error or "failed", style="bold red")
        table.add_row(p.op, where, result, f"{p.count:,}", _pids_text(p.pids, len(p.keys)))
    if len(peers) > TOP_PEERS:
        table.add_row("", Text(f"… {len(peers) - TOP_PEERS:,} more", style="dim"), "", "", "")
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
        _tools_table(nodes, state.tree),
        _failures_table(state, nodes),
        _resources_line(nodes),
        *_files_sections(state),
        _network_table(state),
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
    if state.timed_out is not None:
        parts.append(f"timed out after {format_duration(state.timed_out.limit_s)}")
    if state.signal is not None:
        parts.append(f"killed by {state.signal}")
    elif state.exit_code is not None:
        parts.append(f"exit {state.exit_code}")
    if state.status != "complete":
        parts.append(state.status)
    if state.spawn_failures:
        parts.append(f"not started: {state.spawn_failures[0].message}")
    return " · ".join(parts)
