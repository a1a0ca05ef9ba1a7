"""The environment supervisor: `python -m capsule.api.supervisor CONFIG [--foreground] [--notify-fd N]`.

A driver for the pure machine `capsule.env.machine`: every observation (a spawn, an exit, a stop finished, a
probe's answer, a tree's members, a deadline, a request on the Unix socket, a signal) is recorded, handed to
`handle`, and the events that come back are written and folded; then the effects are performed, each in its
own task, whose outcome is the next observation. What the driver keeps are handles (processes, logs, cancel
scopes, deadlines, waiting replies), never a decision. It is a child subreaper, so orphans of a service come
back to it; each run gets its own cgroup where Capsule can create one and a CAPSULE_UNIT marker, and every
stop goes through `capsule.stages.procs`. `--notify-fd` receives `session <id>` once the session exists and
`up ok|failed [names]` once every process settled.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio

from capsule import __version__
from capsule.env import machine as m
from capsule.env.config import ConfigError, ProjectConfig, parse_config, signal_number
from capsule.env.recorded import recorded_config_text
from capsule.events import DERIVATION, Event, SessionEnded, SessionStarted, kind_versions
from capsule.events import env_seen as obs
from capsule.events.env import EnvConfigured
from capsule.fold.environment import EnvState, fold
from capsule.report.envstatus import render_status
from capsule.settings import SettingsError
from capsule.stages import envio, procs
from capsule.stages.envctl import SOCKET, remove_pointer, write_pointer
from capsule.stages.envio import LogFile
from capsule.stages.envproc import EnvSession, read_project, run_tree
from capsule.stages.envstatus import status_of
from capsule.stages.guard import open_guard
from capsule.stages.guard_probe import enforcement_for
from capsule.stages.home import capsule_home
from capsule.stages.plain import plain
from capsule.stages.procs import returncode_status, started_at
from capsule.stages.record import SessionWriter
from capsule.stages.store import EVENTS, create_session, open_private

MEMBERS_EVERY_S = 0.5  # how often a run's tree is sampled for its members after a change …
MEMBERS_MAX_S = 8.0  # … doubling while nothing changes, up to this (50 quiet services cost ~nothing)
TRAFFIC_EVERY_S = 1.0  # how often a health port is looked at for connections (activity = "traffic")


@attrs.define(eq=False)
class Handles:
    """What the driver holds for one process: its log, the current run's process, its probe's scope."""

    log: LogFile
    proc: trio.Process | None = None
    probe: trio.CancelScope | None = None
    last_stderr: bytes = b""
    cgroups: dict[int, procs.Cgroup] = attrs.Factory(dict)


class Supervisor:
    def __init__(
        self,
        config: ProjectConfig,
        config_text: str,
        config_path: Path,
        home: Path,
        argv: tuple[str, ...] = (),
    ) -> None:
        self.config, self.config_text, self.config_path, self.home = config, config_text, config_path, home
        self.argv = argv or ("capsule", "env", "up", str(config_path))  # the user's command, for the header
        self.session_id, self.dir = create_session(home)
        self.writer = SessionWriter(self.dir / EVENTS)
        self.state = EnvState()
        self.header: SessionStarted | None = None
        self.recorded_text = recorded_config_text(config_text)  # env values and secrets left out
        try:
            self.recorded = parse_config(self.recorded_text, str(config_path), default_name=config.name)
        except ConfigError:  # (a redaction that broke a value's syntax) the live one has the same shape
            self.recorded = config
        # [policy] applies to every service; `env up` already refused one the kernel cannot enforce
        self.enforcement = enforcement_for(config.policy) if not config.policy.empty else None
        self.handles = {
            p.name: Handles(LogFile(self.dir / "logs" / f"{p.name}.log", config.log_max_bytes))
            for p in config.processes
        }
        self.deadlines: dict[str, float] = {}
        self.wake = trio.Event()
        self.replies: dict[int, tuple[trio.Event, list[m.Reply]]] = {}
        self.next_request = 0
        self.last_touch = time.time()
        self.done = trio.Event()
        self.notify: int | None = None
        self.nursery: trio.Nursery | None = None

    # -- the loop: record, handle, write and fold, perform ----------------------------------------------

    def record(self, events: list[Event]) -> None:
        self.writer.write(events)
        fold(events, self.state)
        for event in events:
            line = envio.log_line(event)
            if line is not None and hasattr(event, "name"):
                self.handles[event.name].log.line("capsule", line.encode())

    def observe(self, seen: Event) -> None:
        if self.done.is_set():
            return  # the environment is down: what the last tasks see before they are cancelled is moot
        events, effects = m.handle(self.state, seen, seen.ts)
        self.record([seen, *events])
        for effect in sorted(effects, key=lambda e: isinstance(e, m.Finish)):  # answers go out first
            self.perform(effect)

    def perform(self, effect: m.Effect) -> None:
        assert self.nursery is not None
        match effect:
            case m.Spawn():
                self.nursery.start_soon(self.run_process, effect)
            case m.StopTree():
                self.nursery.start_soon(self.stop_tree, effect)
            case m.Probe():
                self.cancel_probe(effect.name)
                scope = self.handles[effect.name].probe = trio.CancelScope()
                self.nursery.start_soon(self.probe, effect, scope)
            case m.CancelProbe():
                self.cancel_probe(effect.name)
            case m.SetDeadline() | m.CheckIdleAt():
                key = effect.key if isinstance(effect, m.SetDeadline) else "idle"
                self.deadlines[key] = effect.at
                self.wake.set()
            case m.Reply():
                waiter, box = self.replies.pop(effect.request, (None, []))
                box.append(effect)
                if waiter is not None:
                    waiter.set()
            case m.NotifyUp():
                _notify(self.notify, "up ok" if not effect.failed else "up failed " + " ".join(effect.failed))
                self.close_notify()
            case m.Finish():
                self.done.set()

    # -- effects ------------------------------------------------------------------------------------------

    # The machine works from the recorded config (env values masked, secrets in commands and checks
    # redacted: capsule/env/recorded.py), which replays the same; what a process is started and probed
    # with comes from the live config (the one a reload brought, once it did).
    def real(self, spawn: m.Spawn) -> m.Spawn:
        cfg = self.config.process(spawn.name)
        assert self.state.config is not None
        seen = self.state.config.process(spawn.name)
        head = spawn.argv[: len(spawn.argv) - len(seen.argv)]  # `capsule run … --` when traced
        env = {**dict(self.config.env), **dict(cfg.env)}
        return attrs.evolve(
            spawn,
            argv=(*head, *cfg.argv),
            env=tuple(env.items()),
            port_check=cfg.health_check if spawn.port_check is not None else None,
        )

    async def run_process(self, spawn: m.Spawn) -> None:
        """One run: spawn it (or say why not), then pump its output and sample its members until it ends."""
        h, cfg = self.handles[spawn.name], self.config.process(spawn.name)
        spawn = self.real(spawn)
        cgroup = procs.open_cgroup(f"capsule-{self.session_id}-{spawn.name}-{spawn.run}")

        def kill_run() -> None:  # on_violation = "kill": the run's whole group (its own session) goes
            if h.proc is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(h.proc.pid, signal.SIGKILL)

        # The guard's decisions are written beside the machine's events (replay leaves them out). An
        # eBPF-traced service is guarded by its own `capsule run --policy` (machine._argv): its session.
        guard = open_guard(
            None if cfg.guarded_by_its_recorder else self.enforcement,
            emit=self.writer.write,
            kill=kill_run,
            where={"service": spawn.name},
            cwd=Path(spawn.cwd),
        )
        proc = await envio.spawn(spawn, cfg.working_dir, cgroup, wrap=guard.wrap)
        guard.spawned()
        if isinstance(proc, str):
            guard.close()
            h.log.line("capsule", f"error: {proc}".encode())
            if cgroup is not None:
                cgroup.remove()
            self.observe(obs.ObsSpawnFailed(ts=time.time(), name=spawn.name, run=spawn.run, error=proc))
            return
        if cgroup is not None:
            h.cgroups[spawn.run] = cgroup
        h.proc, h.last_stderr = proc, b""
        started = started_at(proc.pid)
        where = str(cgroup.path) if cgroup is not None else None
        self.observe(
            obs.ObsSpawned(
                ts=time.time(),
                name=spawn.name,
                run=spawn.run,
                pid=proc.pid,
                started=started,
                pgid=proc.pid,
                cgroup=where,
                trace_session=(
                    await envio.trace_session(self.home, proc.pid, 60.0 if cfg.tracer == "ebpf" else 5.0)
                    if cfg.trace
                    else None
                ),
            )
        )
        marker = f"{procs.MARKER}={spawn.marker}"
        tree = procs.Tree(pid=proc.pid, started=started, pgid=proc.pid, cgroup=where, marker=marker)
        async with trio.open_nursery() as nursery:
            assert proc.stdout is not None
            assert proc.stderr is not None
            nursery.start_soon(envio.pump, proc.stdout, h.log, "stdout", lambda _line: None)
            nursery.start_soon(envio.pump, proc.stderr, h.log, "stderr", partial(setattr, h, "last_stderr"))
            nursery.start_soon(self.sample_members, spawn, tree)
            await proc.wait()
            with trio.move_on_after(0.2):  # let the pipes drain unless a grandchild holds them
                while len(nursery.child_tasks) > 1:  # noqa: ASYNC110 (bounded drain, no event to wait on)
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        guard.close()
        code, sig = returncode_status(proc.returncode)
        self.observe(
            obs.ObsExited(
                ts=time.time(),
                name=spawn.name,
                run=spawn.run,
                pid=proc.pid,
                exit_code=code,
                signal=sig,
                last_stderr=h.last_stderr.decode(errors="replace"),
            )
        )

    async def sample_members(self, spawn: m.Spawn, tree: procs.Tree) -> None:
        """Record the run's members whenever they change; collect the ones that ended as our orphans."""
        seen: tuple[procs.Member, ...] = ()
        every = MEMBERS_EVERY_S
        while True:
            now = _members_now(tree)
            procs.reap([x for x in seen if x.pid != tree.pid])  # never the leader: its waiter collects it
            every = min(every * 2, MEMBERS_MAX_S) if now == seen else MEMBERS_EVERY_S
            if now != seen:
                seen = now
                self.observe(
                    obs.ObsMembers(
                        ts=time.time(),
                        name=spawn.name,
                        run=spawn.run,
                        pids=tuple(x.pid for x in now),
                        started=tuple(x.started for x in now),
                    )
                )
            await trio.sleep(every)

    async def stop_tree(self, stop: m.StopTree) -> None:
        t = stop.tree
        h = self.handles[t.name]
        stopped = await procs.stop_async(
            run_tree(t), signal_number(stop.signal), stop.grace, keep_leader=stop.leader
        )
        code = sig = None
        if stop.leader and h.proc is not None and h.proc.pid == t.pid:
            await h.proc.wait()
            code, sig = returncode_status(h.proc.returncode)
        cgroup = h.cgroups.pop(t.run, None)
        if cgroup is not None and not cgroup.remove():
            h.cgroups[t.run] = cgroup
        self.observe(
            obs.ObsStopped(
                ts=time.time(),
                name=t.name,
                run=t.run,
                pid=t.pid if stop.leader else None,
                exit_code=code,
                signal=sig,
                killed=stopped.killed,
                survivors=stopped.survivors,
            )
        )

    def cancel_probe(self, name: str) -> None:
        scope = self.handles[name].probe
        if scope is not None:
            scope.cancel()
        self.handles[name].probe = None

    async def probe(self, probe: m.Probe, scope: trio.CancelScope) -> None:
        def report(ok: bool, reason: str) -> None:
            self.observe(obs.ObsProbed(ts=time.time(), name=probe.name, run=probe.run, ok=ok, reason=reason))

        check = self.config.process(probe.name).health_check or probe.check  # unredacted (see `real`)
        # The traffic watch lives and ends with the probe: both in the probe's scope, one nursery.
        with scope:
            async with trio.open_nursery() as both:
                if probe.watch_traffic:
                    both.start_soon(self.watch_traffic, probe.name, check.port)
                await envio.probe(
                    check,
                    Path(probe.cwd),
                    probe.timeout,
                    probe.interval,
                    probe.poll,
                    report,
                    probe.every_failure,
                )

    async def watch_traffic(self, name: str, port: int) -> None:
        """activity = "traffic": established connections on the health port count as use (polled)."""
        while True:
            count = envio.connections_on(port)
            if count:
                self.observe(obs.ObsTraffic(ts=time.time(), name=name, connections=count))
            await trio.sleep(TRAFFIC_EVERY_S)

    async def watch_deadlines(self) -> None:
        while True:
            self.wake = trio.Event()
            if not self.deadlines:
                await self.wake.wait()
                continue
            key = min(self.deadlines, key=self.deadlines.__getitem__)
            with trio.move_on_after(max(0.0, self.deadlines[key] - time.time())):
                await self.wake.wait()
                continue
            del self.deadlines[key]
            now = time.time()
            self.observe(
                obs.ObsIdleCheck(ts=now, last_touch=self.last_touch)
                if key == "idle"
                else obs.ObsDeadline(ts=now, key=key)
            )

    # -- the control socket --------------------------------------------------------------------------

    async def request(self, request: dict[str, Any]) -> dict[str, Any]:
        """status and touch only touch; every other request goes to the machine and waits for its answer."""
        self.last_touch = time.time()
        op = str(request.get("op"))
        if op == "status" and request.get("render") in ("json", "text"):
            return {"ok": True, "out": self.status_out(str(request["render"]), request.get("color") is True)}
        if op in ("status", "touch"):
            return {"ok": True}
        if op == "reload":
            return self.reload(request.get("config"))
        self.next_request += 1
        waiter, box = trio.Event(), list[m.Reply]()
        self.replies[self.next_request] = (waiter, box)
        name = request.get("name")
        self.observe(
            obs.ObsRequest(
                ts=time.time(), request=self.next_request, op=op, name=None if name is None else str(name)
            )
        )
        if not box:
            await waiter.wait()
        reply = box[0]
        out: dict[str, Any] = {"ok": reply.ok}
        if reply.error is not None:
            out["error"] = reply.error
        if reply.up is not None:
            out["up"] = reply.up
        return out

    def status_out(self, render: str, color: bool) -> str:
        """`env status` (text or --json) as the CLI would print it from the session: the same records
        from the same fold (the state this supervisor folded as it wrote), the same renderer."""
        assert self.header is not None
        data = plain(status_of(EnvSession(self.dir, self.header, self.state, supervisor_alive=True)))
        if render == "json":
            return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE).decode()
        return render_status(data, color)

    def reload(self, text: object) -> dict[str, Any]:
        """`env up` of a changed config: the machine decides what restarts; its answer comes back at once."""
        if not isinstance(text, str):
            return {"ok": False, "error": "reload needs the config text"}
        if text == self.config_text:
            return {"ok": True, "changes": {}}
        try:
            new = parse_config(text, str(self.config_path), default_name=self.config.name)
        except ConfigError as exc:
            return {"ok": False, "error": str(exc)}
        before = {p.name: p for p in self.config.processes}
        env_changed = tuple(
            p.name
            for p in new.processes
            if p.name in before
            and ((before[p.name].env, before[p.name].argv) != (p.env, p.argv) or self.config.env != new.env)
        )
        self.next_request += 1
        seen = obs.ObsReload(
            ts=time.time(),
            request=self.next_request,
            config_text=recorded_config_text(text),
            env_changed=env_changed,
        )
        waiter, box = trio.Event(), list[m.Reply]()
        self.replies[self.next_request] = (waiter, box)
        old_config, old_text = self.config, self.config_text
        self.config, self.config_text = new, text
        for p in new.processes:
            if p.name not in self.handles:
                log = LogFile(self.dir / "logs" / f"{p.name}.log", new.log_max_bytes)
                self.handles[p.name] = Handles(log)
        self.observe(seen)
        reply = box[0] if box else m.Reply(request=self.next_request, ok=False, error="no answer")
        self.replies.pop(self.next_request, None)
        if not reply.ok:
            self.config, self.config_text = old_config, old_text
            return {"ok": False, "error": reply.error}
        return {"ok": True, "changes": {k: list(v) for k, v in reply.changes}}

    async def signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as receiver:
            async for signum in receiver:
                self.observe(obs.ObsSignal(ts=time.time(), signal=signal.Signals(signum).name))

    # -- the whole -----------------------------------------------------------------------------------

    def close_notify(self) -> None:
        if self.notify is not None:
            with contextlib.suppress(OSError):
                os.close(self.notify)
            self.notify = None

    async def run(self, notify: int | None) -> int:
        began = time.time()
        self.notify = notify
        procs.become_subreaper()
        procs.set_title(f"capsule: supervisor {self.config.name}")
        self.header = SessionStarted(
            ts=began,
            capsule_version=__version__,
            session_id=self.session_id,
            session_kind="env",
            name=self.config.name,
            argv=self.argv,
            cwd=str((self.config_path.parent / self.config.working_dir).resolve()),
            host=platform.node(),
            recorder_pid=os.getpid(),
            recorder_started=started_at(os.getpid()),
            kinds=kind_versions(),
            derivation=DERIVATION,
        )
        self.record([self.header])
        _notify(notify, f"session {self.session_id}")
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                await nursery.start(envio.serve_control, self.dir, self.request)
                write_pointer(self.home, str(self.config_path), self.dir)
                now = time.time()
                configured = EnvConfigured(
                    ts=now,
                    config_text=self.recorded_text,
                    config_path=str(self.config_path),
                    root=str(self.config_path.parent),
                    python=sys.executable,
                )
                events, effects = m.activate(self.state, configured, now)
                self.record(events)
                for effect in effects:
                    self.perform(effect)
                nursery.start_soon(self.signals)
                nursery.start_soon(self.watch_deadlines)
                await self.done.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.close_notify()
            with contextlib.suppress(OSError):
                remove_pointer(self.home, str(self.config_path), self.dir)
                (self.dir / SOCKET).unlink()
            for h in self.handles.values():
                for cgroup in h.cgroups.values():
                    cgroup.remove()
            self.writer.write(
                [SessionEnded(ts=time.time(), duration_s=round(time.time() - began, 6), exit_code=0)]
            )
            self.writer.close()
            for h in self.handles.values():
                h.log.close()
        return 0


