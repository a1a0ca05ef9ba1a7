"""How a policy is enforced: which mechanisms a run may start with, the wrapped command line, and the
after-the-fact check of `--policy-fallback=detect`.

A guarded command line is `LAUNCHER [--net M] [--notify FD] -- [BWRAP ARGS --] TRACED...`: the launcher
unshares the network and installs the seccomp filter, bubblewrap hides and freezes paths, and TRACED is
what the caller would have run (strace and the command, or the command). The execs of bubblewrap and
strace made on the way (`infra`) are Capsule's own and always allowed; every later one is judged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from capsule.events import Event, FileOpened, NetConnected, ProcExec
from capsule.policy.commands import decide_exec
from capsule.policy.paths import protected_path, read_only_path
from capsule.policy.rules import MOUNT, NETNS, SECCOMP, Policy, PolicyError

DETECT = "detect"
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")


class MechanismMissing(PolicyError):
    """The policy needs a mechanism this machine lacks, and no fallback was asked for."""


@attrs.frozen(kw_only=True)
class Enforcement:
    policy: Policy
    enforced: tuple[str, ...]  # in the kernel
    detected: tuple[str, ...] = ()  # downgraded to detect-and-kill
    warning: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.enforced or self.detected)


def plan_enforcement(policy: Policy, missing: Mapping[str, str], fallback: str = "refuse") -> Enforcement:
    """What enforces each part of `policy`, given the mechanisms `missing` here (name -> why).

    Refuses (MechanismMissing, one line) when a needed one is missing, unless `fallback == "detect"`."""
    needed = policy.mechanisms()
    lacking = tuple(m for m in needed if m in missing)
    enforced = tuple(m for m in needed if m not in missing)
    if not lacking:
        return Enforcement(policy=policy, enforced=enforced)
    first = lacking[0]
    if fallback != DETECT:
        raise MechanismMissing(
            f"the policy needs {first}, which is unavailable here ({missing[first]}); "
            'see `capsule doctor`, or set `fallback = "detect"` in [policy] (capsule run: '
            "--policy-fallback=detect) to detect and kill instead"
        )
    warning = (
        f"policy downgraded: {', '.join(lacking)} unavailable ({'; '.join(missing[m] for m in lacking)}); "
        "those rules are only detected after the fact, and the tree is killed"
    )
    return Enforcement(policy=policy, enforced=enforced, detected=lacking, warning=warning)


def bwrap_args(
    *,
    hidden: Sequence[tuple[str, bool]],
    read_only: Sequence[str],
    writable: Sequence[str],
    empty_file: str,
    empty_dir: str,
    own: Sequence[str] = (),
) -> list[str]:
    """bubblewrap's options: the whole filesystem as it is, each read-only path bound read-only, each
    hidden path (path, is_dir) covered by an empty mode-000 file or directory, Capsule's `own` state
    read-only, the recording's own files writable again, and every capability dropped (so root cannot
    read through mode 000 or unmount).

    A hidden directory holding Capsule's own state (`protect_paths = ["~"]` over `~/.capsule`) is
    covered by a tmpfs instead, so that the recording's paths can be bound inside it (over the empty
    directory, bubblewrap could not make their mount points: "Can't mkdir parents"); once they are,
    the tmpfs is made mode 111 and read-only, and nothing of what the directory held is there."""
    args = ["--dev-bind", "/", "/"]
    for path in read_only:
        args += ["--ro-bind", path, path]
    kept = [*own, *writable]
    covered = []
    for path, is_dir in outermost(hidden):
        if is_dir and any(_within(k, path) for k in kept):
            args += ["--tmpfs", path]
            covered.append(path)
        else:
            args += ["--ro-bind", empty_dir if is_dir else empty_file, path]
    for path in own:
        args += ["--ro-bind", path, path]
    for path in writable:
        args += ["--bind", path, path]
    for path in covered:
        args += ["--chmod", "0111", path, "--remount-ro", path]
    return [*args, "--cap-drop", "ALL"]


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def outermost(hidden: Sequence[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """The hidden paths (absolute, resolved) not inside another hidden directory: what such a directory
    holds is hidden with it, and bubblewrap could not make the mount point of a path inside the empty
    directory bound over it (it failed to start: "Can't mkdir parents", with `*.key` matching a
    directory named `vault.key` and a file in it)."""
    dirs = {path for path, is_dir in hidden if is_dir}
    kept = []
    for path, is_dir in hidden:
        inside, parent = False, path
        while not inside and parent != "/":
            parent = parent.rpartition("/")[0] or "/"  # the paths are absolute and resolved (no os here)
            inside = parent in dirs
        if not inside:
            kept.append((path, is_dir))
    return kept


def launcher_args(*, network: str, notify_fd: int | None, argv0: str | None = None) -> list[str]:
    args = []
    if network != "on":
        args += ["--net", network]
    if notify_fd is not None:
        args += ["--notify", str(notify_fd)]
    if argv0 is not None:
        args += ["--argv0", argv0]
    return args


@attrs.frozen(kw_only=True)
class Detected:
    """A violation seen in the trace after the fact (fallback detect)."""

    rule: str
    pid: int | None
    argv: tuple[str, ...] = ()
    path: str | None = None
    command: str = ""


def detect_violation(
    policy: Policy, event: Event, *, parts: Sequence[str] = (SECCOMP, MOUNT, NETNS), home: str | None = None
) -> Detected | None:
    """The violation a traced event shows for the policy parts in `parts`: an exec that ran although
    a command rule denies it, an open of a protected path, a write to a read-only one (file events
    exist at trace level file or all), a connect with the network off (trace level net)."""
    if isinstance(event, ProcExec) and event.ok and SECCOMP in parts:
        argv = event.argv if event.argv is not None else (event.path,)  # `-s 0`: only the program is known
        verdict = decide_exec(policy, argv, event.path)
        if not verdict.allowed:
            assert verdict.rule is not None
            return Detected(
                rule=verdict.rule, pid=event.pid, argv=argv, path=event.path, command=verdict.command
            )
    elif isinstance(event, FileOpened) and event.ok and MOUNT in parts:
        rule = protected_path(policy, event.path, home=home)
        if rule is None and any(flag in event.flags for flag in _WRITE_FLAGS):
            rule = read_only_path(policy, event.path, home=home)
        if rule is not None:
            return Detected(rule=rule, pid=event.pid, path=event.path)
    elif (
        isinstance(event, NetConnected)
        and NETNS in parts
        and policy.network != "on"
        and event.family in ("AF_INET", "AF_INET6")
    ):
        loopback = event.address.startswith(("127.", "::1", "[::1]", "localhost"))
        if policy.network == "off" or not loopback:
            return Detected(rule=f"network = {policy.network}", pid=event.pid, path=event.address)
    return None


def refused_open(policy: Policy, event: Event, *, home: str | None = None) -> Detected | None:
    """An open the mount namespace refused (EACCES on a hidden path, EROFS on a read-only one): the
    kernel's decision, seen in the trace at level file (eBPF: at level refused, which records only these)."""
    if not isinstance(event, FileOpened) or event.ok:
        return None
    if event.errno == "EACCES":
        rule = protected_path(policy, event.path, home=home)
    elif event.errno == "EROFS":
        rule = read_only_path(policy, event.path, home=home)
    else:
        rule = None
    return None if rule is None else Detected(rule=rule, pid=event.pid, path=event.path)
