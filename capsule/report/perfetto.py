"""A folded session as a Chrome/Perfetto trace (the trace-event JSON object format), for ui.perfetto.dev.

The session is one trace process (its `pid` is the root process's pid, named by `process_name` metadata
after the session's command), so the whole process tree is one view. Each recorded process is one track
in it: its `tid` is the process's pid (a reused pid gets a fresh number, or two processes would share a
track; the real pid stays in `args`), named by `thread_name` after its command — without the pid, which
viewers already show beside the name — indented by its depth in the tree, and ordered depth first with
`thread_sort_index` (parents before children). The parent relation is a flow (`s` on the parent's track,
`f` on the child's, `cat` "spawn") at the moment the child started, and `args.ppid`. On each track a
complete (`X`) slice spans the process's life, and thread-scoped instant (`i`) events mark signals
delivered to it and how it failed (exit code, killing signal, exec that never succeeded).

Timestamps are microseconds since the session started (`otherData.started` holds that epoch time); a
process whose end was never seen runs to the session's last event and says so in `args.end`.
"""

from __future__ import annotations

from typing import Any

from capsule.events import SessionStarted
from capsule.fold.agents import tool_name
from capsule.fold.process_tree import ProcessNode
from capsule.fold.session import SessionState, paused_gc
from capsule.report.order import tree_order

# A synthetic track number for a reused pid: above the kernel's pid_max (4,194,304 at most).
REUSED_PID_BASE = 1 << 23
SHOWN_ARGV = 200  # characters of argv in a track name; the full argv is in the slice's args


def _us(ts: float, origin: float) -> float:
    return round((ts - origin) * 1e6, 3)


def _name(node: ProcessNode) -> str:
    argv = node.display_argv
    return tool_name(node) if argv else f"pid {node.pid}"


def _track_title(node: ProcessNode) -> str:
    argv = node.display_argv
    text = " ".join(argv) if argv else "(no exec)"
    return text if len(text) <= SHOWN_ARGV else text[: SHOWN_ARGV - 1] + "…"


INDENT = "\u00a0\u00a0"  # per tree level; no-break spaces, which a viewer's HTML does not collapse


def trace_events(state: SessionState) -> dict[str, Any]:
    """The whole trace as a JSON-able dict: {"traceEvents": [...], "displayTimeUnit", "otherData"}."""
    with paused_gc():
        return _trace_events(state)


def _trace_events(state: SessionState) -> dict[str, Any]:
    header = state.header
    origin = state.timeline_start if state.timeline_start is not None else 0.0
    last = state.last_ts if state.last_ts is not None else origin
    if state.ended is not None:
        last = max(last, state.ended.ts)
    ordered = tree_order(state)
    pid = ordered[0][0].pid if ordered else 0
    command = " ".join(header.argv) if header is not None and header.argv else "session"
    name = f"capsule {header.session_id}: {command}" if header is not None else command
    events: list[dict[str, Any]] = [
        {
            "ph": "M",
            "cat": "__metadata",
            "name": "process_name",
            "pid": pid,
            "tid": pid,
            "ts": 0,
            "args": {"name": name},
        },
        {
            "ph": "M",
            "cat": "__metadata",
            "name": "process_sort_index",
            "pid": pid,
            "tid": pid,
            "ts": 0,
            "args": {"sort_index": 0},
        },
    ]
    tids: dict[int, int] = {}
    used: set[int] = set()
    for index, (node, depth) in enumerate(ordered):
        tid = node.pid if node.pid not in used else REUSED_PID_BASE + node.key
        used.add(tid)
        tids[node.key] = tid
        title = INDENT * depth + _track_title(node)
        events.append(
            {
                "ph": "M",
                "cat": "__metadata",
                "name": "thread_name",
                "pid": pid,
                "tid": tid,
                "ts": 0,
                "args": {"name": title},
            }
        )
        events.append(
            {
                "ph": "M",
                "cat": "__metadata",
                "name": "thread_sort_index",
                "pid": pid,
                "tid": tid,
                "ts": 0,
                "args": {"sort_index": index},
            }
        )
        start = _us(node.start, origin)
        if node.parent is not None and node.parent in tids:
            flow = {"cat": "spawn", "name": "spawn", "id": node.key, "pid": pid, "ts": start}
            events.append({"ph": "s", "tid": tids[node.parent], **flow})
            events.append({"ph": "f", "bp": "e", "tid": tid, **flow})
        end = node.end if node.end is not None else max(last, node.start)
        c = node.classification
        failure = node.failure
        events.append(
            {
                "ph": "X",
                "name": _name(node),
                "cat": c.label,
                "pid": pid,
                "tid": tid,
                "ts": start,
                "dur": max(0.0, round(_us(end, origin) - start, 3)),
                "args": {
                    "pid": node.pid,
                    "ppid": node.ppid,
                    "argv": list(node.display_argv or ()),
                    "exe": node.exe,
                    "label": c.label,
                    "workflow": c.workflow,
                    "agent": c.agent,
                    "exit_code": node.exit_code,
                    "signal": node.signal,
                    "end": "seen" if node.end is not None else "unknown (still running at session end)",
                    **({"failure": failure} if failure is not None else {}),
                },
            }
        )
        for ts, sig in node.signals:
            events.append(
                {
                    "ph": "i",
                    "s": "t",
                    "name": sig,
                    "cat": "signal",
                    "pid": pid,
                    "tid": tid,
                    "ts": _us(ts, origin),
                    "args": {"signal": sig},
                }
            )
        if failure is not None:
            events.append(
                {
                    "ph": "i",
                    "s": "t",
                    "name": failure,
                    "cat": "failure",
                    "pid": pid,
                    "tid": tid,
                    "ts": _us(end, origin),
                    "args": {"exit_code": node.exit_code, "signal": node.signal},
                }
            )
    return envelope(
        events,
        header,
        argv=" ".join(header.argv) if header is not None else None,
        host=header.host if header is not None else None,
        started=origin,
        status=state.status,
    )


def envelope(events: list[dict[str, Any]], header: SessionStarted | None, **other: Any) -> dict[str, Any]:
    """The Trace Event Format object around `events`; `otherData` names Capsule and the session."""
    session = header.session_id if header is not None else None
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"producer": "capsule", "session": session, **other},
    }
