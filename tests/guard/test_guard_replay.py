"""A guarded session replays: the guard's events are not derived from the trace, the rest is exact."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.conftest import CapsuleRunner

pytestmark = pytest.mark.strace


def test_guarded_session_replays_identically(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """`capsule replay --check` of a session with refusals (exec and open) re-derives the same events."""
    (tmp_path / ".env").write_text("TOKEN=x\n")
    policy = tmp_path / "p.toml"
    policy.write_text('[policy]\ndeny_commands = ["sudo *"]\nprotect_paths = [".env"]\n')
    done = capsule(
        "run", "--policy", str(policy), "--", "bash", "-c", "x=sud; ${x}o id; cat .env; true", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    report = orjson.loads(capsule("report", "latest", "--json").stdout)
    assert report["policy"]["blocked_count"] == 1  # the open of .env (no sudo is installed: ENOENT)
    check = capsule("replay", "latest", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "identical" in check.stdout
