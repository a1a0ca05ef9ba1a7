"""The MCP server's HTTP transports: streamable HTTP on 127.0.0.1 with a bearer token, or a Unix socket.

The tools run commands as the user who started the server, so the loopback port is not enough: any
local user can reach it. Every request must carry `Authorization: Bearer TOKEN`; the token is made per
start (or read from `--token-file`, which must be private), kept 0600 under `$CAPSULE_HOME/mcp/` for the
user's own clients, and compared in constant time. Anything else gets 401 before the SDK sees it. The
SDK's DNS-rebinding protection (Host and Origin must be loopback) stays on behind it. A Unix socket is
created 0600 in a directory only its owner can enter: the file system is its access control.
Both are the SDK's streamable HTTP ASGI app served by hypercorn's trio worker.
"""

from __future__ import annotations

import hmac
import os
import secrets
import signal
import stat
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import trio
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

from capsule.api.errors import BadInput

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNAUTHORIZED = (
    b'{"error":"unauthorized: send the header `Authorization: Bearer TOKEN` '
    b'(capsule mcp --http printed it on start)"}'
)


class BearerAuth:
    """ASGI middleware: an HTTP request without `Authorization: Bearer <token>` gets 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = b"Bearer " + token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = [value for key, value in scope["headers"] if key.lower() == b"authorization"]
            if len(given) != 1 or not hmac.compare_digest(given[0], self.expected):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b'Bearer realm="capsule"'),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": UNAUTHORIZED})
                return
        await self.app(scope, receive, send)


def read_token_file(path: Path) -> str:
    """The token in `path` (its first line), refused if others could read it or it is empty."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise BadInput(f"--token-file {path}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BadInput(f"--token-file {path}: not a regular file")
        if info.st_mode & 0o077:
            raise BadInput(
                f"--token-file {path}: readable by others (mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 it"
            )
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    token = data.decode("utf-8", errors="replace").strip().splitlines()[0] if data.strip() else ""
    if len(token) < 16 or any(c.isspace() for c in token):
        raise BadInput(f"--token-file {path}: the token must be one line of at least 16 characters")
    return token


def new_token() -> str:
    """A fresh token for one start of the server (256 random bits)."""
    return secrets.token_urlsafe(32)


def keep_token(home: Path, port: int, token: str) -> Path:
    """Write `token` 0600 to `$CAPSULE_HOME/mcp/http-PORT.token` (a new file, replacing an old one)."""
    folder = home / "mcp"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    path = folder / f"http-{port}.token"
    temp = folder / f".http-{port}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, token.encode() + b"\n")
    finally:
        os.close(fd)
    os.replace(temp, path)  # a new file: never writes through a planted link
    return path


async def serve_http(
    server: MCPServer,
    port: int,
    *,
    token: str,
    on_bound: Callable[[int], None] | None = None,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Streamable HTTP at http://127.0.0.1:PORT/mcp (PORT 0: a free one), bearer `token` required,
    until `shutdown` (by default: SIGTERM or SIGINT). `on_bound` and `task_status` get the port."""
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]  # loopback only: the tools run commands
    app = BearerAuth(server.streamable_http_app(host="127.0.0.1"), token)
    await _serve(app, config, shutdown, _Bound(on_bound, task_status))  # type: ignore[arg-type]  # has started()


class _Bound:
    """Hypercorn's "listening" handshake (it reports its binds): the bound port to `then` and `outer`.
    No nursery in between, so a failure to bind reaches the caller as itself (an OSError)."""

    def __init__(self, then: Callable[[int], None] | None, outer: trio.TaskStatus[int]) -> None:
        self.then = then
        self.outer = outer

    def started(self, binds: list[str]) -> None:
        bound = int(binds[0].rsplit(":", 1)[1])
        if self.then is not None:
            self.then(bound)
        self.outer.started(bound)


async def serve_socket(
    server: MCPServer,
    path: Path,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Streamable HTTP on a Unix socket at `path`, mode 0600 (clients use any Host, e.g. `localhost`)."""
    from hypercorn.config import Config

    where = trio.Path(path)
    if await where.exists() and not stat.S_ISSOCK((await where.lstat()).st_mode):
        raise BadInput(f"--socket {path}: exists and is not a socket")
    config = Config()
    config.bind = [f"unix:{path}"]
    config.umask = 0o177  # the socket is born 0600: no moment where others could connect
    hosts = ["localhost", "127.0.0.1", "localhost:*", "127.0.0.1:*"]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=["http://localhost", "http://127.0.0.1", "http://localhost:*", "http://127.0.0.1:*"],
    )
    app = server.streamable_http_app(transport_security=security)
    try:
        await _serve(app, config, shutdown, task_status)
    finally:
        with trio.CancelScope(shield=True):
            await where.unlink(missing_ok=True)


def bind_error(exc: BaseException) -> OSError | None:
    """The OSError inside hypercorn's nested exception groups (a port in use, a socket path refused)."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = bind_error(inner)
            if found is not None:
                return found
    return None


async def _until_signalled() -> None:
    """Until SIGTERM or SIGINT: then the server stops cleanly (its socket and token file are removed)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return


async def _serve(
    app: ASGIApp, config: Any, shutdown: trio.Event | None, task_status: trio.TaskStatus[list[str]]
) -> None:
    from hypercorn.trio import serve

    config.accesslog = None
    config.loglevel = "WARNING"  # no "Running on …" lines: the CLI says where it serves, once
    trigger = shutdown.wait if shutdown is not None else _until_signalled
    await serve(app, config, shutdown_trigger=trigger, task_status=task_status)  # type: ignore[arg-type]  # an ASGI app; the protocols differ only in typing
