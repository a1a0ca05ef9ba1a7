"""The pure core of environments: config parsing and errors, start order, restart policy, the fold."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsule.env.config import ConfigError, parse_config, parse_duration, stop_order
from capsule.env.policy import RestartHistory, decide
from capsule.events.env import (
    EnvActivated,
    SvcExited,
    SvcGaveUp,
    SvcReady,
    SvcRestarting,
    SvcStarted,
    SvcStarting,
    SvcStopped,
)
from capsule.fold.environment import EnvState, apply, fold, with_liveness

GOOD = """
[project]
name = "app"
inactivity_timeout = "30m"
[[process]]
name = "web"
command = "python -m http.server 8000"
depends_on = ["db", "cache"]
health_check = "http://127.0.0.1:8000/health"
backoff = "250ms"
[[process]]
name = "cache"
command = "redis-server"
auto_restart = true
[[process]]
name = "db"
command = "postgres -D 'my data'"
health_check = "tcp://127.0.0.1:5432"
"""


def test_good_config_parses_in_dependency_order() -> None:
    """Dependencies come first; ties keep file order; fields are parsed."""
    config = parse_config(GOOD, "capsule.toml")
    assert config.start_order == ("db", "cache", "web")
    assert stop_order(config) == ("web", "cache", "db")
    assert config.inactivity_timeout == 1800
    web = config.process("web")
    assert web.backoff == 0.25
    assert web.health_check is not None
    assert web.health_check.path == "/health"
    assert config.process("db").argv == ("postgres", "-D", "my data")
    assert config.process("cache").restart == "on-failure"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[project]\nnmae = 'x'", "capsule.toml: project.nmae: unknown key"),
        ("[[process]]\nname='a'\ncommand='x'\nrestrat='no'", "process 'a': restrat: unknown key"),
        ("[[process]]\nname='a'\ncommand='x'\nbackoff='soon'", "process 'a': backoff: not a duration"),
        (
            "[[process]]\nname='a'\ncommand='x'\nstop_timeout='-1s'",
            "process 'a': stop_timeout: not a duration",
        ),
        ("[project]\ninactivity_timeout='30 minutes'", "project.inactivity_timeout: not a duration"),
        (
            "[[process]]\nname='a'\ncommand='x'\n[[process]]\nname='a'\ncommand='y'",
            "process 'a': name: duplicate",
        ),
        (
            "[[process]]\nname='a'\ncommand='x'\ndepends_on=['b']",
            "process 'a': depends_on: no process named 'b'",
        ),
        (
            "[[process]]\nname='a'\ncommand='x'\ndepends_on=['b']\n[[process]]\nname='b'\ncommand='x'\ndepends_on=['a']",
            "depends_on: dependency cycle: a -> b -> a",
        ),
        (
            "[[process]]\nname='a'\ncommand='x'\ndepends_on=['a']",
            "process 'a': depends_on: a process cannot depend on itself",
        ),
        ("[[process]]\nname='a'", "process 'a': command: required"),
        ("[[process]]\ncommand='x'", "process '#1': name: required"),
        ("[[process]]\nname='a'\ncommand=['sh', 2]", "process 'a': command: a list must be the argv"),
        ("[[process]]\nname='a'\ncommand=[]", "process 'a': command: a list must be the argv"),
        ("[[process]]\nname='a'\nshell=true\ncommand=['x']", "process 'a': command: a list must be the argv"),
        ("[[process]]\nname='a'\ncommand='x'\nhealth_check='ftp://h:1'", "process 'a': health_check:"),
        ("[[process]]\nname='a'\ncommand='x'\nrestart='sometimes'", "process 'a': restart: expected one of"),
        ("[[process]]\nname='a'\ncommand='x'\nstop_signal='SIGFOO'", "process 'a': stop_signal:"),
        ("[[process]]\nname='a'\ncommand='x'\nmax_restarts=-1", "process 'a': max_restarts:"),
        ("[[process]]\nname='a'\ncommand='x'\ntrace='yes'", "process 'a': trace:"),
        ("[[process]]\nname='a'\ncommand='x \"unclosed'", "process 'a': command: cannot split"),
        ("[project\n", "capsule.toml: not valid TOML"),
        ("[services]\n", "capsule.toml: services: unknown key"),
    ],
)
def test_config_errors_name_file_process_and_field(text: str, expected: str) -> None:
    """Every broken config is one ConfigError naming the file, the process and the field."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, "capsule.toml")
    assert expected in str(info.value)
    assert str(info.value).startswith("capsule.toml")


def test_a_command_given_as_a_list_is_the_argv_itself() -> None:
    """`command = [...]` (as a plan's task may give it) is the argv, no splitting: spaces stay inside."""
    config = parse_config("[[process]]\nname='a'\ncommand=['sh', '-c', 'cat .env; sleep 1']", "c.toml")
    (process,) = config.processes
    assert process.argv == ("sh", "-c", "cat .env; sleep 1")
    assert process.command == "sh -c 'cat .env; sleep 1'"


