"""Who may call the MCP server: a bearer token over HTTP, the file system's permissions on a Unix socket."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.mcp.conftest import HttpServer, call, http_server, serving

pytestmark = [
    # The SDK's HTTP client (httpx2) leaves its SSE async generators to the garbage collector when a
    # session closes, and trio warns about each; the client is the SDK's, not Capsule's.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching to user nobody needs root")


def post(server: HttpServer, headers: dict[str, str], body: object = INITIALIZE) -> int:
    response = httpx2.post(server.url, headers={**MCP_HEADERS, **headers}, json=body, timeout=10)
    return response.status_code


def test_http_requires_the_bearer_token(capsule_home: Path) -> None:
    """0 of many requests without the right token are accepted; with it, the server answers; the token
    was printed once with a ready header line and kept 0600 under $CAPSULE_HOME."""
    with http_server(capsule_home) as server:
        token = server.token
        assert len(token) >= 32
        assert server.stderr.count(token) == 1
        kept = capsule_home / "mcp" / f"http-{server.port}.token"
        assert kept.read_text().strip() == token
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        assert stat.S_IMODE(kept.parent.stat().st_mode) == 0o700

        wrong = [
            {},
            {"Authorization": ""},
            {"Authorization": "Bearer"},
            {"Authorization": f"Bearer {token[:-1]}"},
            {"Authorization": f"Bearer {token}x"},
            {"Authorization": f"bearer{token}"},
            {"Authorization": f"Basic {token}"},
            {"Authorization": token},
            {"Authorization": "Bearer " + "A" * len(token)},
            {"X-Authorization": f"Bearer {token}"},
            {"Cookie": f"token={token}"},
        ]
        codes = [post(server, headers) for headers in wrong]
        codes += [
            post(server, headers, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}) for headers in wrong
        ]
        codes.append(httpx2.get(server.url, timeout=10).status_code)
        codes.append(httpx2.delete(server.url, timeout=10).status_code)
        codes.append(httpx2.get(f"http://127.0.0.1:{server.port}/", timeout=10).status_code)
        accepted = [c for c in codes if c != 401]
        assert accepted == [], codes
        assert post(server, server.headers) == 200
        # The DNS-rebinding checks stay on behind the token: a foreign Host or Origin is still refused.
        assert post(server, {**server.headers, "Host": "attacker.example"}) != 200
        assert post(server, {**server.headers, "Origin": "http://attacker.example"}) != 200


@as_root
def test_another_user_cannot_run_commands_without_the_token(capsule_home: Path, tmp_path: Path) -> None:
    """User nobody, on the same machine, gets 401 for run_command and cannot read the token file."""
    marker = tmp_path / "ran"  # the server's user could write it, were nobody's command run
    with http_server(capsule_home) as server:
        call_tool = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "run_command", "arguments": {"command": f"id > {marker}"}},
        }
        for body in (INITIALIZE, call_tool):
            done = subprocess.run(
                [*NOBODY, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                 "-H", "Content-Type: application/json", "-H", "Accept: application/json, text/event-stream",
                 "--data", json.dumps(body), server.url],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            assert done.stdout == "401", (done.stdout, done.stderr)
        token_file = capsule_home / "mcp" / f"http-{server.port}.token"
        peek = subprocess.run([*NOBODY, "cat", str(token_file)], capture_output=True, timeout=30, check=False)
        assert peek.returncode != 0
        assert server.token.encode() not in peek.stdout
    assert not marker.exists()
    assert not (capsule_home / "runs").exists() or list((capsule_home / "runs").iterdir()) == []


def test_token_file(capsule_home: Path, tmp_path: Path, capsule) -> None:  # type: ignore[no-untyped-def]
    """--token-file: its token is the one required (and not printed); a file others can read is refused."""
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-from-a-file-0123456789\n")
    token_file.chmod(0o600)
    with http_server(capsule_home, "--token-file", str(token_file)) as server:
        assert server.token == ""
        assert "s3cret" not in server.stderr
        assert post(server, {"Authorization": "Bearer s3cret-token-from-a-file-0123456789"}) == 200
        assert post(server, {}) == 401
        assert not (capsule_home / "mcp" / f"http-{server.port}.token").exists()
    token_file.chmod(0o644)
    done = capsule("mcp", "--http", "1", "--token-file", str(token_file))
    assert done.returncode == 4
    assert done.stderr.strip().splitlines() == [
        f"capsule: error: --token-file {token_file}: readable by others (mode 0644); chmod 600 it"
    ]
    done = capsule("mcp", "--token-file", str(token_file))
    assert done.returncode == 2
    assert done.stderr.startswith("capsule: error: --token-file goes with --http PORT")


def connectable(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


async def list_over_socket(path: Path) -> dict[str, Any]:
    """list_sessions through the SDK's client over the Unix socket."""
    transport = httpx2.AsyncHTTPTransport(uds=str(path))
    async with (
        httpx2.AsyncClient(transport=transport) as client,
        streamable_http_client("http://localhost/mcp", http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        return await call(session, "list_sessions")


def test_unix_socket(capsule_home: Path, capsule) -> None:  # type: ignore[no-untyped-def]
    """--socket PATH: a 0600 socket serving the same tools; user nobody cannot connect; removed at stop."""
    done = capsule("run", "--", "true")
    assert done.returncode == 0, done.stderr
    folder = Path(tempfile.mkdtemp(prefix="capsule-sock-", dir="/tmp"))
    folder.chmod(0o755)  # anyone may enter the folder: only the socket's own mode keeps others out
    path = folder / "capsule.sock"
    try:
        with serving(["--socket", str(path)], capsule_home, lambda: connectable(path)) as (proc, _err):
            assert stat.S_ISSOCK(path.stat().st_mode)
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            listed = trio.run(list_over_socket, path)
            assert [s["argv"] for s in listed["sessions"]] == [["true"]]
            if os.geteuid() == 0:
                probe = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])"
                refused = subprocess.run(
                    [*NOBODY, "/usr/bin/python3", "-c", probe, str(path)],
                    capture_output=True, text=True, timeout=30, check=False,
                )  # fmt: skip
                assert refused.returncode != 0
                assert "PermissionError" in refused.stderr
            proc.terminate()
            assert proc.wait(20) == 0  # SIGTERM is a clean stop
        assert not path.exists()  # the server removed its socket
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_socket_refuses_a_path_that_is_not_a_socket(capsule, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A regular file at --socket PATH is left alone: one line, exit 4."""
    path = tmp_path / "file"
    path.write_text("keep me")
    done = capsule("mcp", "--socket", str(path))
    assert done.returncode == 4
    assert done.stderr.strip() == f"capsule: error: --socket {path}: exists and is not a socket"
    assert path.read_text() == "keep me"


def test_port_in_use_is_one_line(capsule_home: Path, capsule) -> None:  # type: ignore[no-untyped-def]
    """A port already taken: one line, exit 5, no token file left behind."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = capsule("mcp", "--http", str(port))
    assert done.returncode == 5
    assert done.stderr.strip().splitlines() == [
        f"capsule: error: cannot serve on 127.0.0.1:{port}: Address already in use"
    ]
    assert not (capsule_home / "mcp" / f"http-{port}.token").exists()


def test_cli_options_conflict(capsule) -> None:  # type: ignore[no-untyped-def]
    """--http and --socket together are a usage error."""
    done = capsule("mcp", "--http", "8765", "--socket", "/tmp/x.sock")
    assert done.returncode == 2
    assert done.stderr.strip() == "capsule: error: --http and --socket: choose one"
