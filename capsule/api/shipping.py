"""Sessions shipped to an OpenTelemetry collector as they close: the `[export]` section of
`$CAPSULE_HOME/config.toml`.

    [export]
    endpoint = "http://collector:4318"   # the section is parsed by capsule.settings

When a session closes (`capsule run`, `capsule agents run` / `resume`), it is sent; a collector that is
down (or answers 5xx or 429) after the retries leaves the session in a local queue
(`$CAPSULE_HOME/export-queue/<session id>`), sent first at the next close or by `capsule export --flush`.
A collector refusing a session for good (4xx) drops it from the queue, with one warning.

The section is parsed, with the rest of the file, by `capsule.settings` (`Settings.export`).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from capsule.api.errors import BadInput

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from capsule.settings import ExportConfig

QUEUE = "export-queue"
CONTENT_TYPES = {"http/json": "application/json", "http/protobuf": "application/x-protobuf"}


class ShipFailed(Exception):
    """The collector could not take the session; `retry`: worth trying again later (down, 5xx, 429)."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP convention: a base URL gets /v1/traces appended; a URL with a path is used as is."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadInput(f"bad endpoint {endpoint!r}: give an http(s) URL, e.g. http://localhost:4318")
    path = parts.path if parts.path not in ("", "/") else "/v1/traces"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def post(url: str, body: bytes, content_type: str, headers: dict[str, str], timeout_s: float) -> None:
    """One POST of an OTLP body; ShipFailed saying whether a retry may help."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 (the scheme is checked to be http or https)
        url, data=body, method="POST", headers={**headers, "Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            response.read()
    except urllib.error.HTTPError as exc:
        raise ShipFailed(
            f"collector {url} refused the export: HTTP {exc.code} {exc.reason}",
            retry=exc.code >= 500 or exc.code == 429,
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ShipFailed(f"cannot reach collector {url}: {getattr(exc, 'reason', exc)}", retry=True) from None


def _config() -> ExportConfig | None:
    from capsule.api.settings import load

    return load().export


def _send(config: ExportConfig, session_dir: Path) -> None:
    from capsule.api.sessions import export

    body = export(session_dir, "otlp", protobuf=config.protocol == "http/protobuf").body
    url = traces_url(config.endpoint)
    delay = config.backoff_s
    for attempt in range(config.retries + 1):
        try:
            post(url, body, CONTENT_TYPES[config.protocol], dict(config.headers), config.timeout_s)
            return
        except ShipFailed as exc:
            if not exc.retry or attempt == config.retries:
                raise
        time.sleep(delay)
        delay *= 2


def _queue() -> Path:
    from capsule.api.sessions import home

    return home() / QUEUE


def queued() -> list[str]:
    """Session ids waiting for the collector, oldest first."""
    where = _queue()
    return sorted(p.name for p in where.iterdir()) if where.is_dir() else []


def _enqueue(session_id: str) -> None:
    where = _queue()
    where.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(where / session_id, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    os.close(fd)


def flush(config: ExportConfig | None = None) -> tuple[list[str], list[str]]:
    """Send what the queue holds: (sent, still queued). Stops at the first session the collector
    could not take for now; one it refused for good leaves the queue with a warning."""
    from capsule.api.errors import CapsuleError
    from capsule.api.sessions import resolve

    config = config or _config()
    if config is None:
        return [], queued()
    sent: list[str] = []
    waiting = queued()
    for session_id in list(waiting):
        try:
            _send(config, resolve(session_id))
        except ShipFailed as exc:
            if exc.retry:
                break
            print(f"capsule: warning: session {session_id} not exported: {exc}", file=sys.stderr)
        except CapsuleError as exc:  # pruned since, or unreadable
            print(f"capsule: warning: session {session_id} not exported: {exc}", file=sys.stderr)
        else:
            sent.append(session_id)
        (_queue() / session_id).unlink(missing_ok=True)
        waiting.remove(session_id)
    return sent, waiting


def ship_closed(session_dir: Path) -> None:
    """A session just closed: send it (after the queue) to the `[export]` collector, or queue it.
    Never fails the command that closed it: problems are one warning line."""
    from capsule.api.errors import CapsuleError
    from capsule.api.sessions import home
    from capsule.stages.home import SETTINGS

    try:
        if not os.path.lexists(home() / SETTINGS):
            return  # no config.toml, no collector: the settings parser need not load (~3 ms of each run)
        config = _config()
        if config is None:
            return
        _sent, waiting = flush(config)
        if waiting:
            _enqueue(session_dir.name)
            print(f"capsule: warning: collector down: {len(waiting) + 1} session(s) queued", file=sys.stderr)
            return
        try:
            _send(config, session_dir)
        except ShipFailed as exc:
            if exc.retry:
                _enqueue(session_dir.name)
                print(f"capsule: warning: {exc}; session {session_dir.name} queued", file=sys.stderr)
            else:
                print(f"capsule: warning: session {session_dir.name} not exported: {exc}", file=sys.stderr)
    except CapsuleError as exc:
        print(f"capsule: warning: [export]: {exc}", file=sys.stderr)
