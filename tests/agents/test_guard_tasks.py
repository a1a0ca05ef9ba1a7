"""The guard around agent tasks: sudo deep in a task's tree (Node child_process, Python subprocess)
is refused by seccomp notify; on_violation = "kill" ends the task; agents result shows the refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

from tests.agents.conftest import of
from tests.conftest import CapsuleRunner
from tests.ebpf.available import needs_ebpf

pytestmark = pytest.mark.strace


def _agent(tmp_path: Path) -> None:
    (tmp_path / "agent.js").write_text(
        "const cp = require('child_process');\n"
        "try { cp.execFileSync('sudo', ['id']); console.log('node: ran'); }\n"
        "catch (e) { console.log('node: ' + e.code); }\n"
        f"cp.execFileSync('{sys.executable}', ['tool.py'], {{stdio: 'inherit'}});\n"
    )
    (tmp_path / "tool.py").write_text(
        "import subprocess, time\n"
        "try:\n    subprocess.run(['sudo', 'id'])\n    print('python: ran')\n"
        "except PermissionError as e:\n    print('python: EPERM', e.errno)\n"
        "print('after', flush=True)\n"
    )


@pytest.mark.parametrize(
    "trace", ["false", "true", pytest.param('"ebpf"', id="ebpf", marks=[needs_ebpf, pytest.mark.ebpf])]
)
def test_sudo_deep_in_a_task_tree_is_blocked(
    agents, capsule: CapsuleRunner, tmp_path: Path, fake_sudo: Path, trace: str
) -> None:
    """Node's child_process and Python's subprocess both get EPERM for sudo, traced or not; the task
    goes on and succeeds; each refusal is a policy.blocked event of the task, shown by agents result."""
    _agent(tmp_path)
    plan = f"""
[run]
trace = {trace}
[policy]
deny_commands = ["sudo *"]
[[task]]
id = "agent"
command = ["node", "agent.js"]
timeout = "60s"
"""
    done, events = agents(plan)
    assert done.returncode == 0, done.stderr
    started = of(events, "task.started", "agent")[0]
    out = (Path(started["log_dir"]) / "1.out").read_text()
    assert "node: EPERM" in out
    assert "python: EPERM 1" in out
    assert not fake_sudo.exists()
    blocked = of(events, "policy.blocked", "agent")
    assert [b["argv"] for b in blocked] == [["sudo", "id"], ["sudo", "id"]]
    assert all(b["attempt"] == 1 and b["mechanism"] == "seccomp-notify" for b in blocked)
    assert of(events, "policy.applied", "agent")[0]["mechanisms"] == ["seccomp-notify"]
    assert of(events, "task.succeeded", "agent")
    result = capsule("agents", "result", "agent", "latest", "--json")
    assert result.returncode == 0, result.stderr
    shown = orjson.loads(result.stdout)["blocked"]
    assert [b["rule"] for b in shown] == ["sudo *", "sudo *"]
    status = orjson.loads(capsule("agents", "status", "--json").stdout)
    assert status["tasks"][0]["blocked"] == 2
    if trace != "false":  # the task's own run session: every allowed exec, and the refused attempts
        report = orjson.loads(capsule("report", started["trace_session"], "--json").stdout)
        execs = [x for p in report["processes"] for x in p["execs"]]
        assert {Path(x["path"]).name for x in execs if x["ok"]} >= {"node", Path(sys.executable).name}
        refused = [x for x in execs if not x["ok"] and x["errno"] == "EPERM"]
        assert [x["argv"] for x in refused] == [["sudo", "id"], ["sudo", "id"]]
    assert "blocked" in capsule("agents", "status").stdout
    page = tmp_path / "agents.html"
    assert capsule("report", "latest", "--html", str(page)).returncode == 0
    html = page.read_text()
    assert html.count("sudo *: sudo id (seccomp-notify · task agent)") == 2  # one mark per refusal


@pytest.mark.parametrize(
    ("trace", "level", "loader"),
    [
        ("true", "file", "trace=%process,%file,fchdir"),
        pytest.param('"ebpf"', "process", "refused", id="ebpf", marks=[needs_ebpf, pytest.mark.ebpf]),
    ],
)
def test_a_refused_open_of_a_traced_task_is_recorded_at_the_default_level(
    agents, capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path, trace: str, level: str, loader: str
) -> None:
    """Path rules raise a traced attempt's level as `capsule run --policy` does (strace: file; eBPF:
    only the refused opens), so a `cat .env` at the plan's default level is a policy.blocked event
    of the task, and `agents result` says what was refused in one readable line."""
    (tmp_path / ".env").write_text("SECRET=s3cr3t-value-42\n")
    plan = f"""
