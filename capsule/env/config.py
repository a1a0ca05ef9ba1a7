"""`capsule.toml` (or `.runcept.toml`): parsed from text handed in, validated, one clear error per problem.

Every error names the file, the process and the field, e.g.
`capsule.toml: process "web": depends_on: no process named "db"`. Paths stay as written (relative to the
project root); the shell resolves them. No file is read here: env files are read (with python-dotenv) by the shell.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from typing import Any
from urllib.parse import urlsplit

import attrs

from capsule.duration import parse_duration as parse_duration  # re-exported: tests and callers
from capsule.env import CONFIG_NAMES as CONFIG_NAMES  # re-exported: callers know it from here
from capsule.policy.rules import Policy, PolicyError, parse_policy

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Linux's signal numbers (signal(7), x86-64 and arm64 alike): the core imports no `signal` module.
SIGNALS: dict[str, int] = {
    "SIGHUP": 1, "SIGINT": 2, "SIGQUIT": 3, "SIGILL": 4, "SIGTRAP": 5, "SIGABRT": 6, "SIGBUS": 7,
    "SIGFPE": 8, "SIGKILL": 9, "SIGUSR1": 10, "SIGSEGV": 11, "SIGUSR2": 12, "SIGPIPE": 13, "SIGALRM": 14,
    "SIGTERM": 15, "SIGSTKFLT": 16, "SIGCHLD": 17, "SIGCONT": 18, "SIGSTOP": 19, "SIGTSTP": 20,
    "SIGTTIN": 21, "SIGTTOU": 22, "SIGURG": 23, "SIGXCPU": 24, "SIGXFSZ": 25, "SIGVTALRM": 26,
    "SIGPROF": 27, "SIGWINCH": 28, "SIGIO": 29, "SIGPWR": 30, "SIGSYS": 31,
}  # fmt: skip
SIGNAL_ALIASES = {"SIGIOT": "SIGABRT", "SIGPOLL": "SIGIO", "SIGCLD": "SIGCHLD"}
SIGRTMIN, SIGRTMAX = 34, 64
RESTARTS = ("no", "on-failure", "always")
DEFAULT_STATUS = (200, 399)


class ConfigError(ValueError):
    """A broken config file: the message names the file, the process and the field."""


@attrs.frozen(kw_only=True)
class HealthCheck:
    """http(s)://host[:port]/path, tcp://host:port, or cmd:<command>."""

    kind: str  # http (https too: see `url`) | tcp | cmd
    text: str  # as written
    host: str = ""
    port: int = 0
    path: str = "/"
    argv: tuple[str, ...] = ()
    url: str = ""  # http(s): the URL to GET
    expect: tuple[int, int] = DEFAULT_STATUS  # http(s): the statuses that count as healthy, inclusive


@attrs.frozen(kw_only=True)
class ProcessConfig:
    name: str
    argv: tuple[str, ...]
    command: str
    shell: bool = False
    working_dir: str = "."
    env: tuple[tuple[str, str], ...] = ()
    env_file: str | None = None
    depends_on: tuple[str, ...] = ()
    health_check: HealthCheck | None = None
    health_check_interval: float = 5.0
    health_timeout: float = 2.0
    restart: str = "on-failure"
    backoff: float = 1.0
    max_backoff: float = 30.0
    max_restarts: int = 5
    restart_window: float = 60.0
    stop_signal: str = "SIGTERM"  # a name from SIGNALS, or a real-time signal's number ("34")
    stop_timeout: float = 10.0
    restart_on_unhealthy: int = 0  # restart after this many failed health checks in a row (0: never)
    inactivity_timeout: float | None = None  # stop this process when untouched this long (None: never)
    idle_traffic: bool = False  # traffic seen on its health port counts as activity
    trace: bool = False
    tracer: str = "strace"  # `trace = "ebpf"`: recorded by the eBPF tracer (`capsule run --tracer ebpf`)

    @property
    def guarded_by_its_recorder(self) -> bool:
        """The [policy] is enforced by the service's own `capsule run --policy`, not around it: the eBPF
        recorder needs the privileges the guard drops, so it must run outside the guard (eBPF-traced services)."""
        return self.trace and self.tracer == "ebpf"


