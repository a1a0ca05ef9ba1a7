"""`capsule import`'s first step, before the CLI loads anything else: start the second process of a split
import (stages/import_part.py) now, so that it starts up while the importer does. Standard library only."""

from __future__ import annotations

import os


def prestart(args: list[str]) -> None:
    """Start the second process for `capsule import ARGS` if its log will be split (or do nothing)."""
    from capsule.stages import import_part
    from capsule.stages.home import RUNS, check_home, home_path

    home = home_path()
    if check_home(home) is None:  # an unsafe home is refused by the import itself, with its reason
        import_part.prestart(args, home, os.path.join(home, RUNS))