@pytest.mark.parametrize(
    ("text", "seconds"), [("5s", 5), ("30m", 1800), ("250ms", 0.25), ("1.5h", 5400), (3, 3)]
)
def test_durations(text: object, seconds: float) -> None:
    """Durations are numbers with a unit (or plain seconds)."""
    assert parse_duration(text) == seconds


def test_backoff_doubles_caps_and_gives_up() -> None:
    """Backoff doubles per restart up to max_backoff; max_restarts within the window gives up."""
    config = parse_config(
        "[[process]]\nname='a'\ncommand='x'\nbackoff='1s'\nmax_backoff='3s'\nmax_restarts=4\nrestart_window='100s'"
    ).process("a")
    history = RestartHistory()
    delays = []
    for i in range(4):
        d = decide(config, history, now=float(i), ran_s=0.1, exit_code=1, signal=None)
        assert d.action == "restart"
        delays.append(d.delay_s)
        history = d.history
    assert delays == [1, 2, 3, 3]
    assert decide(config, history, now=5.0, ran_s=0.1, exit_code=1, signal=None).action == "give_up"
    # outside the window the old restarts no longer count, and a stable run resets the backoff
    later = decide(config, history, now=500.0, ran_s=200.0, exit_code=1, signal=None)
    assert (later.action, later.delay_s) == ("restart", 1)


def test_restart_policies() -> None:
    """`no` never restarts, `on-failure` only after a failure, `always` even after success."""
    text = "[[process]]\nname='a'\ncommand='x'\nrestart='{}'"
    for policy, code, action in [
        ("no", 1, "exit"),
        ("on-failure", 0, "exit"),
        ("on-failure", 1, "restart"),
        ("always", 0, "restart"),
    ]:
        p = parse_config(text.format(policy)).process("a")
        assert decide(p, RestartHistory(), now=0, ran_s=1, exit_code=code, signal=None).action == action


def _events() -> list:
    return [
        EnvActivated(ts=1, project="p", config_path="/c", root="/", processes=("db", "web")),
        SvcStarting(ts=2, name="db", argv=("x",), cwd="/"),
        SvcStarted(ts=3, name="db", pid=10, started=3.0, pgid=10, health_check="tcp://h:1"),
        SvcReady(ts=4, name="db"),
        SvcStarting(ts=5, name="web", argv=("y",), cwd="/"),
        SvcStarted(ts=6, name="web", pid=11, started=6.0, pgid=11),
        SvcExited(ts=7, name="web", pid=11, exit_code=2),
        SvcRestarting(ts=7, name="web", restarts=1, delay_s=1),
        SvcStarted(ts=8, name="web", pid=12, started=8.0, pgid=12),
        SvcExited(ts=9, name="web", pid=12, signal="SIGSEGV"),
        SvcGaveUp(ts=9, name="web", restarts=1, reason="too many"),
        SvcStopped(ts=10, name="db", pid=10, signal="SIGTERM", reason="down"),
    ]


def test_fold_state_machine_and_lost() -> None:
    """The fold tracks each process; with_liveness marks live states with a dead pid as lost."""
    state = fold(_events()[:4])
    assert state.processes["db"].state == "ready"
    assert with_liveness(state, {"db": False})["db"] == "lost"
    assert with_liveness(state, {"db": True})["db"] == "ready"
    state = fold(_events())
    web = state.processes["web"]
    assert (web.state, web.restarts, web.signal, web.pid) == ("gave_up", 1, "SIGSEGV", None)
    assert state.processes["db"].state == "stopped"


def test_late_health_results_do_not_revive_a_stopped_process() -> None:
    """A health check finishing after the stop (unhealthy or ready) leaves the process stopped."""
    from capsule.events.env import SvcUnhealthy

    late = [
        SvcUnhealthy(ts=11, name="db", reason="connection refused"),
        SvcReady(ts=12, name="db"),
    ]
    state = fold([*_events(), *late])
    assert state.processes["db"].state == "stopped"
    assert state.processes["web"].state == "gave_up"


@given(st.integers(min_value=0, max_value=12))
def test_fold_prefix_law(cut: int) -> None:
    """Folding a prefix and then the rest equals folding everything."""
    events = _events()
    whole = fold(events)
    part = fold(events[cut:], fold(events[:cut]))
    assert part == whole
    assert apply(EnvState(), events[0]).project == "p"


def test_a_gone_pid_is_exited_while_the_supervisor_lives_and_lost_once_it_is_dead() -> None:
    """with_liveness: the supervisor alive has yet to write what happened (`exited`); dead, it is `lost`."""
    state = fold(_events()[:4])
    assert with_liveness(state, {"db": False}, supervisor_alive=True)["db"] == "exited"
    assert with_liveness(state, {"db": False}, supervisor_alive=False)["db"] == "lost"
