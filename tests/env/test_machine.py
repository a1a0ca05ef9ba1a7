"""The environment machine in memory: gating, restart and give-up, leftovers, health, idle, stops, requests."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capsule.env import machine as m
from capsule.env.states import LIVE, TRANSITIONS, next_state
from capsule.events import env as e
from capsule.events import env_seen as o
from capsule.fold.environment import fold
from tests.env.machine_sim import Sim, kinds

TWO = """
[project]
inactivity_timeout = "10s"
[[process]]
name = "db"
command = "db-server"
health_check = "tcp://127.0.0.1:5432"
health_check_interval = "1s"
[[process]]
name = "web"
command = "web-server"
depends_on = ["db"]
"""

CRASHY = """
[[process]]
name = "x"
command = "x"
backoff = "1s"
max_backoff = "3s"
max_restarts = 3
restart_window = "60s"
stop_timeout = "2s"
"""


def up(sim: Sim) -> None:
    """Bring TWO up: db spawned and healthy, web spawned."""
    sim.spawned("db")
    sim.probed("db", ok=True)
    sim.spawned("web")


def test_dependency_waits_for_health_then_starts() -> None:
    """web starts only once db passed its health check; settling is announced once."""
    sim = Sim(TWO)
    assert [s.name for s in sim.of(m.Spawn)] == ["db"]
    assert sim.of(m.CheckIdleAt)[0].at == sim.now + 10
    assert kinds(sim.spawned("db")) == ["svc.started:db"]
    (probe,) = sim.of(m.Probe)
    assert (probe.name, probe.poll, probe.interval) == ("db", 0.1, 1.0)
    assert sim.probed("db", ok=False) == []  # pending: failures before the first pass change nothing
    assert kinds(sim.probed("db", ok=True)) == ["svc.ready:db", "svc.starting:web"]
    (spawn,) = sim.of(m.Spawn)
    assert (spawn.name, spawn.argv, spawn.cwd, spawn.marker) == ("web", ("web-server",), "/p", "S/web/0")
    assert kinds(sim.spawned("web")) == ["svc.started:web", "env.settled"]
    assert sim.of(m.NotifyUp) == [m.NotifyUp(failed=())]


def test_failed_dependency_fails_its_dependants() -> None:
    """db cannot start: web fails with it, and `env up` hears that both failed."""
    sim = Sim(TWO)
    events = sim.spawn_failed("db", "command not found: db-server")
    assert kinds(events) == ["svc.failed:db", "svc.failed:web", "env.settled"]
    assert events[1].error == "dependency 'db' did not come up"
    assert sim.of(m.NotifyUp) == [m.NotifyUp(failed=("db", "web"))]
    assert sim.state_of("web") == "gave_up"


def test_restart_with_backoff_stops_leftovers_first() -> None:
    """An exit restarts after the backoff, doubling up to max_backoff; a dead leader's tree is swept first."""
    sim = Sim(CRASHY)
    delays = []
    for run in range(3):
        sim.spawned("x")
        events = sim.exited("x", dt=0.5, code=None, sig="SIGKILL")
        assert kinds(events) == ["svc.exited:x", "svc.restarting:x", "svc.stopping:x"]
        delays.append(events[1].delay_s)
        (stop,) = sim.of(m.StopTree)
        assert (stop.tree.run, stop.leader, stop.signal, stop.grace) == (run, False, "SIGTERM", 2.0)
        assert events[2].reason == "leftovers"
        assert sim.stopped("x", leader=False) == []  # swept before the backoff is over: wait for it
        assert kinds(sim.deadline("restart:x")) == ["svc.starting:x"]
        assert sim.of(m.Spawn)[0].run == run + 1
    assert delays == [1.0, 2.0, 3.0]


def test_restart_waits_for_leftovers_to_be_gone() -> None:
    """The backoff ends while the leftovers are still being stopped: the start waits for the sweep."""
    sim = Sim(CRASHY)
    sim.spawned("x")
    sim.exited("x")
    assert sim.deadline("restart:x") == []
    assert sim.state_of("x") == "backoff"
    assert kinds(sim.stopped("x", leader=False, killed=True)) == ["svc.starting:x"]


