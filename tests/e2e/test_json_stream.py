"""`capsule report --json` streams the processes array: the bytes must equal dumping the whole dict."""

from __future__ import annotations

import io
import sys

import pytest

import capsule.cli.base as cli
from capsule.report import report_parts
from tests.golden import discover, fold, load_events, packaged_rules, render_json


class _Stdout:
    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("session", discover(), ids=lambda p: p.name)
def test_streamed_json_equals_whole_dict(session, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The streamed report is byte for byte the report dict dumped at once."""
    state = fold(load_events(session), packaged_rules())
    data, processes = report_parts(state)
    out = _Stdout()
    monkeypatch.setattr(sys, "stdout", out)
    cli._print_json_streaming(data, "processes", processes)
    expected = render_json(state)
    assert out.buffer.getvalue() == (expected.encode() if isinstance(expected, str) else expected)
