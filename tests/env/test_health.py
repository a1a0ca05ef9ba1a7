"""Health checks through httpx against real servers on loopback: https (a self-signed certificate), redirects,
a URL without a port, status ranges, a timeout; and the config forms that go with them."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from capsule.env.config import ConfigError, parse_config, parse_health_check, parse_signal, parse_status_range
from capsule.stages.envio import check


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/old":
            self.send_response(302)
            self.send_header("Location", "/health")
            self.end_headers()
        elif self.path == "/health":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")
        elif self.path == "/teapot":
            self.send_response(418)
            self.end_headers()
        elif self.path == "/slow":
            self.server.release.wait(10)  # type: ignore[attr-defined]
            self.send_response(200)
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def serve(server: http.server.ThreadingHTTPServer) -> Iterator[int]:
    server.release = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.release.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def http_port() -> Iterator[int]:
    yield from serve(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler))


@pytest.fixture
def https_port(tmp_path: Path) -> Iterator[int]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    yield from serve(server)


async def test_https_with_a_self_signed_certificate(https_port: int, tmp_path: Path) -> None:
    """https:// is checked over TLS; a local self-signed certificate does not make it unhealthy."""
    ok, why = await check(parse_health_check(f"https://127.0.0.1:{https_port}/health"), 5, tmp_path)
    assert (ok, why) == (True, "")


async def test_redirects_are_followed_and_the_range_decides(http_port: int, tmp_path: Path) -> None:
    """A 302 is followed to its 200; a status outside expect_status is unhealthy and says which it was."""
    assert (await check(parse_health_check(f"http://127.0.0.1:{http_port}/old"), 5, tmp_path))[0]
    teapot = parse_health_check(f"http://127.0.0.1:{http_port}/teapot")
    ok, why = await check(teapot, 5, tmp_path)
    assert not ok
    assert "HTTP 418" in why
    assert "expected 200-399" in why
    config = parse_config(
        f'[[process]]\nname = "t"\ncommand = "x"\nhealth_check = "http://127.0.0.1:{http_port}/teapot"\n'
        'expect_status = "400-499"\n'
    )
    hc = config.process("t").health_check
    assert hc is not None
    assert (await check(hc, 5, tmp_path))[0]


async def test_a_server_that_does_not_answer_in_time(http_port: int, tmp_path: Path) -> None:
    """The timeout bounds a check: no answer within it is unhealthy, saying so."""
    ok, why = await check(parse_health_check(f"http://127.0.0.1:{http_port}/slow"), 0.3, tmp_path)
    assert not ok
    assert "no answer within 0.3s" in why


async def test_a_url_without_a_port(tmp_path: Path) -> None:
    """http://host/ means port 80 (https: 443), checked for real on a loopback port 80 when it is free."""
    assert parse_health_check("http://localhost/").port == 80
    assert parse_health_check("https://localhost/x").port == 443
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.3", 80), Handler)
    except OSError as exc:
        pytest.skip(f"cannot listen on 127.0.0.3:80 here: {exc}")
    for _port in serve(server):
        assert (await check(parse_health_check("http://127.0.0.3/health"), 5, tmp_path))[0]


def test_config_forms() -> None:
    """Signals by name or number, status ranges, Runcept's keys; unknown keys still name file, process, key."""
    assert parse_signal("term") == parse_signal(15) == parse_signal("SIGTERM") == "SIGTERM"
    assert parse_signal("USR2") == "SIGUSR2"
    assert parse_signal("SIGRTMIN+2") == parse_signal(36) == "36"
    assert parse_signal("iot") == "SIGABRT"
    for bad in ("SIGNOPE", 0, 99, True):
        with pytest.raises(ValueError, match="signal"):
            parse_signal(bad)
    assert parse_status_range("200-399") == (200, 399)
    assert parse_status_range(204) == (204, 204)
    for bad in ("399-200", "2xx", 700):
        with pytest.raises(ValueError, match="status"):
            parse_status_range(bad)
    runcept = parse_config(
        '[project]\nname = "p"\ndescription = "d"\ninactivity_timeout = "30m"\nworking_dir = "app"\n'
        '[[process]]\nname = "w"\ncommand = "x"\nauto_restart = true\nhealth_check_interval = 2\n'
        'inactivity_timeout = "5m"\nrestart_on_unhealthy = 3\n',
        ".runcept.toml",
    )
    assert (runcept.description, runcept.inactivity_timeout, runcept.working_dir) == ("d", 1800.0, "app")
    w = runcept.process("w")
    assert (w.inactivity_timeout, w.restart_on_unhealthy, w.restart) == (300.0, 3, "on-failure")
    with pytest.raises(ConfigError, match=r"^\.runcept\.toml: process 'w': colour: unknown key"):
        parse_config('[[process]]\nname = "w"\ncommand = "x"\ncolour = 1\n', ".runcept.toml")
    with pytest.raises(ConfigError, match=r"^\.runcept\.toml: project\.colour: unknown key"):
        parse_config("[project]\ncolour = 1\n", ".runcept.toml")
    with pytest.raises(ConfigError, match="expect_status: needs an http"):
        parse_config('[[process]]\nname = "w"\ncommand = "x"\nexpect_status = 200\n')
