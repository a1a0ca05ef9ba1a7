"""`capsule export`: Perfetto, OTLP (to stdout, a file, a collector) and raw JSONL, and its errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from tests.conftest import CapsuleRunner
from tests.report.test_otlp import parse_otlp_json
from tests.report.test_perfetto import TRACE_SCHEMA

pytestmark = pytest.mark.strace

SCRIPT = 'ls / >/dev/null; sh -c "exit 3"; sh -c "kill -TERM \\$\\$"; true'


@pytest.fixture
def recorded(capsule: CapsuleRunner) -> str:
    """A real recorded session with a success, a non-zero exit and a process killed by a signal."""
    done = capsule("run", "--", "sh", "-c", SCRIPT)
    assert done.returncode == 0, done.stderr
    listed = orjson.loads(capsule("ls", "--json").stdout)
    return str(listed[0]["id"])


class Collector:
    """A tiny OTLP/HTTP collector on 127.0.0.1 that records what is posted to it."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(
                    {
                        "path": self.path,
                        "type": self.headers["Content-Type"],
                        "body": body,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                    }
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    c.thread.start()
    yield c
    c.server.shutdown()
    c.server.server_close()


def test_perfetto_export_is_a_valid_trace(capsule: CapsuleRunner, recorded: str) -> None:
    """The Perfetto export validates and shows every process, the exit 3 and the SIGTERM."""
    done = capsule("export", recorded, "--format", "perfetto")
    assert done.returncode == 0, done.stderr
    trace = orjson.loads(done.stdout)
    jsonschema.validate(trace, TRACE_SCHEMA)
    report = orjson.loads(capsule("report", recorded, "--json").stdout)
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(slices) == report["summary"]["processes"]
    instants = {e["name"] for e in trace["traceEvents"] if e["ph"] == "i"}
    assert {"exit 3", "killed by SIGTERM"} <= instants
    assert trace["otherData"]["session"] == recorded


def test_otlp_export_parses_with_opentelemetry_proto(capsule: CapsuleRunner, recorded: str) -> None:
    """The OTLP export parses as an ExportTraceServiceRequest with a span per process."""
    done = capsule("export", recorded, "--format", "otlp")
    assert done.returncode == 0, done.stderr
    request = parse_otlp_json(orjson.loads(done.stdout))
    spans = request.resource_spans[0].scope_spans[0].spans
    report = orjson.loads(capsule("report", recorded, "--json").stdout)
    assert len(spans) == report["summary"]["processes"]
    errors = [s for s in spans if s.status.code == 2]
    assert len(errors) == report["summary"]["failed"] == 2


