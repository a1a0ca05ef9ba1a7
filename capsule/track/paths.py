"""Paths and socket addresses as strace prints them: made absolute from a process's cwd where possible.

With `-y` strace annotates every descriptor with its path, `AT_FDCWD` included (`AT_FDCWD</home/u>`,
`3</tmp/x>`, `4<socket:[70521]>`, strace ≥ 4.x). Without it, a relative path is resolved against the
cwd the tracker follows (`chdir`, `fchdir` of a known descriptor); a cwd never seen stays relative to the
root's starting directory, which the fold knows from the session header (`join_cwd`).
"""

from __future__ import annotations

import posixpath
import re

from capsule.track.args import decode_string

_ANNOTATED = re.compile(r"^(?P<fd>AT_FDCWD|-?\d+)<(?P<path>.*)>$", re.DOTALL)
_FAMILY = re.compile(r"\bsa_family=(\w+)")
_INET = re.compile(r'sin_port=htons\((\d+)\), sin_addr=inet_addr\("([^"]*)"\)')
_INET6 = re.compile(r'sin6_port=htons\((\d+)\).*?inet_pton\(AF_INET6, "([^"]*)"')
_UNIX = re.compile(r"sun_path=(@?)(\".*?\"(?:\.\.\.)?)")
FAMILIES = {"AF_INET": "inet", "AF_INET6": "inet6", "AF_UNIX": "unix", "AF_LOCAL": "unix"}


def descriptor(arg: str) -> tuple[str, str | None]:
    """(`AT_FDCWD` or the fd number as text, its `-y` path or None) of a descriptor argument."""
    m = _ANNOTATED.match(arg.strip())
    if m is None:
        return arg.strip(), None
    return m["fd"], m["path"]


def written_path(arg: str) -> str | None:
    """The path a call was given (a quoted string), decoded; None when strace did not print one."""
    decoded = decode_string(arg) if arg.startswith('"') else None
    return decoded[0] if decoded is not None else None


def resolve(base: str | None, path: str) -> str:
    """`path` made absolute from `base` (a directory, absolute or relative to the starting cwd)."""
    if path.startswith("/"):
        return posixpath.normpath(path)
    if not base:
        return posixpath.normpath(path) if path else "."
    return posixpath.normpath(posixpath.join(base, path))


def join_cwd(cwd: str | None, path: str) -> str:
    """A tracker path relative to the root's starting directory, made absolute from that directory."""
    if path.startswith("/") or not cwd or not cwd.startswith("/"):
        return path
    return posixpath.normpath(posixpath.join(cwd, path))


def sockaddr(text: str) -> tuple[str, str, int | None] | None:
    """(family inet|inet6|unix|<other>, address, port) of a printed sockaddr, or None if there is none."""
    fam = _FAMILY.search(text)
    if fam is None:
        return None
    family = FAMILIES.get(fam[1], fam[1].removeprefix("AF_").lower())
    if family == "inet" and (m := _INET.search(text)):
        return family, m[2], int(m[1])
    if family == "inet6" and (m := _INET6.search(text)):
        return family, m[2], int(m[1])
    if family == "unix":
        m = _UNIX.search(text)
        if m is None:
            return family, "", None
        path = decode_string(m[2])
        return family, m[1] + (path[0] if path is not None else m[2]), None
    return family, "", None
