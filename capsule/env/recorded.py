"""The config text an env session keeps (`env.configured`): the project file with every `env` value masked
and every command redacted, written back as TOML the machine parses again on replay.

The machine's decisions never depend on an environment variable's value, so replay is unchanged; the
values (tokens, database URLs) never reach the session. Commands keep their shape, only secrets go.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

from capsule.redact import MASK, redact_argv, redact_text


def recorded_config_text(text: str) -> str:
    """`text` with env values masked and commands redacted, as TOML (the text itself if it is not TOML:
    the machine then refuses it exactly as it refused the original)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return redact_text(text)
    return dump_toml(_masked(data))


def _masked(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        if key == "env":
            return dict.fromkeys(value, MASK)
        return {k: _masked(v, k) for k, v in value.items()}
    if isinstance(value, list):
        if key == "command" and all(isinstance(v, str) for v in value):
            return list(redact_argv(value))
        return [_masked(v, key) for v in value]
    if isinstance(value, str) and key in ("command", "health_check"):
        return redact_text(value)
    return value


def dump_toml(data: dict[str, Any]) -> str:
    """TOML for the shapes a project file has: tables, arrays of tables, and plain values."""
    lines: list[str] = []
    _table(data, [], lines)
    return "\n".join(lines) + "\n"


def _table(data: dict[str, Any], path: list[str], lines: list[str]) -> None:
    plain = {k: v for k, v in data.items() if not _is_table(v) and not _is_tables(v)}
    for key, value in plain.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in data.items():
        if _is_table(value):
            lines.append(f"[{'.'.join(_key(p) for p in (*path, key))}]")
            _table(value, [*path, key], lines)
        elif _is_tables(value):
            for item in value:
                lines.append(f"[[{'.'.join(_key(p) for p in (*path, key))}]]")
                _table(item, [*path, key], lines)


def _is_table(value: Any) -> bool:
    # `env = { … }` stays inline: a sub-table of a process would read the same, but this keeps the shape
    return isinstance(value, dict) and not all(not isinstance(v, dict | list) for v in value.values())


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))  # dates and times: kept as text (a project file has none)