def test_give_up_after_max_restarts_names_the_last_stderr() -> None:
    """The fourth exit within the window gives up; the reason carries the last stderr line."""
    sim = Sim(CRASHY)
    for _ in range(3):
        sim.spawned("x")
        sim.exited("x", dt=0.1)
        sim.stopped("x", leader=False)
        sim.deadline("restart:x")
    sim.spawned("x")
    events = sim.exited("x", dt=0.1, last_stderr="OSError: address in use")
    assert kinds(events) == ["svc.exited:x", "svc.gave_up:x"]
    assert (
        events[1].reason == "3 restarts within 60s (max_restarts = 3); last stderr: OSError: address in use"
    )
    assert sim.state.processes["x"].restarts == 3
    assert sim.of(m.StopTree) == []  # its leftovers wait for `down`
    assert kinds(sim.request("down"))[:1] == ["env.deactivating"]
    assert sim.of(m.StopTree)[0].leader is False


def test_stable_run_resets_the_backoff() -> None:
    """A run lasting restart_window resets the streak: the next delay is the first backoff again."""
    sim = Sim(CRASHY)
    sim.spawned("x")
    sim.exited("x", dt=0.1)
    sim.stopped("x", leader=False)
    sim.deadline("restart:x")
    sim.spawned("x")
    assert sim.exited("x", dt=0.1)[1].delay_s == 2.0
    sim.stopped("x", leader=False)
    sim.deadline("restart:x")
    sim.spawned("x")
    assert sim.exited("x", dt=61.0)[1].delay_s == 1.0


@pytest.mark.parametrize(
    ("policy", "code", "restarts"),
    [("no", 1, False), ("on-failure", 0, False), ("on-failure", 2, True), ("always", 0, True)],
)
def test_restart_policies(policy: str, code: int, restarts: bool) -> None:
    """restart = no | on-failure | always decides whether an exit is followed by a restart."""
    sim = Sim(f"[[process]]\nname='x'\ncommand='x'\nrestart='{policy}'")
    sim.spawned("x")
    assert ("svc.restarting:x" in kinds(sim.exited("x", code=code))) is restarts
    assert sim.state_of("x") == ("backoff" if restarts else "exited")


def test_health_hysteresis_and_stale_results() -> None:
    """ready -> unhealthy only from ready, ready again on the next pass; old runs' and late answers are ignored."""
    sim = Sim(TWO)
    up(sim)
    assert kinds(sim.probed("db", ok=False)) == ["svc.unhealthy:db"]
    assert sim.state_of("db") == "unhealthy"
    assert sim.probed("db", ok=False) == []
    assert kinds(sim.probed("db", ok=True)) == ["svc.ready:db"]
    assert sim.probed("db", ok=False, run=7) == []  # not this run
    sim.request("stop", "db")
    assert sim.probed("db", ok=False) == []  # being stopped
    assert sim.state_of("db") == "ready"


def test_idle_deadline_moves_with_touches_then_stops_everything() -> None:
    """The idle check re-arms at last touch + timeout, and only a full timeout without touch idles."""
    sim = Sim(TWO)
    up(sim)
    start = sim.events[1].ts
    sim.now = start + 10
    assert sim.feed(o.ObsIdleCheck(ts=sim.now, last_touch=start + 4)) == []
    assert sim.of(m.CheckIdleAt) == [m.CheckIdleAt(at=start + 14)]
    sim.now = start + 14
    events = sim.feed(o.ObsIdleCheck(ts=sim.now, last_touch=start + 4))
    assert kinds(events) == ["env.idle", "env.deactivating", "svc.stopping:web"]
    assert events[0].idle_s == 10.0
    assert [s.tree.name for s in sim.of(m.StopTree)] == ["web"]


def test_down_stops_in_reverse_order_one_at_a_time_then_answers() -> None:
    """down: web, then db, each after the previous stop finished; the answer precedes the end."""
    sim = Sim(TWO)
    up(sim)
    assert kinds(sim.request("down")) == ["env.deactivating", "svc.stopping:web"]
    assert sim.request("start", "web")
    assert sim.of(m.Reply)[0].error == "proj is going down"
    assert kinds(sim.stopped("web", exit_code=0)) == ["svc.stopped:web", "svc.stopping:db"]
    events = sim.stopped("db", signal="SIGKILL", killed=True)
    assert kinds(events) == ["svc.stopped:db", "env.replied", "env.deactivated"]
    assert events[0].killed
    assert events[0].reason == "down"
    assert sim.of(m.Reply) == [m.Reply(request=1, ok=True)]
    assert sim.of(m.Finish) == [m.Finish(reason="down")]


