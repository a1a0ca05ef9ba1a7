"""The one process-control module: identity, membership, stop, usage and containment of process trees.

Identity
    `Member(pid, started)`: a pid together with its start time, so a reused pid is never taken (or
    signalled) for the process Capsule started. `process_if(pid, started)` is that live process or None;
    `started_at(pid)` the start time to record; `identity(pid)` a `Member` or None; `returncode_status(rc)`
    (exit code, signal name) from a Popen-style returncode.

Trees
    `Tree(pid, started, pgid, members, cgroup, marker)` names what belongs to one unit (a service, a task):
    - the leader (pid + start time) and its descendants;
    - every process of its process group `pgid` started no earlier than the leader (a group id cannot be
      reused while any member is left, so it is safe after the leader died);
    - recorded `members` (pid + start time, from earlier `snapshot` calls) and their descendants: a
      `setsid`'d grandchild whose parent died is found again, by a later command too;
    - every process in its cgroup (`cgroup`, a directory under the cgroup v2 mount) when it has one;
    - every process whose environment carries `marker` (`NAME=value`, set in the unit's environment and
      inherited by every descendant that does not clear it).
    `members(tree)` lists them (never Capsule itself, never zombies); `snapshot(tree)` their identities, to
    record; `usage(tree)` (cpu seconds, rss bytes, count) summed over them.

Stop
    `stop(tree, signum, grace)` sends `signum` to every member (and the group), waits up to `grace` for
    them to go, then SIGKILLs what is left (`cgroup.kill` first when the tree has a cgroup), and sweeps
    again until no member is left (a member may fork while being killed; orphans reparented to Capsule as
    subreaper are found by group, record, cgroup or marker). Members that became Capsule's own children are
    reaped, except `keep_leader` (a leader a trio.Process still waits for). `stop_async` is the same for
    trio: the grace is awaited, the psutil reads in between are short. Both return a `Stopped` record.

Containment
    `become_subreaper()` makes this process a child subreaper (prctl PR_SET_CHILD_SUBREAPER, Linux only):
    orphans of the trees it started are reparented to it instead of init, so they stay findable as its
    children, and `reap(members)` collects those of them that ended. `open_cgroup(name)` creates a cgroup
    v2 child of Capsule's own cgroup for one unit when the cgroup v2 hierarchy is mounted and writable
    (probed once: create a directory under our cgroup); `Cgroup.joining(argv, env)` is argv behind a `sh`
    that moves itself in and execs it (nothing forked before the move), `Cgroup.add(pid)` moves a process in, `.kill()`
    writes `cgroup.kill` (kernel 5.14+; without it every listed pid gets SIGKILL), `.remove()` removes the
    directory once empty. When cgroups are not available (no cgroup2 mount, read-only, not permitted),
    `open_cgroup` returns None and a tree is found by leader, group, record and marker alone: a process
    that left the group, cleared its environment and whose parent died before any snapshot saw it can then
    escape. `cgroup_status()` says which of the two is in force and why, in one line.

Every call here is a short blocking psutil or /proc read, fine to make from trio code; only the waits of
`stop_async` are awaited.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import time
from collections.abc import Collection, Generator, Iterable
from functools import cache
from pathlib import Path

import attrs
import psutil

from capsule.stages import proc_children
from capsule.stages.exits import (
    returncode_status as returncode_status,  # its old home: still imported from here
)

# create_time is boot time plus start ticks (10 ms): the same process always reads the same value, and a
# recorded start time that came from time.time() (when psutil could not read it) is close, not equal.
CLOCK_SLACK = 1.0
PR_SET_CHILD_SUBREAPER = 36
SWEEP_ROUNDS = 20  # SIGKILL sweeps before giving up on a tree that keeps forking faster than we kill
POLL_S = 0.02
MARKER = "CAPSULE_UNIT"  # the environment variable a unit's marker is set in (`Tree.marker`)


# -- identity ------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Member:
    """One process by identity: a pid and its start time."""

    pid: int
    started: float


def process_if(pid: int | None, started: float | None) -> psutil.Process | None:
    """The live process `pid` if it is the one that started at `started` (not a zombie), else None."""
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        if started is not None and abs(proc.create_time() - started) > CLOCK_SLACK:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.Error:
        return None


def started_at(pid: int) -> float:
    """The start time of `pid`, to record beside it (now, if it has already gone)."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return time.time()


def identity(pid: int) -> Member | None:
    """`pid` as a Member, or None if it is gone."""
    try:
        return Member(pid=pid, started=float(psutil.Process(pid).create_time()))
    except psutil.Error:
        return None


