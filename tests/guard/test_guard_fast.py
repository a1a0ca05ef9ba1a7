"""The guard's C fast path (stages/guard_answer.py): the library against a real seccomp listener (it
reads each exec as Guard._read does and answers only what it was told to remember), and `capsule run`
with and without it (CAPSULE_GUARD_PRETEND_MISSING=c-answerer: today's Python server alone)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from capsule.stages.guard import Guard
from capsule.stages.guard_answer import LIBRARY, Answerer, library
from capsule.stages.guard_probe import launcher_command
from tests.conftest import CapsuleRunner
from tests.ebpf.available import TRACERS

pytestmark = pytest.mark.strace
BUILT = library()
needs_cc = pytest.mark.skipif(BUILT is None, reason="the guard's fast path cannot be built here (no cc)")
MODES = [
    pytest.param({}, id="fast"),
    pytest.param({"CAPSULE_GUARD_PRETEND_MISSING": "c-answerer"}, id="python"),
]


@pytest.fixture
def answerer(tmp_path: Path) -> Answerer:
    """The library loaded afresh (a copy at its own path: its own memo and counts)."""
    assert BUILT is not None
    copy = tmp_path / LIBRARY
    shutil.copy(BUILT, copy)
    loaded = Answerer.load(copy)
    assert loaded is not None
    return loaded


@needs_cc
def test_the_library_reads_as_python_does_and_answers_only_what_it_remembers(
    answerer: Answerer, tmp_path: Path
) -> None:
    """Each exec handed back reads as Guard._read reads it (a relative path joined to the cwd, execveat
    on an fd); a remembered line is answered in C and counted, never handed back."""
    (tmp_path / "rel").write_text("#!/bin/sh\n:\n")
    (tmp_path / "rel").chmod(0o755)
    fexec = "import os; os.execve(os.open('/bin/echo', os.O_RDONLY), ['echo', 'fd'], {})"
    script = f'/bin/true; /bin/true; ./rel; /bin/true; exec {sys.executable} -I -S -c "{fexec}"'
    answerer.remember("/bin/true", ["/bin/true"])
    ours, theirs = socket.socketpair()
    wake_r, wake_w = os.pipe()
    argv = [*launcher_command(), "--notify", str(theirs.fileno()), "--", "/bin/sh", "-c", script]
    proc = subprocess.Popen(argv, pass_fds=(theirs.fileno(),), cwd=tmp_path, stdout=subprocess.PIPE)
    theirs.close()
    with ours:
        _, fds, _, _ = socket.recv_fds(ours, 4, 1)
    (listener,) = fds
    handed = []
    try:
        while not isinstance(got := answerer.next(listener, wake_r), bool):
            nid, pid, nr, args, _, read = got
            assert read == Guard._read(pid, nr, args)
            handed.append(read)
            Guard._respond(listener, nid, True)
        assert got is True  # every process under the filter is gone
    finally:
        os.close(listener)  # should the test fail: the tree's execs fail instead of waiting
        out, _ = proc.communicate(timeout=30)
        for fd in (wake_r, wake_w):
            os.close(fd)
    assert proc.returncode == 0
    assert out == b"fd\n"
    # ./rel joined as os.path.join does (its #! line is the same execve: no notification of its own);
    # the last, execveat(fd, "", AT_EMPTY_PATH): the file the fd names
    paths = [h[0] if h else None for h in handed]
    assert paths == ["/bin/sh", f"{tmp_path}/./rel", sys.executable, "/usr/bin/echo"]
    assert len(answerer.totals()) == 3


@pytest.fixture(params=TRACERS)
def tracer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _checked(capsule: CapsuleRunner, tmp_path: Path, tracer: str, n: int, env: dict) -> dict:
    """One guarded run of n `/bin/true` then a denied exec (a CAPSULE_HOME of its own); its
    policy.checked event."""
    home = tmp_path / f"home-{n}"
    sudo = tmp_path / "bin" / "sudo"
    sudo.parent.mkdir(exist_ok=True)
    sudo.write_text(f"#!/bin/sh\necho ran >> {tmp_path}/sudo-ran\n")
    sudo.chmod(0o755)
    policy = tmp_path / "p.toml"
    policy.write_text('[policy]\ndeny_commands = ["sudo *"]\n')
    # sudo's path from the environment: the policy does not see it in the shell string (which it would
    # refuse as a whole), only at sudo's own exec
    script = f'i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done; "$SUDO" id; echo rc=$?'
    env = {**env, "CAPSULE_HOME": str(home), "SUDO": str(sudo)}
    done = capsule("run", "--tracer", tracer, "--policy", str(policy), "--", "sh", "-c", script, env=env)
    assert done.returncode == 0, done.stderr
    assert "rc=126" in done.stdout  # EPERM, after the remembered lines
    assert not (tmp_path / "sudo-ran").exists()
    (run,) = (home / "runs").iterdir()
    events = [orjson.loads(line) for line in (run / "events.jsonl").read_bytes().splitlines()]
    blocked = [e for e in events if e["kind"] == "policy.blocked"]
    assert [b["argv"] for b in blocked] == [[str(sudo), "id"]]
    (checked,) = [e for e in events if e["kind"] == "policy.checked"]
    return checked


@pytest.mark.parametrize("env", MODES)
def test_remembered_lines_still_block_what_follows_and_every_exec_is_counted(
    capsule: CapsuleRunner, tmp_path: Path, tracer: str, env: dict
) -> None:
    """A loop of one allowed line (answered in C after its first time) does not let the denied exec
    after it through, and policy.checked counts each exec, C's and Python's: 40 more `true`, 40 more."""
    few = _checked(capsule, tmp_path, tracer, 5, env)
    many = _checked(capsule, tmp_path, tracer, 45, env)
    assert many["execs"] - few["execs"] == 40
    assert few["blocked"] == many["blocked"] == 1
    assert many["median_us"] is not None
    assert many["p99_us"] is not None


@pytest.mark.parametrize("env", MODES)
def test_a_script_run_in_a_loop_is_judged_each_time(
    capsule: CapsuleRunner, capsule_home: Path, tmp_path: Path, env: dict
) -> None:
    """`sh FILE` is never remembered: after three allowed runs, the same line is refused once FILE says
    sudo."""
    work = tmp_path / "w"
    work.mkdir()
    (work / "s.sh").write_text("true\n")
    policy = tmp_path / "p.toml"
    policy.write_text('[policy]\ndeny_commands = ["sudo *"]\n')
    script = (
        "for i in 1 2 3; do sh s.sh; echo rc=$?; done; x='sudo id'; echo \"$x\" > s.sh; sh s.sh; echo rc=$?"
    )
    done = capsule("run", "--policy", str(policy), "--", "sh", "-c", script, env=env, cwd=work)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["rc=0", "rc=0", "rc=0", "rc=126"]
    (run,) = (capsule_home / "runs").iterdir()
    events = [orjson.loads(line) for line in (run / "events.jsonl").read_bytes().splitlines()]
    assert [e["argv"] for e in events if e["kind"] == "policy.blocked"] == [["sh", "s.sh"]]


def test_without_the_library_the_python_server_serves(capsule: CapsuleRunner, tmp_path: Path) -> None:
    """Where the guard's C programs cannot be built (here: both pretended), nothing is built and the
    guard decides as before, started by the Python launcher."""
    cache = tmp_path / "cache"
    env = {"CAPSULE_GUARD_PRETEND_MISSING": "c-answerer,c-launcher", "XDG_CACHE_HOME": str(cache)}
    checked = _checked(capsule, tmp_path, "strace", 5, env)
    assert checked["execs"] >= 7
    assert not list(cache.glob("capsule/guard-*"))
