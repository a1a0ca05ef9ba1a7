"""The HTML report: a folded session as one self-contained page (`capsule report --html FILE`).

The page needs no network: CSS and JS are inline, and a Content-Security-Policy forbids every fetch and
every script but the page's own (pinned by its sha256), so an argv that slipped through escaping could
still not run. The data is embedded once as JSON in a non-executed <script> block with `<`, `>` and `&`
written as \\u escapes, so no argv can close it; the page writes argv into the DOM with textContent only.

Big sessions stay usable: the timeline is a <canvas> that draws only the rows in view, the tree renders a
node's children when it is expanded (in chunks), and the summary tables are capped. The module is long
because the page's CSS and JS live here as constants; the Python part is short.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Sequence
from typing import Any

import orjson

from capsule.fold.agents import agent_runs
from capsule.fold.process_tree import ProcessNode
from capsule.fold.session import SessionState, paused_gc
from capsule.report.json_report import sorted_nodes, tool_stats
from capsule.report.text import format_duration, format_time, outcome_parts, short_argv

TOP_FAILURES = 200
TOP_TOOLS = 50
TOP_PHASES = 200
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
    "note",  # "exec ENOENT", "fork", "core dumped" or null
)


def _note(node: ProcessNode) -> str | None:
    if node.exec_failed:
        return f"exec {node.execs[-1].errno or 'failed'}"
    if node.core_dumped:
        return "core dumped"
    if node.argv is None and not node.execs:
        return "fork"
    return None


def tree_order(state: SessionState) -> list[tuple[ProcessNode, int]]:
    """Every process with its depth, depth-first from the roots, siblings by start.

    A node whose parent is missing is a root. Iterative: a fork bomb nests thousands deep.
    """
    nodes = state.tree.nodes
    roots = sorted((n for n in nodes if n.parent is None), key=lambda n: (n.start, n.key))
    out: list[tuple[ProcessNode, int]] = []
    stack: list[tuple[ProcessNode, int]] = [(n, 0) for n in reversed(roots)]
    while stack:
        node, depth = stack.pop()
        out.append((node, depth))
        children = sorted((nodes[k] for k in node.children), key=lambda n: (n.start, n.key))
        stack.extend((c, depth + 1) for c in reversed(children))
    return out


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
                _note(node),
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
    }


def script_json(obj: Any) -> str:
    """JSON that is safe inside a <script> element: nothing in it can end the element or open a comment."""
    text = orjson.dumps(obj).decode()
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(caption: str, head: Sequence[str], rows: Sequence[Sequence[object]], note: str = "") -> str:
    if not rows:
        return f'<section class="tbl"><h3>{_e(caption)}</h3><p class="dim">none</p></section>'
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    extra = f'<p class="dim">{_e(note)}</p>' if note else ""
    return (
        f'<section class="tbl"><h3>{_e(caption)}</h3>'
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
    parts = [
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
    tools = tool_stats(nodes)
    parts.append(
        _table(
            "Tools",
            ("tool", "runs", "total time", "failed"),
            [
                (t["name"], f"{t['count']:,}", format_duration(t["total_s"]), t["failed"])
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
    if state.signal is not None:
        status += f" · {state.signal}"
    elif state.exit_code is not None:
        status += f" · exit {state.exit_code}"
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


def render_html(state: SessionState, *, warnings: Sequence[str] = ()) -> str:
    """The whole page as one string. `warnings` are the reader's (torn tail, skipped lines)."""
    with paused_gc():
        nodes = sorted_nodes(state)
        data = timeline_data(state)
        h = state.header
        title = f"capsule · {h.session_id}" if h is not None else "capsule report"
        parts = {
            "TITLE": _e(title),
            "CSP": CSP,
            "CSS": CSS,
            "HEADER": _header(state, nodes, [*warnings, *state.warnings]),
            "SUMMARY": _summary(state, nodes, data["session"]["started"]),
            "JS": JS,
            "DATA": script_json(data),
        }
        # One pass over the template: text put in (argv among it) is never scanned for placeholders.
        return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], PAGE)


