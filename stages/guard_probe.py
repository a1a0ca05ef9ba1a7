"""The guard's start: which mechanisms work here (probed once per process, each by really using it),
the decision to enforce, refuse or downgrade a policy, and `capsule run`'s policy file.

`CAPSULE_GUARD_PRETEND_MISSING` (tests only, documented in the README) names mechanisms to treat as
missing, to exercise the refusal and `--policy-fallback=detect` on a machine that has them all.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from capsule.policy import Policy, PolicyError, parse_policy
from capsule.policy.enforce import Enforcement, MechanismMissing, plan_enforcement
from capsule.policy.rules import MOUNT, NETNS, SECCOMP

LAUNCHER = Path(__file__).with_name("guard_launch.py")


# Tests only: a comma-separated list of mechanisms the guard treats as missing, to exercise the refusal
# and `--policy-fallback=detect` on a machine that has them all (documented in the README).
PRETEND_MISSING = "CAPSULE_GUARD_PRETEND_MISSING"


class GuardRefused(RuntimeError):
    """The policy cannot be enforced here (one line, exit 125)."""


def launcher_command() -> list[str]:
    return [sys.executable, "-I", "-S", str(LAUNCHER)]


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30, **kw)  # type: ignore[call-overload, no-any-return]


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return (lines[-1] if lines else f"exit {done.returncode}").removeprefix("capsule: error: guard: ")


def _probe_seccomp() -> str | None:
    parent, child = socket.socketpair()
    with parent, child:
        done = _run(
            [*launcher_command(), "--notify", str(child.fileno()), "--probe"], pass_fds=[child.fileno()]
        )
        if done.returncode != 0:
            return _last_line(done)
        parent.settimeout(5)
        _, fds, _, _ = socket.recv_fds(parent, 4, 1)
        for fd in fds:
            os.close(fd)
        return None if fds else "no listener was passed back"


def _probe_bwrap() -> str | None:
    path = shutil.which("bwrap")
    if path is None:
        return "bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
    true = shutil.which("true") or "/bin/true"
    done = _run([path, "--dev-bind", "/", "/", "--cap-drop", "ALL", "--", true])
    return None if done.returncode == 0 else f"bwrap fails: {_last_line(done)}"


def _probe_netns() -> str | None:
    done = _run([*launcher_command(), "--net", "loopback", "--probe"])
    return None if done.returncode == 0 else _last_line(done)


def probe_mechanisms(needed: Sequence[str] = (SECCOMP, MOUNT, NETNS)) -> dict[str, str]:
    """The mechanisms in `needed` that are missing here, each with why (empty: all work)."""
    pretend = {m.strip() for m in os.environ.get(PRETEND_MISSING, "").split(",") if m.strip()}
    missing = {}
    for mechanism in needed:
        if mechanism in pretend:
            missing[mechanism] = f"made unavailable by {PRETEND_MISSING}"
            continue
        why = _probed(mechanism)
        if why is not None:
            missing[mechanism] = why
    return missing


@cache
def _probed(mechanism: str) -> str | None:
    # Probed once per process: a scheduler or supervisor starts many guarded trees.
    return {SECCOMP: _probe_seccomp, MOUNT: _probe_bwrap, NETNS: _probe_netns}[mechanism]()


def enforcement_for(policy: Policy, fallback: str | None = None) -> Enforcement:
    """Probe what `policy` needs and decide; GuardRefused (one line) when it cannot start. `fallback`
    (`--policy-fallback`) overrides the policy's own `fallback` key."""
    try:
        chosen = fallback if fallback is not None else policy.fallback
        return plan_enforcement(policy, probe_mechanisms(policy.mechanisms()), chosen)
    except MechanismMissing as exc:
        raise GuardRefused(str(exc)) from None


def load_policy(path: Path | None, home: Path) -> Policy:
    """`capsule run`'s policy: the `[policy]` table of FILE (or the file's top level), else the
    `[policy]` table of `$CAPSULE_HOME/config.toml` (capsule.settings, the file's one parser), else
    none. PolicyError (or SettingsError) names the file."""
    if path is None:
        from capsule.stages.settings_file import read_settings

        try:
            return read_settings(home).policy
        except OSError as exc:
            raise PolicyError(f"{home / 'config.toml'}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"{path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}") from None
    table = data["policy"] if isinstance(data.get("policy"), dict) else data
    try:
        return parse_policy(table)
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None