@attrs.frozen(kw_only=True)
class ProjectConfig:
    name: str
    file: str
    description: str = ""
    inactivity_timeout: float | None = None  # None: never idle
    working_dir: str = "."
    env_file: str | None = None
    env: tuple[tuple[str, str], ...] = ()  # every process's, under its own `env`
    log_max_bytes: int = 1 << 20
    processes: tuple[ProcessConfig, ...] = ()
    policy: Policy = Policy()  # noqa: RUF009 - frozen: one shared default is safe. For every service.

    def process(self, name: str) -> ProcessConfig:
        for p in self.processes:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def start_order(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.processes)


def parse_health_check(text: str) -> HealthCheck:
    if text.startswith("cmd:"):
        argv = tuple(shlex.split(text[4:]))
        if not argv:
            raise ValueError("cmd: needs a command")
        return HealthCheck(kind="cmd", text=text, argv=argv)
    if text.startswith(("http://", "https://")):
        parts = urlsplit(text)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            port = 0
        if not parts.hostname or not 0 < port < 65536:
            raise ValueError(f"{text!r}: expected {parts.scheme}://host[:port]/path")
        path = parts.path or "/"
        return HealthCheck(kind="http", text=text, host=parts.hostname, port=port, path=path, url=text)
    if text.startswith("tcp://"):
        hostport = text[len("tcp://") :].partition("/")[0]
        host, _, port_text = hostport.rpartition(":")
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{text!r}: expected tcp://host:port")
        return HealthCheck(kind="tcp", text=text, host=host.strip("[]"), port=int(port_text))
    raise ValueError(f"{text!r}: expected http(s)://host[:port]/path, tcp://host:port or cmd:<command>")


def parse_status_range(value: object) -> tuple[int, int]:
    """`200`, `"200"` or `"200-399"`: the HTTP statuses that count as healthy (inclusive)."""
    if isinstance(value, int) and not isinstance(value, bool):
        low = high = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d{3}\s*(-\s*\d{3}\s*)?", value):
        first, _, second = value.partition("-")
        low, high = int(first), int(second or first)
    else:
        raise ValueError(f'expected a status or a range such as "200-399", got {value!r}')
    if not 100 <= low <= high <= 599:
        raise ValueError(f"expected statuses between 100 and 599, low first, got {value!r}")
    return low, high


