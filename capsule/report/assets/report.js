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
var marked = new Set();  // rows of the processes a files or network row points at

var rowOf = new Map(), kids = new Map(), roots = [];
for (var i = 0; i < N; i++) rowOf.set(P[i][K], i);
for (i = 0; i < N; i++) {
  var par = P[i][PAR];
  if (par === null || !rowOf.has(par)) { roots.push(i); continue; }
  var siblings = kids.get(par);
  if (!siblings) { siblings = []; kids.set(par, siblings); }
  siblings.push(i);
}

function base(s) { var j = s.lastIndexOf("/"); return j >= 0 && j < s.length - 1 ? s.slice(j + 1) : s; }
var CTRL = /[\u0000-\u001f\u007f]/g; // eslint-disable-line no-control-regex -- shown, not obeyed
function visible(s) {
  return s.replace(CTRL, function (c) { return c === "\n" ? "\u23ce" : c === "\t" ? "\\t" : "\\x" + ("0" + c.charCodeAt(0).toString(16)).slice(-2); });
}
function quote(a) { // as capsule/report/argv.py's quote_arg: the quotes a person would write
  if (a !== "" && /^[A-Za-z0-9_@%+=:,./-]+$/.test(a)) return a;
  if (a.indexOf("'") >= 0 && !/["$`\\!]/.test(a)) return '"' + a + '"'; // nothing in it expands
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
// How a process ended, as the text report says it: "SIGTERM by kill (4147)" (who sent it), "SIGSEGV
// (core dumped)", "SIGINT (Ctrl-C)", "SIGPIPE (reader closed)", "exit 130 (Ctrl-C)", "exit 1 (an answer)".
function outcome(p) {
  var note = p[NOTE], aside = note && note !== "fork" && note !== "attached" ? " (" + note + ")" : "";
  if (p[SIG] !== null) return p[SIG] + (note && note.indexOf("by ") === 0 ? " " + note : aside);
  if (note && note.indexOf("exec ") === 0) return note;
  if (p[EX] !== null) return "exit " + p[EX] + (note === "answer" ? " (an answer)" : aside);
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
  for (var j = 0; j < N; j++) { var key = mode === "label" ? P[j][LAB] : P[j][WF]; counts.set(key, (counts.get(key) || 0) + 1); }
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
    else if (marked.has(r)) { ctx.fillStyle = "#ddf4ff"; ctx.fillRect(0, y, W, ROW); }
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
  cmd.className = "cmd"; cmd.textContent = p[PID] + " " + shortLine(p[ARGV]) + (p[NOTE] === "fork" || p[NOTE] === "attached" ? " (" + p[NOTE] + ")" : "");
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

// ---- files and network: each row names the processes that did it; a click marks them on the timeline
function cell(tr, text, cls) { var td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.append(td); return td; }
function markRows(ids) {
  marked = new Set();
  ids.forEach(function (id) { var r = rowOf.get(id); if (r !== undefined) marked.add(r); });
  api.marked = Array.from(marked).sort(function (a, b) { return a - b; });
  if (api.marked.length) { select(api.marked[0]); reveal(api.marked[0]); } else redraw();
}
function pidsText(ids, total) {
  var shown = ids.slice(0, 4).map(function (id) { var r = rowOf.get(id); return r === undefined ? "?" : String(P[r][PID]); });
  return shown.join(", ") + (total > shown.length ? " +" + (total - shown.length) : "");
}
function panel(id, head, rows, fill, empty) {
  var box = document.getElementById(id);
  if (!box) return 0;
  box.textContent = "";
  if (!rows.length) { var p = document.createElement("p"); p.className = "dim"; p.textContent = empty; box.append(p); return 0; }
  var table = document.createElement("table"), thead = document.createElement("thead"), tr = document.createElement("tr");
  head.forEach(function (h) { var th = document.createElement("th"); th.textContent = h; tr.append(th); });
  thead.append(tr); table.append(thead);
  var body = document.createElement("tbody");
  rows.forEach(function (row, j) {
    var rowEl = document.createElement("tr");
    rowEl.dataset.index = j;
    rowEl.title = "click: mark its processes on the timeline";
    fill(rowEl, row);
    body.append(rowEl);
  });
  table.append(body);
  table.addEventListener("click", function (e) {
    var hit = e.target.closest("tr[data-index]");
    if (!hit) return;
    var prev = table.querySelector("tr.sel"); if (prev) prev.classList.remove("sel");
    hit.classList.add("sel");
    markRows(rows[+hit.dataset.index][0]);
  });
  box.append(table);
  return rows.length;
}
var FILES = D.files || [], NET = D.network || [];
var CHANGE = ["create", "write", "delete", "rename", "chmod"];
function fileRows(which) {
  return FILES.filter(function (f) {
    var changed = f[2].some(function (op) { return CHANGE.indexOf(op) >= 0; }) && !/^\/(dev|proc|sys)\//.test(f[1]);
    return which === "all" || (which === "changed") === changed;
  }).map(function (f) { return [f[4], f]; });
}
function drawFiles() {
  var which = document.getElementById("files-which").value;
  api.fileRows = panel("files", ["path", "what", "processes"], fileRows(which), function (tr, row) {
    var f = row[1];
    cell(tr, f[1], "path");
    cell(tr, f[2].join(", ") + (f[3] ? " \u2192 " + f[3] : ""), f[2].indexOf("delete") >= 0 ? "del" : "");
    cell(tr, pidsText(f[4], f[5]));
  }, which === "changed" ? "no file was created, written, deleted, renamed or chmod'ed (or files were not traced: --level file|all)" : "none");
}
var filesWhich = document.getElementById("files-which");
if (filesWhich) filesWhich.addEventListener("change", drawFiles);
drawFiles();
api.netRows = panel("network", ["op", "peer", "result", "times", "processes"], NET.map(function (n) { return [n[7], n]; }), function (tr, row) {
  var n = row[1], where = n[2] || "?";
  if (n[3] !== null) where = n[1] === "inet6" ? "[" + where + "]:" + n[3] : where + ":" + n[3];
  if (n[1] === "unix") where = "unix " + (n[2] || "(unnamed)");
  cell(tr, n[0]);
  cell(tr, where, "path");
  cell(tr, n[4] ? "ok" : (n[5] || "failed"), n[4] ? "" : "del");
  cell(tr, n[6].toLocaleString());
  cell(tr, pidsText(n[7], n[7].length));
}, "no socket activity (or the network was not traced: --level net|all)");
api.markRows = markRows;

drawLegend();
resize();
api.ready = true;
})();
