"""`capsule export`: Perfetto, OTLP (to stdout, a file, a collector) and raw JSONL, and its errors."""

from __future__ import annotations

import threading
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
                outer.requests.append({"path": self.path, "type": self.headers["Content-Type"], "body": body})
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
    """--endpoint POSTs the OTLP/JSON to /v1/traces with content-type application/json."""
    done = capsule("export", recorded, "--format", "otlp", "--endpoint", collector.url)
    assert done.returncode == 0, done.stderr
    (posted,) = collector.requests
    assert posted["path"] == "/v1/traces"
    assert posted["type"] == "application/json"
    assert parse_otlp_json(orjson.loads(posted["body"])).resource_spans
    assert done.stdout == ""


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
