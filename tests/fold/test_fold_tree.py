"""The process tree fold: exec chains, failed execs, orphans, signals, pid reuse, incomplete processes."""

from __future__ import annotations

import pytest

from capsule.events import ProcExec
from capsule.fold import ProcessNode, fold_session
from capsule.fold.agents import tool_name
from tests.fold.builders import Script, packaged_rules


def only(state_nodes: list[ProcessNode], pid: int) -> ProcessNode:
    found = [n for n in state_nodes if n.pid == pid]
    assert len(found) == 1, found
    return found[0]


def test_sh_c_exec_of_last_command_is_one_node() -> None:
    """`sh -c 'cd x && exec make'` is one process whose argv is make's and whose chain keeps sh."""
    s = Script().start("sh", "-c", "make")
    s.spawn(100, None, via="root").exec(100, "/bin/sh", "sh", "-c", "make").exec(100, "/usr/bin/make", "make")
    s.exit(100, 0).end()
    state = fold_session(s.events, packaged_rules())
    assert len(state.tree) == 1
    node = state.tree.nodes[0]
    assert node.argv == ("make",)
    assert node.exe == "/usr/bin/make"
    assert [e.path for e in node.execs] == ["/bin/sh", "/usr/bin/make"]
    assert (node.label, node.workflow) == ("tool", "build")


def test_pyenv_shim_chain_is_one_node() -> None:
    """python -> pyenv shim (bash) -> the real python: one node, three execs, the real python last."""
    s = Script().start("python", "-m", "pytest")
    s.spawn(200, None, via="root")
    s.exec(200, "/home/u/.pyenv/shims/python", "python", "-m", "pytest")
    s.exec(200, "/usr/bin/bash", "bash", "/home/u/.pyenv/libexec/pyenv", "exec", "python", "-m", "pytest")
    s.fail_exec(200, "/home/u/.pyenv/versions/3.12.1/bin/python3", "python", "-m", "pytest", errno="EACCES")
    s.exec(200, "/home/u/.pyenv/versions/3.12.1/bin/python", "python", "-m", "pytest")
    s.exit(200, 1).end(1)
    state = fold_session(s.events, packaged_rules())
    (node,) = state.tree.nodes
    assert len(node.execs) == 4
    assert [e.ok for e in node.execs] == [True, True, False, True]
    assert node.exe == "/home/u/.pyenv/versions/3.12.1/bin/python"
    assert node.argv == ("python", "-m", "pytest")
    assert node.workflow == "test"
    assert node.failed


@pytest.mark.parametrize(
    ("cut", "named"),
    [
        # `strace -f` (-s 32) cut argv[0] itself: the program is the exec'd path it began
        ("/root/.pyenv/versions/3.11.7/bin", "/root/.pyenv/versions/3.11.7/bin/python3"),
        ("python3", "python3"),  # argv[0] whole, a later element cut: unchanged
        ("/root/.pyenv/versions/3.11.7/bin/python3", "/root/.pyenv/versions/3.11.7/bin/python3"),
        ("/opt", "/opt"),  # not a prefix of the path: nothing to complete it from
    ],
)
def test_argv0_cut_by_s_is_named_by_the_exec_path(cut: str, named: str) -> None:
    """A report names a process by argv[0]: one cut by `-s` to a directory of its path (`bin`) is the
    exec'd path instead, everywhere the name is used (tree, tools, rules)."""
    s = Script().start("python3")
    s.spawn(300, None, via="root")
    path = "/root/.pyenv/versions/3.11.7/bin/python3"
    s.add(
        ProcExec(
            ts=0.5, pid=300, path=path, argv=(cut, "-c", "import threading"), ok=True, argv_truncated=True
        )
    )
    s.exit(300, 0).end()
    state = fold_session(s.events, packaged_rules())
    (node,) = state.tree.nodes
    assert node.argv == (named, "-c", "import threading")
    assert node.argv_truncated
    assert node.execs[0].argv == (cut, "-c", "import threading")  # the record stays what strace printed
    assert tool_name(node) == named.rsplit("/", 1)[-1]


def test_failed_exec_attempts_stay_in_execs_not_argv() -> None:
    """A shell searching PATH: ENOENT attempts are kept in the chain; argv is the successful one."""
    s = Script().start("sh")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh")
    s.spawn(2, 1, via="fork")
    s.fail_exec(2, "/usr/local/sbin/git", "git", "status")
    s.fail_exec(2, "/usr/local/bin/git", "git", "status")
    s.exec(2, "/usr/bin/git", "git", "status")
    s.exit(2).exit(1).end()
    state = fold_session(s.events, packaged_rules())
    git = only(state.tree.nodes, 2)
    assert git.argv == ("git", "status")
    assert [e.errno for e in git.execs] == ["ENOENT", "ENOENT", None]
    assert not git.failed
    assert (git.label, git.workflow) == ("tool", "vcs")


