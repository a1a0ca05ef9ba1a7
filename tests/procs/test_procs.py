"""stages/procs.py with real processes: membership, stop with grace and sweeps, identity, subreaper, cgroup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import psutil
import pytest

from capsule.stages import procs
from capsule.stages.procs import Member, Tree


def wait_for(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts, each with a marker; whatever is left of their trees is killed afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        procs.stop(Tree(pgid=p.pid, marker=p.args[-1]), signal.SIGKILL)  # type: ignore[index]
        p.wait()


def spawn(spawned: list, script: str, marker: str | None = None, **kw: object) -> subprocess.Popen[bytes]:
    """`sh -c script` in a new session, with `marker` (a fresh one by default) in its environment."""
    marker = marker or f"test-{os.getpid()}-{len(spawned)}-{time.monotonic_ns()}"
    proc = subprocess.Popen(
        ["sh", "-c", script, f"{procs.MARKER}={marker}"],
        start_new_session=True,
        env={**os.environ, procs.MARKER: marker},
        stdin=subprocess.DEVNULL,
        **kw,  # type: ignore[call-overload]
    )
    spawned.append(proc)
    return proc


def tree_of(proc: subprocess.Popen[bytes], **kw: object) -> Tree:
    return Tree(pid=proc.pid, started=procs.started_at(proc.pid), pgid=proc.pid, **kw)  # type: ignore[arg-type]


def sleeps_of(pid: int) -> list[psutil.Process]:
    return [c for c in psutil.Process(pid).children(recursive=True) if c.name() == "sleep"]


def gone(pids: list[int]) -> bool:
    return all(procs.process_if(pid, None) is None for pid in pids)


def test_shell_tree_members_usage_and_stop(spawned: list) -> None:
    """`sh -c 'sleep 600 & sleep 600'`: three members, usage sums them, stop leaves none of them."""
    proc = spawn(spawned, "sleep 600 & sleep 600")
    wait_for(lambda: len(sleeps_of(proc.pid)) == 2)
    tree = tree_of(proc)
    pids = sorted(p.pid for p in procs.members(tree))
    assert pids == sorted([proc.pid, *(p.pid for p in sleeps_of(proc.pid))])
    used = procs.usage(tree)
    assert used.count == 3
    assert used.rss > psutil.Process(proc.pid).memory_info().rss
    assert [m.pid for m in procs.snapshot(tree)] == pids
    stopped = procs.stop(tree, signal.SIGTERM, grace=5.0)
    assert stopped.count == 3
    assert not stopped.killed
    assert stopped.survivors == ()
    assert gone(pids)
    assert procs.members(tree) == []


def test_members_walk_the_tree_without_scanning_every_process(spawned: list, monkeypatch) -> None:
    """A tree named by its leader and records only (what the scheduler samples every 150 ms) is walked
    down the kernel's children lists, a child forked by a thread included: no read of every process of
    the machine, which once cost the scheduler a core for four tasks on a machine of 470 processes."""
    script = textwrap.dedent(
        """
        import subprocess, sys, threading, time
        def child():
            subprocess.Popen(["sh", "-c", "sleep 600 & sleep 600"])
            time.sleep(600)  # alive: the thread stays the parent
        threading.Thread(target=child, daemon=True).start()
        time.sleep(600)
        """
    )
    proc = spawn(spawned, f"exec {sys.executable} -c '{script}'")
    wait_for(lambda: len(sleeps_of(proc.pid)) == 2)
    everything = sorted([proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))])
    assert len(everything) == 4  # python, sh, two sleeps

    def scan(*_a: object, **_k: object) -> None:
        raise AssertionError("members() scanned every process")

    monkeypatch.setattr(psutil, "pids", scan)
    monkeypatch.setattr(psutil, "process_iter", scan)
    monkeypatch.setattr(psutil.Process, "children", scan)
    tree = Tree(pid=proc.pid, started=procs.started_at(proc.pid))
    assert sorted(p.pid for p in procs.members(tree)) == everything
    assert procs.usage(tree).count == 4


def test_sigterm_ignoring_tree_is_killed_after_the_grace(spawned: list) -> None:
    """A tree that ignores SIGTERM gets SIGKILL once the grace is over, and `killed` says so."""
    proc = spawn(spawned, "trap '' TERM; sleep 600 & sleep 600")
    wait_for(lambda: len(sleeps_of(proc.pid)) == 2)
    pids = [proc.pid, *(p.pid for p in sleeps_of(proc.pid))]
    stopped = procs.stop(tree_of(proc), signal.SIGTERM, grace=0.3, keep_leader=True)
    assert stopped.killed
    assert stopped.survivors == ()
    assert gone(pids)
    assert proc.wait() == -signal.SIGKILL


def test_orphans_of_a_killed_leader_are_found_by_group(spawned: list) -> None:
    """The leader SIGKILLed first: its orphaned sleeps are still members by process group, and go."""
    proc = spawn(spawned, "sleep 600 & sleep 600")
    wait_for(lambda: len(sleeps_of(proc.pid)) == 2)
    tree = tree_of(proc)
    sleeps = [p.pid for p in sleeps_of(proc.pid)]
    proc.kill()
    proc.wait()
    assert sorted(p.pid for p in procs.members(tree)) == sorted(sleeps)
    procs.stop(tree, grace=2.0)
    assert gone(sleeps)


def _setsid_grandchild(spawned: list, marker: str | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """A leader whose grandchild left the group and session (setsid), then the leader died."""
    proc = spawn(spawned, "setsid sleep 600 & sleep 600", marker)
    wait_for(lambda: len(sleeps_of(proc.pid)) == 2)
    (escaped,) = [p.pid for p in sleeps_of(proc.pid) if os.getpgid(p.pid) != proc.pid]
    return proc, escaped


def test_setsid_grandchild_found_by_record_and_by_marker(spawned: list) -> None:
    """A setsid'd grandchild whose parent died: found by its recorded identity, or by the unit's marker."""
    proc, escaped = _setsid_grandchild(spawned)
    tree = tree_of(proc)
    recorded = procs.snapshot(tree)
    assert escaped in [m.pid for m in recorded]
    proc.kill()
    proc.wait()
    assert procs.members(tree) == [] or escaped not in [p.pid for p in procs.members(tree)]
    assert escaped in [p.pid for p in procs.members(Tree(members=recorded))]
    procs.stop(Tree(members=recorded), grace=2.0)
    assert gone([escaped])

    unit = f"unit-{time.monotonic_ns()}"
    marked, escaped = _setsid_grandchild(spawned, unit)
    sleeps = sorted(p.pid for p in sleeps_of(marked.pid))
    marked.kill()
    marked.wait()
    tree = Tree(marker=f"{procs.MARKER}={unit}")
    assert sorted(p.pid for p in procs.members(tree)) == sleeps
    procs.stop(tree, grace=2.0)
    assert gone(sleeps)


def test_a_reused_pid_is_never_signalled(spawned: list) -> None:
    """A pid whose start time differs from the recorded one is not a member and is not stopped."""
    proc = spawn(spawned, "sleep 600")
    wrong = procs.started_at(proc.pid) - 100.0
    tree = Tree(pid=proc.pid, started=wrong, members=(Member(pid=proc.pid, started=wrong),))
    assert procs.process_if(proc.pid, wrong) is None
    assert procs.members(tree) == []
    assert procs.stop(tree, grace=0.1).count == 0
    assert procs.process_if(proc.pid, procs.started_at(proc.pid)) is not None
    assert procs.identity(proc.pid) == Member(pid=proc.pid, started=procs.started_at(proc.pid))


async def test_stop_async_with_grace(spawned: list) -> None:
    """The trio form: SIGTERM, grace awaited, SIGKILL sweep; the leader stays for its waiter to collect."""
    proc = spawn(spawned, "trap '' TERM; sleep 600 & sleep 600")
    wait_for(lambda: len(sleeps_of(proc.pid)) == 2)
    pids = [proc.pid, *(p.pid for p in sleeps_of(proc.pid))]
    stopped = await procs.stop_async(tree_of(proc), signal.SIGTERM, grace=0.2, keep_leader=True)
    assert stopped.killed
    assert gone(pids)
    assert proc.wait() == -signal.SIGKILL  # not reaped by stop_async: the exit status is still ours


def test_returncode_status() -> None:
    """Negative returncodes name the signal; unknown numbers still read as SIG<n>."""
    assert procs.returncode_status(None) == (None, None)
    assert procs.returncode_status(3) == (3, None)
    assert procs.returncode_status(-9) == (None, "SIGKILL")
    assert procs.returncode_status(-200) == (None, "SIG200")


SUBREAPER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from capsule.stages import procs
    assert procs.become_subreaper()
    sh = subprocess.Popen(["sh", "-c", "sleep 600 & echo $!"], stdout=subprocess.PIPE)
    orphan = int(sh.stdout.readline())
    sh.wait()
    deadline = time.monotonic() + 10
    while procs.process_if(orphan, None).ppid() != os.getpid():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    found = procs.identity(orphan)
    procs.stop(procs.Tree(members=(found,)), grace=2.0)
    assert procs.reap((found,)) == 0  # stop already collected it
    assert not os.path.exists(f"/proc/{orphan}")
    print("ok")
    """
)