def test_exit_during_a_stop_is_reported_by_the_stop() -> None:
    """The leader ending while being stopped is no crash: no restart, one svc.stopped."""
    sim = Sim(CRASHY)
    sim.spawned("x")
    sim.request("stop", "x")
    assert sim.exited("x", code=None, sig="SIGTERM") == []
    assert kinds(sim.stopped("x", signal="SIGTERM")) == ["svc.stopped:x", "env.replied"]
    assert sim.of(m.Reply) == [m.Reply(request=1, ok=True, up=False)]
    assert sim.state_of("x") == "stopped"


def test_requests_start_restart_and_errors() -> None:
    """start answers once settled, restart stops then starts, unknown names and ops are errors."""
    sim = Sim(TWO)
    up(sim)
    sim.request("start", "web")
    assert sim.of(m.Reply) == [m.Reply(request=1, ok=True, up=True)]  # already running
    assert kinds(sim.request("restart", "web")) == ["svc.stopping:web"]
    assert kinds(sim.stopped("web")) == ["svc.stopped:web", "svc.starting:web"]
    assert sim.of(m.SetDeadline)[0].key == "reply:2"
    assert kinds(sim.spawned("web")) == ["svc.started:web", "env.replied"]
    assert sim.of(m.Reply) == [m.Reply(request=2, ok=True, up=True)]
    sim.request("start", "nope")
    assert sim.of(m.Reply)[0].error == "no process named 'nope' in proj"
    sim.request("frobnicate", "web")
    assert sim.of(m.Reply)[0].error == "unknown op 'frobnicate'"


def test_start_that_never_gets_healthy_is_answered_at_its_deadline() -> None:
    """A requested start whose health check never passes is answered `up: false` at the deadline."""
    sim = Sim(TWO)
    up(sim)
    sim.request("stop", "db")
    sim.stopped("web")  # what depends on db stops first
    sim.stopped("db")
    sim.request("start", "db")
    assert sim.of(m.SetDeadline)[0].at == pytest.approx(sim.now + 6.0)
    sim.spawned("db")
    sim.probed("db", ok=False)
    assert kinds(sim.deadline("reply:2")) == ["env.replied"]
    assert sim.of(m.Reply) == [m.Reply(request=2, ok=True, up=False)]


def test_start_with_a_stopped_dependency_fails() -> None:
    """Starting web while db is stopped fails web at once: its dependency is not up."""
    sim = Sim(TWO)
    up(sim)
    sim.request("stop", "web")
    sim.stopped("web")
    sim.request("stop", "db")
    sim.stopped("db")
    events = sim.request("start", "web")
    assert kinds(events) == ["svc.failed:web", "env.replied"]
    assert sim.of(m.Reply) == [m.Reply(request=3, ok=True, up=False)]


def test_signal_deactivates_and_a_spawn_in_flight_is_stopped_once_it_exists() -> None:
    """SIGTERM while db is being spawned: nothing else starts, db is stopped once it exists."""
    sim = Sim(TWO)
    assert kinds(sim.feed(o.ObsSignal(ts=sim.at(0.01), signal="SIGTERM"))) == ["env.deactivating"]
    assert sim.of(m.StopTree) == []
    assert kinds(sim.spawned("db")) == ["svc.started:db", "svc.stopping:db"]
    assert sim.of(m.Probe) == []
    assert kinds(sim.stopped("db")) == ["svc.stopped:db", "env.deactivated"]


# -- properties over any sequence of what a driver may observe ------------------------------------


def _possible(sim: Sim, pending: dict[str, list]) -> list:
    """What the driver could observe next, given the effects it was asked to perform."""
    options: list = []
    for spawn in pending["spawn"]:
        options += [("spawned", spawn), ("spawn_failed", spawn)]
    for stop in pending["stop"]:
        options.append(("stopped", stop))
    for name, p in sim.state.processes.items():
        if p.pid is not None:
            options += [("exited", name), ("probe_ok", name), ("probe_bad", name)]
    for key in pending["deadline"]:
        options.append(("deadline", key))
    options += [("request", op) for op in ("start", "stop", "restart")] + [("down", None), ("idle", None)]
    options += [("reload", text) for text in RELOADS]
    return options


