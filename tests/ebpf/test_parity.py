"""`capsule run --tracer ebpf` against strace on the same real work: the same process trees.

Needs root, BTF, tracefs and the recorder built (clang, libbpf) (this machine and CI have them); elsewhere each test says why it
skips. Work that is the same on every run (forks, vfork, clone3, threads, an exec from a thread,
signals and core dumps, orphans, exec chains, failed execs, quoting) is recorded by both tracers and
the two trees are compared process by process: argv, exe, how it was made, exit code or signal, every
exec attempt.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.ebpf.available import needs_ebpf
from tests.ebpf.trees import canonical, differences, spawn_kinds

ROOT = Path(__file__).resolve().parents[2]
CAPSULE = [sys.executable, "-m", "capsule"]


pytestmark = [pytest.mark.strace, pytest.mark.ebpf]


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """procs (fork, vfork, clone3, threads, signals), threads (exec from a thread) and signals (the
    signal work of test_signal_deliveries_match_strace), compiled."""
    out = tmp_path_factory.mktemp("programs")
    # procs.c signals a child 20 ms after forking it, a race a loaded machine loses (the child dies of
    # SIGUSR1 before installing its handler): this copy installs the handler first and raises it.
    procs = (ROOT / "tests/data/traces/procs.c").read_text()
    racy = "if ((p = fork()) == 0) { signal(SIGUSR1, on_usr1); pause(); _exit(4); }\n    usleep(20000); kill(p, SIGUSR1);"
    assert racy in procs
    steady = "signal(SIGUSR1, on_usr1);\n    if ((p = fork()) == 0) { raise(SIGUSR1); _exit(4); }\n   "
    (out / "procs.c").write_text(procs.replace(racy, steady))
    sources = (
        ("procs", out / "procs.c"),
        ("threads", ROOT / "sessions/programs/threads.c"),
        ("signals", ROOT / "tests/ebpf/signals.c"),
    )
    for name, source in sources:
        subprocess.run(["gcc", "-O1", "-pthread", "-o", str(out / name), str(source)], check=True)
    (out / "shim").write_text('#!/bin/sh\nexec /bin/ls "$@"\n')
    (out / "shim").chmod(0o755)
    return out


def record(home: Path, cwd: Path, *args: str) -> dict[str, Any]:
    """Run `capsule run ARGS` and return `capsule report --json` of the session it made."""
    env = dict(os.environ, CAPSULE_HOME=str(home), PATH="/usr/local/bin:/usr/bin:/bin")
    done = subprocess.run(
        [*CAPSULE, "run", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    report = subprocess.run([*CAPSULE, "report", "--json"], env=env, capture_output=True, check=True)
    data: dict[str, Any] = json.loads(report.stdout)
    data["_exit"] = done.returncode
    (run,) = (home / "runs").iterdir()
    data["_via"] = spawn_kinds(run / "events.jsonl")
    return data


# The orphan tells the root it has run before the root goes on to exit. Seen here under load: the
# orphan's clone, then nothing of it, and strace ended with the root (exit 3, at once): a child that has
# not run yet when the last process strace has seen stop exits escapes strace 6.1's trace.
WORK = """
ulimit -c 0
rm -f orphan-ran
./procs
./threads
./shim -d /
bash -c 'ls -d /tmp'
env PATH=/nonexistent:/usr/bin:/bin sh -c 'env true one; env no-such-tool-capsule; /no/such/path'
/bin/echo "$(printf 'tab\\there')" "$(printf 'new\\nline')" 'q"uote' 'back\\slash' '' '\\x41' >/dev/null
/bin/echo "$(head -c 3000 /dev/zero | tr '\\0' a)" >/dev/null
(: >orphan-ran; sleep 0.05; /bin/true orphan) &
until [ -e orphan-ran ]; do :; done
sh -c 'kill -TERM $$'
exit 3
"""


@needs_ebpf
def test_both_tracers_record_the_same_tree(tmp_path: Path, programs: Path) -> None:
    """Forks, vfork, clone3, threads, exec from a thread, signals, orphans, exec chains, failed execs
    and quoting give the same process tree under eBPF as under strace."""
    work = programs / "work.sh"
    work.write_text(WORK)
    by_strace = record(tmp_path / "s", programs, "--tracer", "strace", "--", "sh", str(work))
    by_ebpf = record(tmp_path / "e", programs, "--tracer", "ebpf", "--", "sh", str(work))
    assert by_ebpf["_exit"] == by_strace["_exit"] == 3
    assert len(by_ebpf["processes"]) == len(by_strace["processes"]) >= 20
    ours, theirs = canonical(by_ebpf, via=by_ebpf["_via"]), canonical(by_strace, via=by_strace["_via"])
    found = differences(ours, theirs)
    assert found == [], "\n".join(d[-600:] for d in found)
    assert by_ebpf["unparsed_lines"] == 0
    signals = {p["signal"] for p in by_ebpf["processes"]}
    assert {"SIGSEGV", "SIGABRT", "SIGKILL", "SIGTERM"} <= signals


def agents_run(
    home: Path, plan: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[bytes], dict[str, Any], list[dict[str, Any]]]:
    """`capsule agents run PLAN`: the finished command, `agents status --json`, the agents session's events."""
    done = subprocess.run(
        [*CAPSULE, "agents", "run", str(plan)], env=env, stdin=subprocess.DEVNULL, capture_output=True
    )
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    status = json.loads(
        subprocess.run(
            [*CAPSULE, "agents", "status", "--json"], env=env, capture_output=True, check=True
        ).stdout
    )
    (session,) = [d for d in (home / "runs").iterdir() if d.name == status["run"]]
    events = [json.loads(line) for line in (session / "events.jsonl").read_text().splitlines()]
    return done, status, events


