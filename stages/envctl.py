"""Talking to a running supervisor: its control socket and the pointer that finds it.

Light on purpose (the standard library only, no orjson): `capsule env status` of a running environment
asks its supervisor, which holds the folded state, instead of folding the session itself, and the
client's whole cost is this module and the interpreter's start (the issue's aim: within 3x of
`python -c pass`; orjson alone imports dataclasses, datetime and uuid, about 15 ms). Paths are plain
strings here (os.path), and every function takes a str or a Path: pathlib and what it imports
(urllib.parse, ipaddress) are another 3 ms. The socket and the JSON are the standard library's C
modules (`_socket`, `_json`) without their Python layers, which import `re`, `enum` and `selectors`
(another 3 ms, a tenth of the whole command).

The pointer is `$CAPSULE_HOME/locks/<hash of the config path>.live`, holding the session directory of
the supervisor that serves that config now. The supervisor writes it once its socket listens and
removes it when it ends; a pointer left by a supervisor that died names a socket nothing answers on, so
a reader falls back to the session's fold (which is always the truth).
"""

from __future__ import annotations

import _json
import _socket
import os

from capsule.stages.home import RUNS

TYPE_CHECKING = False  # no typing import: this module is on `env status`'s fast path
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    StrPath = str | os.PathLike[str]

SOCKET = "ctl.sock"
LOCKS = "locks"


class ControlError(OSError):
    """The supervisor's socket did not answer."""


class _Decoding:
    """What `_json.make_scanner` reads from json.JSONDecoder: the defaults of `json.loads`."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity


def encode_request(request: dict[str, Any]) -> str:
    """A request as one line of JSON: a flat object of strings, booleans, integers and nulls."""

    def value(v: object) -> str:
        if v is None or isinstance(v, bool):
            return {None: "null", True: "true", False: "false"}[v]
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return str(_json.encode_basestring(v))
        raise TypeError(f"a control request holds strings, booleans, integers and nulls, not {v!r}")

    return "{" + ", ".join(f"{value(k)}: {value(v)}" for k, v in request.items()) + "}"


def decode_reply(data: bytes) -> object:
    """One JSON value (the reply line) with nothing but whitespace after it; ValueError otherwise."""
    text = data.decode("utf-8")
    start = len(text) - len(text.lstrip())
    try:
        found, end = _json.make_scanner(_Decoding())(text, start)  # type: ignore[arg-type]
    except StopIteration:
        raise ValueError("not JSON") from None
    if text[end:].strip():
        raise ValueError("extra data after the JSON value")
    return found


def config_digest(config_path: str) -> str:
    """The name under `locks/` of everything kept per config path (the start lock, the live pointer)."""
    try:  # the built-in sha256, without hashlib's OpenSSL load (2 ms of `env status`'s fast path)
        from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:  # another build of Python: the same digest through hashlib
        from hashlib import sha256

    return str(sha256(config_path.encode()).hexdigest()[:24])


def socket_address(session_dir: StrPath) -> tuple[str, int | None]:
    """An AF_UNIX address for the session's socket, short enough for sun_path (108 bytes) via /proc."""
    path = os.path.join(session_dir, SOCKET)
    if len(path) < 100:
        return path, None
    fd = os.open(session_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{SOCKET}", fd


def control(
    session_dir: StrPath,
    op: str,
    name: str | None = None,
    timeout: float = 120.0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One request to a supervisor over its Unix socket; its JSON reply."""
    address, dirfd = socket_address(session_dir)
    name_of = os.path.basename(session_dir)
    request = encode_request({"op": op, "name": name, **(extra or {})})
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(request.encode() + b"\n")
            data = b""
            while b"\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            sock.close()
    except OSError as exc:
        raise ControlError(f"supervisor of {name_of} does not answer: {exc}") from None
    finally:
        if dirfd is not None:
            os.close(dirfd)
    if not data.strip():
        raise ControlError(f"supervisor of {name_of} closed the connection")
    try:
        reply = decode_reply(data)
    except ValueError:  # UnicodeDecodeError too
        raise ControlError(f"supervisor of {name_of} answered something that is not JSON") from None
    if not isinstance(reply, dict):
        raise ControlError(f"supervisor of {name_of} answered something that is not a JSON object")
    return reply


def pointer_path(home: StrPath, config_path: str) -> str:
    return os.path.join(home, LOCKS, f"{config_digest(config_path)}.live")


def write_pointer(home: StrPath, config_path: str, session_dir: StrPath) -> None:
    """Say that `session_dir`'s supervisor serves `config_path` (replacing, atomically, any older word)."""
    target = pointer_path(home, config_path)
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    part = f"{target}.{os.getpid()}"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, os.fspath(session_dir).encode())
    finally:
        os.close(fd)
    os.replace(part, target)


def remove_pointer(home: StrPath, config_path: str, session_dir: StrPath) -> None:
    """Take the word back, unless a newer supervisor of the same config has written its own since."""
    if read_pointer(home, config_path) == os.fspath(session_dir):
        try:  # noqa: SIM105 (contextlib is one more import on the fast path)
            os.unlink(pointer_path(home, config_path))
        except FileNotFoundError:
            pass


def read_pointer(home: StrPath, config_path: str) -> str | None:
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
    if os.path.dirname(text) != os.path.join(home, RUNS) or os.path.basename(text) in ("", ".", ".."):
        return None
    return text


def find_config(path: Path) -> Path:
    """The config file of a project directory (or the file itself), resolved: the nearest `capsule.toml`
    or `.runcept.toml` in the directory or above it, as git finds `.git`. FileNotFoundError (its message
    one line for the user) when there is none."""
    from pathlib import Path

    return Path(find_config_file(path))


def find_config_file(path: StrPath) -> str:
    """find_config's answer as a string, without pathlib (the fast path's)."""
    from capsule.env import CONFIG_NAMES

    if os.path.isfile(path):
        return os.path.realpath(path)
    start = os.path.realpath(path)
    if not os.path.isdir(start):
        raise FileNotFoundError(f"no such file or directory: {os.fspath(path)}")
    folder = start
    while True:
        for name in CONFIG_NAMES:
            if os.path.isfile(os.path.join(folder, name)):
                return os.path.join(folder, name)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    raise FileNotFoundError(f"no {' or '.join(CONFIG_NAMES)} in {start} or any folder above it")
