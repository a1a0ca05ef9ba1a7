"""[policy] in capsule.toml guards every service: a service's exec of sudo is refused and recorded."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CapsuleRunner
from tests.env.test_supervise import events, wait_for, write

pytestmark = pytest.mark.strace


@pytest.fixture
def project(tmp_path: Path, capsule: CapsuleRunner, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project with a fake `sudo` first on PATH; its environment is brought down afterwards."""
    root = tmp_path / "project"
    root.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sudo").write_text(f"#!/bin/sh\ntouch {tmp_path}/sudo-ran\n")
    (bin_dir / "sudo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    yield root
    capsule("env", "down", str(root), timeout=60)


def test_service_exec_is_refused(project: Path, capsule: CapsuleRunner, capsule_home: Path) -> None:
    """A service that tries sudo gets EPERM and goes on; the refusal is a policy.blocked event of it."""
    (project / ".env.secret").write_text("TOKEN=x\n")
    write(
        project,
        """
[policy]
deny_commands = ["sudo *"]
protect_paths = [".env.secret"]
[[process]]
name = "web"
command = "sh -c 'x=sud; ${x}o id; echo rc=$?; cat .env.secret; echo cat=$?; exec sleep 60'"
""",
    )
    done = capsule("env", "up", str(project), timeout=60)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: any(e["kind"] == "policy.blocked" for e in events(capsule_home)))
    (blocked,) = [e for e in events(capsule_home) if e["kind"] == "policy.blocked"]
    assert blocked["service"] == "web"
    assert blocked["rule"] == "sudo *"
    assert not (project.parent / "sudo-ran").exists()
    log = next((capsule_home / "runs").glob("*/logs/web.log"))
    wait_for(lambda: "cat=1" in log.read_text())
    assert "rc=126" in log.read_text()
    assert "TOKEN=x" not in log.read_text()


def test_unavailable_mechanism_refuses_env_up(project: Path, capsule: CapsuleRunner) -> None:
    """env up with a policy this machine cannot enforce: one line, exit 125, nothing started."""
    write(project, '[policy]\nnetwork = "off"\n[[process]]\nname = "w"\ncommand = "sleep 60"\n')
    done = capsule("env", "up", str(project), env={"CAPSULE_GUARD_PRETEND_MISSING": "network-namespace"})
    assert done.returncode == 125
    assert done.stderr.startswith("capsule: error: the policy needs network-namespace")
    # fallback = "detect" cannot help a service (nothing reads its trace for the environment): refused too
    write(
        project,
        '[policy]\nnetwork = "off"\nfallback = "detect"\n[[process]]\nname = "w"\ncommand = "sleep 60"\n',
    )
    done = capsule("env", "up", str(project), env={"CAPSULE_GUARD_PRETEND_MISSING": "network-namespace"})
    assert done.returncode == 125
    assert done.stderr.startswith("capsule: error: policy downgraded: network-namespace unavailable")
    assert "services cannot be guarded after the fact" in done.stderr
