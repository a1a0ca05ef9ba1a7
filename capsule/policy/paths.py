"""Path rules: which files a `protect_paths` or `read_only_paths` glob covers.

A glob matches a path whole, as a suffix (`.git/config` covers `/repo/.git/config`) or by its name
(`*.key` covers `a/b/server.key`), and covers everything inside a directory it matches (`/etc` covers
`/etc/hosts`, `~/.ssh` covers `~/.ssh/id_ed25519`). `~` is the user's home, given by the caller.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from fnmatch import translate

from capsule.policy.rules import Policy


@functools.lru_cache(maxsize=256)
def _covers(rule: str, home: str | None) -> re.Pattern[str]:
    """One pattern for the five ways a rule covers a path (fnmatch's, case-sensitive): the path whole,
    as a suffix, the name alone, or inside a directory matched either way. The guard matches every
    name under the working directory against each rule when a tree starts: one match, not five."""
    pattern = home + rule[1:] if home is not None and rule.startswith("~") else rule
    pattern = pattern.rstrip("/") or "/"
    forms = [pattern, "*/" + pattern, pattern.rstrip("/") + "/*", "*/" + pattern + "/*"]
    whole = "|".join(f"(?:{translate(form)})" for form in forms)
    name = translate(pattern)
    # the name alone: the text after the last slash (a name has none, so a pattern with one never matches it)
    return re.compile(f"(?:{whole})|(?s:.*/)?(?=[^/]*\\Z)(?:{name})" if "/" not in pattern else whole)


def _match(rules: Iterable[str], path: str, home: str | None) -> str | None:
    for rule in rules:
        if _covers(rule, home).match(path):
            return rule
    return None


def protected_path(policy: Policy, path: str, *, home: str | None = None) -> str | None:
    """The first `protect_paths` glob that covers the path, or None."""
    return _match(policy.protect_paths, path, home)


def read_only_path(policy: Policy, path: str, *, home: str | None = None) -> str | None:
    """The first `read_only_paths` glob that covers the path, or None."""
    return _match(policy.read_only_paths, path, home)


def is_glob(rule: str) -> bool:
    return any(c in rule for c in "*?[")