# -- trees ---------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Tree:
    """What belongs to one unit: see the module docstring for each criterion. Every field may be None."""

    pid: int | None = None
    started: float | None = None
    pgid: int | None = None
    members: tuple[Member, ...] = ()
    cgroup: str | None = None
    marker: str | None = None  # NAME=value in the environment of every member

    @property
    def leader(self) -> Member | None:
        if self.pid is None or self.started is None:
            return None
        return Member(pid=self.pid, started=self.started)


@attrs.frozen(kw_only=True)
class Usage:
    cpu_s: float = 0.0  # user + system seconds of the members alive now
    rss: int = 0
    count: int = 0


@attrs.frozen(kw_only=True)
class Stopped:
    count: int = 0  # members found at the first signal
    killed: bool = False  # something outlived the grace and got SIGKILL
    survivors: tuple[int, ...] = ()  # pids still alive after every sweep (should stay empty)


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def descendant_pids(pid: int, found: dict[int, None] | None = None) -> dict[int, None]:
    """`pid` and its descendants (into `found` when given, below none of its pids again), from the
    kernel's children lists (stages/proc_children.py), else psutil's scan of every process: `members`
    once made one such scan per recorded member, and a scheduler sampling each running task every 150 ms
    spent a fifth of a core on it."""
    found = {} if found is None else found
    if proc_children.available():
        return proc_children.walk(pid, found)
    found[pid] = None
    with contextlib.suppress(psutil.Error):
        found.update((c.pid, None) for c in psutil.Process(pid).children(recursive=True))
    return found


def members(tree: Tree) -> list[psutil.Process]:
    """Every live process of `tree` (never this process, never a zombie)."""
    pids: dict[int, None] = {}
    root = process_if(tree.pid, tree.started)
    if root is not None:
        descendant_pids(root.pid, pids)
    for m in tree.members:
        if m.pid not in pids and process_if(m.pid, m.started) is not None:
            descendant_pids(m.pid, pids)
    for pid in cgroup_pids(tree.cgroup):
        if pid not in pids and process_if(pid, None) is not None:
            descendant_pids(pid, pids)
    # The group outlives its leader only while members remain, so its id cannot have been reused; members
    # must also have started after the leader did.
    by_group = tree.pgid is not None and (root is not None or process_if(tree.pgid, None) is None)
    marker = tree.marker.encode() if tree.marker else None
    if by_group or marker:
        for pid in psutil.pids():
            if pid in pids:
                continue
            with contextlib.suppress(psutil.Error, OSError):
                if (
                    by_group
                    and os.getpgid(pid) == tree.pgid
                    and (
                        tree.started is None
                        or psutil.Process(pid).create_time() >= tree.started - CLOCK_SLACK
                    )
                ):
                    descendant_pids(pid, pids)
                    continue
                if marker and _has_marker(pid, marker):
                    descendant_pids(pid, pids)
    pids.pop(os.getpid(), None)
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if _alive(proc):
                found.append(proc)
    return found


def _has_marker(pid: int, marker: bytes) -> bool:
    # /proc/PID/environ is the environment the process was exec'd with; NUL-separated NAME=value.
    try:
        with open(f"/proc/{pid}/environ", "rb") as file:
            return marker in file.read().split(b"\0")
    except OSError:
        return False


def snapshot(tree: Tree) -> tuple[Member, ...]:
    """The identities of every member now, sorted by pid: what to record so a later command finds them."""
    out = []
    for proc in members(tree):
        with contextlib.suppress(psutil.Error):
            out.append(Member(pid=proc.pid, started=float(proc.create_time())))
    return tuple(sorted(out, key=lambda m: m.pid))


def usage(tree: Tree) -> Usage:
    """CPU seconds and RSS summed over the members alive now."""
    cpu = 0.0
    rss = count = 0
    for proc in members(tree):
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            mem = proc.memory_info().rss
            cpu += t.user + t.system
            rss += mem
            count += 1
    return Usage(cpu_s=cpu, rss=rss, count=count)


def signal_all(procs: Iterable[psutil.Process], signum: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signum)


def _signal_group(pgid: int | None, signum: int) -> None:
    if pgid is not None and pgid > 1:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)


def _kill_round(tree: Tree) -> list[psutil.Process]:
    """SIGKILL every member now; the members that were found."""
    if tree.cgroup:
        Cgroup(Path(tree.cgroup)).kill()
    procs = members(tree)
    if procs:
        _signal_group(tree.pgid, signal.SIGKILL)
        signal_all(procs, signal.SIGKILL)
    return procs


