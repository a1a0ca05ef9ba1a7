"""`$CAPSULE_HOME`: where it is and whether it is safe to use, in a module of its own so that the
fastest commands (capsule/cli/fast.py) can check it without importing the session store."""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False  # no typing or pathlib import at run time: `env status`'s fast path uses this
if TYPE_CHECKING:
    from pathlib import Path


def capsule_home() -> Path:
    from pathlib import Path

    return Path(home_path())


def home_path() -> str:
    """$CAPSULE_HOME (default ~/.capsule) as a string, for the fast path."""
    return os.environ.get("CAPSULE_HOME") or os.path.join(os.path.expanduser("~"), ".capsule")


RUNS = "runs"  # the sessions, under home
SETTINGS = "config.toml"  # the global config, under home (capsule.settings parses it)


def runs_dir(home: Path) -> Path:
    return home / RUNS


def check_home(home: str | os.PathLike[str]) -> str | None:
    """Why `home` must not be used (one sentence), or None: each of home, runs/ and spool/ that exists
    must be a directory (not a symlink, but home itself may be one) owned by this user and not writable
    by group or others."""
    me = os.geteuid()
    for path in (home, os.path.join(home, RUNS), os.path.join(home, "spool")):
        try:
            st = os.stat(path) if path == home else os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"$CAPSULE_HOME {home}: cannot inspect {path}: {exc.strerror or exc}"
        if not stat.S_ISDIR(st.st_mode):
            return f"$CAPSULE_HOME {home}: {path} is not a directory (a symlink?); refusing to record there"
        if st.st_uid != me:
            return (
                f"$CAPSULE_HOME {home}: {path} is owned by uid {st.st_uid}, not by you (uid {me}); "
                "refusing to record there (chown it or set CAPSULE_HOME)"
            )
        if st.st_mode & 0o022:
            return (
                f"$CAPSULE_HOME {home}: {path} is writable by group or others (mode "
                f"{stat.S_IMODE(st.st_mode):o}); refusing to record there (chmod 700 it)"
            )
    return None