def run_task(home: Path, cwd: Path, trace: str, work: Path) -> dict[str, Any]:
    """`capsule agents run` a one-task plan running `sh WORK` with `[run] trace = TRACE`; the task's run
    session's report (as `record`), with the agents session's status and report text."""
    env = dict(os.environ, CAPSULE_HOME=str(home), PATH="/usr/local/bin:/usr/bin:/bin", NO_COLOR="1")
    plan = cwd / f"plan-{home.name}.toml"
    plan.write_text(
        f'[run]\nname = "par"\ntrace = {trace}\n'
        f'[[task]]\nid = "work"\ncommand = ["sh", "{work}"]\ncwd = "{cwd}"\ntimeout = "120s"\n'
    )
    done, status, events = agents_run(home, plan, env)
    (task,) = status["tasks"]
    (run_id,) = [e["trace_session"] for e in events if e["kind"] == "task.started"]
    report = subprocess.run([*CAPSULE, "report", run_id, "--json"], env=env, capture_output=True, check=True)
    data: dict[str, Any] = json.loads(report.stdout)
    data["_exit"] = done.returncode
    data["_task"] = task
    data["_via"] = spawn_kinds(home / "runs" / run_id / "events.jsonl")
    data["_header"] = json.loads((home / "runs" / run_id / "events.jsonl").read_text().splitlines()[0])
    data["_text"] = subprocess.run(
        [*CAPSULE, "report", status["run"]], env=env, capture_output=True, text=True, check=True
    ).stdout
    check = subprocess.run([*CAPSULE, "replay", "--check", run_id], env=env, capture_output=True, text=True)
    data["_replay"] = (check.returncode, check.stdout + check.stderr)
    return data


@needs_ebpf
def test_a_tasks_timeout_runs_from_when_ebpf_lets_it_go(tmp_path: Path) -> None:
    """The recorder's start (building it the first time, loading and attaching; bpftrace's took
    seconds) is not the task's: the timeout and the task's duration start when the task is let go,
    not at the spawn."""
    home = tmp_path / "h"
    env = dict(os.environ, CAPSULE_HOME=str(home), PATH="/usr/local/bin:/usr/bin:/bin", NO_COLOR="1")
    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[run]\nname = "quick"\ntrace = "ebpf"\n'
        '[[task]]\nid = "quick"\ncommand = ["sh", "-c", "sleep 0.2"]\ntimeout = "1.5s"\n'
    )
    done, status, events = agents_run(home, plan, env)
    (task,) = status["tasks"]
    assert task["state"] == "succeeded", (task, done.stderr.decode())
    assert done.returncode == 0
    (started,) = [e for e in events if e["kind"] == "task.started"]
    (exited,) = [e for e in events if e["kind"] == "task.exited"]
    assert exited["duration_s"] < 1.5
    # the task's trace session was open (its probes attached) before the task started
    session = json.loads(
        (home / "runs" / started["trace_session"] / "events.jsonl").read_text().splitlines()[0]
    )
    assert session["ts"] <= started["ts"]