CSS = """
:root{--fg:#1f2328;--dim:#6e7781;--bg:#fff;--line:#d0d7de;--fail:#cf222e;--sel:#fff5b1}
*{box-sizing:border-box}
body{font:13px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);margin:0;padding:16px 20px}
h1{font-size:18px;margin:0 0 8px}h2{font-size:15px;margin:22px 0 8px}h3{font-size:13px;margin:0 0 6px}
.dim{color:var(--dim)}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0}
dl.meta dt{color:var(--dim)}dl.meta dd{margin:0;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;white-space:pre-wrap;word-break:break-all}
ul.warnings{color:#9a6700;margin:8px 0 0;padding-left:18px}
.controls{display:flex;gap:14px;align-items:center;flex-wrap:wrap;margin-bottom:6px}
.legend{display:flex;gap:10px;flex-wrap:wrap}.legend span{display:inline-flex;align-items:center;gap:4px}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;flex:none}
#overview{display:block;width:100%;height:56px;border:1px solid var(--line);border-bottom:0;cursor:pointer}
#tl-wrap{position:relative;border:1px solid var(--line);min-height:120px}
#tl{position:absolute;left:0;top:0}
#tl-scroll{position:absolute;inset:0;overflow-y:auto;overflow-x:hidden}
#tl-space{width:1px}
#tip{position:fixed;z-index:10;display:none;max-width:560px;background:#1f2328;color:#fff;padding:6px 8px;border-radius:4px;font-size:12px;pointer-events:none;box-shadow:0 2px 8px #0004}
#tip .argv{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;white-space:pre-wrap;word-break:break-all;margin-bottom:3px}
#tip .fail{color:#ff8182;font-weight:600}
#tree{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;border:1px solid var(--line);padding:6px;max-height:70vh;overflow:auto}
#tree ul{list-style:none;margin:0;padding-left:16px}#tree>ul{padding-left:0}
#tree .node{display:flex;gap:6px;align-items:center;white-space:nowrap;cursor:default;padding:0 2px}
#tree .node:hover{background:#f6f8fa}#tree .node.sel{background:var(--sel)}
#tree .tog{width:12px;text-align:center;cursor:pointer;user-select:none;color:var(--dim)}
#tree .failed .cmd{color:var(--fail)}#tree .out{color:var(--dim)}#tree .failed .out{color:var(--fail);font-weight:600}
#tree button{font:inherit;font-size:11px;margin:2px 0 2px 18px}
.tables{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:16px}
.tbl table{border-collapse:collapse;width:100%}
.tbl th,.tbl td{border-bottom:1px solid var(--line);padding:2px 8px 2px 0;text-align:left;vertical-align:top}
.tbl td{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;overflow-wrap:break-word}
""".strip()

