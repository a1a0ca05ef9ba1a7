"""`capsule import` redacts on a second core: the spool relay filters the log while the importer parses
(stages/trace.py `relayed_read_stage`). It must give exactly what redacting in-process gives, on every
golden trace and on a log carrying every planted secret shape, and a relay that fails must fail the
import and leave no session."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import trio

from capsule.stages import spools
from capsule.stages.derive import ImportRefused, import_log
from tests.secret_shapes import SHAPES

GOLDEN_TRACES = sorted(Path("sessions").glob("*/trace.strace"))


def secrets_log(path: Path) -> Path:
    """An `strace -f -ttt` log whose execs carry every planted secret shape."""
    lines = []
    for i, (_id, _rule, argv, _secret) in enumerate(SHAPES):
        pid, ts = 1000 + i, 1700000000.0 + i
        shown = ", ".join('"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"' for a in argv)
        if i:
            lines.append(f"999 {ts:.6f} clone(child_stack=NULL, flags=SIGCHLD) = {pid}")
        lines.append(
            f'{pid} {ts:.6f} execve("/usr/bin/{shlex.quote(argv[0])}", [{shown}], 0x7ffd /* 3 vars */) = 0'
        )
        lines.append(f"{pid} {ts + 0.5:.6f} +++ exited with 0 +++")
    path.write_text("\n".join(lines) + "\n")
    return path


def imported(log: Path, home: Path, relay: bool) -> tuple[bytes, list[bytes]] | str:
    """The kept trace and the events of the import of `log` (or its refusal, said in one line)."""
    try:
        done = trio.run(lambda: import_log(log, home=home, name="x", relay=relay))
    except ImportRefused as exc:
        return str(exc)
    trace = (done.path / "trace.strace").read_bytes()
    events = (done.path / "events.jsonl").read_bytes().splitlines()[1:]  # the header names the session
    return trace, events


@pytest.mark.parametrize("log", GOLDEN_TRACES, ids=lambda p: p.parent.name)
def test_relayed_import_equals_in_process(log: Path, tmp_path: Path) -> None:
    assert imported(log, tmp_path / "a", relay=True) == imported(log, tmp_path / "b", relay=False)


def test_relayed_import_redacts_every_shape(tmp_path: Path) -> None:
    log = secrets_log(tmp_path / "secrets.log")
    relayed = imported(log, tmp_path / "a", relay=True)
    assert relayed == imported(log, tmp_path / "b", relay=False)
    assert not isinstance(relayed, str)
    kept = relayed[0] + b"\n".join(relayed[1])
    leaked = [shape for shape, _rule, _argv, secret in SHAPES if secret.encode() in kept]
    assert leaked == []
    assert b"***" in kept


def test_a_failing_relay_fails_the_import_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spools, "relay_to_stdout", lambda: ("sh", "-c", "head -c 100; exit 3"))
    home = tmp_path / "home"
    with pytest.raises(OSError, match="relay ended with status 3"):
        trio.run(lambda: import_log(GOLDEN_TRACES[0], home=home, name=None))
    assert list((home / "runs").iterdir()) == []