def test_otlp_posted_to_a_collector(capsule: CapsuleRunner, recorded: str, collector: Collector) -> None:
    """--endpoint POSTs protobuf (OTLP/HTTP's default) to /v1/traces; --protocol http/json sends JSON."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    done = capsule("export", recorded, "--format", "otlp", "--endpoint", collector.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    done = capsule("export", recorded, "-f", "otlp", "--endpoint", collector.url, "--protocol", "http/json")
    assert done.returncode == 0, done.stderr
    binary, text = collector.requests
    assert binary["path"] == text["path"] == "/v1/traces"
    assert binary["type"] == "application/x-protobuf"
    assert text["type"] == "application/json"
    from_protobuf = ExportTraceServiceRequest.FromString(binary["body"])
    assert from_protobuf == parse_otlp_json(orjson.loads(text["body"]))
    spans = from_protobuf.resource_spans[0].scope_spans[0].spans
    assert len(spans[0].span_id) == 8  # raw bytes, not the hex text of OTLP/JSON
    assert len(spans[0].trace_id) == 16


def test_otlp_follows_the_otel_environment(
    capsule: CapsuleRunner, recorded: str, collector: Collector
) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT (a base URL), _HEADERS (percent-decoded) and _PROTOCOL are honoured."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url + "/",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20abc, x-team = agents",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
    }
    done = capsule("export", recorded, "-f", "otlp", env=env)
    assert done.returncode == 0, done.stderr
    (posted,) = collector.requests
    assert posted["path"] == "/v1/traces"
    assert posted["type"] == "application/json"
    assert posted["headers"]["authorization"] == "Bearer abc"
    assert posted["headers"]["x-team"] == "agents"
    # -o writes the file instead of sending; a bad protocol or header is a usage error
    assert capsule("export", recorded, "-f", "otlp", "-o", "-", env=env).stdout.startswith('{"resourceSpans"')
    assert len(collector.requests) == 1
    assert (
        capsule(
            "export", recorded, "-f", "otlp", env={**env, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        ).returncode
        == 2
    )
    bad = capsule("export", recorded, "-f", "otlp", env={**env, "OTEL_EXPORTER_OTLP_HEADERS": "novalue"})
    assert bad.returncode == 2
    assert "OTEL_EXPORTER_OTLP_HEADERS" in bad.stderr


def test_otlp_accepted_by_a_real_receiver(capsule: CapsuleRunner, recorded: str) -> None:
    """oteltest's OTLP/HTTP sink (OpenTelemetry's own protobuf messages) decodes what Capsule sends."""
    import logging
    import socketserver

    from oteltest import sink

    class Loopback(HTTPServer):
        def __init__(self, address: tuple[str, int], handler: Any) -> None:
            socketserver.TCPServer.__init__(self, ("127.0.0.1", 0), handler)  # loopback, any free port

    got: list[Any] = []
    ready = threading.Event()

    class Listener:
        def handle_trace(self, request: Any, headers: dict[str, str]) -> None:
            got.append((request, headers))
            ready.set()

        def handle_metrics(self, request: Any, headers: dict[str, str]) -> None: ...

        def handle_logs(self, request: Any, headers: dict[str, str]) -> None: ...

    receiver = sink.HttpSink(Listener(), logging.getLogger("oteltest"), port=0)
    original = sink.HTTPServer
    sink.HTTPServer = Loopback  # type: ignore[misc]
    try:
        receiver.start()
        deadline = time.monotonic() + 10
        while receiver.httpd is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        port = receiver.httpd.server_address[1]
        done = capsule("export", recorded, "-f", "otlp", "--endpoint", f"http://127.0.0.1:{port}")
        assert done.returncode == 0, done.stderr
        assert ready.wait(10)
    finally:
        receiver.stop()
        sink.HTTPServer = original  # type: ignore[misc]
    ((request, headers),) = got
    assert headers["Content-Type"] == "application/x-protobuf"
    spans = request.resource_spans[0].scope_spans[0].spans
    report = orjson.loads(capsule("report", recorded, "--json").stdout)
    assert len(spans) == report["summary"]["processes"]
    names = {a.key: a.value.string_value for a in request.resource_spans[0].resource.attributes}
    assert names["capsule.session.id"] == recorded
    by_id = {s.span_id: s for s in spans}
    assert all(s.parent_span_id in by_id for s in spans if s.parent_span_id)


def test_collector_refusal_and_unreachable_exit_6(capsule: CapsuleRunner, recorded: str) -> None:
    """A collector answering 500, or none listening, is one line and exit 6."""
    bad = Collector(status=500)
    bad.thread.start()
    try:
        done = capsule("export", recorded, "-f", "otlp", "--endpoint", bad.url + "/custom/path")
    finally:
        bad.server.shutdown()
        bad.server.server_close()
    assert done.returncode == 6
    assert bad.requests[0]["path"] == "/custom/path"
    assert "HTTP 500" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = capsule("export", recorded, "-f", "otlp", "--endpoint", bad.url)
    assert done.returncode == 6
    assert "cannot reach" in done.stderr


def test_jsonl_export_is_the_events_file(capsule: CapsuleRunner, capsule_home: Path, recorded: str) -> None:
    """--format jsonl writes the events exactly as stored, to -o FILE."""
    out = capsule_home.parent / "events.jsonl"
    done = capsule("export", recorded, "--format", "jsonl", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == (capsule_home / "runs" / recorded / "events.jsonl").read_bytes()


def test_export_errors(capsule: CapsuleRunner, capsule_home: Path, recorded: str) -> None:
    """Unknown session exits 3, unknown format 2, --endpoint without otlp 2, unwritable -o 6."""
    assert capsule("export", "nope", "--format", "perfetto").returncode == 3
    assert capsule("export", recorded, "--format", "svg").returncode == 2
    assert capsule("export", recorded, "--format", "jsonl", "--endpoint", "http://x").returncode == 2
    done = capsule("export", recorded, "-o", str(capsule_home / "no" / "such" / "dir" / "t.json"))
    assert done.returncode == 6
    assert done.stderr.startswith("capsule: error: cannot write")
    assert "Traceback" not in done.stderr
