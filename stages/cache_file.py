"""Writing a cache file: whole or not at all (a temporary name, then a rename), private (0600), never
followed through a link, and never a failure — a cache that cannot be written costs its rebuild next time."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def keep(path: Path, data: bytes) -> None:
    """Write `data` to `path` (creating its folder, 0700), or nothing if that cannot be done."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
