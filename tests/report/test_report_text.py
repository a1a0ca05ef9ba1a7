"""The text report: key content, failures in the open, and 5,000 siblings collapsed to a few lines."""

from __future__ import annotations

import io
import re

from rich.console import Console, RenderableType

from capsule.fold import fold_session
from capsule.report import render, summary_line
from tests.fold.builders import Script, packaged_rules
from tests.fold.test_fold_agents import agent_session
from tests.report.test_report_json import mixed_session


def to_text(renderable: RenderableType, width: int = 120) -> str:
    out = io.StringIO()
    Console(file=out, width=width, no_color=True, force_terminal=False, color_system=None).print(renderable)
    return out.getvalue()


def many_trues(n: int = 5000, failing: tuple[int, ...] = (1234, 4321)) -> Script:
    s = Script(step=0.0005).start("sh", "-c", "for i in ...; do true; done")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh", "-c", "loop")
    for i in range(n):
        pid = 100 + i
        if i in failing:
            s.spawn(pid, 1).exec(pid, "/bin/false", "false").exit(pid, 1)
        else:
            s.spawn(pid, 1).exec(pid, "/bin/true", "true").exit(pid, 0)
    s.exit(1).end()
    return s


def test_header_tree_and_summary() -> None:
    """The header, each process with its outcome, labels, tools and failures appear."""
    text = to_text(render(fold_session(mixed_session().events, packaged_rules())))
    assert "sh -c work" in text
    assert "20251121-043000-abcd" in text
    assert "2025-11-21" in text
    assert "exit 137" in text
    assert "git status" in text
    assert "SIGKILL" in text
    assert "exec ENOENT" in text
    assert "processes by label" in text
    assert "tools" in text
    assert "failures" in text
    assert "git log" in text


def test_a_failure_by_a_signal_names_who_sent_it() -> None:
    """A process killed by another's signal: the failures table says by whom (a process of the tree by
    its command, the writer of the env session this one is part of, or a pid outside the tree)."""
    s = Script().start("sh")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh", "-c", "work")
    s.spawn(2, 1).exec(2, "/bin/sleep", "sleep", "30")
    s.spawn(3, 1).exec(3, "/bin/kill", "kill", "2").exit(3)
    s.signaled(2, "SIGTERM", sender=3).exit(2, signal="SIGTERM")
    s.spawn(4, 1).exec(4, "/bin/sleep", "sleep", "40")
    s.signaled(4, "SIGTERM", sender=777).exit(4, signal="SIGTERM")
    s.spawn(5, 1).exec(5, "/bin/sleep", "sleep", "50")
    s.signaled(5, "SIGHUP", sender=888).exit(5, signal="SIGHUP")
    s.spawn(6, 1).exec(6, "/bin/sleep", "sleep", "60")
    s.signaled(6, "SIGTERM", sender=6).exit(6, signal="SIGTERM")
    s.exit(1).end()
    state = fold_session(s.events, packaged_rules())
    state.parent_writer = (888, "supervisor")
    lines = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in to_text(render(state)).splitlines()
        if line.count("│") == 3 and "sleep" in line
    }
    assert lines == {
        "sleep 30": "SIGTERM by kill (3)",
        "sleep 40": "SIGTERM by pid 777",
        "sleep 50": "SIGHUP by supervisor (888)",
        "sleep 60": "SIGTERM by itself",
    }


def test_agent_phases_rendered() -> None:
    """Where an agent ran, its name, tool calls and phases are shown."""
    text = to_text(render(fold_session(agent_session().events, packaged_rules())))
    assert "agent claude-code" in text
    assert "6 tool calls" in text
    for phase in ("explore", "edit", "test", "vcs"):
        assert phase in text


def test_five_thousand_siblings_collapse_and_keep_failures() -> None:
    """5,000 `true` children render in a few lines; the failing ones are still listed."""
    state = fold_session(many_trues().events, packaged_rules())
    text = to_text(render(state))
    assert len(text.splitlines()) < 80
    assert "… 4,995 more `true` (all exit 0" in text
    assert text.count("false") >= 2
    assert "1334" in text  # pid of the first failing child
    assert "4421" in text


def test_full_shows_every_process() -> None:
    """full=True renders every process."""
    state = fold_session(many_trues(50).events, packaged_rules())
    text = to_text(render(state, full=True))
    assert text.count(" true ") >= 48
    assert "more `true`" not in text


