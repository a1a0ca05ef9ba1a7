// Parse a trace-event JSON file with TracerBench's trace model and print what a viewer would build
// from it: processes, their threads (name, sort index, slices) and flow links, as JSON on stdout.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { buildModel } = require("@tracerbench/trace-model");

const trace = JSON.parse(readFileSync(process.argv[2], "utf8"));
const model = buildModel(trace);
const flows = model.events
  .filter((e) => e.ph === "s" || e.ph === "f")
  .map((e) => ({ ph: e.ph, id: e.traceEvent.id, pid: e.pid, tid: e.tid, ts: e.start }));
const out = {
  processes: model.processes.map((p) => ({
    pid: p.id,
    name: p.name,
    threads: p.threads.map((t) => ({
      tid: t.id,
      name: t.name,
      sortIndex: t.sortIndex,
      slices: t.events.filter((e) => e.ph === "X").map((e) => ({ name: e.name, start: e.start, end: e.end, parent: e.parent ? e.parent.name : null })),
    })),
  })),
  flows,
};
process.stdout.write(JSON.stringify(out));
