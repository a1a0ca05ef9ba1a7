"""`capsule run --policy` end to end: real strace, real seccomp user notification, real bubblewrap and
network namespaces. Every refusal must happen before the syscall, be an event and show in the report.

The tests of what the guard does to a recorded tree run with each tracer (`capsule` below adds
`--tracer`); those about the policy or the machine alone run once."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import CapsuleRunner, report_json
from tests.ebpf.available import TRACERS

pytestmark = pytest.mark.strace
ONCE = pytest.mark.parametrize("tracer", ["strace"])  # the tracer plays no part in what the test shows


@pytest.fixture(params=TRACERS)
def tracer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def capsule(capsule: CapsuleRunner, tracer: str) -> CapsuleRunner:
    """The real CLI, `capsule run` recording with `tracer`."""

    def run(*args: str, **kwargs: object) -> object:
        if args and args[0] == "run":
            args = ("run", "--tracer", tracer, *args[1:])
        return capsule(*args, **kwargs)

    return run  # type: ignore[return-value]


SECRET = "sk-planted-5f1e0c2a9b7d4e3f"  # noqa: S105 - planted on purpose, must leak nowhere


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory to run in, with a fake `sudo` on PATH that leaves a marker if it ever runs."""
    project = tmp_path / "project"
    project.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sudo = bin_dir / "sudo"
    sudo.write_text(f"#!/bin/sh\necho ran >> {tmp_path}/sudo-ran\n")
    sudo.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.chdir(project)
    return project


