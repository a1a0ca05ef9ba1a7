"""`capsule.toml` (or `.runcept.toml`): parsed from text handed in, validated, one clear error per problem.

Every error names the file, the process and the field, e.g.
`capsule.toml: process "web": depends_on: no process named "db"`. Paths stay as written (relative to the
project root); the shell resolves them. No file is read here: env files are parsed by `parse_env_file`.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from typing import Any

import attrs

from capsule.duration import parse_duration as parse_duration  # re-exported: tests and callers
from capsule.env import CONFIG_NAMES as CONFIG_NAMES  # re-exported: callers know it from here
from capsule.policy.rules import Policy, PolicyError, parse_policy

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2")
RESTARTS = ("no", "on-failure", "always")


class ConfigError(ValueError):
    """A broken config file: the message names the file, the process and the field."""


@attrs.frozen(kw_only=True)
class HealthCheck:
    """http://host:port/path, tcp://host:port, or cmd:<command>."""

    kind: str  # http | tcp | cmd
    text: str  # as written
    host: str = ""
    port: int = 0
    path: str = "/"
    argv: tuple[str, ...] = ()


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
    stop_signal: str = "SIGTERM"
    stop_timeout: float = 10.0
    trace: bool = False
    tracer: str = "strace"  # `trace = "ebpf"`: recorded by the eBPF tracer (`capsule run --tracer ebpf`)


@attrs.frozen(kw_only=True)
class ProjectConfig:
    name: str
    file: str
    inactivity_timeout: float | None = None  # None: never idle
    working_dir: str = "."
    env_file: str | None = None
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
    for scheme in ("http", "tcp"):
        prefix = f"{scheme}://"
        if text.startswith(prefix):
            rest = text[len(prefix) :]
            hostport, _, path = rest.partition("/")
            host, _, port_text = hostport.rpartition(":")
            if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(
                    f"{text!r}: expected {scheme}://host:port{'/path' if scheme == 'http' else ''}"
                )
            return HealthCheck(
                kind=scheme, text=text, host=host.strip("[]"), port=int(port_text), path="/" + path
            )
    raise ValueError(f"{text!r}: expected http://host:port/path, tcp://host:port or cmd:<command>")


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=value lines; `#` comments, blank lines, `export ` and matching quotes are understood."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


_PROJECT_KEYS = {"name", "inactivity_timeout", "working_dir", "env_file", "log_max_bytes"}


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


def _process(where: _Where, table: dict[str, Any]) -> ProcessConfig:
    fields = {f.name for f in attrs.fields(ProcessConfig)} - {"argv"} | {"auto_restart"}
    for key in table:
        if key not in fields:
            raise where.error(key, f"unknown key (known: {', '.join(sorted(fields))})")
    command = table.get("command")
    if not isinstance(command, str) or not command.strip():
        raise where.error("command", "required: the command line to run")
    shell = table.get("shell", False)
    if not isinstance(shell, bool):
        raise where.error("shell", f"expected true or false, got {shell!r}")
    try:
        argv = ("/bin/sh", "-c", command) if shell else tuple(shlex.split(command))
    except ValueError as exc:
        raise where.error("command", f"cannot split {command!r}: {exc}") from None
    env = table.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str | int | float | bool) for v in env.values()):
        raise where.error("env", "expected a table of NAME = value")
    env_pairs = tuple(
        (str(k), str(v).lower() if isinstance(v, bool) else str(v)) for k, v in sorted(env.items())
    )
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
    stop_signal = _str(where, table, "stop_signal", "SIGTERM") or "SIGTERM"
    stop_signal = stop_signal.upper()
    if not stop_signal.startswith("SIG"):
        stop_signal = "SIG" + stop_signal
    if stop_signal not in SIGNALS:
        raise where.error("stop_signal", f"expected one of {', '.join(SIGNALS)}, got {stop_signal!r}")
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
    timeout = None
    if "inactivity_timeout" in project:
        value = project["inactivity_timeout"]
        if value not in ("never", "0", 0):
            timeout = _duration(where, project, "inactivity_timeout", 0.0) or None
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
        inactivity_timeout=timeout,
        working_dir=_str(where, project, "working_dir", ".") or ".",
        env_file=_str(where, project, "env_file", None),
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