def test_summary_line() -> None:
    """One line with session id, processes, failures, duration and exit."""
    line = summary_line(fold_session(mixed_session().events, packaged_rules()))
    assert "\n" not in line
    assert "20251121-043000-abcd" in line
    assert "5 processes" in line
    assert "4 failed" in line
    assert "exit 137" in line


def test_empty_and_incomplete_sessions_render() -> None:
    """No processes, no end: still renders and says so."""
    s = Script().start("x")
    text = to_text(render(fold_session(s.events)))
    assert "no processes recorded" in text
    assert "incomplete" in text


def test_deep_tree_renders_flat_below_max_depth() -> None:
    """A chain 1,500 processes deep renders (no recursion limit) and stays within the width."""
    s = Script().start("sh")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh")
    for pid in range(2, 1500):
        s.spawn(pid, pid - 1).exec(pid, "/bin/sh", "sh", "-c", "deeper")
    text = to_text(render(fold_session(s.events, packaged_rules())), width=160)
    assert "[level 1499] 1499 sh -c deeper" in text
    assert "[level 1500]" not in text


def shim_then_tool() -> Script:
    """`python3` through a pyenv-style shim that runs helpers, then pytest running its own children."""
    s = Script().start("sh", "-c", "python3 -m pytest")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh", "-c", "python3 -m pytest")
    s.spawn(2, 1).exec(2, "/root/.pyenv/shims/python3", "python3", "-m", "pytest")
    for pid in (3, 4):  # the shim's own helpers, one of them failing as shims' probes do
        s.spawn(pid, 2).exec(pid, "/usr/bin/readlink", "readlink", "x").exit(pid, 1 if pid == 3 else 0)
    s.exec(2, "/usr/bin/python3", "python3", "-m", "pytest")
    s.run(5, 2, "/usr/bin/git", "git", "rev-parse", "HEAD")  # pytest's own child
    return s.exit(2, 0).exit(1, 0)


def test_shim_helpers_and_a_tools_insides_are_summarised() -> None:
    """A shim's pre-exec helpers and what a test runner runs inside itself collapse to one line each;
    the shim's `readlink` probe exiting 1 is an answer, so no failure is listed for it."""
    text = to_text(render(fold_session(shim_then_tool().events, packaged_rules())))
    assert "2 processes run by /root/.pyenv/shims/python3 before it became /usr/bin/python3" in text
    assert "exited non-zero" not in text
    assert "1 process inside" in text
    assert "readlink" not in text  # hidden in the tree, and not a failure


def test_full_expands_shim_and_inside_summaries() -> None:
    """--full expands both summaries."""
    text = to_text(render(fold_session(shim_then_tool().events, packaged_rules()), full=True))
    assert "run by" not in text
    assert "inside" not in text
    assert text.count("readlink") >= 2
    assert "git rev-parse HEAD" in text


def shell_chain() -> Script:
    """bash -c 'git status && grep -q x f; exec pytest -q': two children, then the shell becomes pytest."""
    s = Script().start("bash", "-c", "git status && grep -q x f; exec pytest -q")
    s.spawn(1, None, via="root").exec(
        1, "/bin/bash", "bash", "-c", "git status && grep -q x f; exec pytest -q"
    )
    s.run(2, 1, "/usr/bin/git", "git", "status")
    s.run(3, 1, "/bin/grep", "grep", "-q", "x", "f", code=1)
    s.exec(1, "/usr/bin/pytest", "pytest", "-q")
    s.run(4, 1, "/usr/bin/python3", "python3", "-c", "helper")  # pytest's own inside
    s.exit(1, 0).end()
    return s


def test_a_shell_shows_every_command_it_ran_even_after_exec() -> None:
    """Every command of the command line is in the tree with its exit, and the exec it became;
    what the tool (pytest) ran after that is still summarised as its inside."""
    text = to_text(render(fold_session(shell_chain().events, packaged_rules())))
    tree = text.split("processes by label")[0]
    assert "bash -c 'git status && grep -q x f; exec pytest -q' → exec pytest -q" in tree
    assert "git status" in tree
    assert "exit 0" in tree
    assert "grep -q x f" in tree
    assert "exit 1 (an answer)" in tree
    assert "1 process inside" in tree
    assert "helper" not in tree
    assert "failures" not in text  # grep's 1 is an answer


def test_a_live_session_says_running() -> None:
    """No end yet and a live recorder: status running, open processes running (not incomplete)."""
    s = Script().start("sleep", "100")
    s.spawn(1, None, via="root").exec(1, "/bin/sleep", "sleep", "100")
    state = fold_session(s.events, packaged_rules())
    assert "incomplete" in to_text(render(state))
    state.live = True
    text = to_text(render(state))
    assert "running" in text
    assert "incomplete" not in text
    assert "no exit seen" not in text


