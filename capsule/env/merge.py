"""A project config with the global defaults (`[env]` of `$CAPSULE_HOME/config.toml`) merged under it.

`merge(text, defaults)` is TOML text again: the supervisor runs it and records it (masked) in
`env.configured`, so a replay parses exactly what ran. Project values win; global `env` variables go under
the project's `[project] env`, which goes under each process's own. `origins` says where each value of the
merged config came from, for `capsule env config`.
"""

from __future__ import annotations

import tomllib
from typing import Any

import attrs

from capsule.env.recorded import dump_toml
from capsule.settings import EnvDefaults

PROJECT_DEFAULTS = ("inactivity_timeout", "log_max_bytes")
PROCESS_DEFAULTS = ("health_check_interval", "stop_timeout")
BUILT_IN = {  # what the parser assumes when nobody says (capsule.env.config)
    "project.inactivity_timeout": "never",
    "project.log_max_bytes": 1 << 20,
    "health_check_interval": "5s",
    "stop_timeout": "10s",
}


@attrs.frozen(kw_only=True)
class Merged:
    text: str
    origins: tuple[tuple[str, Any, str], ...]  # (key, value, where it came from)


def merge(text: str, defaults: EnvDefaults, project_file: str, global_file: str | None) -> Merged:
    """`text` with `defaults` under it; a text that is not TOML comes back as it is (the parser refuses it)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return Merged(text=text, origins=())
    gfile = global_file or "global config"
    origins: list[tuple[str, Any, str]] = []
    project = data.setdefault("project", {})
    if not isinstance(project, dict):
        return Merged(text=text, origins=())
    for key, value in project.items():
        if key != "env":
            origins.append((f"project.{key}", value, project_file))
    for key in PROJECT_DEFAULTS:
        if key not in project:
            value = getattr(defaults, key)
            if value is not None:
                project[key] = value
                origins.append((f"project.{key}", value, gfile))
            else:
                origins.append((f"project.{key}", BUILT_IN[f"project.{key}"], "built-in default"))
    own = project.get("env", {})
    if isinstance(own, dict) and (defaults.env or own):
        merged_env = dict(defaults.env)
        for name, value in defaults.env:
            if name not in own:
                origins.append((f"project.env.{name}", value, gfile))
        merged_env.update(own)
        for name, value in own.items():
            origins.append((f"project.env.{name}", value, project_file))
        project["env"] = merged_env
    processes = data.get("process", [])
    if isinstance(processes, list):
        for table in processes:
            if not isinstance(table, dict):
                continue
            where = f"process.{table.get('name', '?')}"
            for key, value in table.items():
                origins.append((f"{where}.{key}", value, project_file))
            for key in PROCESS_DEFAULTS:
                if key in table:
                    continue
                value = getattr(defaults, key)
                if value is not None:
                    table[key] = value
                    origins.append((f"{where}.{key}", value, gfile))
                else:
                    origins.append((f"{where}.{key}", BUILT_IN[key], "built-in default"))
    if not project:
        del data["project"]
    return Merged(text=dump_toml(data), origins=tuple(origins))