def _reap_ours(procs: Iterable[psutil.Process], keep: int | None) -> None:
    me = os.getpid()
    for proc in procs:
        if proc.pid == keep:
            continue
        try:
            if proc.ppid() != me:
                continue
        except psutil.Error:
            continue
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(proc.pid, os.WNOHANG)


# The stop, written once as a generator that yields (processes, seconds) to wait for and is sent back those
# still alive after the wait; `stop` waits with time.sleep, `stop_async` with trio. Liveness is polled, never
# waited for with waitpid: the leader may be a child that a trio.Process still has to collect.
Waiting = Generator[tuple[list[psutil.Process], float], list[psutil.Process], Stopped]


def _stopping(tree: Tree, signum: int, grace: float, keep_leader: bool) -> Waiting:
    keep = tree.pid if keep_leader else None
    first = members(tree)
    if not first:
        return Stopped()
    _signal_group(tree.pgid, signum)
    signal_all(first, signum)
    alive = (yield first, grace) if signum != signal.SIGKILL else []
    for _ in range(SWEEP_ROUNDS):
        procs = _kill_round(tree)
        if not procs:
            break
        _reap_ours(procs, keep)
        left = yield procs, 0.5
        _reap_ours(left, keep)
    _reap_ours(first, keep)
    survivors = tuple(sorted(p.pid for p in members(tree)))
    return Stopped(count=len(first), killed=bool(alive), survivors=survivors)


def _still_alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if _alive(p)]


def stop(
    tree: Tree, signum: int = signal.SIGTERM, grace: float = 5.0, *, keep_leader: bool = False
) -> Stopped:
    """`signum` to every member, up to `grace` seconds to go, then SIGKILL sweeps until none is left."""
    steps = _stopping(tree, signum, grace, keep_leader)
    try:
        procs, timeout = next(steps)
        while True:
            deadline = time.monotonic() + timeout
            while (left := _still_alive(procs)) and time.monotonic() < deadline:
                time.sleep(POLL_S)
            procs, timeout = steps.send(left)
    except StopIteration as done:
        result: Stopped = done.value
        return result


async def stop_async(
    tree: Tree, signum: int = signal.SIGTERM, grace: float = 5.0, *, keep_leader: bool = False
) -> Stopped:
    """`stop` for trio: the grace and the waits between sweeps are awaited."""
    import trio  # here, not at the top: `env status` and `ps` import this module and must start fast

    steps = _stopping(tree, signum, grace, keep_leader)
    try:
        procs, timeout = next(steps)
        while True:
            with trio.move_on_after(timeout):
                while _still_alive(procs):  # noqa: ASYNC110 (another process's end sets no trio.Event)
                    await trio.sleep(POLL_S)
            procs, timeout = steps.send(_still_alive(procs))
    except StopIteration as done:
        result: Stopped = done.value
        return result


def reap(found: Collection[Member]) -> int:
    """Collect the exit status of those of `found` that are this process's children and have ended.

    For a subreaper: orphans reparented to it become its zombies when they end. Only recorded members are
    reaped, never an arbitrary child (a trio.Process elsewhere may still be waiting for its own)."""
    n = 0
    for m in found:
        try:
            proc = psutil.Process(m.pid)
            if abs(proc.create_time() - m.started) > CLOCK_SLACK or proc.status() != psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        with contextlib.suppress(ChildProcessError, OSError):
            if os.waitpid(m.pid, os.WNOHANG)[0]:
                n += 1
    return n


# -- containment ---------------------------------------------------------------------------------------


def set_title(title: str) -> None:
    """This process's title in ps and top (`capsule: scheduler <run>`, `capsule: supervisor <env>`)."""
    import setproctitle  # here: `env status` and `ps` import this module and must start fast

    setproctitle.setproctitle(title)