def test_a_command_line_of_similar_commands_is_never_collapsed() -> None:
    """Eight different git commands written in one `sh -c` all show; eight identical ones (a loop) are
    still collapsed after the first few."""
    different = Script().start("sh", "-c", "git …")
    different.spawn(1, None, via="root").exec(1, "/bin/sh", "sh", "-c", "git status; git diff; …")
    for i, sub in enumerate(("status", "diff", "log", "show", "branch", "remote", "tag", "stash")):
        different.run(10 + i, 1, "/usr/bin/git", "git", sub)
    different.exit(1).end()
    text = to_text(render(fold_session(different.events, packaged_rules())))
    assert all(f"git {sub}" in text for sub in ("status", "stash", "tag"))
    assert "more `git`" not in text
    same = Script().start("sh", "-c", "for …")
    same.spawn(1, None, via="root").exec(
        1, "/bin/sh", "sh", "-c", "for i in 1 2 3 4 5 6 7 8; do git status; done"
    )
    for i in range(8):
        same.run(10 + i, 1, "/usr/bin/git", "git", "status")
    same.exit(1).end()
    assert "… 5 more `git status`" in to_text(render(fold_session(same.events, packaged_rules())))


def test_shell_command_lines_are_told_from_scripts() -> None:
    """`sh -c`, `bash -lc`, `bash -o pipefail -c`, `bash --norc -ec` run command lines; `bash script.sh` no."""
    from capsule.report.text import _is_command_line

    for argv in (
        ["sh", "-c", "x"],
        ["bash", "-lc", "x"],
        ["bash", "-o", "pipefail", "-c", "x"],
        ["bash", "--norc", "-ec", "x"],
    ):
        assert _is_command_line("/bin/bash", tuple(argv)), argv
    for argv in (["bash", "script.sh"], ["bash", "--", "-c"], ["python3", "-c", "x"]):
        assert not _is_command_line(f"/usr/bin/{argv[0]}", tuple(argv)), argv


def test_quoted_argument_reads_back_as_itself() -> None:
    """Law: a shell (shlex) reads every shown argument back as the argument itself, whatever its quotes."""
    import shlex

    from hypothesis import given
    from hypothesis import strategies as st

    from capsule.report.argv import quote_arg

    @given(st.text(alphabet=st.sampled_from("ab '\"$`\\!;|&()*?~\t"), max_size=12))
    def law(arg: str) -> None:
        assert shlex.split(quote_arg(arg)) == [arg]

    law()
    assert quote_arg("bash -c 'rm -rf x; echo after'") == "\"bash -c 'rm -rf x; echo after'\""
    assert quote_arg("it's $HOME") == shlex.quote("it's $HOME")  # $ would expand inside double quotes


def test_a_refusal_is_shown_as_a_shell_reads_it() -> None:
    """The policy table's refused argv: quoted as typed, the program as given, control characters shown;
    the command inside a shell string after it (was: ' '.join of the raw argv)."""
    from capsule.events.policy import PolicyBlocked
    from capsule.report.policy import blocked_row

    blocked = PolicyBlocked(
        ts=1.0,
        pid=7,
        argv=("/bin/bash", "-c", "rm -rf x\x1b[2J; echo done"),
        path="/bin/bash",
        rule="rm -rf *",
        command="rm -rf x\x1b[2J",
        mechanism="seccomp-notify",
    )
    _pid, what, _rule, _by = blocked_row(blocked)
    assert what == "/bin/bash -c 'rm -rf x\\x1b[2J; echo done'  (inside: rm -rf x\\x1b[2J)"


def test_a_live_sessions_running_processes_show_their_time_so_far() -> None:
    """While the recorder lives, a process with no exit yet shows how long it has run up to the last
    event (`… so far  running`), not `?`; once the session is over, a missing exit is `no exit seen`."""
    s = Script(step=0.5).start("sh", "-c", "sleep 30")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh", "-c", "sleep 30")
    s.spawn(2, 1).exec(2, "/bin/sleep", "sleep", "30")
    s.sample(2, 0.0, 1 << 20)
    state = fold_session(s.events, packaged_rules())
    state.live = True
    line = next(line for line in to_text(render(state)).splitlines() if " sleep 30  [" in line)
    assert line.endswith("1.00 s so far  running  1.0 MiB"), line
    state.live = False
    line = next(line for line in to_text(render(state)).splitlines() if " sleep 30  [" in line)
    assert "so far" not in line
    assert "no exit seen" in line