def _members_now(tree: procs.Tree) -> tuple[procs.Member, ...]:
    """The run's members now. With a cgroup every member is in it (joined before exec, inherited by
    children): one small read instead of `procs.snapshot`'s scan of every process on the machine (tens
    of ms each, per service, which pegged a supervisor of 50 services)."""
    if tree.cgroup:
        found = (procs.identity(pid) for pid in procs.cgroup_pids(tree.cgroup))
        return tuple(sorted((m for m in found if m is not None), key=lambda m: m.pid))
    return procs.snapshot(tree)


def _notify(fd: int | None, line: str) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.write(fd, line.encode() + b"\n")


def load_config(path: Path) -> ProjectConfig:
    return read_project(path, capsule_home())[1]


def main(argv: list[str] | None = None) -> int:
    return serve(argv)[0]


def serve(argv: list[str] | None = None) -> tuple[int, Path | None]:
    """Run the supervisor to its end: its exit code and the session it wrote (None: it never started),
    for `capsule.api.supervisor`, which ships the closed session."""
    parser = argparse.ArgumentParser(
        prog="python -m capsule.api.supervisor", description=__doc__.splitlines()[0]
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("--foreground", action="store_true")
    parser.add_argument("--notify-fd", type=int, default=None)
    parser.add_argument(
        "--command-line", default=None, help="the user's command, a JSON list (the header's argv)"
    )
    args = parser.parse_args(argv)
    os.umask(0o077)
    try:
        merged, config = read_project(args.config, capsule_home())
        text = merged.text
    except (ConfigError, SettingsError, OSError, UnicodeDecodeError) as exc:
        print(f"capsule: error: {exc}", file=sys.stderr)
        return 4, None
    shown = (
        tuple(orjson.loads(args.command_line))
        if args.command_line
        else ("capsule", "env", "up", str(args.config))
    )
    supervisor = Supervisor(config, text, args.config.resolve(), capsule_home(), argv=shown)
    if not args.foreground:
        fd = open_private(supervisor.dir / "supervisor.log")
        os.dup2(fd, 2)
        os.close(fd)
    return trio.run(supervisor.run, args.notify_fd), supervisor.dir


if __name__ == "__main__":
    sys.exit(main())