def become_subreaper() -> bool:
    """Make this process a child subreaper (Linux): orphans below it are reparented to it, not to init."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


SH = "/bin/sh"
# $0: the cgroup's cgroup.procs; $1: "" when the environment had no PWD, else "=" and its value (the shell
# sets PWD itself at start); then the command. 125: as `env`, when the wrapper itself cannot do its part.
JOIN_SCRIPT = (
    'echo 0 >"$0" || { echo "capsule: cannot join the cgroup $0" >&2; exit 125; }; '
    'case $1 in =*) PWD=${1#=};; *) unset PWD;; esac; shift; exec "$@"'
)
# The same for a program Capsule names (its own strace as `capsule: task <id>`; $2: the name): `exec -a`
# needs bash, in POSIX mode so that no BASH_ENV is read. Its exec puts SHLVL back as the environment had
# it, or sets SHLVL=0 when it had none (the caller keeps that from the command: strace's `-E SHLVL`).
BASH = "/bin/bash"
NAMED_JOIN_SCRIPT = JOIN_SCRIPT.replace('shift; exec "$@"', 'n=$2; shift 2; exec -a "$n" "$@"')


@attrs.frozen
class Cgroup:
    """A cgroup v2 directory that holds one unit."""

    path: Path

    def add(self, pid: int) -> bool:
        try:
            (self.path / "cgroup.procs").write_text(f"{pid}\n")
            return True
        except OSError:
            return False

    def joining(self, argv: list[str], env: dict[str, str], *, argv0: str | None = None) -> list[str]:
        """`argv` behind `sh -c`, which moves itself into the cgroup and then execs `argv` unchanged (same
        pid, argv and environment: the shell's own `PWD` is put back as `env` had it). So nothing the
        command forks escapes the cgroup, and the spawn stays a vfork: `join_in_child` as a `preexec_fn`
        would cost a fork of the whole scheduler plus Python in the child (docs/agents-performance.md), `sh`
        one small exec. The command must have been resolved first: a missing
        program fails inside the shell (exit 127), not at spawn. `argv0`: the program's argv[0] instead
        (through bash; unnamed where there is no /bin/bash)."""
        pwd = "" if (was := env.get("PWD")) is None else "=" + was
        procs = str(self.path / "cgroup.procs")
        if argv0 is not None and os.path.exists(BASH):
            return [BASH, "--posix", "-c", NAMED_JOIN_SCRIPT, procs, pwd, argv0, *argv]
        return [SH, "-c", JOIN_SCRIPT, procs, pwd, *argv]

    def join_in_child(self) -> None:
        """A `preexec_fn`: the new process moves itself in before exec, so nothing it forks escapes. For
        services (a few spawns); the scheduler's attempts use `joining`, which keeps their spawn a vfork."""
        fd = os.open(self.path / "cgroup.procs", os.O_WRONLY)
        try:
            os.write(fd, b"0\n")  # "0" is the writing process itself
        finally:
            os.close(fd)

    def pids(self) -> list[int]:
        return cgroup_pids(str(self.path))

    def kill(self) -> None:
        """SIGKILL every process in it: `cgroup.kill` when the kernel has it, else each listed pid."""
        try:
            (self.path / "cgroup.kill").write_text("1\n")
            return
        except OSError:
            pass
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> bool:
        """Remove the directory (only possible once no process is left in it)."""
        try:
            self.path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            return False


def cgroup_pids(path: str | None) -> list[int]:
    if not path:
        return []
    try:
        text = (Path(path) / "cgroup.procs").read_text()
    except OSError:
        return []
    return [int(line) for line in text.split() if line.isdigit()]


def _cgroup2_mount() -> Path | None:
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8") as file:
        for line in file:
            # `36 25 0:31 / /sys/fs/cgroup rw,... - cgroup2 cgroup2 rw,...`: the fs type follows " - ".
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "cgroup2":
                return Path(left.split()[4].replace("\\040", " "))
    return None


def _own_cgroup() -> str | None:
    with contextlib.suppress(OSError), open("/proc/self/cgroup", encoding="utf-8") as file:
        for line in file:
            if line.startswith("0::"):
                return line[3:].strip()
    return None


@cache
def _cgroup_base() -> tuple[Path | None, str]:
    mount, own = _cgroup2_mount(), _own_cgroup()
    if mount is None:
        return None, "no cgroup v2 hierarchy is mounted"
    if own is None:
        return None, "this process is in no cgroup v2 group"
    base = mount / own.lstrip("/")
    probe = base / f"capsule-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError as exc:
        return None, f"cannot create a cgroup under {base}: {os.strerror(exc.errno or errno.EACCES)}"
    probe.rmdir()
    return base, f"a cgroup v2 group per unit under {base}"


def cgroup_status() -> str:
    """One line: whether units get their own cgroup here, and where (or why not)."""
    base, why = _cgroup_base()
    return why if base is not None else f"no cgroup per unit: {why}"


def open_cgroup(name: str) -> Cgroup | None:
    """A new, empty cgroup for one unit under Capsule's own cgroup, or None where cgroups are unavailable."""
    base, _why = _cgroup_base()
    if base is None:
        return None
    path = base / name
    try:
        path.mkdir()
    except FileExistsError:
        pass
    except OSError:
        return None
    return Cgroup(path)
