"""`[export]` in $CAPSULE_HOME/config.toml: every session is shipped to an OTLP collector when it closes;
while the collector is down, sessions wait in a local queue and go first once it is back. The collector
is oteltest's OTLP/HTTP sink (OpenTelemetry's own protobuf messages) on loopback."""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
from http.server import HTTPServer
from pathlib import Path
from typing import Any

import pytest

from capsule.settings import ExportConfig, SettingsError, parse_settings
from tests.conftest import CapsuleRunner

pytestmark = pytest.mark.strace


class Receiver:
    """oteltest's sink listening on 127.0.0.1:`port`; `got` holds each decoded trace request."""

    def __init__(self, port: int) -> None:
        from oteltest import sink

        self.got: list[Any] = []
        self.arrived = threading.Condition()
        outer = self

        class Loopback(HTTPServer):
            allow_reuse_address = True

            def __init__(self, address: tuple[str, int], handler: Any) -> None:
                socketserver.TCPServer.__init__(self, ("127.0.0.1", port), handler)

        class Listener:
            def handle_trace(self, request: Any, headers: dict[str, str]) -> None:
                with outer.arrived:
                    outer.got.append(request)
                    outer.arrived.notify_all()

            def handle_metrics(self, request: Any, headers: dict[str, str]) -> None: ...

            def handle_logs(self, request: Any, headers: dict[str, str]) -> None: ...

        self.sink = sink
        self.original = sink.HTTPServer
        sink.HTTPServer = Loopback  # type: ignore[misc]
        self.receiver = sink.HttpSink(Listener(), logging.getLogger("oteltest"), port=port)
        self.receiver.start()
        deadline = time.monotonic() + 10
        while self.receiver.httpd is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)

    def sessions(self) -> list[str]:
        out = []
        for request in self.got:
            attrs = {a.key: a.value.string_value for a in request.resource_spans[0].resource.attributes}
            out.append(attrs["capsule.session.id"])
        return out

    def stop(self) -> None:
        self.receiver.stop()
        self.sink.HTTPServer = self.original  # type: ignore[misc]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def port(capsule_home: Path) -> int:
    found = _free_port()
    capsule_home.mkdir(mode=0o700, exist_ok=True)
    (capsule_home / "config.toml").write_text(
        f'[export]\nendpoint = "http://127.0.0.1:{found}"\nretries = 1\nbackoff = "50ms"\ntimeout = "5s"\n'
    )
    return found


def test_sessions_ship_on_close_and_wait_in_a_queue_while_the_collector_is_down(
    capsule: CapsuleRunner, capsule_home: Path, port: int, tmp_path: Path
) -> None:
    first = capsule("run", "--", "true")
    assert first.returncode == 0, first.stderr  # the collector being down never fails the command
    assert "queued" in first.stderr
    second = capsule("run", "--", "sh", "-c", "exit 3")
    assert second.returncode == 3
    queue = capsule_home / "export-queue"
    waiting = sorted(p.name for p in queue.iterdir())
    assert len(waiting) == 2
    assert capsule("export", "--flush").returncode == 6  # still down: nothing sent, both kept
    receiver = Receiver(port)
    try:
        plan = tmp_path / "plan.toml"
        plan.write_text('[[task]]\nid = "t"\ncommand = "true"\n')
        done = capsule("agents", "run", str(plan))  # closes an agents session: the queue goes first
        assert done.returncode == 0, done.stderr
        shipped = receiver.sessions()
        assert shipped[:2] == waiting
        assert len(shipped) == 3
        assert not list(queue.iterdir())
        kinds = [
            {a.key: a.value.string_value for a in r.resource_spans[0].resource.attributes}[
                "capsule.session.kind"
            ]
            for r in receiver.got
        ]
        assert kinds == ["run", "run", "agents"]
        flushed = capsule("export", "--flush")
        assert flushed.returncode == 0
        assert "0 session(s) exported, 0 still queued" in flushed.stderr
    finally:
        receiver.stop()


def test_the_export_section() -> None:
    assert parse_settings("").export is None
    assert parse_settings('[export]\nprotocol = "http/json"\n').export is None  # no endpoint: nothing shipped
    found = parse_settings(
        '[export]\nendpoint = "https://otel:4318"\nheaders = { a = "b" }\ntimeout = "2s"\n'
    )
    assert found.export == ExportConfig(endpoint="https://otel:4318", headers=(("a", "b"),), timeout_s=2.0)
    for bad, says in [
        ('[export]\nendpoint = "otel:4318"\n', "export.endpoint: expected an http(s) URL"),
        ('[export]\nendpoint = "http://x"\nprotocol = "grpc"\n', "export.protocol"),
        ('[export]\nendpoint = "http://x"\nretries = -1\n', "export.retries"),
        ('[export]\nendpoint = "http://x"\ntimeout = "soon"\n', "export.timeout"),
        ('[export]\nendpoint = "http://x"\nurl = "y"\n', "export.url: unknown key"),
        ("[export\n", "not valid TOML"),
    ]:
        with pytest.raises(SettingsError) as caught:
            parse_settings(bad)
        assert says in str(caught.value), bad


def test_an_environment_session_ships_when_its_supervisor_ends(
    capsule: CapsuleRunner, capsule_home: Path, port: int, tmp_path: Path
) -> None:
    """The supervisor's session closes in the background process `env up` started: that process ships it
    once it has ended, as `capsule run` and `agents run` ship theirs."""
    receiver = Receiver(port)
    try:
        project = tmp_path / "project"
        project.mkdir()
        (project / "capsule.toml").write_text('[[process]]\nname = "idle"\ncommand = "sleep 600"\n')
        assert capsule("env", "up", str(project)).returncode == 0
        (session,) = [p.name for p in (capsule_home / "runs").iterdir()]
        assert receiver.sessions() == []  # nothing is shipped while the session is open
        assert capsule("env", "down", str(project)).returncode == 0
        deadline = time.monotonic() + 30
        with receiver.arrived:
            while not receiver.got:
                assert time.monotonic() < deadline, "the environment's session never arrived"
                receiver.arrived.wait(timeout=1)
        assert receiver.sessions() == [session]
        kind = {a.key: a.value.string_value for a in receiver.got[0].resource_spans[0].resource.attributes}
        assert kind["capsule.session.kind"] == "env"
        assert not (capsule_home / "export-queue").exists() or not list(
            (capsule_home / "export-queue").iterdir()
        )
    finally:
        receiver.stop()
