"""The derived index of `capsule ls`: the rows of finished sessions, so listing 10,000 of them reads one
file and stats each events file instead of decoding every header and tail.

A cache, never truth: `$CAPSULE_HOME/ls.index` maps a session id to the key of its events file (name,
size, mtime in ns) and the row `ls` showed for it. A row is used only while the key is unchanged; a
session still running or cut short (no `session.ended`) is never cached, since its status depends on
whether its recorder lives. Another index format or Capsule version: the whole index is ignored.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import orjson

from capsule import __version__
from capsule.stages.home import runs_dir
from capsule.stages.store import EVENTS, ZST, private_output

INDEX = "ls.index"
FORMAT = 2  # 2: rows have `timed_out_s`


def session_keys(home: Path) -> list[tuple[str, list[Any]]]:
    """(session id, events key) of every session directory, newest first: what `session_dirs` lists,
    found with one stat per session (two for an archived one) and no Path objects per entry."""
    found: list[tuple[str, list[Any]]] = []
    try:
        entries = os.scandir(runs_dir(home))
    except (FileNotFoundError, NotADirectoryError):
        return found
    with entries:
        for entry in entries:
            for name in (EVENTS, EVENTS + ZST):  # the plain file wins, as in session_file
                try:
                    stat = os.stat(f"{entry.path}/{name}")
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if stat.st_mode & 0o170000 == 0o100000:  # a regular file, as is_file() asks
                    found.append((entry.name, [name, stat.st_size, stat.st_mtime_ns]))
                    break
    found.sort(key=lambda item: item[0], reverse=True)
    return found


def load_index(home: Path) -> dict[str, list[Any]]:
    """session id -> [events key, row dict]; empty when missing, unreadable or from another version."""
    try:
        data = orjson.loads((home / INDEX).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("capsule") != __version__:
        return {}
    rows = data.get("rows")
    return rows if isinstance(rows, dict) else {}


def save_index(home: Path, rows: dict[str, list[Any]]) -> None:
    """Replace the index (0600, atomically); a cache: failing to write it is not an error."""
    with contextlib.suppress(OSError), private_output(home / INDEX) as out:
        out.write(orjson.dumps({"format": FORMAT, "capsule": __version__, "rows": rows}))