def test_subreaper_adopts_orphans_and_stop_reaps_them() -> None:
    """A subreaper becomes the parent of an orphan; stopping it leaves no zombie behind."""
    done = subprocess.run([sys.executable, "-c", SUBREAPER], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


def test_cgroup_holds_what_escapes_everything_else(spawned: list) -> None:
    """In its own cgroup a unit's setsid'd, env-cleared orphan is still a member and is killed."""
    cgroup = procs.open_cgroup(f"capsule-test-{os.getpid()}")
    if cgroup is None:
        pytest.skip(procs.cgroup_status())
    try:
        marker = f"test-{os.getpid()}-cgroup"
        proc = subprocess.Popen(
            cgroup.joining(["sh", "-c", "env -i setsid sleep 600 & sleep 600", f"{procs.MARKER}={marker}"], {}),
            start_new_session=True, env={**os.environ, procs.MARKER: marker}, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        spawned.append(proc)
        wait_for(lambda: len(sleeps_of(proc.pid)) == 2)
        escaped = [p.pid for p in sleeps_of(proc.pid)]
        proc.kill()
        proc.wait()
        tree = Tree(cgroup=str(cgroup.path))
        assert sorted(cgroup.pids()) == sorted(escaped)
        stopped = procs.stop(tree, signal.SIGKILL, grace=0)
        assert stopped.survivors == ()
        assert gone(escaped)
        wait_for(lambda: cgroup.pids() == [])
    finally:
        wait_for(cgroup.remove)


def test_joining_runs_the_command_unchanged_inside_the_cgroup(tmp_path) -> None:
    """Behind `Cgroup.joining` the command keeps its pid, argv and environment (PWD as it was, or absent)
    and runs in the cgroup from its first instruction; a missing program exits 127, a gone cgroup 125."""
    cgroup = procs.open_cgroup(f"capsule-test-join-{os.getpid()}")
    if cgroup is None:
        pytest.skip(procs.cgroup_status())
    probe = (
        "import os, sys, json; "
        "print(json.dumps([os.getpid(), sys.argv[1:], dict(os.environ), open('/proc/self/cgroup').read()]))"
    )
    try:
        for env in ({"FOO": "1"}, {"FOO": "1", "PWD": "/stale"}):
            argv = [sys.executable, "-c", probe, "a b", "", "$HOME"]
            p = subprocess.Popen(cgroup.joining(argv, env), env=env, cwd=tmp_path, stdout=subprocess.PIPE)
            out, _ = p.communicate(timeout=60)
            pid, args, seen, groups = json.loads(out)
            assert pid == p.pid
            assert args == ["a b", "", "$HOME"]
            assert {k: v for k, v in seen.items() if k != "LC_CTYPE"} == env  # python may set LC_CTYPE
            assert any(
                g.startswith("0::") and g.endswith("/" + cgroup.path.name) for g in groups.splitlines()
            )
        missing = subprocess.run(cgroup.joining([str(tmp_path / "nothing")], {}), env={}, capture_output=True)
        assert missing.returncode == 127
    finally:
        wait_for(cgroup.remove)
    gone_group = subprocess.run(cgroup.joining(["true"], {}), env={}, capture_output=True, text=True)
    assert gone_group.returncode == 125
    assert "capsule: cannot join the cgroup" in gone_group.stderr
