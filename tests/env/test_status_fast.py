"""`capsule env status` of a running environment is answered by its supervisor (capsule/cli/fast.py): the
same records from the same fold and the same renderer as the ordinary path, without importing typer,
rich, attrs, orjson or the event classes. Real supervisor, real processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from capsule.api import environments
from capsule.api.records import plain
from capsule.report.envstatus import render_status
from capsule.stages.envctl import decode_reply, encode_request, pointer_path, read_pointer
from tests.conftest import CapsuleRunner
from tests.env.test_supervise import status, wait_for, write

CONFIG = """
[[process]]
name = "server"
command = "sleep 600"
[[process]]
name = "once"
command = "sh -c 'exit 3'"
restart = "no"
"""


@pytest.fixture
def project(tmp_path: Path, capsule: CapsuleRunner) -> Iterator[Path]:
    root = tmp_path / "project"
    root.mkdir()
    yield root
    capsule("env", "kill-all", timeout=60)


VOLATILE = ("uptime_s", "cpu_percent", "rss")

# Run the console entry point in a fresh interpreter, then say which heavy modules it imported.
PROBE = """
import sys
sys.argv = ["capsule", "env", "status", *sys.argv[1:]]
from capsule.cli import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = [m for m in ("typer", "rich", "attrs", "orjson", "psutil", "pathlib", "re", "json", "socket", "capsule.events", "capsule.codec") if m in sys.modules]
sys.stderr.write(f"exit={code} heavy={','.join(heavy)}\\n")
"""


def fast(project: Path, *args: str) -> tuple[str, str]:
    env = {**os.environ, "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(project), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return done.stdout, done.stderr.strip().splitlines()[-1]


REQUESTS = [
    {"op": "status", "name": None, "render": "text", "color": False},
    {"op": "reload", "name": 'wéb "1"\n', "config": '[[process]]\nname = "\u2603\\t\x01"\n', "n": -3},
    {},
]


@pytest.mark.parametrize("request_", REQUESTS)
def test_the_light_json_is_json(request_: dict) -> None:
    """The fast path's socket talk skips the json module; what it writes and reads is JSON all the same."""
    line = encode_request(request_)
    assert json.loads(line) == request_
    reply = {"ok": True, "out": "a\tb\u00e9\n", "up": ["x", 1.5, None, {"k": []}]}
    assert decode_reply(json.dumps(reply).encode() + b"\n") == reply
    assert decode_reply(orjson.dumps(reply)) == reply
    for bad in (b"", b"{", b'{"ok": true} x', b"\xff"):
        with pytest.raises(ValueError):  # noqa: PT011 (JSONDecodeError and UnicodeDecodeError alike)
            decode_reply(bad)
    with pytest.raises(TypeError):
        encode_request({"op": ["not", "flat"]})


def steady(data: dict) -> dict:
    return {
        **data,
        "processes": [{k: v for k, v in p.items() if k not in VOLATILE} for p in data["processes"]],
    }


def masked(text: str) -> str:
    """The text with its figures that move with time (uptime, CPU, RSS, pids) masked, spacing folded."""
    return re.sub(r" +", " ", re.sub(r"\b\d+(\.\d+)?[sM]?\b", "#", text))


def started(project: Path, capsule: CapsuleRunner, home: Path) -> tuple[str, str | None]:
    """Bring CONFIG up in `project`; its config path and the session its live pointer names."""
    write(project, CONFIG)
    assert capsule("env", "up", str(project)).returncode == 0
    config = str(environments.config_file(project))
    return config, read_pointer(home, config)


def test_the_supervisor_answers_what_the_fold_says(
    project: Path, capsule: CapsuleRunner, capsule_home: Path
) -> None:
    _config, session = started(project, capsule, capsule_home)
    assert session is not None  # the supervisor said where it is
    wait_for(
        lambda: {p["name"]: p["state"] for p in status(capsule, project)["processes"]}["once"] == "exited"
    )

    out, probe = fast(project, "--json")
    assert probe == "exit=0 heavy="  # answered without typer, rich, attrs, orjson or the events
    folded = plain(environments.status(project))  # the ordinary path: the session's fold
    assert steady(orjson.loads(out)) == steady(folded)

    text, probe = fast(project)
    assert probe == "exit=0 heavy="
    assert masked(text) == masked(render_status(folded))
    assert "server" in text
    assert "code 3" in text

    # From a subfolder, as `env up` finds the config upward; any other form takes the ordinary path.
    (project / "src").mkdir()
    assert fast(project / "src", "--json")[1] == "exit=0 heavy="
    assert "heavy=typer" in fast(project, "--help")[1]

    # A spool no recorder owns: every other command first recovers or removes it, so this one does too.
    orphan = capsule_home / "spool" / "20200101-000000-000aa.strace"
    orphan.write_bytes(b"")
    assert "heavy=typer" in fast(project, "--json")[1]
    assert not orphan.exists()
    assert fast(project, "--json")[1] == "exit=0 heavy="


def test_a_dead_supervisor_or_a_planted_pointer_falls_back_to_the_fold(
    project: Path, capsule: CapsuleRunner, capsule_home: Path
) -> None:
    config, session = started(project, capsule, capsule_home)
    assert session is not None
    pointer = Path(pointer_path(capsule_home, config))

    # A pointer naming a directory outside $CAPSULE_HOME/runs is not followed.
    elsewhere = project / "fake-session"
    elsewhere.mkdir()
    pointer.write_text(str(elsewhere))
    assert read_pointer(capsule_home, config) is None
    assert "heavy=typer" in fast(project, "--json")[1]  # the ordinary path answered
    pointer.write_text(str(session))

    data = status(capsule, project)
    os.kill(data["supervisor"]["pid"], signal.SIGKILL)
    wait_for(lambda: not status(capsule, project)["supervisor"]["alive"])
    assert not pointer.exists()  # the ordinary path found the supervisor dead and took its word back
    assert "is dead" in capsule("env", "status", str(project)).stdout
    assert capsule("env", "down", str(project)).returncode == 0


def test_down_takes_the_pointer_back(project: Path, capsule: CapsuleRunner, capsule_home: Path) -> None:
    config, _session = started(project, capsule, capsule_home)
    pointer = Path(pointer_path(capsule_home, config))
    assert pointer.exists()
    assert capsule("env", "down", str(project)).returncode == 0
    wait_for(lambda: not pointer.exists())
    out, probe = fast(project, "--json")
    assert "heavy=typer" in probe
    assert orjson.loads(out)["processes"][0]["state"] == "stopped"
