"""Smoke test of the benchmark code: the quick mode of the cheaper benchmarks runs and yields figures.

No timing is asserted here (the machine is shared); `just bench` is where the figures are measured.
"""

from __future__ import annotations

import math

import pytest

from tests.bench import activity, cli, env, exports, fork, guard, html, mcp, report, rss, startup


@pytest.mark.strace
@pytest.mark.parametrize(
    "bench",
    [startup, cli, fork, report, activity, exports, env, html, mcp, guard, rss],
    ids=lambda m: m.__name__.rsplit(".", 1)[-1],
)
def test_quick_benchmark_yields_figures(bench) -> None:
    result = bench.run(quick=True)
    assert result["rows"]
    for r in result["rows"]:
        assert isinstance(r["figure"], str)
        assert math.isfinite(r["value"])
        assert r["met"] in (None, True, False)


def test_report_synthetic_session_is_readable(tmp_path) -> None:
    from capsule.codec import LineDecoder

    session, lines = report.make_session(tmp_path, shells=2, leaves=3)
    decoder = LineDecoder()
    events = list(decoder.feed((session / "events.jsonl").read_bytes()))
    assert len(events) == lines
    assert [seq for seq, _ in events] == list(range(lines))
    assert not decoder.bad_lines