@needs_ebpf
def test_a_task_traced_by_ebpf_records_the_same_tree(tmp_path: Path, programs: Path) -> None:
    """`[run] trace = "ebpf"`: the task's run session holds the same tree as with `trace = true`
    (argv, exits, signals, every exec attempt); agents status and report show it; replay --check
    re-derives it from trace.ebpf."""
    work = programs / "work.sh"
    work.write_text(WORK)
    by_strace = run_task(tmp_path / "s", programs, "true", work)
    by_ebpf = run_task(tmp_path / "e", programs, '"ebpf"', work)
    assert by_ebpf["_header"]["tracer"].endswith("capsule-ebpf-recorder")
    assert by_strace["_header"]["tracer"].endswith("strace")
    assert by_ebpf["_exit"] == by_strace["_exit"] == 1  # the task exits 3: the run failed
    assert by_ebpf["_task"]["state"] == by_strace["_task"]["state"] == "failed"
    assert by_ebpf["_task"]["exit_code"] == 3
    assert len(by_ebpf["processes"]) == len(by_strace["processes"]) >= 20
    ours, theirs = canonical(by_ebpf, via=by_ebpf["_via"]), canonical(by_strace, via=by_strace["_via"])
    assert differences(ours, theirs) == []
    assert by_ebpf["unparsed_lines"] == 0
    # the task's tree in the agents report, argv as the text report shows it (the program's basename)
    assert re.search(r"^ +\d+ procs\b", by_ebpf["_text"], re.M), by_ebpf["_text"]
    assert re.search(r"^ +\d+ true orphan exit 0$", by_ebpf["_text"], re.M), by_ebpf["_text"]
    code, said = by_ebpf["_replay"]
    assert code == 0, said
    assert "re-derived from trace.ebpf, identical" in said


