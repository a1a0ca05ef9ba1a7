"""`capsule mcp --http PORT`: streamable HTTP on loopback, through the SDK's real client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.mcp.conftest import HttpServer, authorized_client, call, call_error, http_server

pytestmark = [
    pytest.mark.strace,
    # The SDK's HTTP client (httpx2) leaves its SSE async generators to the garbage collector when a
    # session closes, and trio warns about each; the client is the SDK's, not Capsule's.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture
def http(capsule_home: Path) -> Iterator[HttpServer]:
    """`capsule mcp --http PORT` for the length of the test."""
    with http_server(capsule_home) as server:
        yield server


async def test_http_list_sessions_report_and_an_error(http: HttpServer, capsule, capsule_home: Path) -> None:
    """Over streamable HTTP: list_sessions and get_report see a recorded session; a bad one is a tool error."""
    done = capsule("run", "--", "sh", "-c", "true; false")
    assert done.returncode == 1, done.stderr
    async with (
        authorized_client(http) as client,
        streamable_http_client(http.url, http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        sessions = (await call(session, "list_sessions"))["sessions"]
        assert len(sessions) == 1
        assert sessions[0]["exit_code"] == 1
        report = await call(session, "get_report", session=sessions[0]["id"])
        assert report["report"]["session"]["argv"] == ["sh", "-c", "true; false"]
        assert "no session 'nope'" in await call_error(session, "get_report", session="nope")
        assert (await call(session, "list_sessions"))["sessions"][0]["id"] == sessions[0]["id"]


def test_http_listens_on_loopback_only(http: HttpServer) -> None:
    """The server binds 127.0.0.1, not every interface."""
    import psutil

    bound = {c.laddr.ip for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == http.port}
    assert bound == {"127.0.0.1"}
