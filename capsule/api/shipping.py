"""Sessions shipped to an OpenTelemetry collector as they close: the `[export]` section of
`$CAPSULE_HOME/config.toml`.

    [export]
    endpoint = "http://collector:4318"   # OTLP/HTTP; a base URL gets /v1/traces
    protocol = "http/protobuf"           # or "http/json"
    headers = { authorization = "Bearer …" }
    retries = 3                          # attempts after the first, 0.5 s doubling between them
    timeout = "10s"                      # per POST

When a session closes (`capsule run`, `capsule agents run` / `resume`), it is sent; a collector that is
down (or answers 5xx or 429) after the retries leaves the session in a local queue
(`$CAPSULE_HOME/export-queue/<session id>`), sent first at the next close or by `capsule export --flush`.
A collector refusing a session for good (4xx) drops it from the queue, with one warning.

`export_config` is a small pure parser of this one section (the global config module may take it over).
"""

from __future__ import annotations

import os
import sys
import time
import tomllib
from pathlib import Path

import attrs

from capsule import duration
from capsule.api.errors import BadInput

QUEUE = "export-queue"
CONTENT_TYPES = {"http/json": "application/json", "http/protobuf": "application/x-protobuf"}


@attrs.frozen(kw_only=True)
class ExportConfig:
    endpoint: str
    protocol: str = "http/protobuf"
    headers: tuple[tuple[str, str], ...] = ()
    retries: int = 3
    backoff_s: float = 0.5
    timeout_s: float = 10.0


class ShipFailed(Exception):
    """The collector could not take the session; `retry`: worth trying again later (down, 5xx, 429)."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


def export_config(text: str) -> ExportConfig | None:
    """The `[export]` section of a config.toml's text; None when it has none (or no endpoint)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"config.toml: not valid TOML: {exc}") from None
    section = data.get("export")
    if section is None:
        return None
    if not isinstance(section, dict):
        raise BadInput("config.toml: [export] must be a table")
    unknown = sorted(set(section) - {"endpoint", "protocol", "headers", "retries", "timeout", "backoff"})
    if unknown:
        raise BadInput(f"config.toml: [export] {unknown[0]}: unknown key")
    endpoint = section.get("endpoint")
    if endpoint is None:
        return None
    if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
        raise BadInput(f"config.toml: [export] endpoint: expected an http(s) URL, got {endpoint!r}")
    protocol = section.get("protocol", "http/protobuf")
    if protocol not in CONTENT_TYPES:
        raise BadInput(
            f"config.toml: [export] protocol: expected http/protobuf or http/json, got {protocol!r}"
        )
    headers = section.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise BadInput("config.toml: [export] headers: expected a table of strings")
    retries = section.get("retries", 3)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise BadInput(f"config.toml: [export] retries: expected an integer >= 0, got {retries!r}")
    try:
        timeout_s = duration.parse_duration(section.get("timeout", 10.0))
        backoff_s = duration.parse_duration(section.get("backoff", 0.5))
    except ValueError as exc:
        raise BadInput(f"config.toml: [export]: {exc}") from None
    return ExportConfig(
        endpoint=endpoint, protocol=protocol, headers=tuple(sorted(headers.items())), retries=retries,
        backoff_s=backoff_s, timeout_s=timeout_s,
    )  # fmt: skip


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
    from capsule.api.sessions import home

    path = home() / "config.toml"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return export_config(text)


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

    try:
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