JS = r"""
(function () {
"use strict";
var D = JSON.parse(document.getElementById("capsule-data").textContent);
var P = D.procs, N = P.length, SPAN = Math.max(D.span, 1e-6);
var K = 0, PAR = 1, PID = 2, DEP = 3, ST = 4, EN = 5, EX = 6, SIG = 7, LAB = 8, WF = 9, FAIL = 10, ARGV = 11, NOTE = 12;
var LABELS = {agent: "#a347d1", tool: "#2b8fd6", system: "#9aa3ad", unknown: "#d9a400"};
var FLOWS = {explore: "#4e79a7", edit: "#f28e2b", build: "#76b7b2", test: "#59a14f", vcs: "#c9a227",
             install: "#b07aa1", execute: "#ff9da7"};
var FAILC = "#cf222e";
var api = window.capsuleReport = {rows: N, drawnBars: 0, frames: 0, overviewBars: 0, expanded: 0};

var rowOf = new Map(), kids = new Map(), roots = [];
for (var i = 0; i < N; i++) rowOf.set(P[i][K], i);
for (i = 0; i < N; i++) {
  var par = P[i][PAR];
  if (par === null || !rowOf.has(par)) { roots.push(i); continue; }
  var list = kids.get(par);
  if (!list) { list = []; kids.set(par, list); }
  list.push(i);
}

function base(s) { var j = s.lastIndexOf("/"); return j >= 0 && j < s.length - 1 ? s.slice(j + 1) : s; }
var CTRL = /[\u0000-\u001f\u007f]/g;
function visible(s) {
  return s.replace(CTRL, function (c) { return c === "\n" ? "\u23ce" : c === "\t" ? "\\t" : "\\x" + ("0" + c.charCodeAt(0).toString(16)).slice(-2); });
}
function quote(a) {
  if (a !== "" && /^[A-Za-z0-9_@%+=:,.\/-]+$/.test(a)) return a;
  return "'" + a.replace(/'/g, "'\"'\"'") + "'";
}
function shellLine(argv) { return argv ? argv.map(quote).join(" ") : "?"; }
function shortLine(argv) {
  if (!argv || !argv.length) return "?";
  return visible([base(argv[0]) || argv[0]].concat(argv.slice(1).map(quote)).join(" "));
}
function dur(s) {
  if (s === null || s === undefined) return "?";
  if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 1 : 0) + " ms";
  if (s < 60) return s.toFixed(2) + " s";
  var m = Math.floor(s / 60), h = Math.floor(m / 60);
  return h ? h + "h " + ("0" + (m % 60)).slice(-2) + "m" : m + "m " + ("0" + Math.floor(s % 60)).slice(-2) + "s";
}
function outcome(p) {
  if (p[SIG] !== null) return p[SIG] + (p[NOTE] === "core dumped" ? " (core dumped)" : "");
  if (p[NOTE] && p[NOTE].indexOf("exec ") === 0) return p[NOTE];
  if (p[EX] !== null) return "exit " + p[EX];
  return p[EN] === null ? "no exit seen" : "exited";
}
function hash(s) { var x = 0; for (var j = 0; j < s.length; j++) x = (x * 31 + s.charCodeAt(j)) | 0; return Math.abs(x); }
var mode = "label";
function colorOf(p) {
  if (mode === "label") return LABELS[p[LAB]] || "#888";
  var w = p[WF];
  if (w === null) return "#d5d9de";
  return FLOWS[w] || "hsl(" + (hash(w) % 360) + ",55%,55%)";
}

// ---- legend and colour toggle
var legend = document.getElementById("legend");
function drawLegend() {
  var counts = new Map();
  for (var j = 0; j < N; j++) { var v = mode === "label" ? P[j][LAB] : P[j][WF]; counts.set(v, (counts.get(v) || 0) + 1); }
  legend.textContent = "";
  counts.forEach(function (c, v) {
    var probe = []; probe[LAB] = v; probe[WF] = v;
    var item = document.createElement("span"), sw = document.createElement("i");
    sw.className = "sw"; sw.style.background = colorOf(probe);
    item.append(sw, document.createTextNode((v === null ? "none" : v) + " " + c.toLocaleString()));
    legend.append(item);
  });
  var f = document.createElement("span"), fs = document.createElement("i");
  fs.className = "sw"; fs.style.background = "#fff"; fs.style.outline = "2px solid " + FAILC;
  f.append(fs, document.createTextNode("failed"));
  legend.append(f);
}
document.getElementById("color-by").addEventListener("change", function (e) {
  mode = e.target.value; drawLegend(); drawOverview(); draw();
});

// ---- the timeline: a canvas drawing only the rows in view
var ROW = 16, HEAD = 22, GUT = 300;
var wrap = document.getElementById("tl-wrap"), cv = document.getElementById("tl");
var sc = document.getElementById("tl-scroll"), space = document.getElementById("tl-space");
var ctx = cv.getContext("2d"), W = 0, H = 0, v0 = 0, v1 = SPAN, sel = -1, hover = -1;
space.style.height = (HEAD + N * ROW) + "px";
wrap.style.height = Math.round(Math.min(HEAD + N * ROW + 4, Math.max(260, window.innerHeight * 0.62))) + "px";
function tx(t) { return GUT + (t - v0) / (v1 - v0) * (W - GUT - 10); }
function endOf(p) { return p[EN] === null ? SPAN : p[EN]; }
function niceStep(raw) {
  var p = Math.pow(10, Math.floor(Math.log10(raw))), m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}
function draw() {
  var top = sc.scrollTop, drawn = 0;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "11px ui-monospace,SFMono-Regular,Menlo,monospace";
  ctx.textBaseline = "middle";
  var first = Math.max(0, Math.floor(top / ROW)), last = Math.min(N, Math.ceil((top + H - HEAD) / ROW) + 1);
  for (var r = first; r < last; r++) {
    var p = P[r], y = HEAD + r * ROW - top;
    if (r === sel || r === hover) { ctx.fillStyle = r === sel ? "#fff5b1" : "#eef2f6"; ctx.fillRect(0, y, W, ROW); }
    else if (r % 2) { ctx.fillStyle = "#f8f9fa"; ctx.fillRect(0, y, W, ROW); }
    ctx.save(); ctx.beginPath(); ctx.rect(0, y, GUT - 6, ROW); ctx.clip();
    ctx.fillStyle = p[FAIL] ? FAILC : "#1f2328";
    ctx.fillText(shortLine(p[ARGV]), 6 + Math.min(p[DEP], 24) * 8, y + ROW / 2);
    ctx.restore();
    var x0 = tx(p[ST]), x1 = Math.max(tx(endOf(p)), x0 + 2);
    if (x1 < GUT || x0 > W) continue;
    x0 = Math.max(x0, GUT); x1 = Math.min(x1, W - 2);
    ctx.globalAlpha = p[EN] === null ? 0.45 : 1;
    ctx.fillStyle = colorOf(p);
    ctx.fillRect(x0, y + 3, x1 - x0, ROW - 6);
    ctx.globalAlpha = 1;
    if (p[FAIL]) {
      ctx.strokeStyle = FAILC; ctx.lineWidth = 1.5;
      ctx.strokeRect(x0 + 0.75, y + 3.75, Math.max(x1 - x0 - 1.5, 0.5), ROW - 7.5);
      ctx.fillStyle = FAILC; ctx.beginPath();
      ctx.moveTo(x1 + 1, y + 2); ctx.lineTo(x1 + 7, y + 2); ctx.lineTo(x1 + 4, y + 8); ctx.fill();
    }
    drawn++;
  }
  // the axis last, over rows scrolled under it
  ctx.fillStyle = "#f6f8fa"; ctx.fillRect(0, 0, W, HEAD);
  ctx.fillStyle = "#d0d7de"; ctx.fillRect(0, HEAD - 1, W, 1); ctx.fillRect(GUT - 3, 0, 1, H);
  ctx.fillStyle = "#6e7781"; ctx.font = "11px system-ui,sans-serif";
  ctx.fillText("process (tree order) \u2014 " + N.toLocaleString() + " rows", 6, HEAD / 2);
  var step = niceStep((v1 - v0) / Math.max(1, (W - GUT) / 90));
  for (var t = Math.ceil(v0 / step) * step; t <= v1; t += step) {
    var x = tx(t); if (x < GUT) continue;
    ctx.fillRect(x, HEAD - 6, 1, 5); ctx.fillText("+" + dur(t), x + 3, HEAD / 2);
  }
  api.drawnBars = drawn; api.frames++; api.firstRow = first;
}
function resize() {
  var r = window.devicePixelRatio || 1;
  W = sc.clientWidth; H = sc.clientHeight;
  cv.width = Math.round(W * r); cv.height = Math.round(H * r);
  cv.style.width = W + "px"; cv.style.height = H + "px";
  ctx.setTransform(r, 0, 0, r, 0, 0);
  draw(); drawOverview();
}
var pending = false;
function redraw() { if (!pending) { pending = true; requestAnimationFrame(function () { pending = false; draw(); }); } }
sc.addEventListener("scroll", redraw);
window.addEventListener("resize", resize);

// ctrl/shift + wheel zooms time around the pointer; a double click shows the whole span again
sc.addEventListener("wheel", function (e) {
  if (!(e.ctrlKey || e.shiftKey)) return;
  e.preventDefault();
  var rect = sc.getBoundingClientRect(), px = e.clientX - rect.left;
  if (px < GUT) return;
  var at = v0 + (px - GUT) / (W - GUT - 10) * (v1 - v0), f = Math.exp((e.deltaY || e.deltaX) * 0.002);
  var len = Math.min(SPAN, Math.max(SPAN * 1e-6, (v1 - v0) * f));
  v0 = Math.max(0, Math.min(SPAN - len, at - (at - v0) * len / (v1 - v0))); v1 = v0 + len;
  redraw();
}, {passive: false});
sc.addEventListener("dblclick", function () { v0 = 0; v1 = SPAN; redraw(); });

// ---- hover: the tooltip, written with textContent only (argv is untrusted)
var tip = document.getElementById("tip");
function rowAt(clientY) {
  var rect = sc.getBoundingClientRect(), y = clientY - rect.top;
  if (y < HEAD) return -1;
  var r = Math.floor((y - HEAD + sc.scrollTop) / ROW);
  return r >= 0 && r < N ? r : -1;
}
function line(cls, text) { var d = document.createElement("div"); if (cls) d.className = cls; d.textContent = text; return d; }
function showTip(r, cx, cy) {
  var p = P[r], e = p[EN];
  tip.textContent = "";
  tip.append(
    line("argv", shellLine(p[ARGV])),
    line(p[FAIL] ? "fail" : "", outcome(p) + (p[NOTE] === "fork" ? " \u00b7 a fork that never exec'd" : "")),
    line("", "duration " + (e === null ? "? (still running at the end)" : dur(e - p[ST])) + " \u00b7 start +" + dur(p[ST])),
    line("", "pid " + p[PID] + " \u00b7 " + p[LAB] + (p[WF] ? " \u00b7 " + p[WF] : "") + " \u00b7 depth " + p[DEP])
  );
  tip.style.display = "block";
  var w = tip.offsetWidth, h = tip.offsetHeight;
  tip.style.left = Math.min(cx + 14, window.innerWidth - w - 8) + "px";
  tip.style.top = (cy + 16 + h > window.innerHeight ? cy - h - 10 : cy + 16) + "px";
  api.tooltip = tip.textContent;
}
sc.addEventListener("mousemove", function (e) {
  var r = rowAt(e.clientY);
  if (r !== hover) { hover = r; redraw(); }
  if (r < 0) { tip.style.display = "none"; return; }
  showTip(r, e.clientX, e.clientY);
});
sc.addEventListener("mouseleave", function () { tip.style.display = "none"; hover = -1; redraw(); });
sc.addEventListener("click", function (e) { var r = rowAt(e.clientY); if (r >= 0) { select(r); reveal(r); } });

// ---- overview: every process, squeezed into one strip; a click scrolls the timeline there
var ov = document.getElementById("overview"), octx = ov.getContext("2d");
function drawOverview() {
  var r = window.devicePixelRatio || 1, w = ov.clientWidth, h = ov.clientHeight, n = 0;
  ov.width = Math.round(w * r); ov.height = Math.round(h * r); octx.setTransform(r, 0, 0, r, 0, 0);
  octx.clearRect(0, 0, w, h);
  var rh = Math.max(h / Math.max(N, 1), 0.5);
  for (var pass = 0; pass < 2; pass++) {
    for (var j = 0; j < N; j++) {
      var p = P[j];
      if (pass === 1 && !p[FAIL]) continue;
      octx.fillStyle = pass ? FAILC : colorOf(p);
      var x0 = p[ST] / SPAN * w, x1 = Math.max(endOf(p) / SPAN * w, x0 + 1);
      octx.fillRect(x0, j / N * h, x1 - x0, Math.max(rh, pass ? 1.5 : 0.5));
      n++;
    }
  }
  api.overviewBars = n;
}
ov.addEventListener("click", function (e) {
  var rect = ov.getBoundingClientRect();
  sc.scrollTop = Math.max(0, (e.clientY - rect.top) / rect.height * N * ROW - sc.clientHeight / 2);
});

function select(r) {
  sel = r;
  var y = r * ROW;
  if (y < sc.scrollTop || y > sc.scrollTop + sc.clientHeight - HEAD - ROW) sc.scrollTop = Math.max(0, y - (sc.clientHeight - HEAD) / 2);
  redraw();
}

// ---- the tree: children rendered when a node is first expanded, CHUNK at a time
var CHUNK = 200, treeRoot = document.getElementById("tree"), selected = null;
function nodeEl(r) {
  var p = P[r], li = document.createElement("li"), head = document.createElement("div");
  li.dataset.key = p[K]; li.dataset.row = r;
  head.className = "node" + (p[FAIL] ? " failed" : "");
  var tog = document.createElement("span"), sw = document.createElement("i");
  var cmd = document.createElement("span"), out = document.createElement("span");
  var ch = kids.get(p[K]);
  tog.className = "tog"; tog.textContent = ch ? "\u25b8" : "\u00b7";
  if (ch) tog.title = ch.length.toLocaleString() + " children";
  sw.className = "sw"; sw.style.background = LABELS[p[LAB]] || "#888";
  cmd.className = "cmd"; cmd.textContent = p[PID] + " " + shortLine(p[ARGV]) + (p[NOTE] === "fork" ? " (fork)" : "");
  out.className = "out";
  out.textContent = (p[WF] ? p[LAB] + "\u00b7" + p[WF] : p[LAB]) + "  " + (p[EN] === null ? "?" : dur(p[EN] - p[ST])) + "  " + outcome(p) +
    (ch ? "  [" + ch.length.toLocaleString() + "]" : "");
  head.append(tog, sw, cmd, out);
  li.append(head);
  return li;
}
function more(ul, list, from, upto) {
  var old = ul.lastElementChild;
  if (old && old.classList.contains("more")) old.remove();
  var end = Math.min(list.length, Math.max(upto, from + CHUNK));
  var frag = document.createDocumentFragment();
  for (var j = from; j < end; j++) frag.append(nodeEl(list[j]));
  ul.append(frag);
  ul.dataset.shown = end;
  if (end < list.length) {
    var li = document.createElement("li"), b = document.createElement("button");
    li.className = "more"; b.textContent = "show " + Math.min(CHUNK, list.length - end) + " more of " + (list.length - end).toLocaleString();
    li.append(b); ul.append(li);
  }
}
function expand(li, open) {
  var r = +li.dataset.row, list = kids.get(P[r][K]);
  if (!list) return;
  var ul = li.querySelector(":scope > ul");
  if (open === undefined) open = !ul || ul.hidden;
  if (open && !ul) { ul = document.createElement("ul"); li.append(ul); more(ul, list, 0, CHUNK); api.expanded++; }
  if (ul) ul.hidden = !open;
  li.querySelector(":scope > .node > .tog").textContent = open ? "\u25be" : "\u25b8";
}
function elOf(r) { return treeRoot.querySelector('li[data-row="' + r + '"]'); }
function reveal(r) {
  var chain = [], k = P[r][PAR];
  while (k !== null && rowOf.has(k)) { chain.unshift(rowOf.get(k)); k = P[rowOf.get(k)][PAR]; }
  chain.push(r);
  for (var j = 0; j < chain.length - 1; j++) {
    var li = elOf(chain[j]); if (!li) break;
    expand(li, true);
    var ul = li.querySelector(":scope > ul"), list = kids.get(P[chain[j]][K]), at = list.indexOf(chain[j + 1]);
    if (at >= +ul.dataset.shown) more(ul, list, +ul.dataset.shown, at + 1);
  }
  var target = elOf(r);
  if (target) {
    if (selected) selected.classList.remove("sel");
    selected = target.querySelector(":scope > .node"); selected.classList.add("sel");
    var box = treeRoot.getBoundingClientRect(), tb = selected.getBoundingClientRect();
    if (tb.top < box.top || tb.bottom > box.bottom) treeRoot.scrollTop += tb.top - box.top - box.height / 2;
  }
}
treeRoot.addEventListener("click", function (e) {
  var t = e.target;
  if (t.tagName === "BUTTON") {
    var ul = t.closest("ul"), li = ul.parentElement, list = kids.get(P[+li.dataset.row][K]);
    more(ul, list, +ul.dataset.shown, 0); return;
  }
  var li2 = t.closest("li[data-row]"); if (!li2) return;
  if (t.classList.contains("tog")) { expand(li2); return; }
  if (selected) selected.classList.remove("sel");
  selected = li2.querySelector(":scope > .node"); selected.classList.add("sel");
  select(+li2.dataset.row);
});
(function () {
  var ul = document.createElement("ul");
  treeRoot.append(ul);
  var rootsAt = roots.slice();
  kids.set("__roots__", rootsAt);
  more(ul, rootsAt, 0, CHUNK);
  ul.querySelectorAll(":scope > li").forEach(function (li) { if (li.dataset.row !== undefined) expand(li, true); });
})();

// for tests and scripts: where a process's bar is on screen, and a way to find its tree node
api.barPoint = function (key) {
  var r = rowOf.get(key); if (r === undefined) return null;
  select(r); draw();
  var rect = sc.getBoundingClientRect(), p = P[r];
  var x = (Math.max(tx(p[ST]), GUT) + Math.min(Math.max(tx(endOf(p)), tx(p[ST]) + 2), W - 2)) / 2;
  return {x: rect.left + x, y: rect.top + HEAD + r * ROW - sc.scrollTop + ROW / 2, row: r};
};
api.reveal = function (key) { var r = rowOf.get(key); if (r !== undefined) reveal(r); };

drawLegend();
resize();
api.ready = true;
})();
""".strip()

CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{base64.b64encode(hashlib.sha256(JS.encode()).digest()).decode()}'"
)

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="%CSP%">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="capsule">
<title>%TITLE%</title>
<style>%CSS%</style>
</head>
<body>
<h1>%TITLE%</h1>
%HEADER%
<h2>Timeline</h2>
<div class="controls">
<label>colour by <select id="color-by"><option value="label">label</option><option value="workflow">workflow</option></select></label>
<span class="legend" id="legend"></span>
<span class="dim">hover a row for argv, exit and duration · click to find it in the tree · ctrl+wheel zooms time, double click resets</span>
</div>
<canvas id="overview" title="every process; click to scroll there"></canvas>
<div id="tl-wrap"><canvas id="tl"></canvas><div id="tl-scroll"><div id="tl-space"></div></div></div>
<div id="tip"></div>
<h2>Process tree</h2>
<div id="tree"></div>
<h2>Summary</h2>
<div class="tables">%SUMMARY%</div>
<script type="application/json" id="capsule-data">%DATA%</script>
<script>%JS%</script>
<noscript><p>The timeline and the tree need JavaScript; the tables above do not.</p></noscript>
</body>
</html>
"""