def test_command_not_found_keeps_argv_none() -> None:
    """Only failed attempts: argv stays None, the node is failed and shows what it tried to run."""
    s = Script().start("sh")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh")
    s.spawn(2, 1, via="fork").fail_exec(2, "/usr/bin/nosuchcmd", "nosuchcmd", "-x").exit(2, 127)
    s.exit(1, 127).end(127)
    node = only(fold_session(s.events, packaged_rules()).tree.nodes, 2)
    assert node.argv is None
    assert node.exe is None
    assert node.exec_failed
    assert node.failed
    assert node.display_argv == ("nosuchcmd", "-x")


def test_fork_without_exec_inherits_display_and_label() -> None:
    """A subshell that never execs: argv None, shows its parent's argv and takes its label."""
    s = Script().start("bash", "build.sh")
    s.spawn(1, None, via="root").exec(1, "/bin/bash", "bash", "build.sh")
    s.spawn(2, 1, via="fork").exit(2).exit(1).end()
    state = fold_session(s.events, packaged_rules())
    child = only(state.tree.nodes, 2)
    parent = only(state.tree.nodes, 1)
    assert child.argv is None
    assert child.display_argv == ("bash", "build.sh")
    assert child.label == parent.label
    assert child.parent == parent.key


def test_orphan_keeps_its_spawner() -> None:
    """A child that outlives its parent keeps the parent that spawned it."""
    s = Script().start("sh")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh")
    s.spawn(2, 1, via="fork").exec(2, "/bin/sleep", "sleep", "10")
    s.exit(1).exit(2).end()
    state = fold_session(s.events, packaged_rules())
    orphan = only(state.tree.nodes, 2)
    assert orphan.ppid == 1
    assert orphan.parent == only(state.tree.nodes, 1).key
    assert orphan.end is not None
    assert orphan.end > only(state.tree.nodes, 1).end  # type: ignore[operator]


def test_killed_by_signal_with_core_dump() -> None:
    """The killing signal and core dump are kept; delivered signals are listed."""
    s = Script().start("sh")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh")
    s.spawn(2, 1).exec(2, "/usr/bin/python3", "python3", "crash.py")
    s.signaled(2, "SIGTERM", sender=1).exit(2, signal="SIGSEGV", core=True)
    s.exit(1, 139).end(139)
    node = only(fold_session(s.events).tree.nodes, 2)
    assert node.signal == "SIGSEGV"
    assert node.exit_code is None
    assert node.core_dumped
    assert [sig for _, sig in node.signals] == ["SIGTERM"]
    assert node.failed


def test_a_stoppers_signal_is_a_stop_not_a_failure() -> None:
    """A traced service's session: what died of the SIGTERM its env's supervisor (or its `capsule run`,
    passing it on) sent was stopped, not failed; another process's SIGTERM, or a SIGKILL (no sender
    seen), still fails."""
    from capsule.fold import SessionState
    from capsule.report import report_dict

    s = Script().start("sh")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh")
    s.spawn(2, 1).exec(2, "/bin/sleep", "sleep", "300").signaled(2, "SIGTERM", sender=900).exit(
        2, signal="SIGTERM"
    )
    s.spawn(3, 1).exec(3, "/bin/sleep", "sleep", "301").signaled(3, "SIGTERM", sender=1).exit(
        3, signal="SIGTERM"
    )
    s.spawn(4, 1).exec(4, "/bin/sleep", "sleep", "302").exit(4, signal="SIGKILL")
    s.signaled(1, "SIGTERM", sender=901).exit(1, signal="SIGTERM").end()
    state = SessionState.new(packaged_rules())
    state.tree.stoppers = frozenset({900, 901})
    for event in s.events:
        state.apply(event)
    nodes = state.tree.nodes
    assert [(n.pid, n.stopped, n.failed) for n in nodes] == [
        (1, True, False),
        (2, True, False),
        (3, False, True),
        (4, False, True),
    ]
    assert (only(nodes, 2).failure, only(nodes, 3).failure) == (None, "killed by SIGTERM")
    state.parent_writer = (900, "supervisor")
    assert state.stopped_by == "supervisor (900)"
    report = report_dict(state)
    assert [p["stopped"] for p in report["processes"]] == [True, True, False, False]
    assert report["summary"]["failed"] == 2
    plain = fold_session(s.events, packaged_rules())  # no stoppers: every signal death fails
    assert [n.failed for n in plain.tree.nodes] == [True, True, True, True]
    assert plain.stopped_by is None
    # the recorder's tally (session.ended, `capsule ls`) counts the same, given the same stoppers
    from capsule.fold.tally import Tally

    tally = Tally(stoppers=frozenset({900, 901}))
    for event in s.events:
        tally.apply(event)
    assert (tally.failed, tally.stopped) == (2, 2)
    unstopped = Tally()
    for event in s.events:
        unstopped.apply(event)
    assert (unstopped.failed, unstopped.stopped) == (4, 0)


