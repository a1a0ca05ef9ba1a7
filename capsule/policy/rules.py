"""The `[policy]` table, the same in a plan, in `capsule.toml`, in `capsule run --policy FILE` and in
`$CAPSULE_HOME/config.toml`: parsed and validated into one frozen record.

Each part of a policy needs one kernel mechanism (architecture §10): command rules need seccomp user
notification, path rules a mount namespace (bubblewrap), `network` a network namespace.
"""

from __future__ import annotations

from typing import Any

import attrs

NETWORK = ("on", "off", "loopback")
ON_VIOLATION = ("block", "kill")
FALLBACKS = ("refuse", "detect")

# The names `capsule doctor`, `policy.applied` and the refusal line use for each mechanism.
SECCOMP = "seccomp-notify"
MOUNT = "mount-namespace"
NETNS = "network-namespace"
MECHANISMS = (SECCOMP, MOUNT, NETNS)

_KEYS = (
    "deny_commands",
    "allow_commands",
    "protect_paths",
    "read_only_paths",
    "network",
    "on_violation",
    "fallback",
)


class PolicyError(ValueError):
    """The `[policy]` table is malformed; the message names the key."""


@attrs.frozen(kw_only=True)
class Policy:
    deny_commands: tuple[str, ...] = ()  # globs over a command line (and over pipelines: "curl * | sh")
    allow_commands: tuple[str, ...] = ()  # when non-empty, only matching commands may be exec'd
    protect_paths: tuple[str, ...] = ()  # neither read nor written
    read_only_paths: tuple[str, ...] = ()  # readable, never written
    network: str = "on"  # on | off (no interface at all) | loopback (only lo, up)
    on_violation: str = "block"  # block (EPERM, the program goes on) | kill (block, then stop the tree)
    # where this machine lacks a mechanism: refuse to start | detect (detect-and-kill, with a warning)
    fallback: str = "refuse"

    @property
    def empty(self) -> bool:
        """Nothing to enforce (a `fallback` alone asks for nothing)."""
        return attrs.evolve(self, fallback="refuse") == Policy()

    def mechanisms(self) -> tuple[str, ...]:
        """The kernel mechanisms this policy needs, in `MECHANISMS` order."""
        needed = []
        if self.deny_commands or self.allow_commands:
            needed.append(SECCOMP)
        if self.protect_paths or self.read_only_paths:
            needed.append(MOUNT)
        if self.network != "on":
            needed.append(NETNS)
        return tuple(needed)


def _strings(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]  # one pattern, written without its list
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        # `protect_paths = ""` covered the working directory, and the run failed inside bwrap
        if any(not v.strip() for v in value):
            raise PolicyError(f"{where}: empty pattern")
        return tuple(value)
    raise PolicyError(f"{where}: expected a string or a list of strings, got {value!r}")


def _choice(value: object, choices: tuple[str, ...], where: str) -> str:
    if isinstance(value, bool) and choices == NETWORK:
        value = "on" if value else "off"  # `network = false` reads naturally too
    if not isinstance(value, str) or value not in choices:
        raise PolicyError(f"{where}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def parse_policy(raw: object, where: str = "[policy]") -> Policy:
    """A policy from its decoded TOML table (`{}` is the empty policy)."""
    if not isinstance(raw, dict):
        raise PolicyError(f"{where} must be a table")
    table: dict[str, Any] = raw
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise PolicyError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(_KEYS)})")
    return Policy(
        deny_commands=_strings(table.get("deny_commands", []), f"{where} deny_commands"),
        allow_commands=_strings(table.get("allow_commands", []), f"{where} allow_commands"),
        protect_paths=_strings(table.get("protect_paths", []), f"{where} protect_paths"),
        read_only_paths=_strings(table.get("read_only_paths", []), f"{where} read_only_paths"),
        network=_choice(table.get("network", "on"), NETWORK, f"{where} network"),
        on_violation=_choice(table.get("on_violation", "block"), ON_VIOLATION, f"{where} on_violation"),
        fallback=_choice(table.get("fallback", "refuse"), FALLBACKS, f"{where} fallback"),
    )


def policy_from_dict(data: dict[str, Any]) -> Policy:
    """The policy a session carries (`attrs.asdict` of it, arrays for tuples); older sessions lack keys."""
    fields: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in _KEYS
    }
    return Policy(**fields)
