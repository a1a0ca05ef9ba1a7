"""`capsule report --html` opened in a real browser: headless Chromium (Debian's) driven by selenium.

The page exposes `window.capsuleReport` (rows, bars drawn in the last frame, where a bar is on screen):
the tests read it, read canvas pixels, click a tree node and hover a bar with a real pointer, and save
screenshots. No timing is asserted (the machine is shared).
"""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bench.report import make_session
from tests.conftest import CapsuleRunner, report_json

pytestmark = pytest.mark.strace

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1100",
)

NASTY = "</script><img src=x onerror=window.pwned=1> \"q\" 'héllo' 日本"
SCRIPT = (
    "ls / >/dev/null; "
    f"/bin/echo '{NASTY}\nsecond line' >/dev/null; "
    'sh -c "cat /etc/hostname >/dev/null; ls /nonexistent-dir 2>/dev/null; exit 3"; '
    "sh -c \"echo 'quoted' >/dev/null\"; "
    "nosuchcommand-xyz 2>/dev/null; "
    "sleep 30 & kill $!; wait; "
    "yes | head -1 >/dev/null; "
    "true"
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for the module, with a fresh profile directory."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium, "install Debian's chromium (just setup does)"
    assert driver_path, "install Debian's chromium-driver (just setup does)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def _open(browser: Any, page: Path, timeout: float = 120) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page.as_uri())
    WebDriverWait(browser, timeout).until(
        lambda d: d.execute_script("return !!(window.capsuleReport || {}).ready")
    )


def _api(browser: Any) -> dict[str, Any]:
    return browser.execute_script(
        "var a = window.capsuleReport; return {rows: a.rows, drawnBars: a.drawnBars, frames: a.frames,"
        " overviewBars: a.overviewBars, firstRow: a.firstRow, expanded: a.expanded};"
    )


def _hover(browser: Any, key: int) -> str:
    """Move the real pointer onto a process's bar; returns the tooltip's text."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    point = browser.execute_script("return window.capsuleReport.barPoint(arguments[0])", key)
    assert point is not None
    actions = ActionChains(browser)
    actions.w3c_actions.pointer_action.move_to_location(int(point["x"]), int(point["y"]))
    actions.perform()
    tip = browser.find_element("id", "tip")
    WebDriverWait(browser, 10).until(lambda _d: tip.is_displayed())
    return str(tip.text)


def _pixel(browser: Any, key: int) -> list[int]:
    """The canvas pixel in the middle of a process's bar, as RGBA."""
    return browser.execute_script(
        """
        var p = window.capsuleReport.barPoint(arguments[0]), cv = document.getElementById('tl');
        var r = cv.getBoundingClientRect(), k = cv.width / r.width;
        var d = cv.getContext('2d').getImageData(Math.round((p.x - r.left) * k), Math.round((p.y - r.top) * k), 1, 1).data;
        return [d[0], d[1], d[2], d[3]];
        """,
        key,
    )


@pytest.mark.browser
def test_recorded_session_in_chromium(capsule: CapsuleRunner, tmp_path: Path, browser: Any) -> None:
    """A real session: the timeline draws every bar, a tree node expands, hovering a bar shows its argv."""
    from selenium.webdriver.common.by import By

    capsule("run", "--", "sh", "-c", SCRIPT)
    report = report_json(capsule)
    processes = report["processes"]
    page = tmp_path / "report.html"
    done = capsule("report", "latest", "--html", str(page))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(page)
    assert stat.S_IMODE(page.stat().st_mode) == 0o600

    _open(browser, page)
    api = _api(browser)
    assert api["rows"] == len(processes)
    assert api["drawnBars"] == len(processes)  # few rows: all in view
    assert api["overviewBars"] >= len(processes)

    # the root's bar is drawn in its label's colour (the canvas really has pixels)
    root = next(p for p in processes if p["parent"] is None)
    assert _pixel(browser, root["id"])[:3] != [255, 255, 255]

    # the inner `sh -c "…; exit 3"`: failed, with children that are rendered only on expand
    inner = next(
        p for p in processes if p["argv"] and "exit 3" in " ".join(p["argv"]) and p["parent"] is not None
    )
    assert inner["exit_code"] == 3
    children = [p for p in processes if p["parent"] == inner["id"]]
    assert children
    assert not browser.find_elements(By.CSS_SELECTOR, f'li[data-key="{children[0]["id"]}"]')
    node = browser.find_element(By.CSS_SELECTOR, f'li[data-key="{inner["id"]}"]')
    assert "exit 3" in node.text
    node.find_element(By.CSS_SELECTOR, ":scope > .node > .tog").click()
    child = browser.find_element(By.CSS_SELECTOR, f'li[data-key="{children[0]["id"]}"]')
    assert child.is_displayed()
    assert "cat" in browser.find_element(By.CSS_SELECTOR, f'li[data-key="{inner["id"]}"] > ul').text
    node.find_element(By.CSS_SELECTOR, ":scope > .node > .tog").click()  # and collapses again
    assert not child.is_displayed()

    # argv in the quotes a person would write, as the text report does (was `'echo '"'"'quoted'"'"'…'`)
    quoted = next(p for p in processes if p["argv"] == ["sh", "-c", "echo 'quoted' >/dev/null"])
    shown = browser.find_element(By.CSS_SELECTOR, f'li[data-key="{quoted["id"]}"]').text
    assert "sh -c \"echo 'quoted' >/dev/null\"" in shown, shown

    # hover: argv (quotes, a newline, non-ASCII, markup — all as text), exit and duration
    tip = _hover(browser, inner["id"])
    assert "exit 3" in tip
    assert "duration" in tip
    assert "cat /etc/hostname" in tip
    echo = next(p for p in processes if p["argv"] and p["argv"][0] == "/bin/echo")
    tip = _hover(browser, echo["id"])
    assert "</script><img src=x onerror=window.pwned=1>" in tip
    assert "héllo" in tip
    assert "日本" in tip
    assert "second line" in tip
    assert browser.execute_script("return window.pwned === undefined && document.images.length === 0")
    # a process another killed: who sent the signal (the shell's `kill`, a builtin: the shell itself)
    killed = next(p for p in processes if p["signal"] == "SIGTERM")  # sleep, or its fork before the exec
    assert killed["killed_by"] == root["pid"], killed
    assert f"SIGTERM by sh ({root['pid']})" in _hover(browser, killed["id"])
    # a pipeline's writer its reader left: no failure, said as the text report says it (was: `SIGPIPE`)
    piped = next(p for p in processes if p["argv"] == ["yes"])
    assert (piped["signal"], piped["failure"]) == ("SIGPIPE", False)
    assert (
        "SIGPIPE (reader closed)"
        in browser.find_element(By.CSS_SELECTOR, f'li[data-key="{piped["id"]}"]').text
    )

    # colour by workflow redraws
    frames = _api(browser)["frames"]
    browser.find_element(By.ID, "color-by").send_keys("workflow")
    assert _api(browser)["frames"] > frames
    assert "explore" in browser.find_element(By.ID, "legend").text
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.browser
def test_ten_thousand_processes_load_and_draw(
    capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path, browser: Any
) -> None:
    """10,001 processes: the page loads, draws only the rows in view, scrolls, expands and hovers."""
    from selenium.webdriver.common.by import By

    session, _lines = make_session(capsule_home, shells=100, leaves=99)
    page = tmp_path / "big.html"
    done = capsule("report", str(session), "--html", str(page), timeout=300)
    assert done.returncode == 0, done.stderr

    _open(browser, page, timeout=300)
    api = _api(browser)
    assert api["rows"] == 10_001
    assert 0 < api["drawnBars"] < 200  # virtualised: only what is in view
    assert api["overviewBars"] >= 10_001

    # scroll to the end: the last rows draw
    browser.execute_script("var s = document.getElementById('tl-scroll'); s.scrollTop = s.scrollHeight;")
    browser.execute_script("return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    api = _api(browser)
    assert api["firstRow"] > 9_900
    assert api["drawnBars"] > 0

    # the root is expanded (100 shells); expanding a shell renders its 99 children
    shells = browser.find_elements(By.CSS_SELECTOR, "#tree > ul > li > ul > li")
    assert len(shells) == 100
    shells[-1].find_element(By.CSS_SELECTOR, ":scope > .node > .tog").click()
    assert len(shells[-1].find_elements(By.CSS_SELECTOR, ":scope > ul > li")) == 99

    last_key = browser.execute_script(
        "var P = JSON.parse(document.getElementById('capsule-data').textContent).procs; return P[P.length - 1][0]"
    )
    tip = _hover(browser, last_key)
    assert "duration" in tip
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(tmp_path / "big.png"))


def test_html_errors_are_one_line(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """An unwritable FILE exits 4, --html with --json exits 2; one line each, no traceback."""
    capsule("run", "--", "true")
    done = capsule("report", "--html", str(tmp_path / "no" / "such" / "dir" / "r.html"))
    assert done.returncode == 4
    assert done.stderr.startswith("capsule: error: cannot write ")
    assert len(done.stderr.strip().splitlines()) == 1
    done = capsule("report", "--html", str(tmp_path / "r.html"), "--json")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "r.html").exists()


def test_html_overwrites_an_existing_file_as_0600(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """A world-readable file already at FILE is replaced and left 0600."""
    capsule("run", "--", "true")
    page = tmp_path / "r.html"
    page.write_text("old")
    page.chmod(0o644)
    done = capsule("report", "--html", str(page))
    assert done.returncode == 0, done.stderr
    assert page.read_text(encoding="utf-8").startswith("<!doctype html>")
    assert stat.S_IMODE(page.stat().st_mode) == 0o600


@pytest.mark.browser
def test_files_and_network_panels_link_to_the_timeline(
    capsule: CapsuleRunner, tmp_path: Path, browser: Any
) -> None:
    """--level all: the files panel lists what was changed (and, switched, read), the network panel the
    peer; clicking a row marks its processes on the timeline and selects the first in the tree."""
    import socket

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    work = tmp_path / "work"
    work.mkdir()
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        script = (
            "echo a > draft.txt && mv draft.txt final.txt && cat final.txt >/dev/null && rm final.txt"
            f" && exec 3<>/dev/tcp/127.0.0.1/{port}"
        )
        assert capsule("run", "--level", "all", "--", "bash", "-c", script, cwd=work).returncode == 0
    report = report_json(capsule)
    page = tmp_path / "files.html"
    assert capsule("report", "latest", "--html", str(page)).returncode == 0
    _open(browser, page)

    files = browser.find_element(By.ID, "files")
    assert str(work / "draft.txt") in files.text
    assert "rename" in files.text
    assert "delete" in files.text
    final = next(f for f in report["files"] if f["path"] == str(work / "final.txt"))
    rm = next(p for p in report["processes"] if p["exe"] and p["exe"].endswith("/rm"))
    assert rm["id"] in final["ids"]
    row = next(
        r
        for r in files.find_elements(By.CSS_SELECTOR, "tr[data-index]")
        if r.find_element(By.CSS_SELECTOR, "td.path").text == str(work / "final.txt")
    )
    row.click()
    marked = browser.execute_script("return window.capsuleReport.marked")
    rows = browser.execute_script(
        "var P = JSON.parse(document.getElementById('capsule-data').textContent).procs;"
        "return arguments[0].map(function (id) { return P.findIndex(function (p) { return p[0] === id; }); });",
        final["ids"],
    )
    assert sorted(marked) == sorted(rows)
    selected = browser.find_element(By.CSS_SELECTOR, "#tree .node.sel").text.lstrip("·▸▾\n ")
    assert int(selected.split()[0]) in final["pids"]  # the first of them, found in the tree

    network = browser.find_element(By.ID, "network")
    assert f"127.0.0.1:{port}" in network.text
    assert "connect" in network.text
    network.find_element(By.CSS_SELECTOR, "tr[data-index]").click()
    (peer,) = [n for n in report["network"] if n["port"] == port]
    assert len(browser.execute_script("return window.capsuleReport.marked")) == len(peer["ids"])

    Select(browser.find_element(By.ID, "files-which")).select_by_value("read")
    assert (
        "/etc" in browser.find_element(By.ID, "files").text
        or "/lib" in browser.find_element(By.ID, "files").text
    )
    browser.execute_script("document.getElementById('files').scrollIntoView()")
    Select(browser.find_element(By.ID, "files-which")).select_by_value("changed")
    shot = tmp_path / "panels.png"  # looked at by hand when the panels change
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.browser
def test_summary_tables_stay_in_their_place(capsule: CapsuleRunner, tmp_path: Path, browser: Any) -> None:
    """Claude Code's failures (command lines with a 100-character word) spilled over the agent's phases
    table beside them: the two were drawn over each other. No summary table overlaps another or leaves
    the page's width, at a wide and a narrow window."""
    agent = tmp_path / "claude"  # an agent by its name: the summary gets the agent's phases table
    word = "|".join(["code", "cursor", "windsurf", "idea", "pycharm", "webstorm"] * 4)
    agent.write_text(
        f"#!/bin/sh\nls / >/dev/null\ngit --version >/dev/null\nsh -c 'exit 1 # {word}'\nexit 0\n"
    )
    agent.chmod(0o755)
    assert capsule("run", "--", str(agent)).returncode == 0
    page = tmp_path / "report.html"
    assert capsule("report", "latest", "--html", str(page)).returncode == 0
    try:
        for width in (1400, 900):
            browser.set_window_size(width, 1100)
            _open(browser, page)
            boxes = browser.execute_script(
                """
                var grid = document.querySelector('.tables'), g = grid.getBoundingClientRect();
                return {grid: [g.left, g.right], tables: Array.from(grid.children).map(function (s) {
                  var r = s.getBoundingClientRect();
                  return {title: s.querySelector('h3').textContent, box: [r.left, r.top, r.right, r.bottom],
                          overflow: s.scrollWidth - s.clientWidth};
                })};
                """
            )
            titles = [t["title"] for t in boxes["tables"]]
            assert any(t.startswith("Failures") for t in titles), titles
            assert any(t.startswith("Agent") for t in titles), titles
            left, right = boxes["grid"]
            for one in boxes["tables"]:
                x0, _y0, x1, _y1 = one["box"]
                assert left - 1 <= x0, (width, one)
                assert x1 <= right + 1, (width, one)
                assert one["overflow"] <= 1, (width, one)  # wrapped, not scrolled
            for i, one in enumerate(boxes["tables"]):
                for other in boxes["tables"][i + 1 :]:
                    a, b = one["box"], other["box"]
                    apart = a[2] <= b[0] + 1 or b[2] <= a[0] + 1 or a[3] <= b[1] + 1 or b[3] <= a[1] + 1
                    assert apart, (width, one, other)
    finally:
        browser.set_window_size(1400, 1100)
