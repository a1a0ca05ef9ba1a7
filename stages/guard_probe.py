"""The guard's start: which mechanisms work here (each probed by really using it, once per process, and a
success kept on disk for what it depended on),
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
from capsule.stages import cache_file

LAUNCHER = Path(__file__).with_name("guard_launch.py")


# Tests only: a comma-separated list of mechanisms the guard treats as missing, to exercise the refusal
# and `--policy-fallback=detect` on a machine that has them all (documented in the README); also the
# guard's C programs (stages/guard_build.py: `c-answerer`, `c-launcher`), to exercise their fallbacks.
PRETEND_MISSING = "CAPSULE_GUARD_PRETEND_MISSING"


class GuardRefused(RuntimeError):
    """The policy cannot be enforced here (one line, exit 125)."""


def launcher_command() -> list[str]:
    """The guard's launcher: the C one (stages/guard_build.py: from the cache, or built now the first
    time), else the Python one (no compiler, a failed build, `c-launcher` pretended missing)."""
    from capsule.stages.guard_build import launcher

    built = launcher()
    return [str(built)] if built is not None else [sys.executable, "-I", "-S", str(LAUNCHER)]


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


def probe_mechanisms(
    needed: Sequence[str] = (SECCOMP, MOUNT, NETNS), *, fresh: bool = False
) -> dict[str, str]:
    """The mechanisms in `needed` that are missing here, each with why (empty: all work). `fresh`
    (`capsule doctor`): each really probed now, whatever was kept."""
    pretend = {m.strip() for m in os.environ.get(PRETEND_MISSING, "").split(",") if m.strip()}
    missing = {}
    for mechanism in needed:
        if mechanism in pretend:
            missing[mechanism] = f"made unavailable by {PRETEND_MISSING}"
            continue
        why = _PROBES[mechanism]() if fresh else _probed(mechanism)
        if why is not None:
            missing[mechanism] = why
    return missing


_PROBES = {SECCOMP: _probe_seccomp, MOUNT: _probe_bwrap, NETNS: _probe_netns}


@cache
def _probed(mechanism: str) -> str | None:
    # Probed once per process (a scheduler or supervisor starts many guarded trees), and a success is
    # kept on disk for what it was probed with (see _probe_key): a probe starts a process (~45 ms).
    key = _probe_key(mechanism)
    kept = _kept_probes()
    if key is not None and kept.get(mechanism) == key:
        return None
    why = _PROBES[mechanism]()
    if why is None and key is not None:
        _keep_probe(mechanism, key)
    return why


PROBES = "guard-probes.json"  # under $CAPSULE_HOME: the mechanisms that worked, each with its key

# What a mechanism's working depends on, besides the programs probed: the boot (a kernel, its
# settings), and the sysctls that turn user namespaces off while it runs.
_SYSCTLS = (
    "/proc/sys/kernel/random/boot_id",
    "/proc/sys/user/max_user_namespaces",
    "/proc/sys/user/max_net_namespaces",
    "/proc/sys/kernel/unprivileged_userns_clone",
    "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
    "/proc/sys/kernel/seccomp/actions_avail",
)


def _probe_key(mechanism: str) -> str | None:
    """What the probe of `mechanism` depended on: the sysctls above, who asks (euid), and each program
    the probe ran (path and identity: a binary replaced or upgraded is probed again). None: no key can
    be had (then the probe is never kept). A success kept under an unchanged key is not probed again;
    should the mechanism fail anyway, the guarded start fails with its error, never weaker."""
    parts = [str(os.geteuid()), mechanism]
    for path in _SYSCTLS:
        try:
            with open(path, "rb") as file:
                parts.append(file.read(256).decode(errors="replace").strip())
        except OSError:
            parts.append("-")
    programs = [part for part in launcher_command() if not part.startswith("-")]  # the one probed
    if mechanism == MOUNT:
        found = shutil.which("bwrap")
        if found is None:
            return None
        programs = [found]
    for program in programs:
        try:
            st = os.stat(program)
        except OSError:
            return None
        parts += [program, f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"]
    return "\n".join(parts)


def _probes_path() -> Path:
    from capsule.stages.home import capsule_home

    return capsule_home() / PROBES


def _kept_probes() -> dict[str, str]:
    import orjson

    try:
        kept = orjson.loads(_probes_path().read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    if not isinstance(kept, dict):
        return {}
    return {k: v for k, v in kept.items() if isinstance(k, str) and isinstance(v, str)}


def _keep_probe(mechanism: str, key: str) -> None:
    """Add a success to the kept probes (a cache: not writable, it costs a probe next time)."""
    import orjson

    kept = _kept_probes()
    kept[mechanism] = key
    cache_file.keep(_probes_path(), orjson.dumps(kept))


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
