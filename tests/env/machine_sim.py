"""A driver for the environment machine in memory: observations in, events folded, effects kept to inspect."""

from __future__ import annotations

from typing import Any

from capsule.env import machine as m
from capsule.events import Event, SessionStarted
from capsule.events import env_seen as o
from capsule.events.env import EnvConfigured
from capsule.fold.environment import fold


class Sim:
    """One environment: `feed` an observation at a time (the clock is `now`, moved by hand)."""

    def __init__(self, toml: str, now: float = 1000.0) -> None:
        self.now = now
        self.events: list[Event] = [
            SessionStarted(ts=now, capsule_version="0", session_id="S", session_kind="env", name="proj")
        ]
        self.state = fold(self.events)
        self.pid = 100
        self.request_no = 0
        configured = EnvConfigured(
            ts=now, config_text=toml, config_path="/p/capsule.toml", root="/p", python="/py"
        )
        events, effects = m.activate(self.state, configured, now)
        self._take(events)
        self.effects: list[m.Effect] = effects
        self.deadlines: dict[str, float] = {}
        self._deadlines(effects)

    def _take(self, events: list[Event]) -> None:
        self.events += events
        fold(events, self.state)

    def feed(self, obs: Event) -> list[Event]:
        """Hand `obs` to the machine; its new events (the observation excluded). Effects go to `.effects`."""
        before = self.state.copy()
        events, effects = m.handle(self.state, obs, obs.ts)
        assert self.state == before, "handle() changed the state it was given"
        self._take([obs, *events])
        self.effects = effects
        self._deadlines(effects)
        return events

    def _deadlines(self, effects: list[m.Effect]) -> None:
        for effect in effects:
            if isinstance(effect, m.SetDeadline):
                self.deadlines[effect.key] = effect.at

    def at(self, dt: float) -> float:
        self.now += dt
        return self.now

    # -- observations, as the driver would make them -------------------------------------------------

    def spawned(self, name: str, dt: float = 0.01) -> list[Event]:
        p = self.state.processes[name]
        self.pid += 1
        now = self.at(dt)
        return self.feed(o.ObsSpawned(ts=now, name=name, run=p.run, pid=self.pid, started=now, pgid=self.pid))

    def spawn_failed(self, name: str, error: str = "command not found: x") -> list[Event]:
        p = self.state.processes[name]
        return self.feed(o.ObsSpawnFailed(ts=self.at(0.01), name=name, run=p.run, error=error))

    def exited(
        self, name: str, dt: float = 0.5, code: int | None = 1, sig: str | None = None, **kw: Any
    ) -> list[Event]:
        p = self.state.processes[name]
        assert p.pid is not None
        return self.feed(
            o.ObsExited(ts=self.at(dt), name=name, run=p.run, pid=p.pid, exit_code=code, signal=sig, **kw)
        )

    def stopped(self, name: str, dt: float = 0.01, leader: bool = True, **kw: Any) -> list[Event]:
        p = self.state.processes[name]
        run = p.tree.run if p.tree is not None else p.run
        pid = p.pid if leader else None
        return self.feed(o.ObsStopped(ts=self.at(dt), name=name, run=run, pid=pid, **kw))

    def probed(self, name: str, ok: bool, dt: float = 0.05, run: int | None = None) -> list[Event]:
        p = self.state.processes[name]
        return self.feed(
            o.ObsProbed(
                ts=self.at(dt),
                name=name,
                run=p.run if run is None else run,
                ok=ok,
                reason="" if ok else "refused",
            )
        )

    def deadline(self, key: str) -> list[Event]:
        due = self.deadlines.pop(key)
        self.now = max(self.now, due)
        return self.feed(o.ObsDeadline(ts=self.now, key=key))

    def request(self, op: str, name: str | None = None, dt: float = 0.01) -> list[Event]:
        self.request_no += 1
        return self.feed(o.ObsRequest(ts=self.at(dt), request=self.request_no, op=op, name=name))

    # -- reading -----------------------------------------------------------------------------------------

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.effects if isinstance(e, kind)]

    def state_of(self, name: str) -> str:
        return self.state.processes[name].state


def kinds(events: list[Event]) -> list[str]:
    return [e.KIND + (f":{e.name}" if hasattr(e, "name") else "") for e in events]
