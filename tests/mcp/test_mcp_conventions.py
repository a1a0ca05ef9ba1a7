"""The MCP conventions: tool annotations, one-line argument errors, run_command's forms, session resources."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from mcp.shared.exceptions import MCPError

from tests.mcp.conftest import call, call_error, stdio_session

pytestmark = [pytest.mark.strace]

HINTS = ("read_only_hint", "destructive_hint", "idempotent_hint", "open_world_hint")


async def test_every_tool_carries_every_hint(capsule_home: Path) -> None:
    """readOnlyHint, destructiveHint, idempotentHint and openWorldHint are stated on every tool."""
    async with stdio_session(capsule_home) as session:
        tools = (await session.list_tools()).tools
    assert len(tools) == 20
    for tool in tools:
        assert tool.annotations is not None, tool.name
        hints = {h: getattr(tool.annotations, h) for h in HINTS}
        assert all(isinstance(v, bool) for v in hints.values()), (tool.name, hints)
        if hints["read_only_hint"]:
            assert not hints["destructive_hint"], tool.name
    by_name = {t.name: t.annotations for t in tools}
    assert by_name["run_command"].destructive_hint
    assert by_name["run_command"].open_world_hint
    assert by_name["get_report"].read_only_hint
    assert by_name["deactivate_environment"].destructive_hint


async def test_run_command_string_list_and_cwd(capsule_home: Path, tmp_path: Path) -> None:
    """A string runs through `sh -c`; a list runs as is; both in `cwd`; a missing cwd is a tool error."""
    work = tmp_path / "work"
    work.mkdir()
    script = work / "hello.sh"
    script.write_text("#!/bin/sh\necho hello from $(pwd)\n")
    script.chmod(0o755)
    async with stdio_session(capsule_home) as session:
        run = await call(session, "run_command", command="pwd; ls | wc -l; exit 3", cwd=str(work))
        assert run["exit_code"] == 3
        assert run["output"].split() == [str(work), "1"]
        report = await call(session, "get_report", session=run["session"])
        argvs = [p["argv"] for p in report["report"]["processes"]]
        assert argvs[0] == ["sh", "-c", "pwd; ls | wc -l; exit 3"]
        assert report["report"]["session"]["cwd"] == str(work)

        run = await call(session, "run_command", command=["./hello.sh"], cwd=str(work))
        assert run["exit_code"] == 0
        assert run["output"] == f"hello from {work}\n"

        error = await call_error(session, "run_command", command="true", cwd=str(tmp_path / "nope"))
        assert "no such directory" in error
        assert "empty" in await call_error(session, "run_command", command="  ")


BAD_ARGUMENTS = [
    ("run_command", {"command": "true", "timeout_s": -1}, "timeout_s"),
    ("run_command", {"command": 42}, "command"),
    ("run_command", {"command": "true", "level": "everything"}, "level"),
    ("list_sessions", {"limit": "many"}, "limit"),
    ("get_process_logs", {}, "name"),
    ("kill_task", {"task": "x", "grace_s": "soon"}, "grace_s"),
]


async def test_bad_arguments_are_one_line(capsule_home: Path) -> None:
    """An argument that does not fit the schema is a one-line tool error naming it, no pydantic text."""
    async with stdio_session(capsule_home) as session:
        for tool, arguments, names in BAD_ARGUMENTS:
            error = await call_error(session, tool, **arguments)
            assert "\n" not in error, error
            assert error.startswith(f"{tool}: bad arguments: {names}"), error
            for noise in ("pydantic", "http", "validation error", "[type="):
                assert noise not in error.lower(), error
        assert (await call(session, "list_sessions"))["sessions"] == []  # still serving


async def test_sessions_are_resources(capsule_home: Path, capsule) -> None:  # type: ignore[no-untyped-def]
    """capsule://sessions lists sessions; capsule://sessions/{id}/report is a session's JSON report."""
    done = capsule("run", "--", "sh", "-c", "true; false")
    assert done.returncode == 1, done.stderr
    async with stdio_session(capsule_home) as session:
        resources = {str(r.uri) for r in (await session.list_resources()).resources}
        assert "capsule://sessions" in resources
        templates = {t.uri_template for t in (await session.list_resource_templates()).resource_templates}
        assert "capsule://sessions/{id}/report" in templates
        listed = orjson.loads((await session.read_resource("capsule://sessions")).contents[0].text)
        (row,) = listed
        read = await session.read_resource(f"capsule://sessions/{row['id']}/report")
        (content,) = read.contents
        assert content.mime_type == "application/json"
        report = orjson.loads(content.text)
        assert report["session"]["argv"] == ["sh", "-c", "true; false"]
        with pytest.raises(MCPError, match="no session 'nope'"):
            await session.read_resource("capsule://sessions/nope/report")
