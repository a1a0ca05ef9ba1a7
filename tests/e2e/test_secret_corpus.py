"""The planted corpus: every secret shape of tests/secret_shapes.py through the three entry points that
record commands, `capsule run --level all`, `capsule agents run` of a plan with `trace = true`, and
`capsule env up` of a traced service, then not one of them in any file under $CAPSULE_HOME."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import orjson
import pytest

from tests.conftest import CapsuleRunner
from tests.e2e.test_run import _wait_for
from tests.secret_shapes import SHAPES

GROUPS = 8  # tasks and services carry several shapes each, to keep the test short


def _probe(secret: str) -> bytes:
    """What would show a leak: the secret's longest line (a PEM body is stored with `\\n` escapes)."""
    return max(secret.split("\n"), key=len).encode()


def _leaks(home: Path) -> list[str]:
    """The shapes whose secret appears in any file under `home` (spool included)."""
    stored = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    return [shape for shape, _rule, _argv, secret in SHAPES if _probe(secret) in stored]


def _groups() -> list[list[tuple[str, str, list[str], str]]]:
    return [SHAPES[i::GROUPS] for i in range(GROUPS)]


def _script(rows: list[tuple[str, str, list[str], str]]) -> str:
    """An `sh -c` script running `/bin/true ARGV…` once per shape, each shape's argv as it was planted."""
    return "; ".join("/bin/true " + shlex.join(argv) for _shape, _rule, argv, _secret in rows)


def _toml(value: object) -> str:
    return json.dumps(value)  # a JSON string or array of strings is a TOML one too


def _home(tmp_path: Path, name: str) -> tuple[Path, dict[str, str]]:
    home = tmp_path / name
    return home, {"CAPSULE_HOME": str(home)}


def _through_run(capsule: CapsuleRunner, tmp_path: Path) -> Path:
    home, env = _home(tmp_path, "run-home")
    for rows in _groups():
        done = capsule("run", "--level", "all", "--", "sh", "-c", _script(rows), env=env)
        assert done.returncode == 0, done.stderr
        for _shape, _rule, _argv, secret in rows:
            assert _probe(secret).decode() not in done.stderr
    for fmt in ("perfetto", "otlp", "jsonl"):
        assert capsule("export", "-f", fmt, "-o", str(home / f"export.{fmt}"), env=env).returncode == 0
    assert capsule("report", "--html", str(home / "report.html"), env=env).returncode == 0
    report = capsule("report", "--full", env=env)
    assert report.returncode == 0, report.stderr
    (home / "report.txt").write_text(report.stdout)
    return home


def _through_agents(capsule: CapsuleRunner, tmp_path: Path) -> Path:
    home, env = _home(tmp_path, "agents-home")
    tasks = []
    for i, rows in enumerate(_groups()):
        values = {f"PLANTED_{j}": secret for j, (_s, _r, _a, secret) in enumerate(rows)}
        command: object = (
            _script(rows)  # a string command: sh -c
            if i % 2
            else ["/bin/true", *(arg for _s, _r, argv, _x in rows for arg in argv)]
        )
        env_table = ", ".join(f"{k} = {_toml(v)}" for k, v in values.items())
        tasks.append(f'[[task]]\nid = "t{i}"\ncommand = {_toml(command)}\nenv = {{ {env_table} }}\n')
    plan = tmp_path / "plan.toml"
    plan.write_text('[run]\nname = "corpus"\nparallel = 4\ntrace = true\n\n' + "\n".join(tasks))
    done = capsule("agents", "run", str(plan), env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert capsule("agents", "status", "--json", env=env).returncode == 0
    return home


def _through_env(capsule: CapsuleRunner, tmp_path: Path) -> Path:
    home, env = _home(tmp_path, "env-home")
    root = tmp_path / "project"
    root.mkdir()
    services = []
    for i, rows in enumerate(_groups()):
        values = {f"PLANTED_{j}": secret for j, (_s, _r, _a, secret) in enumerate(rows)}
        env_table = ", ".join(f"{k} = {_toml(v)}" for k, v in values.items())
        command = _script(rows) + "; exec sleep 120"
        services.append(
            f'[[process]]\nname = "s{i}"\ncommand = {_toml(command)}\nshell = true\ntrace = true\n'
            f"env = {{ {env_table} }}\n"
        )
    (root / "capsule.toml").write_text('[project]\nname = "corpus"\n\n' + "\n".join(services))
    try:
        done = capsule("env", "up", str(root), env=env, timeout=120)
        assert done.returncode == 0, done.stderr

        def all_traced() -> bool:
            data = orjson.loads(capsule("env", "status", str(root), "--json", env=env).stdout)
            sessions = [p.get("trace_session") for p in data["processes"]]
            if not all(sessions):
                return False
            for run_id in sessions:
                events = (home / "runs" / run_id / "events.jsonl").read_bytes()
                if events.count(b'"path":"/bin/true"') < len(SHAPES[0::GROUPS]) - 1:
                    return False
            return True

        _wait_for(all_traced, timeout=300)  # a condition, not a time: generous for a loaded machine
        assert capsule("env", "status", str(root), env=env).returncode == 0
    finally:
        capsule("env", "down", str(root), env=env, timeout=120)
    return home


@pytest.mark.parametrize("entry", ["run", "agents", "env"])
def test_no_planted_secret_is_kept_anywhere(
    capsule: CapsuleRunner, tmp_path: Path, entry: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every shape planted through one entry point; none is found in any file Capsule wrote."""
    through = {"run": _through_run, "agents": _through_agents, "env": _through_env}[entry]
    home = through(capsule, tmp_path)
    assert any(home.rglob("trace.strace")), "nothing was traced"
    leaked = _leaks(home)
    with capsys.disabled():
        print(f"\nsecret corpus via {entry}: {len(SHAPES)} shapes planted, {len(leaked)} leaked {leaked}")
    assert leaked == []
