"""Reading the global config `$CAPSULE_HOME/config.toml` (parsed by `capsule.settings`).

Its own small module: `capsule run` reads the file for its `[policy]` at every start, and must not
import the environments' modules (stages/envproc.py) to do it.
"""

from __future__ import annotations

from pathlib import Path

from capsule.settings import Settings, SettingsError, parse_settings
from capsule.stages.home import SETTINGS

__all__ = ["SETTINGS", "read_settings"]


def read_settings(home: Path) -> Settings:
    """The global config of `home` (empty when there is none); SettingsError or OSError when unreadable."""
    path = home / SETTINGS
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Settings()
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{path}: {exc}") from None
    return parse_settings(text, str(path))
