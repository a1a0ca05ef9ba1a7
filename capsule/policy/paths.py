"""Path rules: which files a `protect_paths` or `read_only_paths` glob covers.

A glob matches a path whole, as a suffix (`.git/config` covers `/repo/.git/config`) or by its name
(`*.key` covers `a/b/server.key`), and covers everything inside a directory it matches (`/etc` covers
`/etc/hosts`, `~/.ssh` covers `~/.ssh/id_ed25519`). `~` is the user's home, given by the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from capsule.policy.rules import Policy


def _match(rules: Iterable[str], path: str, home: str | None) -> str | None:
    name = path.rsplit("/", 1)[-1]
    for rule in rules:
        pattern = home + rule[1:] if home is not None and rule.startswith("~") else rule
        pattern = pattern.rstrip("/") or "/"
        if fnmatchcase(path, pattern) or fnmatchcase(path, "*/" + pattern) or fnmatchcase(name, pattern):
            return rule
        if fnmatchcase(path, pattern.rstrip("/") + "/*") or fnmatchcase(path, "*/" + pattern + "/*"):
            return rule  # inside a covered directory
    return None


def protected_path(policy: Policy, path: str, *, home: str | None = None) -> str | None:
    """The first `protect_paths` glob that covers the path, or None."""
    return _match(policy.protect_paths, path, home)


def read_only_path(policy: Policy, path: str, *, home: str | None = None) -> str | None:
    """The first `read_only_paths` glob that covers the path, or None."""
    return _match(policy.read_only_paths, path, home)


def is_glob(rule: str) -> bool:
    return any(c in rule for c in "*?[")