def test_the_terminals_ctrl_c_is_a_stop_in_the_tree_and_the_tally() -> None:
    """SIGINT from the terminal (si_code SI_KERNEL, no sender): what died of it, or re-raised it on
    itself, or exited 130 after it, was interrupted; an exit 1 after it, a SIGINT another process sent,
    or one from the kernel with no Ctrl-C before, fails. The recorder's tally counts the same."""
    from capsule.fold.tally import Tally

    s = Script().start("sh")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh")
    s.spawn(2, 1).exec(2, "/bin/sleep", "sleep", "30").signaled(2, "SIGINT", code="SI_KERNEL")
    s.signaled(1, "SIGINT", code="SI_KERNEL")
    s.exit(2, signal="SIGINT")
    s.spawn(3, 1).exec(3, "/usr/bin/npm", "npm", "test").signaled(3, "SIGINT", code="SI_KERNEL").exit(
        3, code=130
    )
    s.spawn(4, 1).exec(4, "/usr/bin/make", "make").signaled(4, "SIGINT", code="SI_KERNEL").exit(4, code=1)
    s.spawn(5, 1).exec(5, "/bin/sleep", "sleep", "31").signaled(5, "SIGINT", sender=1, code="SI_USER")
    s.exit(5, signal="SIGINT")
    s.spawn(6, 1).exec(6, "/bin/sleep", "sleep", "32").exit(6, signal="SIGINT")
    s.spawn(7, 1).exec(7, "/bin/sleep", "sleep", "33").signaled(7, "SIGQUIT", code="SI_KERNEL")
    s.exit(7, signal="SIGQUIT", core=True)
    s.signaled(1, "SIGINT", sender=1, code="SI_TKILL").exit(1, signal="SIGINT").end()
    state = fold_session(s.events)
    nodes = state.tree.nodes
    assert [(n.pid, n.stopped, n.failed) for n in nodes] == [
        (1, True, False),
        (2, True, False),
        (3, True, False),
        (4, False, True),
        (5, False, True),
        (6, False, True),
        (7, True, False),
    ]
    assert only(nodes, 3).failure is None
    assert state.stopped_by == "the terminal (Ctrl-C)"
    tally = Tally()
    for event in s.events:
        tally.apply(event)
    assert (tally.failed, tally.interrupted, tally.root_interrupted) == (3, 4, "SIGINT")


def test_a_broken_pipe_is_no_failure() -> None:
    """A pipeline member that died of SIGPIPE (its reader had gone) did not fail, in the tree and the
    tally; the reader's own failure still counts."""
    from capsule.fold.tally import Tally

    s = Script().start("sh", "-c", "yes | head -1")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh", "-c", "yes | head -1")
    s.spawn(2, 1).exec(2, "/usr/bin/yes", "yes").signaled(2, "SIGPIPE", sender=2, code="SI_USER")
    s.spawn(3, 1).exec(3, "/usr/bin/head", "head", "-1").exit(3, 1)
    s.exit(2, signal="SIGPIPE").exit(1, 1).end(1)
    nodes = fold_session(s.events, packaged_rules()).tree.nodes
    assert [(n.pid, n.broken_pipe, n.failed, n.failure) for n in nodes] == [
        (1, False, True, "exit 1"),
        (2, True, False, None),
        (3, False, True, "exit 1"),
    ]
    tally = Tally()
    for event in s.events:
        tally.apply(event)
    assert tally.failed == 2


def test_killed_by_names_the_sender_of_the_signal_it_died_of() -> None:
    """The pid that sent the fatal signal is kept; a signal it did not die of, or one the kernel sent
    (no si_pid), names no one."""
    s = Script().start("sh")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh")
    s.spawn(2, 1).exec(2, "/bin/sleep", "sleep", "30")
    s.signaled(2, "SIGTERM", sender=1).exit(2, signal="SIGTERM")
    s.spawn(3, 1).exec(3, "/usr/bin/python3", "python3", "crash.py")
    s.signaled(3, "SIGTERM", sender=1).exit(3, signal="SIGSEGV", core=True)  # died of another signal
    s.spawn(4, 1).exec(4, "/bin/sleep", "sleep", "30")
    s.signaled(4, "SIGINT").exit(4, signal="SIGINT")  # the terminal's Ctrl-C: the kernel's
    s.exit(1).end()
    nodes = fold_session(s.events).tree.nodes
    assert [only(nodes, pid).killed_by for pid in (1, 2, 3, 4)] == [None, 1, None, None]