HONEST = TWO.replace('health_check_interval = "1s"', 'health_check_interval = "1s"\nrestart_on_unhealthy = 2')
HONEST = HONEST.replace('depends_on = ["db"]', 'depends_on = ["db"]\ninactivity_timeout = "3s"')
RELOADS = (
    HONEST,  # unchanged
    HONEST.replace('"web-server"', '"web-server --v2"'),  # web changed
    HONEST.replace('"db-server"', '"db-server --v2"'),  # db changed: web restarts after it
    HONEST.split('[[process]]\nname = "web"')[0] + '[[process]]\nname = "cache"\ncommand = "c"\n',  # web out
)


def _drive(sim: Sim, choice: tuple, data: st.DataObject) -> None:
    what, arg = choice
    now = sim.at(data.draw(st.sampled_from([0.01, 0.5, 1.0, 5.0, 70.0])))
    name = data.draw(st.sampled_from(["db", "web"]))
    match what:
        case "spawned":
            sim.pid += 1
            sim.feed(o.ObsSpawned(ts=now, name=arg.name, run=arg.run, pid=sim.pid, started=now, pgid=sim.pid))
        case "spawn_failed":
            sim.feed(o.ObsSpawnFailed(ts=now, name=arg.name, run=arg.run, error="nope"))
        case "stopped":
            pid = arg.tree.pid if arg.leader else None
            sim.feed(o.ObsStopped(ts=now, name=arg.tree.name, run=arg.tree.run, pid=pid))
        case "exited":
            p = sim.state.processes[arg]
            code = data.draw(st.sampled_from([0, 1, None]))
            sim.feed(
                o.ObsExited(
                    ts=now,
                    name=arg,
                    run=p.run,
                    pid=p.pid,
                    exit_code=code,
                    signal=None if code is not None else "SIGKILL",
                )
            )
        case "probe_ok" | "probe_bad":
            sim.feed(o.ObsProbed(ts=now, name=arg, run=sim.state.processes[arg].run, ok=what == "probe_ok"))
        case "deadline":
            sim.feed(o.ObsDeadline(ts=now, key=arg))
        case "request":
            sim.request(arg, name, dt=0)
        case "down":
            sim.request("down", dt=0)
        case "idle":
            sim.feed(o.ObsIdleCheck(ts=now, last_touch=now - 11))
        case "reload":
            sim.request_no += 1
            sim.feed(o.ObsReload(ts=now, request=sim.request_no, config_text=arg))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_sequence_keeps_the_machine_honest(data: st.DataObject) -> None:
    """Whatever happens: only table transitions, handle is pure and deterministic, the fold is its state,
    nothing starts while going down, at most one stop per process in flight, and down always ends."""
    sim = Sim(HONEST)
    pending: dict[str, list] = {"spawn": [], "stop": [], "deadline": []}
    finished = 0

    def absorb() -> None:
        nonlocal finished
        for effect in sim.effects:
            if isinstance(effect, m.Spawn):
                assert sim.state.deactivating is None or sim.state.processes[effect.name].stopping
                pending["spawn"].append(effect)
            elif isinstance(effect, m.StopTree):
                assert not any(s.tree.name == effect.tree.name for s in pending["stop"]), (
                    "two stops in flight"
                )
                pending["stop"].append(effect)
            elif isinstance(effect, m.SetDeadline):
                pending["deadline"].append(effect.key)
            elif isinstance(effect, m.Finish):
                finished += 1

    absorb()
    for _ in range(data.draw(st.integers(min_value=1, max_value=40))):
        if finished:
            break
        choice = data.draw(st.sampled_from(_possible(sim, pending)))
        for key in pending:
            if choice[1] in pending[key]:
                pending[key].remove(choice[1])
        before = sim.state.copy()
        start = len(sim.events)
        _drive(sim, choice, data)
        obs, *made = sim.events[start:]
        assert m.handle(before, obs, obs.ts) == (made, sim.effects), "not deterministic"
        state = fold([obs], before.copy())
        for event in made:  # every state change is a transition of the table
            if event.KIND in TRANSITIONS:
                p = state.processes[event.name]
                kind = event.KIND
                assert next_state(p.state, kind, health_check=p.health_check is not None) is not None, (
                    p.state,
                    kind,
                )
            fold([event], state)
        assert state == sim.state
        absorb()
    assert fold(sim.events) == sim.state  # the state is the fold of the events, nothing else
    # Down always ends, whatever was going on: finish every stop, spawn and exit until Finish.
    if not finished:
        sim.request("down")
        absorb()
        for _ in range(50):
            if finished:
                break
            live = [n for n, p in sim.state.processes.items() if p.pid is not None and not p.stopping]
            if pending["spawn"]:
                s = pending["spawn"].pop()
                sim.pid += 1
                sim.feed(
                    o.ObsSpawned(
                        ts=sim.at(0.01), name=s.name, run=s.run, pid=sim.pid, started=sim.now, pgid=sim.pid
                    )
                )
            elif pending["stop"]:
                s = pending["stop"].pop(0)
                sim.feed(
                    o.ObsStopped(
                        ts=sim.at(0.01),
                        name=s.tree.name,
                        run=s.tree.run,
                        pid=s.tree.pid if s.leader else None,
                    )
                )
            elif live:
                p = sim.state.processes[live[0]]
                sim.feed(o.ObsExited(ts=sim.at(0.01), name=p.name, run=p.run, pid=p.pid, exit_code=0))
            absorb()
        assert finished == 1
        assert all(p.state not in LIVE for p in sim.state.processes.values())
        assert sim.state.deactivated is not None
        assert not sim.state.requests, "a request left unanswered"


