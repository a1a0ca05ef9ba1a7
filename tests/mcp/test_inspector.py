"""`capsule mcp` checked by the official MCP Inspector CLI: tools listed and called, over stdio and HTTP."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.mcp.conftest import http_server
from tests.mcp.inspector import LAUNCHER, inspector

pytestmark = [
    pytest.mark.strace,
    pytest.mark.slow,
    pytest.mark.skipif(not LAUNCHER.exists(), reason="the MCP Inspector is installed by `just setup`"),
]


@pytest.fixture
def catalog(tmp_path: Path) -> dict[str, str]:
    """The Inspector's writable catalog, out of $HOME."""
    return {"MCP_CATALOG_PATH": str(tmp_path / "inspector-catalog.json")}


def run_json(args: list[str], env: dict[str, str]) -> dict:
    done = inspector(args, **env)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return json.loads(done.stdout)


def check_tools(listed: dict) -> None:
    tools = {t["name"]: t for t in listed["tools"]}
    assert len(tools) == 20
    for tool in tools.values():
        assert set(tool["annotations"]) >= {
            "readOnlyHint",
            "destructiveHint",
            "idempotentHint",
            "openWorldHint",
        }
        assert tool["outputSchema"]["type"] == "object"
    assert tools["get_report"]["annotations"]["readOnlyHint"] is True
    assert tools["run_command"]["annotations"]["destructiveHint"] is True


def test_inspector_over_stdio(capsule_home: Path, catalog: dict[str, str]) -> None:
    """tools/list and tools/call run_command (a shell string), then resources/read of its report."""
    server = ["-e", f"CAPSULE_HOME={capsule_home}", "--", sys.executable, "-m", "capsule", "mcp"]
    check_tools(run_json(["--method", "tools/list", *server], catalog))
    called = run_json(
        [
            "--method",
            "tools/call",
            "--tool-name",
            "run_command",
            "--tool-arg",
            "command=echo hi; exit 3",
            *server,
        ],
        catalog,
    )
    assert called["isError"] is False
    result = called["structuredContent"]
    assert (result["exit_code"], result["output"]) == (3, "hi\n")
    read = run_json(
        ["--method", "resources/read", "--uri", f"capsule://sessions/{result['session']}/report", *server],
        catalog,
    )
    assert json.loads(read["contents"][0]["text"])["session"]["argv"] == ["sh", "-c", "echo hi; exit 3"]


def test_inspector_over_http_with_the_token(capsule_home: Path, catalog: dict[str, str]) -> None:
    """With the printed Authorization header the Inspector lists and calls tools; without it, it fails."""
    with http_server(capsule_home) as server:
        target = [server.url, "--transport", "http"]
        header = ["--header", f"Authorization: Bearer {server.token}"]
        check_tools(run_json([*target, *header, "--method", "tools/list"], catalog))
        called = run_json(
            [
                *target,
                *header,
                "--method",
                "tools/call",
                "--tool-name",
                "list_sessions",
                "--tool-arg",
                "limit=5",
            ],
            catalog,
        )
        assert called["structuredContent"] == {"sessions": []}
        refused = inspector([*target, "--method", "tools/list"], **catalog)
        assert refused.returncode != 0
        # The 401 (with `WWW-Authenticate: Bearer`) sends the Inspector to OAuth, which it cannot do here.
        assert "auth_required" in refused.stdout + refused.stderr