[run]
trace = {trace}
[policy]
protect_paths = [".env"]
[[task]]
id = "peek"
command = "cat .env; echo rc=$?"
timeout = "60s"
"""
    done, events = agents(plan)
    assert done.returncode == 0, done.stderr
    started = of(events, "task.started", "peek")[0]
    assert "rc=1" in (Path(started["log_dir"]) / "1.out").read_text()
    (blocked,) = of(events, "policy.blocked", "peek")
    assert (blocked["path"], blocked["rule"]) == (str(tmp_path / ".env"), ".env")
    header = orjson.loads(
        (capsule_home / "runs" / started["trace_session"] / "events.jsonl").read_bytes().splitlines()[0]
    )
    assert (header["trace_level"], header["tracer_flags"][-1]) == (level, loader)
    shown = capsule("agents", "result", "peek").stdout
    assert f"blocked: {tmp_path / '.env'} (rule '.env', mount-namespace, pid {blocked['pid']})" in shown
    check = capsule("agents", "check", str(tmp_path / "plan.toml")).stdout
    assert "path rules on untraced tasks" not in check
    untraced = (tmp_path / "plan.toml").read_text().replace(f"trace = {trace}", "trace = false")
    (tmp_path / "plan.toml").write_text(untraced)
    assert "path rules on untraced tasks" in capsule("agents", "check", str(tmp_path / "plan.toml")).stdout


def test_on_violation_kill_ends_the_task(agents, tmp_path: Path, fake_sudo: Path) -> None:
    """on_violation = "kill": the first refusal ends the task as denied; nothing after it runs."""
    _agent(tmp_path)
    plan = """
[policy]
deny_commands = ["sudo *"]
on_violation = "kill"
[[task]]
id = "agent"
command = ["node", "agent.js"]
timeout = "60s"
"""
    _done, events = agents(plan)
    assert of(events, "task.failed", "agent")[0]["outcome"] == "denied"
    started = of(events, "task.started", "agent")[0]
    assert "after" not in (Path(started["log_dir"]) / "1.out").read_text()
    assert not fake_sudo.exists()
    assert of(events, "policy.blocked", "agent")[0]["action"] == "kill"


def test_unavailable_mechanism_refuses_the_run(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """A plan whose policy needs a missing mechanism does not start: one line, exit 125."""
    plan = tmp_path / "plan.toml"
    plan.write_text('[policy]\nnetwork = "off"\n[[task]]\nid = "t"\ncommand = "true"\n')
    done = capsule("agents", "run", str(plan), env={"CAPSULE_GUARD_PRETEND_MISSING": "network-namespace"})
    assert done.returncode == 125
    assert done.stderr.startswith("capsule: error: the policy needs network-namespace")


def test_fallback_detect_in_a_plan_kills_a_traced_task_after_the_fact(
    agents, capsule: CapsuleRunner, tmp_path: Path, fake_sudo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fallback = "detect"` in the plan's [policy], seccomp notify missing: a traced task's sudo is
    detected from its trace and the task is ended; an untraced plan is refused in one line (exit 125)."""
    monkeypatch.setenv("CAPSULE_GUARD_PRETEND_MISSING", "seccomp-notify")
    body = (
        '[policy]\ndeny_commands = ["sudo *"]\nfallback = "detect"\n'
        '[[task]]\nid = "t"\ncommand = ["bash", "-c", "x=sud; ${x}o id; sleep 60; echo after"]\ntimeout = "90s"\n'
    )
    done, events = agents("[run]\ntrace = true\n" + body)
    assert of(events, "task.failed", "t"), done.stderr
    assert of(events, "task.failed", "t")[0]["outcome"] == "denied"
    blocked = of(events, "policy.blocked", "t")
    assert blocked
    assert {(b["mechanism"], b["action"]) for b in blocked} == {("detect", "kill")}
    started = of(events, "task.started", "t")[0]
    assert "after" not in (Path(started["log_dir"]) / "1.out").read_text()
    plan = tmp_path / "untraced.toml"
    plan.write_text(body)
    done = capsule("agents", "run", str(plan))
    assert done.returncode == 125
    assert done.stderr.startswith("capsule: error: policy downgraded: seccomp-notify unavailable")
    assert done.stderr.strip().endswith("set [run] trace = true")
