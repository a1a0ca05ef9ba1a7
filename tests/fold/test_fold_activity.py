"""Files and network folded from file/net events: ops per path, peers, per-process counts, answers."""

from __future__ import annotations

from capsule.events import FileChanged, FileOpened, NetConnected, NetSocket
from capsule.fold import fold_session
from capsule.fold.tally import Tally
from capsule.report import report_dict
from tests.fold.builders import Script, packaged_rules


def edits() -> Script:
    s = Script().start("sh", "-c", "edit", level="all")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh", "-c", "edit")
    s.add(FileOpened(ts=s._tick(None), pid=1, path="src/new.py", flags="O_WRONLY|O_CREAT|O_TRUNC"))
    s.add(FileOpened(ts=s._tick(None), pid=1, path="/work/project/README.md", flags="O_RDONLY"))
    s.add(
        FileOpened(ts=s._tick(None), pid=1, path="/etc/missing", flags="O_RDONLY", ok=False, errno="ENOENT")
    )
    s.add(FileOpened(ts=s._tick(None), pid=1, path="/work/project/README.md", flags="O_RDWR|O_APPEND"))
    s.spawn(2, 1).exec(2, "/bin/mv", "mv", "a", "b")
    s.add(FileChanged(ts=s._tick(None), pid=2, op="rename", path="a", target="b"))
    s.exit(2)
    s.spawn(3, 1).exec(3, "/bin/rm", "rm", "old")
    s.add(FileChanged(ts=s._tick(None), pid=3, op="delete", path="/work/project/old"))
    s.exit(3)
    s.add(NetConnected(ts=s._tick(None), pid=1, family="AF_INET", address="127.0.0.1:8000"))
    s.add(
        NetConnected(
            ts=s._tick(None), pid=1, family="AF_INET6", address="[::1]:9", ok=False, errno="ECONNREFUSED"
        )
    )
    s.add(NetSocket(ts=s._tick(None), pid=1, op="listen", family="inet", address="127.0.0.1", port=5000))
    s.exit(1).end()
    return s


def test_files_have_absolute_paths_and_ops() -> None:
    """Relative paths are joined with the session's cwd; each path lists what was done to it."""
    report = report_dict(fold_session(edits().events, packaged_rules()))
    files = {f["path"]: f for f in report["files"]}
    assert files["/work/project/src/new.py"]["ops"] == ["write", "create"]
    assert files["/work/project/README.md"]["ops"] == ["read", "write"]
    assert files["/work/project/a"]["ops"] == ["rename"]
    assert files["/work/project/a"]["renamed_to"] == "/work/project/b"
    assert "create" in files["/work/project/b"]["ops"]
    assert files["/work/project/old"]["ops"] == ["delete"]
    assert files["/work/project/old"]["pids"] == [3]
    assert "/etc/missing" not in files  # a failed open did nothing to the file
    assert files["/bin/mv"]["ops"] == ["exec"]  # execs are file operations at level file|all


def test_network_peers_and_per_process_counts() -> None:
    """Each peer with its op and result; each process counts its own file and socket ops."""
    report = report_dict(fold_session(edits().events, packaged_rules()))
    peers = {(n["family"], n["address"], n["port"], n["op"]): n for n in report["network"]}
    assert peers[("inet", "127.0.0.1", 8000, "connect")]["ok"] is True
    refused = peers[("inet6", "::1", 9, "connect")]
    assert (refused["ok"], refused["error"], refused["pids"]) == (False, "ECONNREFUSED", [1])
    assert ("inet", "127.0.0.1", 5000, "listen") in peers
    root = report["processes"][0]
    assert root["files"] == {"exec": 1, "create": 1, "read": 1, "write": 1}
    assert root["network"] == {"connect": 2, "listen": 1}


def answers() -> Script:
    s = Script().start("bash", "-c", "grep x f; false")
    s.spawn(1, None, via="root").exec(1, "/bin/bash", "bash", "-c", "grep x f; false")
    s.run(2, 1, "/bin/grep", "grep", "x", "f", code=1)
    s.run(3, 1, "/usr/bin/diff", "diff", "a", "b", code=1)
    s.run(4, 1, "/usr/bin/diff", "diff", "a", "b", code=2)  # trouble, not an answer
    s.run(5, 1, "/bin/false", "false", code=1)
    s.exit(1, 1).end(1)
    return s


