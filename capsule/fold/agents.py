"""Agent runs: each agent process with its subtree, its tool calls and its workflow timeline.

Derived from a folded process tree on demand (agents are few; the tree is the fold). An agent run starts
at an `agent`-labelled process with no `agent` ancestor: agent CLIs re-launch themselves (node running
node, a shim running a native binary), and those re-launches belong to the same run. A tool call is a
non-agent, non-system process spawned by the agent or one of its re-launches; what it spawns in turn is
part of that call. A call through a shell (`bash -c "pytest -q"`) takes the workflow of the work inside it.
"""

from __future__ import annotations

from collections import Counter

import attrs

from capsule.fold.labels import basename
from capsule.fold.process_tree import ProcessNode, ProcessTree

_GENERIC = (None, "execute")


@attrs.frozen(kw_only=True)
class ToolCall:
    key: int
    pid: int
    name: str
    argv: tuple[str, ...] | None
    workflow: str
    start: float
    end: float | None
    duration: float | None
    exit_code: int | None
    signal: str | None
    failed: bool
    processes: int  # the call's process and everything it spawned


@attrs.frozen(kw_only=True)
class Phase:
    """A stretch of consecutive tool calls with the same workflow."""

    workflow: str
    start: float
    end: float
    tools: int
    failed: int


@attrs.frozen(kw_only=True)
class AgentRun:
    key: int
    pid: int
    name: str
    argv: tuple[str, ...] | None
    start: float
    end: float | None
    duration: float | None
    exit_code: int | None
    signal: str | None
    processes: int  # the agent's whole subtree, itself included
    tool_calls: tuple[ToolCall, ...]
    phases: tuple[Phase, ...]

    @property
    def workflows(self) -> dict[str, int]:
        return dict(Counter(call.workflow for call in self.tool_calls).most_common())


def tool_name(node: ProcessNode) -> str:
    """What the process was run as: the tool a runner ran, else argv[0]'s basename, else the
    executable's, else `?`.

    argv[0] wins because multi-call binaries are one executable under many names: Claude Code runs
    its bundled ripgrep as `claude.exe` with argv[0] `rg`; busybox is `ls`, `cat`, `sh`… A path in
    argv[0] that names a different file than the exe (a shim) still gives the name the user typed.
    """
    ran = node.classification.tool
    if ran is not None:
        return ran  # a runner (`npx jest`, `node …/bin/tsc`) is named by the tool it ran
    argv = node.argv
    if argv and argv[0]:
        return basename(argv[0])
    if node.exe is not None:
        return basename(node.exe)
    argv = node.display_argv
    return basename(argv[0]) if argv else "?"


def _call(tree: ProcessTree, node: ProcessNode) -> ToolCall:
    workflow = node.workflow
    size = 1
    if workflow in _GENERIC:
        inner: Counter[str] = Counter()
        for child in tree.descendants(node):  # a big session's agent: ~all its processes, once each
            size += 1
            c = child.classification
            if (w := c.workflow) not in _GENERIC and c.label != "system":  # (None is generic)
                inner[w] += 1
        # most_common keeps first-seen order among ties: the earliest inner workflow wins a tie
        workflow = inner.most_common(1)[0][0] if inner else "execute"
    else:
        size += sum(1 for _ in tree.descendants(node))
    return ToolCall(
        key=node.key,
        pid=node.pid,
        name=tool_name(node),
        argv=node.display_argv,
        workflow=workflow or "execute",
        start=node.start,
        end=node.end,
        duration=node.duration,
        exit_code=node.exit_code,
        signal=node.signal,
        failed=node.failed,
        processes=size,
    )


def phases_of(calls: list[ToolCall]) -> list[Phase]:
    """Group calls (in start order) into runs of the same workflow."""
    phases: list[Phase] = []
    for call in calls:
        end = call.end if call.end is not None else call.start
        last = phases[-1] if phases else None
        if last is not None and last.workflow == call.workflow:
            phases[-1] = attrs.evolve(
                last, end=max(last.end, end), tools=last.tools + 1, failed=last.failed + call.failed
            )
        else:
            phases.append(
                Phase(workflow=call.workflow, start=call.start, end=end, tools=1, failed=int(call.failed))
            )
    return phases


def _is_run_root(tree: ProcessTree, node: ProcessNode) -> bool:
    return node.label == "agent" and not any(a.label == "agent" for a in tree.ancestors(node))


def agent_run(tree: ProcessTree, agent: ProcessNode) -> AgentRun:
    calls: list[ToolCall] = []
    processes = 1
    stack = [agent]
    while stack:
        node = stack.pop()
        for child in tree.children(node):
            if child.label == "agent":
                processes += 1
                stack.append(child)
            else:
                call = _call(tree, child)
                processes += call.processes
                if child.label != "system":
                    calls.append(call)
    calls.sort(key=lambda c: (c.start, c.key))
    return AgentRun(
        key=agent.key,
        pid=agent.pid,
        name=agent.agent or "agent",
        argv=agent.display_argv,
        start=agent.start,
        end=agent.end,
        duration=agent.duration,
        exit_code=agent.exit_code,
        signal=agent.signal,
        processes=processes,
        tool_calls=tuple(calls),
        phases=tuple(phases_of(calls)),
    )


def agent_runs(tree: ProcessTree) -> list[AgentRun]:
    """Every agent run of the tree, in start order."""
    roots = [n for n in tree.nodes if n.label == "agent" and _is_run_root(tree, n)]
    roots.sort(key=lambda n: (n.start, n.key))
    return [agent_run(tree, n) for n in roots]