def test_pid_reuse_makes_a_new_node() -> None:
    """A spawn of a pid that already exited is a new process with its own key."""
    s = Script().start("sh")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh")
    s.run(50, 1, "/bin/ls", "ls")
    s.spawn(50, 1).exec(50, "/bin/cat", "cat", "x").exit(50, 1)
    s.exit(1).end()
    state = fold_session(s.events, packaged_rules())
    reused = [n for n in state.tree.nodes if n.pid == 50]
    assert len(reused) == 2
    assert reused[0].key != reused[1].key
    assert (reused[0].argv, reused[0].exit_code) == (("ls",), 0)
    assert (reused[1].argv, reused[1].exit_code) == (("cat", "x"), 1)
    assert state.tree.current[50] == reused[1].key
    assert not state.warnings or all("50" not in w for w in state.warnings)


def test_exec_seen_before_spawn_is_adopted() -> None:
    """A child's exec reported before its parent's clone returned still ends up under the parent."""
    s = Script().start("sh")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh")
    s.exec(2, "/bin/ls", "ls").spawn(2, 1, via="clone").exit(2).exit(1).end()
    state = fold_session(s.events, packaged_rules())
    assert len(state.tree) == 2
    child = only(state.tree.nodes, 2)
    assert child.ppid == 1
    assert child.parent == only(state.tree.nodes, 1).key
    assert child.argv == ("ls",)
    assert state.tree.roots == [only(state.tree.nodes, 1).key]


def test_exit_never_seen_leaves_end_none() -> None:
    """In an incomplete session a process still running has no end and no duration."""
    s = Script().start("sleep", "100")
    s.spawn(1, None, via="root").exec(1, "/bin/sleep", "sleep", "100")
    node = only(fold_session(s.events).tree.nodes, 1)
    assert node.end is None
    assert node.duration is None
    assert not node.failed


def test_samples_keep_peaks() -> None:
    """Peak cpu and rss come from proc.sampled observations."""
    s = Script().start("x")
    s.spawn(1, None, via="root").exec(1, "/bin/x", "x")
    s.sample(1, 50.0, 1000).sample(1, 120.0, 800).sample(1, 10.0, 4000).exit(1)
    node = only(fold_session(s.events).tree.nodes, 1)
    assert node.peak_cpu_percent == pytest.approx(120.0)
    assert node.peak_rss_bytes == 4000


def test_a_sample_of_no_address_space_is_no_memory_peak() -> None:
    """rss 0 is a process sampled as it exited (or a zombie not yet reaped): no memory figure, not "0 B"
    (Claude Code's short `rg` children were shown so); its CPU time still counts."""
    s = Script().start("x")
    s.spawn(1, None, via="root").exec(1, "/bin/x", "x").spawn(2, 1).exec(2, "/bin/rg", "rg")
    s.sample(1, 5.0, 0, cpu_s=0.01).sample(2, 5.0, 2000).sample(2, 0.0, 0).exit(2).exit(1)
    first, second = (only(fold_session(s.events).tree.nodes, pid) for pid in (1, 2))
    assert (first.samples, first.peak_rss_bytes, first.peak_cpu_s) == (1, None, 0.01)
    assert second.peak_rss_bytes == 2000


def test_durations_and_timestamps() -> None:
    """start is the spawn time, end the exit time."""
    s = Script().start("x")
    s.spawn(1, None, via="root", dt=1.0).exec(1, "/bin/x", "x", dt=0.5).exit(1, dt=2.0)
    node = fold_session(s.events).tree.nodes[0]
    assert node.duration == pytest.approx(2.5)


def test_a_spawn_naming_its_own_pid_as_parent_is_no_cycle() -> None:
    """Found by the prefix law's hypothesis search (it hung the report): an exec seen before its spawn
    makes an unseen root; a spawn of that pid naming the same pid as parent must not put the node
    under itself, or every walk up the tree (agent runs, ancestors) never ends."""
    s = Script().start("sh")
    s.exec(100, "/bin/sh", "sh").spawn(100, 100, via="fork").exit(100, 0).end()
    state = fold_session(s.events, packaged_rules())
    assert len(state.tree) == 1
    node = state.tree.nodes[0]
    assert node.parent is None
    assert list(state.tree.ancestors(node)) == []
    from capsule.report import report_dict

    assert report_dict(state)["processes"]
