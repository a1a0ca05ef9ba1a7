"""Fixtures for the MCP server tests: the SDK's real client against `capsule mcp` in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def stdio_session(home: Path) -> AsyncIterator[ClientSession]:
    """`capsule mcp` over stdio with an isolated $CAPSULE_HOME, initialized."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "capsule", "mcp"],
        env={"CAPSULE_HOME": str(home), "NO_COLOR": "1", "PYTHONPATH": str(Path.cwd())},
    )
    with open(os.devnull, "w") as errlog:  # noqa: ASYNC230 (opening /dev/null does not block)
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


async def call(client: ClientSession, tool: str, /, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured output."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, f"{tool}: {result.content}"
    assert result.structured_content is not None
    return result.structured_content


async def call_error(client: ClientSession, tool: str, /, **arguments: Any) -> str:
    """Call a tool that must fail as a tool error; its message."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool} succeeded: {result.structured_content}"
    return " ".join(getattr(c, "text", "") for c in result.content)


@pytest.fixture
def cleanup(capsule_home: Path) -> Iterator[None]:
    """After the test, bring down every environment and kill every agent task of this home."""
    yield
    env = {**os.environ, "CAPSULE_HOME": str(capsule_home)}
    for args in (["kill-all"], ["agents", "kill", "--all", "--grace", "0.5"]):
        subprocess.run(
            [sys.executable, "-m", "capsule", *args], env=env, capture_output=True, timeout=60, check=False
        )
