"""The JSON report: a folded session as one JSON-able dict with a stable shape (`capsule report --json`).

Shape (keys listed are stable; new keys may be added, none removed or renamed). Timestamps are seconds
since the epoch (floats), durations seconds; a value not known is null.

    {
      "session": {
        "id": str, "kind": "run" | "env" | "agents" | "import", "name": str | null,
        "argv": [str], "cwd": str, "host": str,
        "started": float, "ended": float | null, "duration_s": float | null,
        "exit_code": int | null, "signal": "SIGKILL" | null,
        "status": "complete" | "running" | "incomplete" | "recovered",
        "stopped_by": str | null,   # who ended the command on purpose: "supervisor (PID)" (`env down`),
                                    # "the terminal (Ctrl-C)"; null when it ended by itself or failed
        "events": int
      },
      "processes": [            # exactly one per process (thread-group leader), ordered by start
        {
          "id": int,            # stable key of the node: pids are reused, ids are not
          "parent": int | null, # id of the spawner's node (null for a root)
          "pid": int, "ppid": int | null,   # ppid: the pid that spawned it, kept when orphaned
          "argv": [str] | null, # argv of the last successful exec; null if it never exec'd or if the
                                # trace does not show it (`strace -s 0`)
          "argv_truncated": bool,   # strace cut that argv (`-s`): `argv` is a prefix of it (an argv[0]
                                    # cut itself is completed from the exec'd path it was a prefix of)
          "exe": str | null,    # path of the last successful exec
          "label": "agent" | "tool" | "system" | "unknown",
          "workflow": "explore" | "edit" | "build" | "test" | "vcs" | "install" | "execute" | ... | null,
          "agent": str | null,  # the agent's name for label "agent", e.g. "claude-code"
          "start": float, "end": float | null, "duration_s": float | null,
          "exit_code": int | null, "signal": str | null, "core_dumped": bool,
          "killed_by": int | null,  # pid that sent the signal it died of (a process's, not the kernel's)
          "execs": [{"ts": float, "path": str, "argv": [str] | null, "ok": bool, "errno": str | null}],
          "signals": [{"ts": float, "signal": str}],   # delivered to it (SIGCHLD excluded)
          "failure": bool,      # it failed: non-zero exit that is not an answer, a signal, no exec
          "stopped": bool,      # it was stopped on purpose, not failed: a traced service's process
                                # stopped by its env's supervisor (`env down`, a restart), or one
                                # interrupted from the terminal (Ctrl-C, Ctrl-\\, a hang-up: it died
                                # of that signal or exited 128+N after it)
          "answer": bool,       # a non-zero exit an exit rule calls an answer (`grep` 1: no match)
          "peak_cpu_percent": float | null, "peak_rss_bytes": int | null,
          "peak_rss": int | null, "cpu_s": float | null,   # from the psutil sampler (`--sample`)
          "files": {op: count},      # its file operations (read, write, create, ...), at level file|all
          "network": {op: count}     # its socket operations (connect, bind, ...), at level net|all
        }
      ],
      "summary": {
        "processes": int,
        "failed": int,          # failures: non-zero exits that are not answers, signals, failed execs,
                                # and spawn_failed (as `capsule run`'s tally counts them)
        "spawn_failed": int,    # the command could not be started at all: no process (`spawn_failures`)
        "answered": int,        # non-zero exits that are answers (capsule/rules/exits.toml)
        "signaled": int,        # killed by a signal
        "exec_failed": int,     # never managed to exec (command not found)
        "labels": {label: count},
        "workflows": {workflow: count},
        "tools": [{"name": str, "count": int, "self_s": float, "wall_s": float, "total_s": float,
                   "failed": int}],   # by count, descending; self_s: its own time, not its children's;
                                      # wall_s (= total_s): time any process of that tool was running
        "resources": {"sampled": int, "peak_rss": int | null, "cpu_s": float | null}
      },
      "files": [{"path": str, "ops": [op], "pids": [int], "ids": [int], "processes": int,
                 "first": float, "last": float, "renamed_to": str | null}],   # ops: read write create
                                                  # delete rename exec chmod; ids: process ids (above)
      "network": [{"family": "inet" | "inet6" | "unix" | str, "address": str, "port": int | null,
                   "op": "connect" | "bind" | "listen" | "accept" | "send", "ok": bool,
                   "error": str | null, "count": int, "pids": [int], "ids": [int],
                   "first": float, "last": float}],
      "spawn_failures": [{"ts": float, "path": str, "argv": [str], "errno": str, "message": str}],
      "agents": [
        {
          "id": int, "pid": int, "name": str, "argv": [str] | null,
          "start": float, "end": float | null, "duration_s": float | null,
          "exit_code": int | null, "signal": str | null,
          "processes": int, "tool_calls": int, "failed_tool_calls": int,
          "workflows": {workflow: count},
          "phases": [{"workflow": str, "start": float, "end": float, "tools": int, "failed": int}],
          "calls": [{"id": int, "pid": int, "name": str, "argv": [str] | null, "workflow": str,
                     "start": float, "end": float | null, "duration_s": float | null,
                     "exit_code": int | null, "signal": str | null, "failed": bool}]
        }
      ],
      "unparsed_lines": int,
      "warnings": [str]
    }

A guarded session (one with a policy) also has, after "session":

      "policy": {"mechanisms": [str], "detected": [str], "warning": str | null, "blocked_count": int,
                 "blocked": [{"ts": float, "pid": int | null, "argv": [str], "path": str | null,
                              "rule": str, "command": str, "mechanism": str, "action": "block" | "kill",
                              "task": str | null, "attempt": int | null, "service": str | null}],
                 "execs_checked": int | null, "decision_median_us": float | null,
                 "decision_p99_us": float | null}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from capsule.fold.activity import FILE_OPS, Activity
from capsule.fold.agents import AgentRun, agent_runs, tool_name
from capsule.fold.labels import basename
from capsule.fold.process_tree import ProcessNode, ProcessTree
from capsule.fold.session import SessionState, paused_gc
from capsule.report.policy import policy_dict


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def sorted_nodes(state: SessionState) -> list[ProcessNode]:
    """Processes ordered by start (then by order of appearance)."""
    return sorted(state.tree.nodes, key=lambda n: (n.start, n.key))


def _process(node: ProcessNode) -> dict[str, Any]:
    # Called once per process (hundreds of thousands in a big session): attributes read once, no helpers.
    c = node.classification
    argv = node.argv
    end = node.end
    return {
        "id": node.key,
        "parent": node.parent,
        "pid": node.pid,
        "ppid": node.ppid,
        "argv": argv,  # orjson writes tuples as arrays: no copy
        "argv_truncated": node.argv_truncated,
        "exe": node.exe,
        "label": c.label,
        "workflow": c.workflow,
        "agent": c.agent,
        "start": node.start,
        "end": end,
        "duration_s": None if end is None or node.untimed else round(max(0.0, end - node.start), 6),
        "exit_code": node.exit_code,
        "signal": node.signal,
        "killed_by": node.killed_by,
        "core_dumped": node.core_dumped,
        "execs": [
            {"ts": e.ts, "path": e.path, "argv": e.argv, "ok": e.ok, "errno": e.errno} for e in node.execs
        ],
        "signals": [{"ts": ts, "signal": sig} for ts, sig in node.signals] if node.signals else [],
        "failure": node.failed,
        "stopped": node.stopped,
        "answer": node.answered,
        "peak_cpu_percent": node.peak_cpu_percent,
        "peak_rss_bytes": node.peak_rss_bytes,
        "peak_rss": node.peak_rss_bytes,
        "cpu_s": node.peak_cpu_s,
        "files": node.file_ops or {},
        "network": node.net_ops or {},
    }


def _union(intervals: list[tuple[float, float]]) -> float:
    """The length of a union of intervals."""
    total = 0.0
    end = float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def self_time(tree: ProcessTree, node: ProcessNode) -> float:
    """A process's own time: its lifetime less the time some child of it was alive (its children's
    work is theirs, counted on them)."""
    if node.end is None:
        return 0.0
    start, end = node.start, node.end
    spans = []
    for k in node.children:
        c = tree.nodes[k]
        c_end = c.end if c.end is not None else end
        a, b = max(c.start, start), min(c_end, end)
        if b > a:
            spans.append((a, b))
    return max(0.0, (end - start) - _union(spans))


def tool_stats(nodes: list[ProcessNode], tree: ProcessTree | None = None) -> list[dict[str, Any]]:
    """Processes labelled `tool` grouped by the name they were run as, most used first.

    `wall_s` is the time any process of the tool was running (nested runs, a python running python,
    count once); `self_s` sums each process's own time, its children's left out (needs the tree)."""
    # Once per process of a big session (~330k): attributes read once, a leaf's own time inline.
    count: dict[str, int] = {}
    spans: dict[str, list[tuple[float, float]]] = {}
    own: dict[str, float] = {}
    failed: dict[str, int] = {}
    names: dict[str, str] = {}  # argv[0] -> tool_name's answer for it (no runner's tool)
    for node in nodes:
        c, argv = node.classification, node.argv
        if c.label != "tool" or (argv is None and not node.execs):
            continue  # forks that never exec'd are part of their parent's work
        if c.tool is None and argv and (first := argv[0]):
            name = names.get(first) or names.setdefault(first, basename(first))
        else:
            name = tool_name(node)
        start, end = node.start, node.end
        if name in count:
            count[name] += 1
        else:
            count[name], own[name], failed[name] = 1, 0.0, 0
        if end is not None:
            spans.setdefault(name, []).append((start, end if end > start else start))
        if tree is None:
            own[name] += node.duration or 0.0
        elif node.children:
            own[name] += self_time(tree, node)
        elif end is not None:  # no children: its own time is its lifetime (self_time's answer)
            own[name] += end - start if end > start else 0.0
        if node.failed:
            failed[name] += 1
    ordered = sorted(count, key=lambda n: (-count[n], n))
    out = []
    for n in ordered:
        wall = round(_union(spans.get(n, [])), 6)
        out.append(
            {
                "name": n,
                "count": count[n],
                "self_s": round(own[n], 6),
                "wall_s": wall,
                "total_s": wall,
                "failed": failed[n],
            }
        )
    return out


def resources(nodes: list[ProcessNode]) -> dict[str, Any]:
    """Session peaks and totals from the sampler: the largest RSS of any process, CPU seconds summed."""
    sampled = [n for n in nodes if n.samples]
    rss = [n.peak_rss_bytes for n in sampled if n.peak_rss_bytes is not None]
    cpu = [n.peak_cpu_s for n in sampled if n.peak_cpu_s is not None]
    return {
        "sampled": len(sampled),
        "peak_rss": max(rss) if rss else None,
        "cpu_s": round(sum(cpu), 6) if cpu else None,
    }


def files_list(activity: Activity) -> list[dict[str, Any]]:
    order = {op: i for i, op in enumerate(FILE_OPS)}
    return [
        {
            "path": e.path,
            "ops": sorted(e.ops, key=lambda op: order.get(op, 99)),
            "pids": e.pids,
            "ids": e.keys,
            "processes": e.processes,
            "first": e.first,
            "last": e.last,
            "renamed_to": e.renamed_to,
        }
        for e in activity.files
    ]


def network_list(activity: Activity) -> list[dict[str, Any]]:
    return [
        {
            "family": e.family,
            "address": e.address,
            "port": e.port,
            "op": e.op,
            "ok": e.ok,
            "error": e.error,
            "count": e.count,
            "pids": e.pids,
            "ids": e.keys,
            "first": e.first,
            "last": e.last,
        }
        for e in activity.peers
    ]


def _agent(run: AgentRun) -> dict[str, Any]:
    return {
        "id": run.key,
        "pid": run.pid,
        "name": run.name,
        "argv": list(run.argv) if run.argv is not None else None,
        "start": run.start,
        "end": run.end,
        "duration_s": _round(run.duration),
        "exit_code": run.exit_code,
        "signal": run.signal,
        "processes": run.processes,
        "tool_calls": len(run.tool_calls),
        "failed_tool_calls": sum(c.failed for c in run.tool_calls),
        "workflows": run.workflows,
        "phases": [
            {"workflow": p.workflow, "start": p.start, "end": p.end, "tools": p.tools, "failed": p.failed}
            for p in run.phases
        ],
        "calls": [
            {
                "id": c.key,
                "pid": c.pid,
                "name": c.name,
                "argv": list(c.argv) if c.argv is not None else None,
                "workflow": c.workflow,
                "start": c.start,
                "end": c.end,
                "duration_s": _round(c.duration),
                "exit_code": c.exit_code,
                "signal": c.signal,
                "failed": c.failed,
            }
            for c in run.tool_calls
        ],
    }


def session_dict(state: SessionState) -> dict[str, Any]:
    header = state.header
    return {
        "id": header.session_id if header is not None else None,
        "kind": header.session_kind if header is not None else None,
        "name": header.name if header is not None else None,
        "argv": list(header.argv) if header is not None else None,
        "cwd": header.cwd if header is not None else None,
        "host": header.host if header is not None else None,
        "started": state.started,
        "ended": state.ended.ts if state.ended is not None else None,
        "duration_s": _round(state.duration),
        "exit_code": state.exit_code,
        "signal": state.signal,
        "status": state.status,
        "stopped_by": state.stopped_by,
        "events": state.events,
    }


def report_dict(state: SessionState) -> dict[str, Any]:
    """The whole report as plain JSON-able values (see the module docstring for the shape)."""
    with paused_gc():
        return _report_dict(state)


def report_parts(state: SessionState) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """The report with `processes` left as a lazy iterator, for writers that stream a big session.

    The dict keeps the `processes` key (its value None) so the shape's key order is the same; a
    million-event session has ~330k processes, and their dicts alone took ~320 MiB when built at once.
    """
    with paused_gc():
        nodes = sorted_nodes(state)
        return _report_dict(state, nodes, processes=None), (_process(n) for n in nodes)


def report_split(
    state: SessionState,
) -> tuple[dict[str, Any], list[ProcessNode], Callable[[], dict[str, Any]]]:
    """The report in the three parts a writer can make apart, in output order: the members before
    `processes`, the nodes whose dicts `processes` holds (`process_dict` each), and a
    function making the members after it (the summary's tool statistics are the costly part of those)."""
    nodes = sorted_nodes(state)
    return _head(state), nodes, lambda: _tail(state, nodes)


process_dict = _process


def _report_dict(
    state: SessionState, nodes: list[ProcessNode] | None = None, *, processes: Any = ...
) -> dict[str, Any]:
    nodes = sorted_nodes(state) if nodes is None else nodes
    return {
        **_head(state),
        "processes": [_process(n) for n in nodes] if processes is ... else processes,
        **_tail(state, nodes),
    }


def _head(state: SessionState) -> dict[str, Any]:
    policy = policy_dict(state)
    return {
        "session": session_dict(state),
        **({"policy": policy} if policy is not None else {}),  # only for guarded sessions
    }


def _outcomes(nodes: list[ProcessNode]) -> dict[str, int]:
    """The summary's counts of failed, answered, signaled and exec-failed processes (one pass)."""
    failed = answered = signaled = exec_failed = 0
    for n in nodes:
        if n.failed:
            failed += 1
        if n.answered:
            answered += 1
        if n.signal is not None:
            signaled += 1
        if n.exec_failed:
            exec_failed += 1
    return {"failed": failed, "answered": answered, "signaled": signaled, "exec_failed": exec_failed}


def _tail(state: SessionState, nodes: list[ProcessNode]) -> dict[str, Any]:
    labels = Counter(n.label for n in nodes)
    workflows = Counter(n.workflow for n in nodes if n.workflow is not None)
    outcomes = _outcomes(nodes)
    spawn_failed = len(state.spawn_failures)  # no process of theirs exists, but they failed all the same
    return {
        "summary": {
            "processes": len(nodes),
            **outcomes,
            "failed": outcomes["failed"] + spawn_failed,
            "spawn_failed": spawn_failed,
            "labels": dict(sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))),
            "workflows": dict(sorted(workflows.items(), key=lambda kv: (-kv[1], kv[0]))),
            "tools": tool_stats(nodes, state.tree),
            "resources": resources(nodes),
        },
        "files": files_list(state.activity),
        "network": network_list(state.activity),
        "spawn_failures": [
            {"ts": f.ts, "path": f.path, "argv": list(f.argv), "errno": f.errno, "message": f.message}
            for f in state.spawn_failures
        ],
        "agents": [_agent(run) for run in agent_runs(state.tree)],
        "unparsed_lines": state.unparsed_lines,
        "warnings": state.warnings,
    }