def test_answers_are_kept_but_not_failures() -> None:
    """grep 1 and diff 1 are answers (failure false); diff 2, false 1 and the shell's 1 are failures."""
    report = report_dict(fold_session(answers().events, packaged_rules()))
    by_pid = {p["pid"]: p for p in report["processes"]}
    assert [by_pid[p]["failure"] for p in (1, 2, 3, 4, 5)] == [True, False, False, True, True]
    assert by_pid[2]["answer"] is True
    assert by_pid[2]["exit_code"] == 1
    assert report["summary"]["failed"] == 3
    assert report["summary"]["answered"] == 2


def test_tally_counts_failures_by_the_exit_rules() -> None:
    """capsule run's running count uses the same rules: a grep that found nothing is no failure."""
    with_rules = Tally(answers=packaged_rules())
    without = Tally()
    for event in answers().events:
        with_rules.apply(event)
        without.apply(event)
    assert (with_rules.failed, without.failed) == (3, 5)


def test_samples_give_peaks_and_totals() -> None:
    """peak_rss is the largest sample, cpu_s the last (cumulative) one; the session sums and peaks."""
    s = Script().start("python3", "x.py")
    s.spawn(1, None, via="root").exec(1, "/usr/bin/python3", "python3", "x.py")
    s.sample(1, 50.0, 100 << 20, cpu_s=0.2).sample(1, 90.0, 300 << 20, cpu_s=0.7).sample(
        1, 10.0, 200 << 20, cpu_s=0.9
    )
    s.spawn(2, 1).exec(2, "/bin/sleep", "sleep", "1").sample(2, 0.0, 1 << 20, cpu_s=0.0).exit(2)
    s.exit(1).end()
    report = report_dict(fold_session(s.events, packaged_rules()))
    root = report["processes"][0]
    assert (root["peak_rss"], root["cpu_s"]) == (300 << 20, 0.9)
    assert report["summary"]["resources"] == {"sampled": 2, "peak_rss": 300 << 20, "cpu_s": 0.9}


def test_tools_count_self_time_once() -> None:
    """A python that runs python: wall counts the outer run once, self leaves the child's time out."""
    s = Script(step=0.0).start("python3", "outer.py")
    s.spawn(1, None, via="root", dt=0.0).exec(1, "/usr/bin/python3", "python3", "outer.py", dt=0.0)
    s.spawn(2, 1, dt=1.0).exec(2, "/usr/bin/python3", "python3", "inner.py", dt=0.0)
    s.exit(2, dt=2.0)
    s.exit(1, dt=1.0).end()
    (python,) = report_dict(fold_session(s.events, packaged_rules()))["summary"]["tools"]
    assert python["count"] == 2
    assert python["wall_s"] == 4.0  # not 4 + 2
    assert python["self_s"] == 4.0  # outer 4 - 2 (its child's), inner 2


def test_a_sample_before_its_spawn_is_folded_is_kept() -> None:
    """The sampler may write a process's sample before the trace's spawn of it: it still counts, and a
    sample of an exited pid taken later waits for the pid's next process."""
    s = Script().start("sh", "-c", "x")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh", "-c", "x")
    s.sample(2, 10.0, 200 << 20, cpu_s=0.1).sample(2, 10.0, 100 << 20, cpu_s=0.3)
    s.spawn(2, 1).exec(2, "/usr/bin/python3", "python3").exit(2)
    s.sample(2, 1.0, 5 << 20, cpu_s=0.0)  # after pid 2 exited: a new process's
    s.spawn(2, 1).exec(2, "/bin/true", "true").exit(2)
    s.exit(1).end()
    report = report_dict(fold_session(s.events, packaged_rules()))
    first, second = [p for p in report["processes"] if p["pid"] == 2]
    assert (first["peak_rss"], first["cpu_s"]) == (200 << 20, 0.3)
    assert second["peak_rss"] == 5 << 20


def test_tally_knows_a_root_that_never_became_the_command() -> None:
    """A refused (or vanished) root's exit is the tracer's own; once the root ran, later failed execs
    of it (a shell's `exec` of a missing program) are the command's."""
    refused = Script().start("bash", "-c", "sudo ls")
    refused.spawn(1, None, via="root").exec(1, "/usr/bin/bash", "bash", ok=False, errno="EPERM").exit(1, 1)
    ran = Script().start("sh", "-c", "exec nope")
    ran.spawn(1, None, via="root").exec(1, "/bin/sh", "sh")
    ran.exec(1, "/usr/bin/nope", "nope", ok=False, errno="ENOENT").exit(1, 127)
    for script, failure in ((refused, "EPERM"), (ran, None)):
        tally = Tally()
        for event in script.events:
            tally.apply(event)
        assert tally.root_exec_failure == failure
