"""Talking to a running supervisor: its control socket and the pointer that finds it.

Light on purpose (the standard library only, no orjson): `capsule env status` of a running environment
asks its supervisor, which holds the folded state, instead of folding the session itself, and the
client's whole cost is this module and the interpreter's start (the issue's aim: within 3x of
`python -c pass`; orjson alone imports dataclasses, datetime and uuid, about 15 ms).

The pointer is `$CAPSULE_HOME/locks/<hash of the config path>.live`, holding the session directory of
the supervisor that serves that config now. The supervisor writes it once its socket listens and
removes it when it ends; a pointer left by a supervisor that died names a socket nothing answers on, so
a reader falls back to the session's fold (which is always the truth).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from capsule.stages.home import runs_dir

TYPE_CHECKING = False  # no typing import: this module is on `env status`'s fast path
if TYPE_CHECKING:
    from typing import Any

SOCKET = "ctl.sock"
LOCKS = "locks"


class ControlError(OSError):
    """The supervisor's socket did not answer."""


def config_digest(config_path: str) -> str:
    """The name under `locks/` of everything kept per config path (the start lock, the live pointer)."""
    try:  # the built-in sha256, without hashlib's OpenSSL load (2 ms of `env status`'s fast path)
        from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:  # another build of Python: the same digest through hashlib
        from hashlib import sha256

    return str(sha256(config_path.encode()).hexdigest()[:24])


def socket_address(session_dir: Path) -> tuple[str, int | None]:
    """An AF_UNIX address for the session's socket, short enough for sun_path (108 bytes) via /proc."""
    path = session_dir / SOCKET
    if len(str(path)) < 100:
        return str(path), None
    fd = os.open(session_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{SOCKET}", fd


def control(
    session_dir: Path,
    op: str,
    name: str | None = None,
    timeout: float = 120.0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One request to a supervisor over its Unix socket; its JSON reply."""
    address, dirfd = socket_address(session_dir)
    request = json.dumps({"op": op, "name": name, **(extra or {})}, ensure_ascii=False)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(request.encode() + b"\n")
            data = b""
            while b"\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        raise ControlError(f"supervisor of {session_dir.name} does not answer: {exc}") from None
    finally:
        if dirfd is not None:
            os.close(dirfd)
    if not data.strip():
        raise ControlError(f"supervisor of {session_dir.name} closed the connection")
    try:
        reply: dict[str, Any] = json.loads(data)
    except ValueError:
        raise ControlError(f"supervisor of {session_dir.name} answered something that is not JSON") from None
    return reply


def pointer_path(home: Path, config_path: str) -> Path:
    return home / LOCKS / f"{config_digest(config_path)}.live"


def write_pointer(home: Path, config_path: str, session_dir: Path) -> None:
    """Say that `session_dir`'s supervisor serves `config_path` (replacing, atomically, any older word)."""
    target = pointer_path(home, config_path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    part = target.with_name(f"{target.name}.{os.getpid()}")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, str(session_dir).encode())
    finally:
        os.close(fd)
    os.replace(part, target)


def remove_pointer(home: Path, config_path: str, session_dir: Path) -> None:
    """Take the word back, unless a newer supervisor of the same config has written its own since."""
    target = pointer_path(home, config_path)
    if read_pointer(home, config_path) == session_dir:
        target.unlink(missing_ok=True)


def read_pointer(home: Path, config_path: str) -> Path | None:
    """The session directory whose supervisor said it serves `config_path`, or None. Only a directory
    under `home/runs` is taken: the pointer is a hint, never a way to send requests elsewhere."""
    try:
        fd = os.open(pointer_path(home, config_path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(fd, 4096).decode(errors="replace")
    finally:
        os.close(fd)
    found = Path(text)
    if found.parent != runs_dir(home):
        return None
    return found


def find_config(path: Path) -> Path:
    """The config file of a project directory (or the file itself), resolved: the nearest `capsule.toml`
    or `.runcept.toml` in the directory or above it, as git finds `.git`. FileNotFoundError (its message
    one line for the user) when there is none."""
    from capsule.env import CONFIG_NAMES

    if path.is_file():
        return path.resolve()
    start = path.resolve()
    if not start.is_dir():
        raise FileNotFoundError(f"no such file or directory: {path}")
    for folder in (start, *start.parents):
        for name in CONFIG_NAMES:
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(f"no {' or '.join(CONFIG_NAMES)} in {start} or any folder above it")
