"""`capsule env status` of a running environment, answered by its supervisor.

The CLI's fast path (capsule/cli/fast.py): no typer, rich, attrs, orjson or event classes are imported,
and nothing is folded. The supervisor named by the config's live pointer renders the status itself,
from the state it holds, with the renderer the CLI uses; this only finds it and asks. None whenever
anything is not as expected (no pointer, a dead supervisor, an unsafe home, a refused request): the
caller then takes the ordinary path, which folds the session and says what is wrong.
"""

from __future__ import annotations

import os


def live_status(path: str, render: str, color: bool) -> str | None:
    """The output of `capsule env status PATH` (`render` "text" or "json"), or None."""
    from capsule.stages.envctl import ControlError, control, find_config_file, read_pointer
    from capsule.stages.home import check_home, home_path

    home = home_path()
    if check_home(home) is not None or _spools_left(home):
        return None
    try:
        config = find_config_file(path)
    except OSError:
        return None
    session = read_pointer(home, config)
    if session is None:
        return None
    try:
        reply = control(session, "status", timeout=5, extra={"render": render, "color": color})
    except ControlError:
        return None
    out = reply.get("out")
    return out if reply.get("ok") is True and isinstance(out, str) else None


def _spools_left(home: str) -> bool:
    """Whether a spool is there: every command but this one first recovers the spools no recorder owns
    (capsule/cli/base.py `_tidy_spools`), so with one present the ordinary path runs and does that."""
    try:
        return bool(os.listdir(os.path.join(home, "spool")))
    except OSError:
        return False