def test_every_emitted_kind_is_known() -> None:
    """The table names only kinds that exist."""
    known = {cls.KIND for cls in e.EVENTS}
    assert set(TRANSITIONS) <= known


def test_a_process_of_its_own_inactivity_timeout_idles_alone_and_requests_naming_it_keep_it() -> None:
    """inactivity_timeout under [[process]] stops that process (reason idle) once untouched that long;
    a request naming it counts as its activity; the rest keeps running."""
    sim = Sim(
        TWO.replace('inactivity_timeout = "10s"', "").replace(
            'depends_on = ["db"]', 'depends_on = ["db"]\ninactivity_timeout = "3s"'
        )
    )
    up(sim)
    assert sim.of(m.CheckIdleAt)
    sim.at(2.0)
    sim.request("start", "web")  # touches web: already up, answered at once
    early = sim.feed(o.ObsIdleCheck(ts=sim.at(2.0), last_touch=sim.now - 2.0))
    assert kinds(early) == []
    assert sim.of(m.CheckIdleAt)[0].at > sim.now
    late = sim.feed(o.ObsIdleCheck(ts=sim.at(1.5), last_touch=sim.now - 3.5))
    assert kinds(late) == ["svc.stopping:web"]
    assert late[0].reason == "idle"
    assert kinds(sim.stopped("web")) == ["svc.stopped:web"]
    assert sim.state_of("db") == "ready"
    assert sim.state.processes["web"].stop_reason == "idle"


@pytest.mark.parametrize(
    ("policy", "trace", "expected"),
    [
        ("", 'trace = "ebpf"', ("--tracer", "ebpf", "--")),
        ('[policy]\ndeny_commands = ["sudo *"]\n', 'trace = "ebpf"', ("--tracer", "ebpf", "--policy")),
        ('[policy]\ndeny_commands = ["sudo *"]\n', "trace = true", ("--name",)),
    ],
)
def test_an_ebpf_traced_service_is_guarded_by_its_own_recorder(
    policy: str, trace: str, expected: tuple
) -> None:
    """With a [policy], an eBPF-traced service runs `capsule run --tracer ebpf --policy CONFIG`: the
    guard goes inside the recording (the eBPF recorder cannot run under it); strace-traced ones are wrapped."""
    sim = Sim(policy + f'[[process]]\nname = "x"\ncommand = "x"\n{trace}\n')
    (spawn,) = [fx for fx in sim.effects if isinstance(fx, m.Spawn)]
    argv = spawn.argv
    assert argv[:4] == ("/py", "-m", "capsule", "run")
    assert argv[-2:] == ("--", "x")
    joined = " ".join(argv)
    assert " ".join(expected) in joined
    assert ("--policy /p/capsule.toml" in joined) == ("--policy" in expected)
