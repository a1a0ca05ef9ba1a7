"""The global config `$CAPSULE_HOME/config.toml` (parsed by `capsule.settings`), loaded at the door.

`load()` gives the frozen `Settings` (empty when the file does not exist); a broken file is `BadInput`
(exit 4) naming the file and the key. `[env]` is merged under every project config by the supervisor;
`[export]` is read by `capsule export`.
"""

from __future__ import annotations

from pathlib import Path

from capsule.api.errors import BadInput
from capsule.api.sessions import home
from capsule.settings import Settings, SettingsError


def path() -> Path:
    """Where the global config is (whether or not it exists)."""
    from capsule.stages.settings_file import SETTINGS

    return home() / SETTINGS


def load() -> Settings:
    from capsule.stages.settings_file import read_settings

    try:
        return read_settings(home())
    except SettingsError as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise BadInput(f"{path()}: {exc.strerror or exc}") from None
