"""The global config `$CAPSULE_HOME/config.toml`: parsed from text handed in, one clear error per problem.

    [env]                       defaults merged under every project config (project values win)
    inactivity_timeout = "30m"
    health_check_interval = "2s"
    stop_timeout = "5s"
    log_max_bytes = 2000000
    env = { LOG_LEVEL = "debug" }

    [export]                    read by `capsule export` (kept here as the table it is)

Any other top-level section is an error naming the file and the key. `Settings.origins` says, per
section, which file it came from (for `capsule env config`). Loading the file is `capsule.api.settings`.
"""

from __future__ import annotations

import tomllib
from typing import Any

import attrs

from capsule.duration import parse_duration

SECTIONS = ("env", "export")
ENV_KEYS = ("inactivity_timeout", "health_check_interval", "stop_timeout", "log_max_bytes", "env")


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
class Settings:
    env: EnvDefaults = EnvDefaults()
    export: tuple[tuple[str, Any], ...] = ()  # `[export]` as written, for its reader (capsule export)
    origins: tuple[tuple[str, str], ...] = ()  # section -> the file it came from

    def origin(self, section: str) -> str | None:
        return dict(self.origins).get(section)

    @property
    def export_table(self) -> dict[str, Any]:
        return dict(self.export)


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
    env = data.get("env", {})
    export = data.get("export", {})
    for key, value in (("env", env), ("export", export)):
        if not isinstance(value, dict):
            raise SettingsError(f"{file}: {key}: expected a [{key}] table")
    return Settings(env=_env(env, file), export=tuple(export.items()), origins=origins)


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
