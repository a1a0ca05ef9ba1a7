"""Fixtures for the MCP server tests: the SDK's real client against `capsule mcp` in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

# Every tool test runs over both transports. The SDK's HTTP client (httpx2) leaves its SSE async
# generators to the garbage collector when a session closes, and trio warns about each: the client is
# the SDK's, not Capsule's, so that one warning is ignored for the HTTP runs only.
TRANSPORTS = [
    "stdio",
    pytest.param("http", marks=pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")),
]


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


@contextmanager
def http_server(home: Path) -> Iterator[int]:
    """`capsule mcp --http PORT` in a subprocess until the block ends; its port."""
    port = free_port()
    env = {**os.environ, "CAPSULE_HOME": str(home), "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "capsule", "mcp", "--http", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, "capsule mcp --http exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "capsule mcp --http never listened"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@asynccontextmanager
async def mcp_session(home: Path, transport: str) -> AsyncIterator[ClientSession]:
    """The SDK's client connected to `capsule mcp` over `transport` (stdio or http), initialized."""
    if transport == "stdio":
        async with stdio_session(home) as session:
            yield session
        return
    with http_server(home) as port:
        url = f"http://127.0.0.1:{port}/mcp"
        async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
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
