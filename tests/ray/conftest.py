"""A real two-node Ray cluster for the tests, inside a network namespace the tests make (`netns.py`):
node-a (the head, resource `alpha`) and node-b (resource `beta`), each with its own Capsule home, so
what a node records reaches the driver's home only by being shipped. Stopped by the PID of the namespace's
holder, never by `ray stop`."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
READY = b"Ray runtime started"
# The head's GCS marks a killed node dead in about a second, not Ray's default ~30 s: until then it may
# still place the retry of a lost attempt on the dead node's free resources.
FAST_HEALTH = {
    "RAY_health_check_initial_delay_ms": "0", "RAY_health_check_period_ms": "300",
    "RAY_health_check_timeout_ms": "300", "RAY_health_check_failure_threshold": "3",
}  # fmt: skip


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = 6379 + secrets.randbelow(2000)
        self.temp = Path(f"/tmp/cr-{secrets.token_hex(3)}")  # short: Ray's sockets live below it
        self.holder = subprocess.Popen(
            ["unshare", "-n", "--", sys.executable, "-m", "tests.ray.netns"], cwd=REPO,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        assert self._answer() == "ready"
        self.address = f"127.0.0.1:{self.port}"
        self.client_port = 10001  # the head's Ray Client server (ray://), at Ray's default port
        self.client_address = f"ray://127.0.0.1:{self.client_port}"
        self.homes: dict[str, Path] = {}
        self.pids: dict[str, int] = {}

    def _answer(self) -> str:
        assert self.holder.stdout is not None
        return self.holder.stdout.readline().strip()

    def _send(self, line: str) -> str:
        assert self.holder.stdin is not None
        self.holder.stdin.write(line + "\n")
        self.holder.stdin.flush()
        return self._answer()

    def start(self, name: str, resources: dict[str, int], *, head: bool = False) -> None:
        home = self.root / f"home-{name}"
        home.mkdir(mode=0o700, exist_ok=True)
        self.homes[name] = home
        args = [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                f"--resources={json.dumps(resources)}", f"--node-name={name}", "--disable-usage-stats"]  # fmt: skip
        if head:
            args += ["--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.temp}",
                     f"--ray-client-server-port={self.client_port}"]  # fmt: skip
        else:
            args += [f"--address={self.address}"]
        log = self.root / f"{name}.log"
        env = {"CAPSULE_HOME": str(home), "CAPSULE_NODE": name, "PATH": f"{BIN}:{os.environ['PATH']}",
               "RAY_USAGE_STATS_ENABLED": "0", **FAST_HEALTH}  # fmt: skip
        answer = self._send(f"start {name} {json.dumps({'args': args, 'env': env, 'log': str(log)})}")
        self.pids[name] = int(answer.split()[-1])
        deadline = time.monotonic() + 60
        while READY not in (log.read_bytes() if log.exists() else b""):
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
            assert self.holder.poll() is None
            time.sleep(0.05)

    def kill(self, name: str) -> None:
        assert self._send(f"kill {name}") == f"killed {name}"

    def command(self, argv: list[str]) -> list[str]:
        """argv run inside the cluster's namespace."""
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "--", *argv]

    def close(self) -> None:
        if self.holder.poll() is None:
            assert self.holder.stdin is not None
            self.holder.stdin.write("stop\n")
            self.holder.stdin.close()
            self.holder.wait(30)
        if self.holder.stdout is not None:
            self.holder.stdout.close()
        if not os.environ.get("KEEPRAY"):
            shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("the Ray cluster tests make a network namespace: they need root, unshare and nsenter")
    found = Cluster(tmp_path_factory.mktemp("ray"))
    try:
        found.start("node-a", {"alpha": 2}, head=True)
        found.start("node-b", {"beta": 2})
        yield found
    finally:
        found.close()