def parse_signal(value: object) -> str:
    """Any signal by name (`TERM`, `SIGTERM`, `sigterm`, `SIGRTMIN+2`) or number: its canonical name."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    elif isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        name = SIGNAL_ALIASES.get(name, name)
        if name in SIGNALS:
            return name
        rt = re.fullmatch(r"SIGRT(MIN|MAX)([+-]\d+)?", name)
        if rt is None:
            raise ValueError(f"no such signal: {value!r}")
        number = (SIGRTMIN if rt[1] == "MIN" else SIGRTMAX) + int(rt[2] or 0)
    else:
        raise ValueError(f"expected a signal name or number, got {value!r}")
    for name, known in SIGNALS.items():
        if known == number:
            return name
    if SIGRTMIN <= number <= SIGRTMAX:
        return str(number)
    raise ValueError(f"no such signal: {value!r}")


def signal_number(name: str) -> int:
    """The number of a name `parse_signal` returned."""
    return int(name) if name.isdigit() else SIGNALS[name]


_PROJECT_KEYS = {
    "name", "description", "inactivity_timeout", "working_dir", "env_file", "env", "log_max_bytes",
}  # fmt: skip


class _Where:
    def __init__(self, file: str, process: str | None = None, prefix: str = "") -> None:
        self.file, self.process, self.prefix = file, process, prefix

    def error(self, field: str | None, message: str) -> ConfigError:
        where = self.file
        if self.process is not None:
            where += f": process {self.process!r}"
        if field is not None:
            where += f": {self.prefix}{field}"
        return ConfigError(f"{where}: {message}")


def _str(where: _Where, table: dict[str, Any], key: str, default: str | None) -> str | None:
    value = table.get(key, default)
    if value is not None and not isinstance(value, str):
        raise where.error(key, f"expected a string, got {value!r}")
    return value


def _duration(where: _Where, table: dict[str, Any], key: str, default: float) -> float:
    if key not in table:
        return default
    try:
        return parse_duration(table[key])
    except ValueError as exc:
        raise where.error(key, str(exc)) from None


def _int(where: _Where, table: dict[str, Any], key: str, default: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise where.error(key, f"expected a non-negative integer, got {value!r}")
    return value


def _env(where: _Where, table: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    env = table.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str | int | float | bool) for v in env.values()):
        raise where.error("env", "expected a table of NAME = value")
    return tuple((str(k), str(v).lower() if isinstance(v, bool) else str(v)) for k, v in sorted(env.items()))


def _timeout(where: _Where, table: dict[str, Any], key: str) -> float | None:
    """An inactivity timeout: a duration, or `never` / 0 for none."""
    if key not in table or table[key] in ("never", "0", 0):
        return None
    return _duration(where, table, key, 0.0) or None


_PROCESS_KEYS = {f.name for f in attrs.fields(ProcessConfig)} - {"argv", "idle_traffic"} | {
    "auto_restart",
    "expect_status",
    "activity",
}


def _process(where: _Where, table: dict[str, Any]) -> ProcessConfig:
    fields = _PROCESS_KEYS
    for key in table:
        if key not in fields:
            raise where.error(key, f"unknown key (known: {', '.join(sorted(fields))})")
    command = table.get("command")
    shell = table.get("shell", False)
    if not isinstance(shell, bool):
        raise where.error("shell", f"expected true or false, got {shell!r}")
    if isinstance(command, list):  # the argv itself, as a plan's task may give it
        if shell or not command or not all(isinstance(word, str) and word for word in command):
            raise where.error(
                "command", "a list must be the argv itself: non-empty strings, without shell = true"
            )
        argv: tuple[str, ...] = tuple(command)
        command = shlex.join(argv)
    elif not isinstance(command, str) or not command.strip():
        raise where.error("command", "required: the command line to run (a string, or the argv as a list)")
    else:
        try:
            argv = ("/bin/sh", "-c", command) if shell else tuple(shlex.split(command))
        except ValueError as exc:
            raise where.error("command", f"cannot split {command!r}: {exc}") from None
    env_pairs = _env(where, table)
    depends = table.get("depends_on", [])
    if isinstance(depends, str):
        depends = [depends]
    if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
        raise where.error("depends_on", "expected a list of process names")
    health = None
    health_text = _str(where, table, "health_check", None)
    if health_text is not None:
        try:
            health = parse_health_check(health_text)
        except ValueError as exc:
            raise where.error("health_check", str(exc)) from None
    if "expect_status" in table:
        if health is None or health.kind != "http":
            raise where.error("expect_status", "needs an http:// or https:// health_check")
        try:
            health = attrs.evolve(health, expect=parse_status_range(table["expect_status"]))
        except ValueError as exc:
            raise where.error("expect_status", str(exc)) from None
    activity = table.get("activity", "requests")
    if activity not in ("requests", "traffic"):
        raise where.error("activity", f'expected "requests" or "traffic", got {activity!r}')
    if activity == "traffic" and (health is None or health.kind == "cmd"):
        raise where.error("activity", '"traffic" needs an http(s):// or tcp:// health_check (its port)')
    restart = table.get("restart")
    if "auto_restart" in table:
        auto = table["auto_restart"]
        if not isinstance(auto, bool):
            raise where.error("auto_restart", f"expected true or false, got {auto!r}")
        if restart is None:
            restart = "on-failure" if auto else "no"
    restart = "on-failure" if restart is None else restart
    if restart not in RESTARTS:
        raise where.error("restart", f"expected one of {', '.join(RESTARTS)}, got {restart!r}")
    try:
        stop_signal = parse_signal(table.get("stop_signal", "SIGTERM"))
    except ValueError as exc:
        raise where.error("stop_signal", str(exc)) from None
    trace = table.get("trace", False)
    tracer = "strace"
    if trace == "ebpf":
        trace, tracer = True, "ebpf"
    if not isinstance(trace, bool):
        raise where.error("trace", f'expected true, false or "ebpf", got {trace!r}')
    return ProcessConfig(
        name=where.process or "",
        argv=argv,
        command=command,
        shell=shell,
        working_dir=_str(where, table, "working_dir", ".") or ".",
        env=env_pairs,
        env_file=_str(where, table, "env_file", None),
        depends_on=tuple(depends),
        health_check=health,
        health_check_interval=_duration(where, table, "health_check_interval", 5.0),
        health_timeout=_duration(where, table, "health_timeout", 2.0),
        restart=restart,
        backoff=_duration(where, table, "backoff", 1.0),
        max_backoff=_duration(where, table, "max_backoff", 30.0),
        max_restarts=_int(where, table, "max_restarts", 5),
        restart_window=_duration(where, table, "restart_window", 60.0),
        stop_signal=stop_signal,
        stop_timeout=_duration(where, table, "stop_timeout", 10.0),
        restart_on_unhealthy=_int(where, table, "restart_on_unhealthy", 0),
        inactivity_timeout=_timeout(where, table, "inactivity_timeout"),
        idle_traffic=activity == "traffic",
        trace=trace,
        tracer=tracer,
    )


def parse_config(text: str, file: str = "capsule.toml", default_name: str = "project") -> ProjectConfig:
    """Parse and validate; processes come back in dependency order (ties keep file order)."""
    top = _Where(file)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    for key in data:
        if key not in ("project", "process", "policy"):
            raise top.error(key, "unknown key (known: project, process, policy)")
    try:
        policy = parse_policy(data.get("policy", {}))
    except PolicyError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    project = data.get("project", {})
    if not isinstance(project, dict):
        raise top.error("project", "expected a [project] table")
    where = _Where(file, prefix="project.")
    for key in project:
        if key not in _PROJECT_KEYS:
            raise where.error(key, f"unknown key (known: {', '.join(sorted(_PROJECT_KEYS))})")
    name = _str(where, project, "name", default_name) or default_name
    timeout = _timeout(where, project, "inactivity_timeout")
    raw = data.get("process", [])
    if not isinstance(raw, list) or not all(isinstance(p, dict) for p in raw):
        raise top.error("process", "expected [[process]] tables")
    processes: list[ProcessConfig] = []
    seen: set[str] = set()
    for index, table in enumerate(raw):
        pname = table.get("name")
        if not isinstance(pname, str) or not _NAME.match(pname):
            raise _Where(file, f"#{index + 1}").error(
                "name", f"required: letters, digits, '.', '_' or '-', got {pname!r}"
            )
        if pname in seen:
            raise _Where(file, pname).error("name", "duplicate process name")
        seen.add(pname)
        processes.append(_process(_Where(file, pname), table))
    for p in processes:
        for dep in p.depends_on:
            if dep not in seen:
                raise _Where(file, p.name).error("depends_on", f"no process named {dep!r}")
            if dep == p.name:
                raise _Where(file, p.name).error("depends_on", "a process cannot depend on itself")
    ordered = start_order(processes, file)
    return ProjectConfig(
        name=name,
        file=file,
        description=_str(where, project, "description", "") or "",
        inactivity_timeout=timeout,
        working_dir=_str(where, project, "working_dir", ".") or ".",
        env_file=_str(where, project, "env_file", None),
        env=_env(where, project),
        log_max_bytes=_int(where, project, "log_max_bytes", 1 << 20),
        processes=tuple(ordered),
        policy=policy,
    )


def start_order(processes: list[ProcessConfig], file: str = "capsule.toml") -> list[ProcessConfig]:
    """Dependencies first, file order otherwise (a stable topological sort); a cycle is a ConfigError."""
    by_name = {p.name: p for p in processes}
    done: list[ProcessConfig] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            raise _Where(file, name).error("depends_on", f"dependency cycle: {' -> '.join(cycle)}")
        state[name] = 1
        for dep in by_name[name].depends_on:
            visit(dep, [*path, name])
        state[name] = 2
        done.append(by_name[name])

    for p in processes:
        visit(p.name, [])
    return done


def stop_order(config: ProjectConfig) -> tuple[str, ...]:
    return tuple(reversed(config.start_order))
