"""The global config `$CAPSULE_HOME/config.toml`: parsed from text handed in, one clear error per problem.

    [env]                       defaults merged under every project config (project values win)
    inactivity_timeout = "30m"
    health_check_interval = "2s"
    stop_timeout = "5s"
    log_max_bytes = 2000000
    env = { LOG_LEVEL = "debug" }

    [policy]                    the default policy of `capsule run` (capsule.policy.rules, as in a plan)
    deny_commands = ["sudo *"]

    [export]                    ship every session to an OpenTelemetry collector when it closes
    endpoint = "http://collector:4318"   # OTLP/HTTP; a base URL gets /v1/traces; none: nothing shipped
    protocol = "http/protobuf"           # or "http/json"
    headers = { authorization = "Bearer …" }
    retries = 3                          # attempts after the first, `backoff` doubling between them
    backoff = "0.5s"
    timeout = "10s"                      # per POST

This module is the one parser of the file: `capsule env`, `capsule run` and the shipping of sessions all
read it through `parse_settings`. An unknown section, or an unknown key of a section, is an error naming
the file, the section and the key. `Settings.origins` says, per section, which file it came from (for
`capsule env config`). Loading the file is `capsule.api.settings` (and `stages.settings_file.read_settings`).
"""

from __future__ import annotations

import tomllib
from typing import Any

import attrs

from capsule.duration import parse_duration
from capsule.policy.rules import Policy, PolicyError, parse_policy

SECTIONS = ("env", "policy", "export")
ENV_KEYS = ("inactivity_timeout", "health_check_interval", "stop_timeout", "log_max_bytes", "env")
EXPORT_KEYS = ("endpoint", "protocol", "headers", "retries", "backoff", "timeout")
PROTOCOLS = ("http/protobuf", "http/json")


class SettingsError(ValueError):
    """A broken global config: the message names the file and the key."""


@attrs.frozen(kw_only=True)
class EnvDefaults:
    """`[env]`: the values as written (validated), None where the file says nothing."""

    inactivity_timeout: str | float | None = None  # as written: a duration, or "never"
    health_check_interval: str | float | None = None
    stop_timeout: str | float | None = None
    log_max_bytes: int | None = None
    env: tuple[tuple[str, str], ...] = ()


@attrs.frozen(kw_only=True)
class ExportConfig:
    """`[export]` with an endpoint: where closed sessions are shipped, and how."""

    endpoint: str
    protocol: str = "http/protobuf"
    headers: tuple[tuple[str, str], ...] = ()
    retries: int = 3
    backoff_s: float = 0.5
    timeout_s: float = 10.0


@attrs.frozen(kw_only=True)
class Settings:
    env: EnvDefaults = EnvDefaults()
    policy: Policy = attrs.field(
        factory=Policy
    )  # `[policy]`: capsule run's default (empty when the file has none)
    export: ExportConfig | None = None  # `[export]`; None: no section, or no endpoint (nothing shipped)
    origins: tuple[tuple[str, str], ...] = ()  # section -> the file it came from

    def origin(self, section: str) -> str | None:
        return dict(self.origins).get(section)


def parse_settings(text: str, file: str = "config.toml") -> Settings:
    """Parse and validate the global config's text (an empty text is the empty Settings)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{file}: not valid TOML: {exc}") from None
    for key in data:
        if key not in SECTIONS:
            raise SettingsError(f"{file}: {key}: unknown section (known: {', '.join(SECTIONS)})")
    origins = tuple((key, file) for key in SECTIONS if key in data)
    for key in SECTIONS:
        if not isinstance(data.get(key, {}), dict):
            raise SettingsError(f"{file}: {key}: expected a [{key}] table")
    try:
        policy = parse_policy(data.get("policy", {}))
    except PolicyError as exc:
        raise SettingsError(f"{file}: {exc}") from None
    return Settings(
        env=_env(data.get("env", {}), file), policy=policy, export=_export(data.get("export", {}), file),
        origins=origins,
    )  # fmt: skip


def _env(table: dict[str, Any], file: str) -> EnvDefaults:
    def error(key: str, message: str) -> SettingsError:
        return SettingsError(f"{file}: env.{key}: {message}")

    for key in table:
        if key not in ENV_KEYS:
            raise error(key, f"unknown key (known: {', '.join(ENV_KEYS)})")
    durations: dict[str, str | float | None] = {}
    for key in ("inactivity_timeout", "health_check_interval", "stop_timeout"):
        value = table.get(key)
        if value is not None and not (key == "inactivity_timeout" and value == "never"):
            try:
                parse_duration(value)
            except ValueError as exc:
                raise error(key, str(exc)) from None
        durations[key] = value
    size = table.get("log_max_bytes")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise error("log_max_bytes", f"expected a positive integer, got {size!r}")
    variables = table.get("env", {})
    if not isinstance(variables, dict) or not all(
        isinstance(v, str | int | float | bool) for v in variables.values()
    ):
        raise error("env", "expected a table of NAME = value")
    return EnvDefaults(
        inactivity_timeout=durations["inactivity_timeout"],
        health_check_interval=durations["health_check_interval"],
        stop_timeout=durations["stop_timeout"],
        log_max_bytes=size,
        env=tuple(
            (str(k), str(v).lower() if isinstance(v, bool) else str(v)) for k, v in sorted(variables.items())
        ),
    )


def _export(table: dict[str, Any], file: str) -> ExportConfig | None:
    def error(key: str, message: str) -> SettingsError:
        return SettingsError(f"{file}: export.{key}: {message}")

    for key in table:
        if key not in EXPORT_KEYS:
            raise error(key, f"unknown key (known: {', '.join(EXPORT_KEYS)})")
    endpoint = table.get("endpoint")
    if endpoint is not None and (
        not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://"))
    ):
        raise error("endpoint", f"expected an http(s) URL, got {endpoint!r}")
    protocol = table.get("protocol", "http/protobuf")
    if protocol not in PROTOCOLS:
        raise error("protocol", f"expected {' or '.join(PROTOCOLS)}, got {protocol!r}")
    headers = table.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise error("headers", "expected a table of strings")
    retries = table.get("retries", 3)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise error("retries", f"expected an integer >= 0, got {retries!r}")
    seconds: dict[str, float] = {}
    for key, default in (("timeout", 10.0), ("backoff", 0.5)):
        try:
            seconds[key] = parse_duration(table.get(key, default))
        except ValueError as exc:
            raise error(key, str(exc)) from None
    if endpoint is None:
        return None
    return ExportConfig(
        endpoint=endpoint, protocol=protocol, headers=tuple(sorted(headers.items())), retries=retries,
        backoff_s=seconds["backoff"], timeout_s=seconds["timeout"],
    )  # fmt: skip