@needs_ebpf
def test_files_and_connects_match_strace(tmp_path: Path) -> None:
    """At --level all, eBPF sees the same opens (path, flags, result) and connects as strace, the
    non-blocking ones (a socket with a timeout: EINPROGRESS) with the result that settled them."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def accept_two() -> None:
        for _ in range(4):  # two connects per tracer
            conn, _addr = server.accept()
            conn.close()

    accepting = threading.Thread(target=accept_two, daemon=True)
    accepting.start()
    script = tmp_path / "io.py"
    (tmp_path / "sub").mkdir()
    script.write_text(
        "import os, socket\n"
        "open('note.txt', 'w').write('hi')\n"
        "os.chdir('sub'); open('../note.txt').read(); open('here.txt', 'w').close(); os.chdir('..')\n"
        "try:\n    open('missing.txt')\nexcept OSError:\n    pass\n"
        f"socket.create_connection(('127.0.0.1', {port})).close()\n"
        "s = socket.socket(); s.connect_ex(('127.0.0.1', 9)); s.close()\n"
        f"for port in ({port}, 9):\n"
        "    s = socket.socket(); s.settimeout(5); s.connect_ex(('127.0.0.1', port)); s.close()\n"
    )

    def io_events(home: Path) -> list[tuple[Any, ...]]:
        (run,) = (home / "runs").iterdir()
        rows = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
        return sorted(
            # both absolute: strace's from -y, eBPF's from the cwd its trace follows (header, chdir)
            (
                r["kind"],
                r.get("path"),
                r.get("flags"),
                r.get("address"),
                r["ok"],
                r["errno"],
            )
            for r in rows
            if r["kind"] in ("file.opened", "net.connected") and "/usr/lib" not in str(r.get("path"))
        )

    python = ["/usr/bin/python3", "-I", "-S", str(script)]
    try:
        record(tmp_path / "s", tmp_path, "--level", "all", "--", *python)
        record(tmp_path / "e", tmp_path, "--tracer", "ebpf", "--level", "all", "--", *python)
        accepting.join(timeout=60)
    finally:
        server.close()
    by_strace, by_ebpf = io_events(tmp_path / "s"), io_events(tmp_path / "e")
    assert by_ebpf == by_strace
    assert by_ebpf.count(("net.connected", None, None, f"127.0.0.1:{port}", True, None)) == 2
    assert by_ebpf.count(("net.connected", None, None, "127.0.0.1:9", False, "ECONNREFUSED")) == 2
    assert any(r[1] == str(tmp_path / "missing.txt") and r[5] == "ENOENT" for r in by_ebpf)
    assert any(r[1] == str(tmp_path / "sub" / "here.txt") and r[4] for r in by_ebpf)


# One process kills another (SIGTERM), processes kill themselves (a fault's SIGSEGV, `kill -ABRT $$`,
# `kill -TERM $$`, a timer's SIGALRM), and processes handle signals and go on (SIGUSR1 from the shell;
# raise, sigqueue). A waiting process says it is ready with a file before it is signalled.
SIGNAL_WORK = """
ulimit -c 0
rm -f ready-a ready-b
./signals wait ready-a & a=$!
until [ -e ready-a ]; do :; done
kill -USR1 $a; wait $a
./signals wait ready-b & b=$!
until [ -e ready-b ]; do :; done
kill -TERM $b; wait $b
./signals segv
./signals self
./signals alarm
./signals ignore
sh -c 'kill -ABRT $$'
sh -c 'kill -TERM $$'
exit 0
"""


def signal_events(report: dict[str, Any], home: Path) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    """The session's proc.signaled events as (receiver, signal, code, sender), and each process's
    killed_by, with pids as the processes they are (their argv; "itself"): pids differ between runs.
    Each signal comes before its receiver's exit."""
    names = {p["pid"]: " ".join(p["argv"] or ()) for p in report["processes"]}

    def who(pid: int | None, receiver: int) -> str | None:
        return "itself" if pid == receiver else None if pid is None else names.get(pid, "outside")

    (run,) = (home / "runs").iterdir()
    rows = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    exited = {r["pid"]: i for i, r in enumerate(rows) if r["kind"] == "proc.exited"}
    signaled = [(i, r) for i, r in enumerate(rows) if r["kind"] == "proc.signaled"]
    assert all(i < exited[r["pid"]] for i, r in signaled)
    events = sorted(
        (names[r["pid"]], r["signal"], r["code"], who(r["sender_pid"], r["pid"])) for _, r in signaled
    )
    killed_by = {
        names[p["pid"]]: who(p["killed_by"], p["pid"]) for p in report["processes"] if p["killed_by"]
    }
    return events, killed_by