def test_every_process_own_proc_directory_is_one_row_of_files_read() -> None:
    """`ps aux` reads /proc/PID/stat, status and cmdline of every process on the machine: those are one
    `/proc/<pid>` row, not a row per pid pushing the project's directories out of the table."""
    from capsule.events import FileOpened

    s = Script().start("sh", "-c", "ps aux; cat src/a.py", level="file")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh", "-c", "ps aux; cat src/a.py")
    s.spawn(2, 1).exec(2, "/bin/ps", "ps", "aux")
    for pid in range(100, 130):
        for name in ("stat", "status", f"task/{pid}/cmdline"):
            s.add(FileOpened(ts=s._tick(None), pid=2, path=f"/proc/{pid}/{name}", flags="O_RDONLY"))
    s.add(FileOpened(ts=s._tick(None), pid=2, path="/proc/self/status", flags="O_RDONLY"))
    s.exit(2).spawn(3, 1).exec(3, "/bin/cat", "cat", "src/a.py")
    s.add(FileOpened(ts=s._tick(None), pid=3, path="/w/src/a.py", flags="O_RDONLY")).exit(3).exit(1)
    text = to_text(render(fold_session(s.events, packaged_rules())))
    assert "files read (92)" in text, text
    assert " /proc/<pid> │    90" in text, text
    assert " /w/src      │     1" in text, text
    assert " /proc/self  │     1" in text, text
    assert "/proc/101" not in text, text


def test_the_policy_title_is_one_line_above_a_narrow_table() -> None:
    """rich folds a table's title to the table's width: with one short path refused, "policy · enforced
    by seccomp-notify, mount-namespace, network-namespace · …" came out over three lines."""
    from capsule.events.policy import PolicyApplied, PolicyBlocked, PolicyChecked

    s = Script().start("cat", ".env")
    s.add(
        PolicyApplied(ts=s._tick(None), mechanisms=("seccomp-notify", "mount-namespace", "network-namespace"))
    )
    s.spawn(1, None, via="root").exec(1, "/bin/cat", "cat", ".env")
    s.add(PolicyBlocked(ts=s._tick(None), pid=1, path="/w/.env", rule=".env", mechanism="mount-namespace"))
    s.exit(1, 1).add(PolicyChecked(ts=s._tick(None), execs=244, blocked=0, median_us=661.0, p99_us=900.0))
    text = to_text(render(fold_session(s.events, packaged_rules())))
    title = (
        "policy · enforced by seccomp-notify, mount-namespace, network-namespace · 1 blocked · 244 execs"
        " checked (median 661 µs)"
    )
    assert title in text.splitlines(), text
    assert "/w/.env │ .env │ mount-namespace" in text, text


def test_a_root_the_trace_never_saw_exec_is_attached_not_a_fork() -> None:
    """`strace -p`: the root was running before the trace began; its children's forks stay forks."""
    s = Script().start("?")
    s.spawn(10, None, via="root").spawn(11, 10, via="fork").spawn(12, 10).exec(12, "/bin/sleep", "sleep", "1")
    s.exit(11).exit(12).exit(10, 4).end(4)
    lines = to_text(render(fold_session(s.events, packaged_rules()))).splitlines()
    assert any(line.startswith("└── 10 ? (attached)") for line in lines), lines
    assert any("11 ? (fork)" in line for line in lines), lines


def test_a_run_stopped_with_ctrl_c_shows_it_in_the_tree_and_status() -> None:
    """Each process the terminal's Ctrl-C ended reads `SIGINT (Ctrl-C)`, `exit 130 (Ctrl-C)` for one that
    caught it; the status says who stopped the run, and no failures table appears."""
    s = Script().start("sh", "-c", "npm test")
    s.spawn(1, None, via="root").exec(1, "/bin/sh", "sh", "-c", "npm test")
    s.spawn(2, 1).exec(2, "/usr/bin/npm", "npm", "test").signaled(2, "SIGINT", code="SI_KERNEL")
    s.signaled(1, "SIGINT", code="SI_KERNEL").exit(2, 130)
    s.signaled(1, "SIGINT", sender=1, code="SI_TKILL").exit(1, signal="SIGINT").end(None, "SIGINT")
    text = to_text(render(fold_session(s.events, packaged_rules())))
    assert "status    complete · SIGINT · stopped by the terminal (Ctrl-C)" in text, text
    assert re.search(r"sh -c 'npm test' .* SIGINT \(Ctrl-C\)", text), text
    assert "exit 130 (Ctrl-C)" in text, text
    assert "failures" not in text, text
