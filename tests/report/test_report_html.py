"""The HTML report as text: self-contained, data embedded once and safely, argv never raw in the markup."""

from __future__ import annotations

import base64
import hashlib
import re

import orjson
from hypothesis import given
from hypothesis import strategies as st

from capsule.fold import fold_session
from capsule.report.html import COLUMNS, render_html, script_json, timeline_data, tree_order
from capsule.stages.assets import html_assets
from tests.fold.builders import Script, packaged_rules
from tests.fold.test_fold_agents import agent_session
from tests.report.test_report_json import mixed_session

NASTY = (
    "</script><script>window.pwned=1</script>",
    "<img src=x onerror=window.pwned=1>",
    "%DATA% %JS% <!-- & \"quoted\" 'single'",
    "line1\nline2\ttab \u2028 héllo 日本",
)


def nasty_session() -> Script:
    s = Script().start("sh", "-c", NASTY[0])
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh", "-c", NASTY[0])
    s.run(2, 1, "/bin/echo", "echo", *NASTY, code=2)
    s.exit(1, 2).end(2)
    return s


def _data(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="capsule-data">(.*?)</script>', page, re.S)
    assert m is not None
    return orjson.loads(m.group(1))


def test_page_is_self_contained() -> None:
    """No URL to fetch: no src/href attributes, no external stylesheet or font, a CSP that forbids fetching."""
    page = render_html(fold_session(mixed_session().events, packaged_rules()), html_assets())
    assert page.startswith("<!doctype html>")
    assert not re.search(r"\s(src|href)=", page)
    assert "@import" not in page
    assert "url(" not in page
    assert "default-src 'none'" in page


def test_csp_pins_the_one_script() -> None:
    """The CSP's script hash is the inline script's: nothing else on the page can run."""
    page = render_html(fold_session(mixed_session().events, packaged_rules()), html_assets())
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in page


def test_untrusted_argv_is_escaped_everywhere() -> None:
    """argv that closes a script, opens a tag or names a placeholder stays text; the data round-trips."""
    page = render_html(fold_session(nasty_session().events, packaged_rules()), html_assets())
    assert "window.pwned" in page  # it is there, as text
    assert "<img" not in page
    assert page.count("</script>") == 2  # the data block's and the script's own
    assert page.count("<script") == 2
    data = _data(page)
    argv = next(p[COLUMNS.index("argv")] for p in data["procs"] if p[COLUMNS.index("pid")] == 2)
    assert argv == ["echo", *NASTY]
    assert data["session"]["argv"] == ["sh", "-c", NASTY[0]]
    assert "&lt;/script&gt;&lt;script&gt;" in page  # the failures table, escaped


@given(st.lists(st.text(), max_size=4))
def test_script_json_round_trips_and_cannot_close_the_element(argv: list[str]) -> None:
    """Any text: the embedded JSON decodes to the same value and holds no `<`."""
    text = script_json({"argv": argv})
    assert "<" not in text
    assert ">" not in text
    assert orjson.loads(text) == {"argv": argv}


def test_rows_in_tree_order_with_depth_and_outcomes() -> None:
    """One row per process, depth-first, children under their parent, failures flagged."""
    state = fold_session(mixed_session().events, packaged_rules())
    data = timeline_data(state)
    rows = [dict(zip(COLUMNS, r, strict=True)) for r in data["procs"]]
    assert [r["pid"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["depth"] for r in rows] == [0, 1, 1, 1, 1]
    by_pid = {r["pid"]: r for r in rows}
    assert by_pid[3]["exit_code"] == 128
    assert by_pid[3]["failed"] == 1
    assert by_pid[4]["signal"] == "SIGKILL"
    assert by_pid[5]["note"] == "exec ENOENT"
    assert by_pid[2]["failed"] == 0
    assert all(0 <= r["start"] <= data["span"] for r in rows)
    assert all(r["end"] is None or r["start"] <= r["end"] <= data["span"] for r in rows)


def test_deep_chain_is_not_recursive() -> None:
    """A chain 3,000 processes deep orders without hitting the recursion limit."""
    s = Script().start("sh")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh")
    for pid in range(2, 3001):
        s.spawn(pid, pid - 1)
    order = tree_order(fold_session(s.events))
    assert [d for _, d in order] == list(range(3000))


def test_summary_tables_and_agent_phases() -> None:
    """Labels, tools, failures and the agent's phases are tables in the markup (no JS needed)."""
    page = render_html(fold_session(agent_session().events, packaged_rules()), html_assets())
    for caption in (
        "Processes by label",
        "Processes by workflow",
        "Tools",
        "Failures (",
        "Agent claude-code",
    ):
        assert caption in page
    assert "<td>explore</td>" in page
    assert "<td>test</td>" in page


def test_empty_session_renders() -> None:
    """No processes and no end: a page all the same."""
    page = render_html(fold_session(Script().start("x").events), html_assets())
    assert _data(page)["procs"] == []
    assert "incomplete" in page


def test_a_run_stopped_with_ctrl_c_says_so_not_by_itself() -> None:
    """The shell that re-raised the terminal's SIGINT on itself is noted `Ctrl-C`, not `by itself`; the
    header names who stopped the run and counts no failure."""
    s = Script().start("sh", "-c", "sleep 100")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh", "-c", "sleep 100")
    s.spawn(2, 1).exec(2, "/bin/sleep", "sleep", "100").signaled(2, "SIGINT", code="SI_KERNEL")
    s.signaled(1, "SIGINT", code="SI_KERNEL").exit(2, signal="SIGINT")
    s.signaled(1, "SIGINT", sender=1, code="SI_TKILL").exit(1, signal="SIGINT").end(None, "SIGINT")
    state = fold_session(s.events, packaged_rules())
    rows = {
        row["pid"]: row for row in (dict(zip(COLUMNS, r, strict=True)) for r in timeline_data(state)["procs"])
    }
    assert [(rows[pid]["note"], rows[pid]["failed"]) for pid in (1, 2)] == [("Ctrl-C", 0), ("Ctrl-C", 0)]
    page = render_html(state, html_assets())
    assert "SIGINT · stopped by the terminal (Ctrl-C)" in page
    assert "2 (0 failed)" in page