@needs_ebpf
def test_signal_deliveries_match_strace(tmp_path: Path, programs: Path) -> None:
    """eBPF records the signals delivered as strace shows them (signal, si_code, sender), so killed_by
    is the same. Those that kill without a core dump (SIGTERM, SIGALRM) are never dequeued without a
    tracer (the kernel starts the exit as it sends one): they are recorded as they are sent."""
    work = programs / "signal-work.sh"
    work.write_text(SIGNAL_WORK)
    by_strace = record(tmp_path / "s", programs, "--tracer", "strace", "--", "sh", str(work))
    by_ebpf = record(tmp_path / "e", programs, "--tracer", "ebpf", "--", "sh", str(work))
    assert by_ebpf["_exit"] == by_strace["_exit"] == 0
    shell = f"sh {work}"
    delivered = [
        ("./signals alarm", "SIGALRM", "SI_KERNEL", None),
        ("./signals segv", "SIGSEGV", "SEGV_MAPERR", None),
        ("./signals self", "SIGUSR1", "SI_TKILL", "itself"),
        ("./signals self", "SIGUSR2", "SI_QUEUE", "itself"),
        ("./signals wait ready-a", "SIGUSR1", "SI_USER", shell),
        ("./signals wait ready-b", "SIGTERM", "SI_USER", shell),
        ("sh -c kill -ABRT $$", "SIGABRT", "SI_USER", "itself"),
        ("sh -c kill -TERM $$", "SIGTERM", "SI_USER", "itself"),
    ]
    # The one difference: an ignored signal (SIG_IGN here) is dropped by the kernel as it is sent, so
    # it is never delivered; under ptrace it is queued all the same, and strace shows its delivery.
    ignored = ("./signals ignore", "SIGUSR2", "SI_USER", "itself")
    events, killed_by = signal_events(by_ebpf, tmp_path / "e")
    assert events == delivered
    strace_events, strace_killed_by = signal_events(by_strace, tmp_path / "s")
    assert strace_events == sorted([*delivered, ignored])
    assert killed_by == strace_killed_by
    assert killed_by == {
        "./signals wait ready-b": shell,
        "sh -c kill -ABRT $$": "itself",
        "sh -c kill -TERM $$": "itself",
    }


