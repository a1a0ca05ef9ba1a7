"""Every MCP tool through the SDK's real client, over stdio and over streamable HTTP."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import trio

from tests.mcp.conftest import TRANSPORTS, call, call_error, free_port, mcp_session

pytestmark = [pytest.mark.strace, pytest.mark.slow]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tools_are_listed_with_input_and_output_schemas(transport: str, capsule_home: Path) -> None:
    """All 20 tools are listed, each with a described input schema and an output schema."""
    async with mcp_session(capsule_home, transport) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == {
        "run_command", "list_sessions", "get_report", "get_process_tree",
        "activate_environment", "deactivate_environment", "list_environments", "get_environment_status",
        "start_process", "stop_process", "restart_process", "list_processes", "get_process_logs",
        "get_process_status", "kill_all_processes",
        "start_agent_run", "get_run_status", "get_task_result", "kill_task", "merge_task_branches",
    }  # fmt: skip
    for tool in tools.values():
        assert tool.description, tool.name
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema is not None, tool.name
        assert tool.output_schema["type"] == "object", tool.name
    props = tools["run_command"].input_schema["properties"]
    assert props["command"]["description"]
    assert props["timeout_s"]["description"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_recording_tools(transport: str, capsule_home: Path) -> None:
    """run_command records a failing shell; list_sessions, get_report (json, text), get_process_tree see it;
    bad arguments come back as tool errors and the server keeps serving."""
    async with mcp_session(capsule_home, transport) as session:
        run = await call(session, "run_command", command=["sh", "-c", "ls /; false"])
        assert run["exit_code"] == 1
        assert run["failed"] >= 1
        assert run["processes"] == 2
        assert "usr" in run["output"].split()
        assert not run["timed_out"]
        sid = run["session"]
        assert (capsule_home / "runs" / sid / "events.jsonl").is_file()

        listed = await call(session, "list_sessions")
        assert [s["id"] for s in listed["sessions"]] == [sid]
        assert listed["sessions"][0]["exit_code"] == 1

        report = await call(session, "get_report", session=sid)
        assert report["format"] == "json"
        argvs = [p["argv"] for p in report["report"]["processes"]]
        assert ["sh", "-c", "ls /; false"] in argvs
        assert ["ls", "/"] in argvs
        text = await call(session, "get_report", session=sid[:12], format="text")
        assert "ls /; false" in text["text"]
        assert "\x1b[" not in text["text"]
        assert [line for line in text["text"].splitlines() if line.endswith(" ")] == []

        tree = await call(session, "get_process_tree", session="latest")
        assert [(n["depth"], n["argv"][0]) for n in tree["processes"]] == [(0, "sh"), (1, "ls")]
        assert tree["processes"][0]["exit_code"] == 1

        slow = await call(session, "run_command", command=["sh", "-c", "sleep 30 & sleep 30"], timeout_s=0.5)
        assert slow["timed_out"]
        assert slow["signal"] is not None
        assert slow["duration_s"] < 10

        assert "no session 'nope'" in await call_error(session, "get_report", session="nope")
        assert "no session" in await call_error(session, "get_process_tree", session="20990101")
        assert (
            "command not found"
            in (await call(session, "run_command", command=["no-such-command-xyz"]))["error"]
        )
        assert "empty" in await call_error(session, "run_command", command=[])
        assert "timeout_s" in await call_error(session, "run_command", command=["true"], timeout_s=-1)
        # still serving after the errors
        assert len((await call(session, "list_sessions"))["sessions"]) == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_environment_tools(transport: str, capsule_home: Path, tmp_path: Path, cleanup: None) -> None:
    """An environment with an http.server: activate, status, logs, stop/start/restart, list, deactivate."""
    port = free_port()
    project = tmp_path / "web"
    project.mkdir()
    (project / "capsule.toml").write_text(
        f'[project]\nname = "web"\n\n[[process]]\nname = "http"\n'
        f'command = "{sys.executable} -m http.server {port} --bind 127.0.0.1"\n'
        f'health_check = "http://127.0.0.1:{port}/"\nhealth_check_interval = "200ms"\n'
    )
    async with mcp_session(capsule_home, transport) as session:
        status = await call(session, "activate_environment", path=str(project), timeout_s=30)
        assert status["active"]
        assert status["project"] == "web"
        assert [(p["name"], p["state"]) for p in status["processes"]] == [("http", "ready")]
        first_pid = status["processes"][0]["pid"]

        status = await call(session, "get_environment_status", path=str(project / "capsule.toml"))
        assert status["processes"][0]["pid"] == first_pid
        assert status["supervisor"]["alive"]
        envs = await call(session, "list_environments")
        assert [(e["project"], e["state"]) for e in envs["environments"]] == [("web", "up")]
        procs = await call(session, "list_processes")
        assert [(p["project"], p["name"]) for p in procs["processes"]] == [("web", "http")]

        logs = await call(session, "get_process_logs", name="http", lines=20)
        assert logs["log"].endswith("http.log")
        assert any("GET /" in line for line in logs["lines"])

        assert (await call(session, "stop_process", name="http"))["messages"] == ["web/http: stop done"]
        status = await call(session, "get_environment_status", path=str(project))
        assert status["processes"][0]["state"] == "stopped"
        await call(session, "start_process", name="http", env=str(project))
        await call(session, "restart_process", name="http")
        status = await call(session, "get_environment_status", path=str(project))
        assert status["processes"][0]["state"] in ("ready", "running")
        assert status["processes"][0]["pid"] != first_pid
        one = await call(session, "get_process_status", name="http")
        assert (one["project"], one["name"], one["pid"]) == ("web", "http", status["processes"][0]["pid"])
        assert one["supervisor_alive"]
        assert "no environment has a process named" in await call_error(
            session, "get_process_status", name="nope"
        )

        assert "has a process named 'nope'" in await call_error(session, "stop_process", name="nope")
        assert "no environment has a process named" in await call_error(
            session, "get_process_logs", name="nope"
        )
        assert "no capsule.toml" in await call_error(session, "activate_environment", path=str(tmp_path))

        done = await call(session, "deactivate_environment", path=str(project))
        assert done["messages"] == ["web: down"]
        envs = await call(session, "list_environments")
        assert [e["state"] for e in envs["environments"]] == ["down"]

        await call(session, "activate_environment", path=str(project), timeout_s=30)
        killed = await call(session, "kill_all_processes")
        assert any(m.startswith("web (") and m.endswith("): down") for m in killed["messages"])
        envs = await call(session, "list_environments")
        assert [e["state"] for e in envs["environments"]] == ["down"]  # one row: its latest session
        assert (await call(session, "list_processes"))["processes"] == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_agent_run_tools(transport: str, capsule_home: Path, tmp_path: Path, cleanup: None) -> None:
    """start_agent_run from a plan; get_run_status polled to the end; get_task_result; kill_task."""
    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[run]\nname = "mcp"\n\n[[task]]\nid = "hello"\ncommand = "echo hi"\n\n'
        '[[task]]\nid = "after"\ncommand = "true"\ndepends_on = ["hello"]\n'
    )
    long_plan = tmp_path / "long.toml"
    long_plan.write_text('[[task]]\nid = "long"\ncommand = "sleep 60"\n')
    async with mcp_session(capsule_home, transport) as session:
        started = await call(session, "start_agent_run", plan_path=str(plan))
        sid = started["session"]
        with trio.fail_after(30):
            while (status := await call(session, "get_run_status", session=sid))["state"] == "running":  # noqa: ASYNC110 (polls another process)
                await trio.sleep(0.1)
        assert status["state"] == "succeeded"
        assert [(t["id"], t["state"]) for t in status["tasks"]] == [
            ("hello", "succeeded"),
            ("after", "succeeded"),
        ]
        result = await call(session, "get_task_result", task="hello", session=sid)
        assert result["state"] == "succeeded"
        assert result["exit_code"] == 0
        assert len(result["attempts"]) == 1

        long_sid = (await call(session, "start_agent_run", plan_path=str(long_plan)))["session"]
        with trio.fail_after(20):
            while (await call(session, "get_run_status", session=long_sid))["tasks"][0]["state"] != "running":  # noqa: ASYNC110 (polls another process)
                await trio.sleep(0.1)
        killed = await call(session, "kill_task", task="long", grace_s=0.5)
        assert [(k["task"], k["session"]) for k in killed["killed"]] == [("long", long_sid)]
        deadline = time.monotonic() + 20
        while (status := await call(session, "get_run_status"))["state"] == "running":
            assert time.monotonic() < deadline
            await trio.sleep(0.1)
        assert status["run"] == long_sid
        assert status["tasks"][0]["state"] == "killed"

        assert (
            "no such file"
            in (await call_error(session, "start_agent_run", plan_path=str(tmp_path / "x.toml"))).lower()
        )
        assert "no task 'nope'" in await call_error(session, "get_task_result", task="nope", session=sid)
        assert "no running task" in await call_error(session, "kill_task", task="nope")
        assert "no session" in await call_error(session, "get_run_status", session="nope")
        assert (await call(session, "get_run_status", session=sid))["state"] == "succeeded"
