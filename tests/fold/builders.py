"""Synthetic sessions for fold and report tests: a little script of events with a moving clock."""

from __future__ import annotations

from importlib.resources import files

from capsule.events import (
    Event,
    ProcExec,
    ProcExited,
    ProcSampled,
    ProcSignaled,
    ProcSpawned,
    ProcSpawnFailed,
    SessionEnded,
    SessionRecovered,
    SessionStarted,
    TraceUnparsed,
)
from capsule.fold import PACKAGED_RULE_FILES, RuleSet

T0 = 1_763_700_000.0


def packaged_rule_texts() -> list[str]:
    """The TOML texts the shell would hand to RuleSet.from_toml, read the way the shell reads them."""
    folder = files("capsule") / "rules"
    return [(folder / name).read_text(encoding="utf-8") for name in PACKAGED_RULE_FILES]


def packaged_rules(*user_texts: str) -> RuleSet:
    return RuleSet.from_toml(*packaged_rule_texts(), *user_texts)


class Script:
    """Append events with increasing timestamps: each call advances the clock by `step` seconds."""

    def __init__(self, step: float = 0.01) -> None:
        self.events: list[Event] = []
        self.now = T0
        self.step = step

    def _tick(self, dt: float | None) -> float:
        self.now += self.step if dt is None else dt
        return self.now

    def add(self, event: Event) -> Script:
        self.events.append(event)
        return self

    def start(
        self, *argv: str, session_id: str = "20251121-043000-abcd", kind: str = "run", level: str = "process"
    ) -> Script:
        return self.add(
            SessionStarted(
                ts=self.now,
                capsule_version="0.1.0",
                session_id=session_id,
                session_kind=kind,
                argv=argv,
                cwd="/work/project",
                host="test-host",
                trace_level=level,
            )
        )

    def spawn(self, pid: int, ppid: int | None, via: str = "clone", dt: float | None = None) -> Script:
        return self.add(ProcSpawned(ts=self._tick(dt), pid=pid, ppid=ppid, via=via))

    def exec(
        self,
        pid: int,
        path: str,
        *argv: str,
        ok: bool = True,
        errno: str | None = None,
        dt: float | None = None,
    ) -> Script:
        return self.add(
            ProcExec(ts=self._tick(dt), pid=pid, path=path, argv=argv, ok=ok, errno=errno if not ok else None)
        )

    def fail_exec(self, pid: int, path: str, *argv: str, errno: str = "ENOENT") -> Script:
        return self.exec(pid, path, *argv, ok=False, errno=errno)

    def run(
        self, pid: int, ppid: int | None, path: str, *argv: str, code: int = 0, dt: float = 0.1
    ) -> Script:
        """Spawn, exec and exit one process taking `dt` seconds."""
        self.spawn(pid, ppid).exec(pid, path, *argv)
        return self.exit(pid, code, dt=dt)

    def exit(
        self,
        pid: int,
        code: int | None = 0,
        *,
        signal: str | None = None,
        core: bool = False,
        dt: float | None = None,
    ) -> Script:
        return self.add(
            ProcExited(
                ts=self._tick(dt),
                pid=pid,
                exit_code=None if signal else code,
                signal=signal,
                core_dumped=core,
            )
        )

    def signaled(self, pid: int, signal: str, sender: int | None = None, code: str | None = None) -> Script:
        return self.add(
            ProcSignaled(ts=self._tick(None), pid=pid, signal=signal, sender_pid=sender, code=code)
        )

    def sample(self, pid: int, cpu: float, rss: int, cpu_s: float | None = None) -> Script:
        return self.add(
            ProcSampled(ts=self._tick(None), pid=pid, cpu_percent=cpu, rss_bytes=rss, cpu_s=cpu_s)
        )

    def unparsed(self, line_no: int, text: str = "garbage") -> Script:
        return self.add(TraceUnparsed(ts=self._tick(None), line_no=line_no, text=text, reason="no match"))

    def spawn_failed(self, *argv: str) -> Script:
        return self.add(
            ProcSpawnFailed(
                ts=self._tick(None),
                path=argv[0],
                argv=argv,
                errno="ENOENT",
                message="No such file or directory",
            )
        )

    def end(self, exit_code: int | None = 0, signal: str | None = None) -> Script:
        ts = self._tick(None)
        return self.add(SessionEnded(ts=ts, exit_code=exit_code, signal=signal, duration_s=round(ts - T0, 6)))

    def recovered(self) -> Script:
        return self.add(
            SessionRecovered(ts=self._tick(None), reason="recorder died", events_before=3, events_added=2)
        )
