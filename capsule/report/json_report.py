"""The JSON report: a folded session as one JSON-able dict with a stable shape (`capsule report --json`).

Shape (keys listed are stable; new keys may be added, none removed or renamed). Timestamps are seconds
since the epoch (floats), durations seconds; a value not known is null.

    {
      "session": {
        "id": str, "kind": "run" | "env" | "agents" | "import", "name": str | null,
        "argv": [str], "cwd": str, "host": str,
        "started": float, "ended": float | null, "duration_s": float | null,
        "exit_code": int | null, "signal": "SIGKILL" | null,
        "status": "complete" | "incomplete" | "recovered",
        "events": int
      },
      "processes": [            # exactly one per process (thread-group leader), ordered by start
        {
          "id": int,            # stable key of the node: pids are reused, ids are not
          "parent": int | null, # id of the spawner's node (null for a root)
          "pid": int, "ppid": int | null,   # ppid: the pid that spawned it, kept when orphaned
          "argv": [str] | null, # argv of the last successful exec; null if it never exec'd
          "exe": str | null,    # path of the last successful exec
          "label": "agent" | "tool" | "system" | "unknown",
          "workflow": "explore" | "edit" | "build" | "test" | "vcs" | "install" | "execute" | ... | null,
          "agent": str | null,  # the agent's name for label "agent", e.g. "claude-code"
          "start": float, "end": float | null, "duration_s": float | null,
          "exit_code": int | null, "signal": str | null, "core_dumped": bool,
          "execs": [{"ts": float, "path": str, "argv": [str], "ok": bool, "errno": str | null}],
          "signals": [{"ts": float, "signal": str}],   # delivered to it (SIGCHLD excluded)
          "peak_cpu_percent": float | null, "peak_rss_bytes": int | null
        }
      ],
      "summary": {
        "processes": int,
        "failed": int,          # exited non-zero, killed by a signal, or never managed to exec
        "signaled": int,        # killed by a signal
        "exec_failed": int,     # never managed to exec (command not found)
        "labels": {label: count},
        "workflows": {workflow: count},
        "tools": [{"name": str, "count": int, "total_s": float, "failed": int}]   # by count, descending
      },
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
from collections.abc import Iterator
from typing import Any

from capsule.fold.agents import AgentRun, agent_runs, tool_name
from capsule.fold.process_tree import ProcessNode
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
        "exe": node.exe,
        "label": c.label,
        "workflow": c.workflow,
        "agent": c.agent,
        "start": node.start,
        "end": end,
        "duration_s": None if end is None else round(max(0.0, end - node.start), 6),
        "exit_code": node.exit_code,
        "signal": node.signal,
        "core_dumped": node.core_dumped,
        "execs": [
            {"ts": e.ts, "path": e.path, "argv": e.argv, "ok": e.ok, "errno": e.errno} for e in node.execs
        ],
        "signals": [{"ts": ts, "signal": sig} for ts, sig in node.signals] if node.signals else [],
        "peak_cpu_percent": node.peak_cpu_percent,
        "peak_rss_bytes": node.peak_rss_bytes,
    }


def tool_stats(nodes: list[ProcessNode]) -> list[dict[str, Any]]:
    """Processes labelled `tool` grouped by executable name, most used first."""
    count: Counter[str] = Counter()
    total: dict[str, float] = {}
    failed: Counter[str] = Counter()
    for node in nodes:
        if node.label != "tool" or (node.argv is None and not node.execs):
            continue  # forks that never exec'd are part of their parent's work
        name = tool_name(node)
        count[name] += 1
        total[name] = total.get(name, 0.0) + (node.duration or 0.0)
        failed[name] += node.failed
    ordered = sorted(count, key=lambda n: (-count[n], n))
    return [
        {"name": n, "count": count[n], "total_s": round(total[n], 6), "failed": failed[n]} for n in ordered
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


def _report_dict(
    state: SessionState, nodes: list[ProcessNode] | None = None, *, processes: Any = ...
) -> dict[str, Any]:
    nodes = sorted_nodes(state) if nodes is None else nodes
    labels = Counter(n.label for n in nodes)
    workflows = Counter(n.workflow for n in nodes if n.workflow is not None)
    policy = policy_dict(state)
    return {
        "session": session_dict(state),
        **({"policy": policy} if policy is not None else {}),  # only for guarded sessions
        "processes": [_process(n) for n in nodes] if processes is ... else processes,
        "summary": {
            "processes": len(nodes),
            "failed": sum(n.failed for n in nodes),
            "signaled": sum(n.signal is not None for n in nodes),
            "exec_failed": sum(n.exec_failed for n in nodes),
            "labels": dict(sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))),
            "workflows": dict(sorted(workflows.items(), key=lambda kv: (-kv[1], kv[0]))),
            "tools": tool_stats(nodes),
        },
        "agents": [_agent(run) for run in agent_runs(state.tree)],
        "unparsed_lines": state.unparsed_lines,
        "warnings": state.warnings,
    }