def _policy(path: Path, **table: object) -> str:
    lines = ["[policy]"]
    for key, value in table.items():
        lines.append(f"{key} = {orjson.dumps(value).decode()}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _events(home: Path, kind: str | None = None) -> list[dict]:
    (run,) = sorted((home / "runs").iterdir())
    lines = (run / "events.jsonl").read_bytes().splitlines()
    events = [orjson.loads(line) for line in lines]
    return [e for e in events if kind is None or e["kind"] == kind]


def _refused_execs(home: Path) -> list[dict]:
    """The failed exec attempts the record shows with EPERM (as the tracer saw the guard refuse them)."""
    return [e for e in _events(home, "proc.exec") if not e["ok"] and e["errno"] == "EPERM"]


def test_denied_rm_in_a_shell_string_never_runs(
    capsule: CapsuleRunner, capsule_home: Path, work: Path
) -> None:
    """`bash -c 'rm -rf canary; echo done'` under `rm -rf *`: the shell is refused, the canary lives."""
    (work / "canary").mkdir()
    (work / "canary" / "keep").write_text("x")
    policy = _policy(work.parent / "p.toml", deny_commands=["rm -rf *"])
    done = capsule("run", "--policy", policy, "--", "bash", "-c", "rm -rf canary; echo done")
    assert (work / "canary" / "keep").exists()
    assert "done" not in done.stdout
    assert done.returncode == 126  # the command never ran, as a shell says it (not strace's own 1)
    assert " · 1 blocked by the policy · " in done.stderr  # the run's own summary line says so
    # and names what and why, under the command's bare "Operation not permitted"
    assert "capsule: blocked rm -rf canary · rule 'rm -rf *' · pid " in done.stderr
    (blocked,) = _events(capsule_home, "policy.blocked")
    assert blocked["rule"] == "rm -rf *"
    assert blocked["command"] == "rm -rf canary"
    assert blocked["mechanism"] == "seccomp-notify"
    assert blocked["argv"] == ["bash", "-c", "rm -rf canary; echo done"]
    # the tracer still recorded the refused attempt, as a failed exec
    (refused,) = _refused_execs(capsule_home)
    assert refused["argv"] == ["bash", "-c", "rm -rf canary; echo done"]
    report = report_json(capsule)
    assert report["policy"]["blocked_count"] == 1
    assert report["policy"]["mechanisms"] == ["seccomp-notify"]
    text = capsule("report", "latest").stdout
    assert "rm -rf *" in text
    assert "1 blocked" in text
    page = work.parent / "report.html"
    assert capsule("report", "latest", "--html", str(page)).returncode == 0
    html = page.read_text()
    assert "Policy · enforced by seccomp-notify · 1 blocked" in html
    # argv as a shell reads it (was `bash -c rm -rf canary; echo done`, which reads as two commands)
    shown = "bash -c &#x27;rm -rf canary; echo done&#x27;  (inside: rm -rf canary)"
    assert f"<td>{shown}</td><td>rm -rf *</td>" in html


@pytest.mark.parametrize(
    "script",
    [
        "echo a; curl -s file://$PWD/x.sh | sh",
        # bashlex cannot parse these (`[[ ]]`, `case`): they were let through whole
        "[[ -n $PWD ]] && curl -s file://$PWD/x.sh | sh",
        "case $PWD in /*) curl -s file://$PWD/x.sh 2>/dev/null | sh ;; esac",
    ],
)
def test_curl_pipe_sh_inside_a_list_never_runs_the_script(
    capsule: CapsuleRunner, capsule_home: Path, work: Path, script: str
) -> None:
    """`echo a; curl … | sh` under `curl * | sh`: x.sh never runs (the issue's bypass, closed), nor
    inside a string bashlex cannot parse."""
    (work / "x.sh").write_text(f"touch {work}/pwned\n")
    policy = _policy(work.parent / "p.toml", deny_commands=["curl * | sh"])
    done = capsule("run", "--policy", policy, "--", "bash", "-c", script)
    assert not (work / "pwned").exists()
    assert done.returncode != 0
    (blocked,) = _events(capsule_home, "policy.blocked")
    assert blocked["rule"] == "curl * | sh"


def test_sudo_deep_in_the_tree_is_blocked(capsule: CapsuleRunner, capsule_home: Path, work: Path) -> None:
    """sudo from a Node child_process and from a Python subprocess, two levels down: both refused,
    both programs go on, the fake sudo never runs, and every allowed exec is still recorded."""
    (work / "agent.js").write_text(
        "const cp = require('child_process');\n"
        "try { cp.execFileSync('sudo', ['id']); console.log('node: ran'); }\n"
        "catch (e) { console.log('node: ' + e.code); }\n"
        f"cp.execFileSync('{sys.executable}', ['tool.py'], {{stdio: 'inherit'}});\n"
    )
    (work / "tool.py").write_text(
        "import subprocess\n"
        "try:\n    subprocess.run(['sudo', 'id'])\n    print('python: ran')\n"
        "except PermissionError as e:\n    print('python: EPERM', e.errno)\n"
        "subprocess.run(['true'])\n"
    )
    policy = _policy(work.parent / "p.toml", deny_commands=["sudo *"])
    done = capsule("run", "--policy", policy, "--", "node", "agent.js")
    assert done.returncode == 0, done.stderr
    assert "node: EPERM" in done.stdout
    assert "python: EPERM 1" in done.stdout
    assert not (work.parent / "sudo-ran").exists()
    blocked = _events(capsule_home, "policy.blocked")
    assert [b["rule"] for b in blocked] == ["sudo *", "sudo *"]
    assert all(b["argv"] == ["sudo", "id"] for b in blocked)
    execs = _events(capsule_home, "proc.exec")
    ran = {Path(e["path"]).name for e in execs if e["ok"]}
    assert {"node", Path(sys.executable).name, "true"} <= ran
    refused = _refused_execs(capsule_home)
    assert len(refused) == 2
    assert all(e["argv"] == ["sudo", "id"] for e in refused)
    assert all(Path(e["path"]).name == "sudo" for e in refused)


def test_a_command_line_is_judged_again_when_its_script_changes(
    capsule: CapsuleRunner, capsule_home: Path, work: Path
) -> None:
    """The guard remembers allowed command lines (a loop of the same exec is judged once), but never
    one that runs a script file: `sh s.sh`, allowed, is refused once s.sh says sudo; and an allowed
    line stays allowed while a refused one is refused each time."""
    (work / "s.sh").write_text("echo one\n")
    (work / "tool.py").write_text(
        "import subprocess\n"
        "def run(argv):\n"
        "    try:\n        return subprocess.run(argv).returncode\n"
        "    except PermissionError:\n        return 'EPERM'\n"
        "print('true:', [run(['true']) for _ in range(3)])\n"
        "print('script:', [run(['sh', 's.sh']) for _ in range(2)])\n"
        "open('s.sh', 'w').write('sudo id\\n')\n"
        "print('script:', run(['sh', 's.sh']))\n"
        "print('sudo:', [run(['sudo', 'id']) for _ in range(2)])\n"
    )
    policy = _policy(work.parent / "p.toml", deny_commands=["sudo *"])
    done = capsule("run", "--policy", policy, "--", sys.executable, "tool.py")
    assert done.returncode == 0, done.stderr
    assert "true: [0, 0, 0]" in done.stdout
    assert done.stdout.count("script:") == 2
    assert "script: [0, 0]" in done.stdout  # the second judged by the script's digest, kept
    assert "script: EPERM" in done.stdout
    assert "sudo: ['EPERM', 'EPERM']" in done.stdout
    assert not (work.parent / "sudo-ran").exists()
    blocked = _events(capsule_home, "policy.blocked")
    assert [b["argv"] for b in blocked] == [["sh", "s.sh"], ["sudo", "id"], ["sudo", "id"]]
    (checked,) = _events(capsule_home, "policy.checked")
    assert checked["execs"] >= 8
    assert checked["blocked"] >= 3


def test_allow_commands_blocks_the_rest(capsule: CapsuleRunner, capsule_home: Path, work: Path) -> None:
    """allow_commands: `true` runs, `ls` (not allowed) is refused and the program goes on."""
    (work / "tool.py").write_text(
        "import subprocess\n"
        "print('true:', subprocess.run(['true']).returncode)\n"
        "try:\n    subprocess.run(['ls'])\nexcept PermissionError:\n    print('ls: EPERM')\n"
    )
    policy = _policy(work.parent / "p.toml", allow_commands=["python* tool.py", "true"])
    done = capsule("run", "--policy", policy, "--", sys.executable, "tool.py")
    assert done.returncode == 0, done.stderr
    assert "true: 0" in done.stdout
    assert "ls: EPERM" in done.stdout
    (blocked,) = _events(capsule_home, "policy.blocked")
    assert blocked["rule"] == "allow_commands"
    assert blocked["argv"] == ["ls"]
    # the recording itself is not refused: strace's spool relay runs, and the tree is in the record
    execs = _events(capsule_home, "proc.exec")
    assert {Path(e["path"]).name for e in execs if e["ok"]} >= {Path(sys.executable).name, "true"}


def test_an_exec_whose_argv_cannot_be_read_fails_as_the_kernel_would(
    capsule: CapsuleRunner, capsule_home: Path, work: Path
) -> None:
    """execve with argv pointing at nothing: the guard cannot read it, so it answers what the kernel
    would (EFAULT) instead of leaving the exec waiting in the kernel (the tree hung until killed)."""
    (work / "bad.py").write_text(
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "result = libc.execve(b'/bin/true', ctypes.c_void_p(8), None)\n"
        "print('execve:', result, os.strerror(ctypes.get_errno()))\n"
    )
    policy = _policy(work.parent / "p.toml", deny_commands=["sudo *"])
    done = capsule("run", "--policy", policy, "--", sys.executable, "bad.py", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "execve: -1 Bad address" in done.stdout
    assert _events(capsule_home, "policy.blocked") == []


def test_protected_file_cannot_be_read_and_the_secret_is_nowhere(
    capsule: CapsuleRunner, capsule_home: Path, work: Path
) -> None:
    """`cat .env` and Python's open('.env') fail; the planted secret is nowhere under $CAPSULE_HOME."""
    (work / ".env").write_text(f"API_KEY={SECRET}\n")
    (work / "sub").mkdir()
    (work / "sub" / "server.key").write_text(SECRET)
    policy = _policy(work.parent / "p.toml", protect_paths=[".env", "*.key"])
    script = (
        "cat .env; echo cat=$?; cat sub/server.key; echo key=$?; "
        f"{sys.executable} -c \"open('.env').read()\" 2>/dev/null; echo py=$?"
    )
    done = capsule("run", "--policy", policy, "--", "bash", "-c", script)
    assert "cat=1" in done.stdout
    assert "key=1" in done.stdout
    assert "py=1" in done.stdout
    assert SECRET not in done.stdout + done.stderr
    assert (work / ".env").read_text() == f"API_KEY={SECRET}\n"  # hidden, not harmed
    for path in capsule_home.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    blocked = _events(capsule_home, "policy.blocked")
    assert {b["path"] for b in blocked} >= {str(work / ".env"), str(work / "sub" / "server.key")}
    assert {b["mechanism"] for b in blocked} == {"mount-namespace"}
    # each at the time of the open it refused (was: when the recorder read that line)
    refused: dict[tuple[int, str], set[float]] = {}
    for e in _events(capsule_home, "file.opened"):
        if not e["ok"]:
            refused.setdefault((e["pid"], e["path"]), set()).add(e["ts"])
    for b in blocked:
        assert b["ts"] in refused[(b["pid"], b["path"])], b
    (applied,) = _events(capsule_home, "policy.applied")
    assert applied["hidden"] == 2


def test_a_protected_directory_holding_protected_files_starts_and_hides_them(
    capsule: CapsuleRunner, capsule_home: Path, work: Path
) -> None:
    """`*.key` matching a directory (`vault.key/`) and a file inside it: the directory is hidden whole
    (bubblewrap failed to start when it was asked to bind over the file inside it too)."""
    (work / "vault.key").mkdir()
    (work / "vault.key" / "inner.key").write_text(SECRET)
    (work / "vault.key" / "notes").write_text(SECRET)
    (work / "plain.key").write_text(SECRET)
    policy = _policy(work.parent / "p.toml", protect_paths=["*.key"])
    script = "cat vault.key/inner.key; echo in=$?; cat vault.key/notes; echo notes=$?; cat plain.key; echo plain=$?"
    done = capsule("run", "--policy", policy, "--", "bash", "-c", script)
    assert "in=1" in done.stdout, done.stderr
    assert "notes=1" in done.stdout
    assert "plain=1" in done.stdout
    assert SECRET not in done.stdout + done.stderr
    for path in capsule_home.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


@ONCE
def test_a_key_made_between_two_runs_is_protected_on_the_second(
    capsule: CapsuleRunner, capsule_home: Path, work: Path
) -> None:
    """The glob walk kept from the first run (stages/guard_walk.py) still finds a `*.key` made after it:
    the second run cannot read it, and its secret is nowhere under $CAPSULE_HOME."""
    (work / "sub").mkdir()
    (work / "sub" / "old.key").write_text("old")
    policy = _policy(work.parent / "p.toml", protect_paths=["*.key"])
    first = capsule("run", "--policy", policy, "--", "bash", "-c", "cat sub/old.key; echo old=$?")
    assert "old=1" in first.stdout, first.stderr
    assert list((capsule_home / "guard-walk").iterdir())  # the walk was kept
    (work / "sub" / "new.key").write_text(SECRET)
    (work / "new.key").write_text(SECRET)
    script = "cat sub/new.key; echo sub=$?; cat new.key; echo top=$?"
    second = capsule("run", "--policy", policy, "--", "bash", "-c", script)
    assert "sub=1" in second.stdout, second.stderr
    assert "top=1" in second.stdout
    assert SECRET not in second.stdout + second.stderr
    for path in capsule_home.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_read_only_path_cannot_be_written(capsule: CapsuleRunner, capsule_home: Path, work: Path) -> None:
    """A write into a read_only_paths directory fails with EROFS; reading it works."""
    frozen = work / "frozen"
    frozen.mkdir()
    (frozen / "f").write_text("before")
    policy = _policy(work.parent / "p.toml", read_only_paths=[str(frozen)])
    done = capsule(
        "run", "--policy", policy, "--", "bash", "-c", f"cat {frozen}/f; echo after > {frozen}/f; echo w=$?"
    )
    assert "before" in done.stdout
    assert "w=1" in done.stdout
    assert "Read-only file system" in done.stderr
    assert (frozen / "f").read_text() == "before"
    (blocked,) = _events(capsule_home, "policy.blocked")
    assert blocked["rule"] == str(frozen)


@pytest.fixture
def server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 in the test's own network namespace; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield port
    listener.close()


CONNECT = (
    "import socket, sys\n"
    "try:\n    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5).close()\n"
    "    print('connected')\nexcept OSError as e:\n    print('failed', e.errno)\n"
)
SELF = (
    "import socket\n"
    "try:\n    s = socket.create_server(('127.0.0.1', 0))\n"
    "    socket.create_connection(s.getsockname(), timeout=5).close()\n    print('lo works')\n"
    "except OSError as e:\n    print('lo fails', e.errno)\n"
)


@pytest.mark.parametrize(
    ("network", "outside", "inside"),
    [("on", "connected", "lo works"), ("off", "failed", "lo fails"), ("loopback", "failed", "lo works")],
)
def test_network_modes(
    capsule: CapsuleRunner,
    capsule_home: Path,
    work: Path,
    server: int,
    network: str,
    outside: str,
    inside: str,
) -> None:
    """network = off: nothing connects, not even loopback; loopback: only the tree's own lo; on: all."""
    (work / "connect.py").write_text(CONNECT)
    (work / "self.py").write_text(SELF)
    policy = _policy(work.parent / "p.toml", network=network)
    script = f"{sys.executable} connect.py {server}; {sys.executable} self.py"
    done = capsule("run", "--policy", policy, "--", "bash", "-c", script)
    assert done.returncode == 0, done.stderr
    assert outside in done.stdout
    assert inside in done.stdout
    # the recording itself is unaffected: the whole tree is in the session
    assert len([e for e in _events(capsule_home, "proc.exec") if e["ok"]]) >= 3


def test_on_violation_kill_reaches_children_reparented_out_of_the_tree(
    capsule: CapsuleRunner, capsule_home: Path, work: Path
) -> None:
    """on_violation = "kill" kills what strace traces, not only the shell's children: a sleeper whose
    subshell exited (reparented away) dies too, and the spool relay lives (the record is whole)."""
    policy = _policy(work.parent / "p.toml", deny_commands=["sudo *"], on_violation="kill")
    script = "(sleep 600 &); sleep 0.2; x=sud; ${x}o id; echo after"
    # Were the sleeper spared, strace would wait for it (600 s) and this run would time out.
    done = capsule("run", "--policy", policy, "--", "bash", "-c", script, timeout=300)
    assert "after" not in done.stdout
    assert done.returncode == 128 + 9
    execs = {e["pid"]: e for e in _events(capsule_home, "proc.exec") if e["ok"]}
    (sleeper,) = [pid for pid, e in execs.items() if e["argv"] == ["sleep", "600"]]
    exits = {e["pid"]: e for e in _events(capsule_home, "proc.exited")}
    assert exits[sleeper]["signal"] == "SIGKILL"
    assert _events(capsule_home, "session.ended")[0]["lines"] > 0


def test_on_violation_kill_stops_the_tree(capsule: CapsuleRunner, capsule_home: Path, work: Path) -> None:
    """on_violation = "kill": the exec is refused, then the whole tree is killed (no `after`)."""
    policy = _policy(work.parent / "p.toml", deny_commands=["sudo *"], on_violation="kill")
    # `${x}o`: the string does not say sudo, so the shell runs and its exec of sudo is what is refused
    done = capsule("run", "--policy", policy, "--", "bash", "-c", "x=sud; ${x}o id; sleep 60; echo after")
    assert "after" not in done.stdout
    assert done.returncode == 128 + 9
    (blocked,) = _events(capsule_home, "policy.blocked")
    assert blocked["action"] == "kill"
    assert not (work.parent / "sudo-ran").exists()


@ONCE
def test_missing_mechanism_refuses_to_start(capsule: CapsuleRunner, capsule_home: Path, work: Path) -> None:
    """Without seccomp notify (made unavailable for the test) a command policy refuses: one line, 125."""
    policy = _policy(work.parent / "p.toml", deny_commands=["sudo *"])
    env = {"CAPSULE_GUARD_PRETEND_MISSING": "seccomp-notify"}
    done = capsule("run", "--policy", policy, "--", "true", env=env)
    assert done.returncode == 125
    assert done.stderr.startswith("capsule: error: the policy needs seccomp-notify")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (capsule_home / "runs").exists() or not any((capsule_home / "runs").iterdir())


@ONCE
def test_fake_failing_bwrap_refuses_path_rules(
    capsule: CapsuleRunner, capsule_home: Path, work: Path, tmp_path: Path
) -> None:
    """A bwrap that cannot work (a failing one first on PATH) makes path rules refuse to start."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "bwrap").write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n"
    )
    (fake / "bwrap").chmod(0o755)
    policy = _policy(work.parent / "p.toml", protect_paths=[".env"])
    env = {"PATH": f"{fake}:{os.environ['PATH']}"}
    done = capsule("run", "--policy", policy, "--", "true", env=env)
    assert done.returncode == 125
    assert "mount-namespace" in done.stderr
    assert "No permissions to create new namespace" in done.stderr


@ONCE
def test_a_sandbox_failing_at_the_start_is_not_blamed_on_ptrace(
    capsule: CapsuleRunner, capsule_home: Path, work: Path, tmp_path: Path, tracer: str
) -> None:
    """bubblewrap passing its probe but failing around strace: its own message, then Capsule's line
    says the sandbox may have failed (it said "is ptrace permitted?")."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    real = shutil.which("bwrap")
    assert real is not None
    (fake / "bwrap").write_text(
        "#!/bin/sh\n"
        'for a; do case $a in */strace) echo "bwrap: Can\'t mkdir parents" >&2; exit 1;; esac; done\n'
        f'exec {real} "$@"\n'
    )
    (fake / "bwrap").chmod(0o755)
    policy = _policy(work.parent / "p.toml", protect_paths=[".env"])
    done = capsule("run", "--policy", policy, "--", "true", env={"PATH": f"{fake}:{os.environ['PATH']}"})
    assert done.returncode == 125, done.stderr
    assert "bwrap: Can't mkdir parents" in done.stderr
    assert "strace or the policy's sandbox around it exited with 1" in done.stderr
    assert "ptrace" not in done.stderr


def test_fallback_detect_kills_after_the_fact(capsule: CapsuleRunner, capsule_home: Path, work: Path) -> None:
    """--policy-fallback=detect without seccomp notify: sudo runs, is detected, the tree is killed, and
    the session carries the warning."""
    policy = _policy(work.parent / "p.toml", deny_commands=["sudo *"])
    env = {"CAPSULE_GUARD_PRETEND_MISSING": "seccomp-notify"}
    done = capsule(
        "run",
        "--policy",
        policy,
        "--policy-fallback=detect",
        "--",
        "bash",
        "-c",
        "sudo id; sleep 60; echo after",
        env=env,
    )
    assert "after" not in done.stdout
    assert done.returncode == 128 + 9
    assert "capsule: warning: policy downgraded: seccomp-notify unavailable" in done.stderr
    (applied,) = _events(capsule_home, "policy.applied")
    assert applied["detected"] == ["seccomp-notify"]
    assert applied["mechanisms"] == []
    blocked = _events(capsule_home, "policy.blocked")
    assert blocked
    assert {(b["mechanism"], b["action"]) for b in blocked} == {("detect", "kill")}
    report = report_json(capsule)
    assert any("policy downgraded" in w for w in report["warnings"])


def test_config_toml_policy_is_the_run_default(
    capsule: CapsuleRunner, capsule_home: Path, work: Path
) -> None:
    """[policy] in $CAPSULE_HOME/config.toml guards `capsule run` without --policy."""
    capsule_home.mkdir(parents=True, exist_ok=True)
    _policy(capsule_home / "config.toml", deny_commands=["sudo *"])
    done = capsule("run", "--", "bash", "-c", "x=sud; ${x}o id; echo rc=$?")
    assert "rc=126" in done.stdout
    assert not (work.parent / "sudo-ran").exists()
    assert len(_events(capsule_home, "policy.blocked")) == 1


@ONCE
def test_bad_policy_file_is_one_line(capsule: CapsuleRunner, work: Path) -> None:
    """A malformed policy file: one `capsule: error:` line naming the file and key, exit 4."""
    bad = work.parent / "bad.toml"
    bad.write_text('[policy]\nnetwork = "wifi"\n')
    done = capsule("run", "--policy", str(bad), "--", "true")
    assert done.returncode == 4
    assert done.stderr.strip() == (
        f"capsule: error: {bad}: [policy] network: expected one of on, off, loopback, got 'wifi'"
    )


@ONCE
def test_doctor_lists_the_guard_mechanisms(capsule: CapsuleRunner) -> None:
    """capsule doctor says which policy mechanisms work here."""
    done = capsule("doctor", "--json")
    checks = {c["check"]: c for c in orjson.loads(done.stdout)["checks"]}
    for mechanism in ("seccomp-notify", "mount-namespace", "network-namespace"):
        assert checks[mechanism]["ok"], checks[mechanism]
    missing = capsule("doctor", "--json", env={"CAPSULE_GUARD_PRETEND_MISSING": "network-namespace"})
    checks = {c["check"]: c for c in orjson.loads(missing.stdout)["checks"]}
    assert not checks["network-namespace"]["ok"]
    assert missing.returncode == 0  # recording itself still works


def test_sigterm_reaches_the_guarded_command(capsule_home: Path, work: Path, tracer: str) -> None:
    """SIGTERM to capsule goes to the command (past the launcher, bwrap and strace), which handles it;
    capsule exits with the command's code and the session is complete."""
    import signal
    import subprocess
    import time

    policy = _policy(work.parent / "p.toml", deny_commands=["sudo *"], protect_paths=[".env"])
    ready = work / "ready"
    script = f"trap 'echo got; kill $!; exit 3' TERM; touch {ready}; sleep 30 & wait"
    env = {**os.environ, "CAPSULE_HOME": str(capsule_home), "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "capsule",
            "run",
            "--tracer",
            tracer,
            "--policy",
            policy,
            "--",
            "bash",
            "-c",
            script,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, _err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3
    assert "got" in out
    ended = _events(capsule_home, "session.ended")
    assert ended[0]["exit_code"] == 3


def test_the_guard_server_holds_nothing_else_and_dies_with_capsule(
    capsule_home: Path, work: Path, tracer: str
) -> None:
    """The notification loop runs in a forked child of capsule (off the recording's interpreter lock):
    it holds only its own descriptors (not a copy of capsule's other files or pipes), and when capsule
    is killed it dies too, so the tree's next exec fails instead of running unjudged."""
    import contextlib
    import signal
    import subprocess
    import time

    import psutil

    policy = _policy(work.parent / "p.toml", deny_commands=["sudo *"])
    fifo = work / "go"
    os.mkfifo(fifo)
    out = work / "out"
    script = f"read x < {fifo}; /bin/echo after > {out}; echo rc=$? > {work}/rc"
    env = {**os.environ, "CAPSULE_HOME": str(capsule_home), "NO_COLOR": "1"}
    argv = [sys.executable, "-m", "capsule", "run", "--tracer", tracer, "--policy", policy, "--"]
    proc = subprocess.Popen(
        [*argv, "bash", "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        me = psutil.Process(proc.pid)
        deadline = time.monotonic() + 30
        server = bash = None
        while server is None or bash is None:
            assert time.monotonic() < deadline, "no guard server or no command"
            with contextlib.suppress(psutil.Error):  # a process gone between the listing and the look
                kids = me.children(recursive=True)
                server = next((k for k in me.children() if k.cmdline() == me.cmdline()), None)
                bash = next((k for k in kids if k.name() == "bash" and "-c" in k.cmdline()), None)
            time.sleep(0.02)
        fds = set(os.listdir(f"/proc/{server.pid}/fd"))
        # stdin/stdout on /dev/null, stderr, the launcher's socket, the listener it passed, the wake-up
        # pipe, the report pipe
        assert len(fds) <= 7, {fd: os.readlink(f"/proc/{server.pid}/fd/{fd}") for fd in fds}
        assert os.readlink(f"/proc/{server.pid}/fd/1") == os.devnull
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        server.wait(timeout=30)  # PR_SET_PDEATHSIG
        fifo.write_text("go\n")
        bash.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists() or "after" not in out.read_text()
    assert (work / "rc").read_text().strip() != "rc=0"


def test_capsules_own_state_is_read_only_to_the_tree(
    capsule: CapsuleRunner, capsule_home: Path, work: Path, tmp_path: Path
) -> None:
    """With path rules, the tree cannot rewrite Capsule's config, caches or records (a later run's
    policy, the kept glob walk, the session being recorded), while the recording itself goes on."""
    cache = tmp_path / "xdg-cache"
    (cache / "capsule").mkdir(parents=True)
    capsule_home.mkdir(exist_ok=True)
    (capsule_home / "config.toml").write_text("")
    policy = _policy(work.parent / "p.toml", protect_paths=["*.key"])
    script = (
        f'echo "[policy]" >> {capsule_home}/config.toml; echo config=$?; '
        f"mkdir {capsule_home}/guard-walk/x; echo walk=$?; "
        f"touch {capsule_home}/runs/forged; echo runs=$?; "
        f"touch {cache}/capsule/forged; echo cache=$?; echo ok > {work}/mine; echo own=$?"
    )
    done = capsule("run", "--policy", policy, "--", "bash", "-c", script, env={"XDG_CACHE_HOME": str(cache)})
    assert done.returncode == 0, done.stderr
    for part in ("config", "walk", "runs", "cache"):
        assert f"{part}=1" in done.stdout, done.stdout
    assert "own=0" in done.stdout  # the working directory is the tree's
    assert (capsule_home / "config.toml").read_text() == ""
    assert not (capsule_home / "runs" / "forged").exists()
    assert not (cache / "capsule" / "forged").exists()
    assert _events(capsule_home, "session.ended")  # the recording itself was written
    execs = _events(capsule_home, "proc.exec")
    assert any(Path(e["path"]).name == "touch" for e in execs)


def test_a_protected_home_holding_capsules_own_state_is_hidden_and_the_run_recorded(
    capsule: CapsuleRunner, work: Path, tmp_path: Path
) -> None:
    """`protect_paths = ["~"]` with Capsule's home in ~/.capsule: bubblewrap could not make the
    recording's mount points inside the empty directory over ~ and the run failed to start ("Can't
    mkdir parents"). Now ~ is an empty, read-only, unlistable tmpfs with only Capsule's own state in it."""
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text(SECRET)
    home = user / ".capsule"
    policy = _policy(work.parent / "p.toml", protect_paths=["~"])
    script = (
        "cat ~/notes.txt; echo cat=$?; ls ~ >/dev/null; echo ls=$?; touch ~/new; echo touch=$?; "
        "ls ~/.capsule/runs >/dev/null; echo own=$?"
    )
    env = {"HOME": str(user), "CAPSULE_HOME": str(home), "XDG_CACHE_HOME": str(user / ".cache")}
    done = capsule("run", "--policy", policy, "--", "bash", "-c", script, env=env)
    assert done.returncode == 0, done.stderr
    for part, code in (("cat", 1), ("ls", 2), ("touch", 1), ("own", 0)):
        assert f"{part}={code}" in done.stdout, done.stdout
    assert SECRET not in done.stdout + done.stderr
    assert not (user / "new").exists()
    assert (user / "notes.txt").read_text() == SECRET  # hidden, not harmed
    for path in home.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert _events(home, "session.ended")
    blocked = _events(home, "policy.blocked")
    assert str(user) in {b["path"] for b in blocked}, blocked  # the listing refused