@needs_ebpf
def test_only_the_commands_tree_is_recorded(tmp_path: Path) -> None:
    """A process of the machine outside the command's tree, busy exec'ing, never reaches the session;
    the exit status of a signalled command is 128+N; replay --check re-derives the events."""
    marker = "capsule-outsider-marker"
    outsider = subprocess.Popen(
        ["sh", "-c", f"while :; do /bin/echo {marker} >/dev/null; done"], start_new_session=True
    )
    try:
        report = record(
            tmp_path / "h", tmp_path, "--tracer", "ebpf", "--", "sh", "-c", "/bin/true; kill -KILL $$"
        )
    finally:
        outsider.kill()
        outsider.wait()
    assert report["_exit"] == 128 + 9
    argvs = [" ".join(p["argv"] or ()) for p in report["processes"]]
    assert argvs == ["sh -c /bin/true; kill -KILL $$", "/bin/true"]
    (run,) = (tmp_path / "h" / "runs").iterdir()
    assert marker.encode() not in (run / "trace.ebpf").read_bytes()
    env = dict(os.environ, CAPSULE_HOME=str(tmp_path / "h"))
    check = subprocess.run(
        [*CAPSULE, "replay", "--check"], env=env, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "trace.ebpf, identical" in check.stdout


def test_unknown_or_unavailable_tracer_is_one_line(tmp_path: Path) -> None:
    """`--tracer nope` is a usage error (2); eBPF where the recorder cannot be built (no clang, nothing
    cached) is one line and exit 125."""
    env = dict(os.environ, CAPSULE_HOME=str(tmp_path / "h"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    bad = subprocess.run(
        [*CAPSULE, "run", "--tracer", "nope", "--", "true"], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "unknown --tracer 'nope'" in bad.stderr
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("strace", "setpriv", "true"):
        if found := shutil.which(tool):
            (bin_dir / tool).symlink_to(found)
    env["PATH"] = str(bin_dir)
    missing = subprocess.run(
        [*CAPSULE, "run", "--tracer", "ebpf", "--", "true"], env=env, capture_output=True, text=True
    )
    assert missing.returncode == 125
    assert missing.stderr.strip().count("\n") == 0
    assert "eBPF recording is not available" in missing.stderr
    auto = subprocess.run(
        [*CAPSULE, "run", "--tracer", "auto", "--", "true"], env=env, capture_output=True, text=True
    )
    assert auto.returncode == 0, auto.stderr  # auto falls back to strace


def project(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A $CAPSULE_HOME, a project directory for a capsule.toml, and the environment naming the home."""
    home, root = tmp_path / "h", tmp_path / "proj"
    root.mkdir()
    return home, root, dict(os.environ, CAPSULE_HOME=str(home))


def service_up(root: Path, env: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`capsule env up ROOT` (one service); its `env status --json` and that service's entry, which
    names the run session recording it."""
    up = subprocess.run(
        [*CAPSULE, "env", "up", str(root)], env=env, capture_output=True, text=True, timeout=180
    )
    assert up.returncode == 0, up.stdout + up.stderr
    status = json.loads(
        subprocess.run(
            [*CAPSULE, "env", "status", str(root), "--json"], env=env, capture_output=True, check=True
        ).stdout
    )
    (svc,) = status["processes"]
    assert svc["trace_session"], status
    return status, svc


@needs_ebpf
def test_service_traced_by_ebpf(tmp_path: Path) -> None:
    """`trace = "ebpf"` in capsule.toml: the service runs under `capsule run --tracer ebpf`, linked from
    svc.started; its run session's header names the eBPF recorder and its tree holds the service's work."""
    home, root, env = project(tmp_path)
    ready = root / "ready"
    (root / "capsule.toml").write_text(
        '[project]\nname = "eb"\n[[process]]\nname = "svc"\n'
        f"command = \"sh -c 'ls / >/dev/null; touch {ready}; exec sleep 600'\"\n"
        'restart = "no"\ntrace = "ebpf"\n'
    )
    try:
        status, svc = service_up(root, env)
        run_id = svc["trace_session"]
        header = json.loads((home / "runs" / run_id / "events.jsonl").read_text().splitlines()[0])
        assert header["tracer"].endswith("capsule-ebpf-recorder")
        assert header["parent"] == status["session"]
    finally:
        subprocess.run([*CAPSULE, "env", "down", str(root)], env=env, capture_output=True, timeout=120)
    report = subprocess.run([*CAPSULE, "report", run_id, "--json"], env=env, capture_output=True, check=True)
    argvs = [" ".join(p["argv"] or ()) for p in json.loads(report.stdout)["processes"]]
    assert "ls /" in argvs


@needs_ebpf
def test_service_with_a_policy_traced_by_ebpf(tmp_path: Path) -> None:
    """`trace = "ebpf"` with a [policy]: the service's own `capsule run --policy` guards it (the eBPF
    recorder cannot run inside the guard); the refused exec is a failed attempt (EPERM) in its run session,
    with the `policy.blocked` event, the protected file's refused open too, and the service runs on."""
    home, root, env = project(tmp_path)
    (root / ".env").write_text("K=1\n")
    ready = root / "ready"
    (root / "capsule.toml").write_text(
        '[project]\nname = "ebg"\n[policy]\ndeny_commands = ["ls *"]\nprotect_paths = [".env"]\n'
        '[[process]]\nname = "svc"\n'
        f"command = \"sh -c 'cat .env; x=l; ${{x}}s /; touch {ready}; exec sleep 600'\"\n"
        'restart = "no"\ntrace = "ebpf"\n'
    )
    try:
        _status, svc = service_up(root, env)
        run_id = svc["trace_session"]
        events_file = home / "runs" / run_id / "events.jsonl"

        def events() -> list[dict[str, Any]]:
            return [json.loads(line) for line in events_file.read_text().splitlines()]

        # the service's tree is followed live: wait (on the record itself) for what it did to be in it
        for _ in range(6000):
            if ready.exists() and any(e["kind"] == "policy.blocked" and e["path"] for e in events()):
                break
            threading.Event().wait(0.01)
        assert svc["state"] == "running"
    finally:
        subprocess.run([*CAPSULE, "env", "down", str(root)], env=env, capture_output=True, timeout=120)
    recorded = events()
    blocked = [e for e in recorded if e["kind"] == "policy.blocked"]
    assert {b["rule"] for b in blocked} == {"ls *", ".env"}
    assert [b["path"] for b in blocked if b["rule"] == ".env"] == [str(root / ".env")]
    refused = [e for e in recorded if e["kind"] == "proc.exec" and not e["ok"] and e["errno"] == "EPERM"]
    assert refused
    assert all(e["argv"] == ["ls", "/"] for e in refused)
    ran = {os.path.basename(e["path"]) for e in recorded if e["kind"] == "proc.exec" and e["ok"]}
    assert {"sh", "cat", "touch", "sleep"} <= ran
    assert (root / ".env").read_text() == "K=1\n"
