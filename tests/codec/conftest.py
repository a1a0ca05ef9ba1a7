"""Fixtures for the codec tests: one hand-built event of every kind, and the schemas directory."""

from __future__ import annotations

import pytest

from capsule.events import (
    EVENT_TYPES,
    Event,
    FileChanged,
    FileOpened,
    NetConnected,
    NetSocket,
    ProcExec,
    ProcExited,
    ProcSampled,
    ProcSignaled,
    ProcSpawned,
    ProcSpawnFailed,
    SessionEnded,
    SessionRecovered,
    SessionStarted,
    SessionTimedOut,
    TraceUnparsed,
    kind_versions,
)
from capsule.events.policy import PolicyApplied, PolicyBlocked, PolicyChecked
from tests.agents.samples import task_samples
from tests.env.samples import env_samples

T0 = 1_795_000_000.25


@pytest.fixture
def sample_events() -> tuple[Event, ...]:
    """One event of every kind, as a short session would write them (header first, end last)."""
    events: tuple[Event, ...] = (
        SessionStarted(
            ts=T0,
            capsule_version="0.1.0",
            session_id="20261121-143005-7f3a",
            session_kind="run",
            name="build",
            argv=("capsule", "run", "--", "make", "-j2"),
            cwd="/work/project",
            host="ci-runner",
            tracer="/usr/bin/strace",
            tracer_version="6.8",
            tracer_flags=("-f", "-ttt", "-qq"),
            recorder_pid=4100,
            recorder_started=T0 - 0.5,
            tracer_pid=4101,
            kinds=kind_versions(),
        ),
        ProcSpawned(ts=T0 + 0.001, pid=4102, ppid=None, via="root"),
        ProcExec(
            ts=T0 + 0.002, pid=4102, path="/usr/local/bin/make", argv=("make",), ok=False, errno="ENOENT"
        ),
        ProcExec(ts=T0 + 0.003, pid=4102, path="/usr/bin/make", argv=("make", "-j2"), ok=True),
        ProcSpawned(ts=T0 + 0.01, pid=4103, ppid=4102, via="clone3"),
        FileOpened(ts=T0 + 0.011, pid=4103, path="/etc/ld.so.cache", flags="O_RDONLY|O_CLOEXEC"),
        NetConnected(
            ts=T0 + 0.012, pid=4103, family="AF_INET", address="10.0.0.1:443", ok=False, errno="ECONNREFUSED"
        ),
        FileChanged(ts=T0 + 0.013, pid=4103, op="rename", path="/work/a.txt", target="/work/b.txt"),
        NetSocket(ts=T0 + 0.014, pid=4103, op="listen", family="inet", address="127.0.0.1", port=8000),
        ProcSampled(ts=T0 + 0.02, pid=4103, cpu_percent=87.5, rss_bytes=12_345_678, cpu_s=0.25),
        ProcSignaled(ts=T0 + 0.03, pid=4103, signal="SIGTERM", sender_pid=4102, code="SI_USER"),
        ProcExited(ts=T0 + 0.031, pid=4103, signal="SIGTERM"),
        ProcSpawnFailed(
            ts=T0 + 0.04,
            path="nosuchcmd",
            argv=("nosuchcmd", "--flag"),
            errno="ENOENT",
            message="command not found",
        ),
        TraceUnparsed(
            ts=T0 + 0.05,
            line_no=17,
            text="4102 1795000000.3 ???( <unfinished ...>",
            reason="unknown syscall shape",
        ),
        ProcExited(ts=T0 + 0.06, pid=4102, exit_code=2),
        *task_samples(T0 + 0.065),
        *env_samples(T0 + 0.066),
        SessionTimedOut(ts=T0 + 0.065, limit_s=0.06, grace_s=2.0, terminated=2, killed=0),
        PolicyApplied(ts=T0 + 0.067, mechanisms=("seccomp-notify",), deny_commands=("sudo *",)),
        PolicyBlocked(
            ts=T0 + 0.068,
            pid=4104,
            argv=("sudo", "ls"),
            path="/usr/bin/sudo",
            rule="sudo *",
            command="sudo ls",
            mechanism="seccomp-notify",
        ),
        PolicyChecked(ts=T0 + 0.069, execs=3, blocked=1, median_us=80.5, p99_us=400.0),
        SessionRecovered(ts=T0 + 0.07, reason="recorder died", events_before=12, events_added=0),
        SessionEnded(
            ts=T0 + 0.08, exit_code=2, duration_s=0.08, lines=40, events=13, processes=2, failed=2, unparsed=1
        ),
    )
    assert {type(event) for event in events} == set(EVENT_TYPES), "a kind has no sample event"
    return events
