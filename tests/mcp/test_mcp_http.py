"""`capsule mcp --http PORT`: streamable HTTP on loopback, through the SDK's real client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.mcp.conftest import call, call_error, free_port

pytestmark = [
    pytest.mark.strace,
    # The SDK's HTTP client (httpx2) leaves its SSE async generators to the garbage collector when a
    # session closes, and trio warns about each; the client is the SDK's, not Capsule's.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture
def http_server(capsule_home: Path) -> Iterator[int]:
    """`capsule mcp --http PORT` in a subprocess, up until the test ends; its port."""
    port = free_port()
    env = {**os.environ, "CAPSULE_HOME": str(capsule_home)}
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


async def test_http_list_sessions_report_and_an_error(http_server: int, capsule, capsule_home: Path) -> None:
    """Over streamable HTTP: list_sessions and get_report see a recorded session; a bad one is a tool error."""
    done = capsule("run", "--", "sh", "-c", "true; false")
    assert done.returncode == 1, done.stderr
    url = f"http://127.0.0.1:{http_server}/mcp"
    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        sessions = (await call(session, "list_sessions"))["sessions"]
        assert len(sessions) == 1
        assert sessions[0]["exit_code"] == 1
        report = await call(session, "get_report", session=sessions[0]["id"])
        assert report["report"]["session"]["argv"] == ["sh", "-c", "true; false"]
        assert "no session 'nope'" in await call_error(session, "get_report", session="nope")
        assert (await call(session, "list_sessions"))["sessions"][0]["id"] == sessions[0]["id"]


def test_http_listens_on_loopback_only(http_server: int) -> None:
    """The server binds 127.0.0.1, not every interface."""
    import psutil

    bound = {c.laddr.ip for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == http_server}
    assert bound == {"127.0.0.1"}
