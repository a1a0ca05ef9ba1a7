"""Fixtures for the MCP server tests: the SDK's real client against `capsule mcp` in a subprocess."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import attrs
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


@attrs.frozen
class HttpServer:
    port: int
    token: str  # from the `Authorization: Bearer` line the server printed on stderr
    stderr: str  # what it printed on start

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@contextmanager
def serving(
    args: list[str], home: Path, ready: Callable[[], bool], errlog_of: list[Path] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`capsule mcp ARGS` in a subprocess until the block ends, once `ready()`; it and its stderr file
    (also put in `errlog_of`, for a `ready` that reads it)."""
    env = {**os.environ, "CAPSULE_HOME": str(home), "NO_COLOR": "1"}
    errlog = home.parent / f"mcp-{time.monotonic_ns()}.err"
    if errlog_of is not None:
        errlog_of.append(errlog)
    with open(errlog, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "capsule", "mcp", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 60  # a loaded machine takes seconds to import the SDK
        while not ready():
            assert proc.poll() is None, f"capsule mcp exited: {errlog.read_text()}"
            assert time.monotonic() < deadline, "capsule mcp never listened"
            time.sleep(0.05)
        yield proc, errlog
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def http_server(home: Path, *extra: str) -> Iterator[HttpServer]:
    """`capsule mcp --http 0` (a free port, no race for it) in a subprocess until the block ends: the
    port and bearer token it printed."""
    found: list[str] = []

    def announced() -> bool:
        found[:] = re.findall(r"MCP at http://127\.0\.0\.1:(\d+)/mcp", errlog_of[0].read_text())
        return bool(found)

    errlog_of: list[Path] = []
    with serving(["--http", "0", *extra], home, announced, errlog_of) as (_proc, errlog):
        text = errlog.read_text()
        tokens = re.findall(r"^Authorization: Bearer (\S+)$", text, re.M)
        yield HttpServer(port=int(found[0]), token=tokens[0] if tokens else "", stderr=text)


def authorized_client(server: HttpServer) -> Any:
    """An HTTP client for the SDK's streamable HTTP transport that sends the server's token."""
    from mcp.shared._httpx_utils import create_mcp_http_client

    return create_mcp_http_client(headers=server.headers)


@asynccontextmanager
async def mcp_session(home: Path, transport: str) -> AsyncIterator[ClientSession]:
    """The SDK's client connected to `capsule mcp` over `transport` (stdio or http), initialized."""
    if transport == "stdio":
        async with stdio_session(home) as session:
            yield session
        return
    with http_server(home) as server:
        async with (
            authorized_client(server) as client,
            streamable_http_client(server.url, http_client=client) as (read, write),
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
