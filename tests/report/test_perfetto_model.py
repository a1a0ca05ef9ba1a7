"""The Perfetto export read by a maintained trace parser (TracerBench's trace model, from npm): the
whole process tree is one trace process, one track per process in depth-first order, indented by depth,
named without a doubled pid, and each parent linked to its children by a flow."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from capsule.report.perfetto import INDENT, trace_events
from tests.fold.builders import packaged_rules
from tests.golden import discover, fold, load_events

JS = Path(__file__).resolve().parents[1] / "js"


def parse_with_trace_model(trace: dict, tmp_path: Path) -> dict:
    node = shutil.which("node")
    assert node, "node is needed: ./quickstart test installs it"
    assert (JS / "node_modules" / "@tracerbench" / "trace-model").is_dir(), (
        "run `just test` (it runs npm ci in tests/js)"
    )
    path = tmp_path / "trace.json"
    path.write_bytes(orjson.dumps(trace))
    done = subprocess.run(
        [node, str(JS / "trace_model.mjs"), str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    "session",
    [s for s in discover() if s.name in {"forks", "orphans", "parallel", "exec-chain", "killed"}],
    ids=lambda p: p.name,
)
def test_the_tree_is_one_view(session: Path, tmp_path: Path) -> None:
    """One process; its threads are the processes, depth first; flows go parent -> child."""
    state = fold(load_events(session), packaged_rules())
    model = parse_with_trace_model(trace_events(state), tmp_path)
    (process,) = model["processes"]
    threads = sorted(process["threads"], key=lambda t: t["sortIndex"])
    nodes = state.tree.nodes
    assert len(threads) == len(nodes)
    by_tid = {t["tid"]: t for t in threads}
    depth: dict[int, int] = {}
    slices = {}
    for t in threads:
        (only,) = t["slices"]  # one slice per track: the process's life
        slices[t["tid"]] = only
    order = [t["tid"] for t in threads]
    for t in threads:
        name = t["name"]
        level = (len(name) - len(name.lstrip("\u00a0"))) // len(INDENT)
        text = name.lstrip("\u00a0")
        assert not text.startswith(f"{t['tid']} "), f"a doubled pid in {name!r}"
        depth[t["tid"]] = level
    flows = model["flows"]
    starts = {f["id"]: f for f in flows if f["ph"] == "s"}
    ends = {f["id"]: f for f in flows if f["ph"] == "f"}
    assert starts.keys() == ends.keys()
    assert len(starts) == sum(n.parent is not None for n in nodes)
    for fid, begin in starts.items():
        parent, child = begin["tid"], ends[fid]["tid"]
        assert order.index(parent) < order.index(child), "parents before children"
        assert depth[child] == depth[parent] + 1
        assert begin["ts"] == ends[fid]["ts"] == slices[child]["start"]
        assert slices[parent]["start"] <= begin["ts"] <= slices[parent]["end"]
    assert depth[order[0]] == 0
    assert set(by_tid) == set(order)
