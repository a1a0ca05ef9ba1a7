"""Finding strace, probing what it can do, and the exact flags Capsule runs it with (architecture §4)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from pathlib import Path

    from capsule.stages.ebpf_recorder import EbpfTracer

# Syscall classes per trace level. `%process` covers fork/clone/exec/exit/wait/kill.
# fchdir is a descriptor call (%desc), traced with %file so paths stay absolute after `cd` by fd.
LEVELS = {
    "process": "%process",
    "file": "%process,%file,fchdir",
    "net": "%process,%network",
    "all": "%process,%file,%network,fchdir",
}

# strace 5.3 added --seccomp-bpf: only the traced syscalls stop the tracee, which is what makes
# `strace -f` affordable (find /usr/lib: 72x slower under plain strace, 1.07x with seccomp-bpf).
SECCOMP_MIN = (5, 3)

INSTALL_HINT = "install it with `apt-get install strace` (Debian/Ubuntu) or `dnf install strace`"

PROBES = "tracer-probes.json"  # under $CAPSULE_HOME: what `strace -V` said, per binary (`probed_version`)


TRACERS = ("strace", "ebpf", "auto")


class TracerMissing(RuntimeError):
    """The tracer asked for cannot record here (strace not on PATH; eBPF not available)."""


@attrs.frozen
class Tracer:
    path: str
    version: str
    seccomp_bpf: bool

    def flags(self, level: str) -> tuple[str, ...]:
        # -q, never -qq: -qq would drop the `+++ exited` lines; no `-e signal=none` (drops `+++ killed by`).
        # -s 4096 keeps argv whole in practice; -ttt gives epoch timestamps for every line.
        flags = ["-f", "-ttt", "-q", "-s", "4096"]
        if self.seccomp_bpf:
            flags.append("--seccomp-bpf")
        if level != "process":
            # -y: every descriptor with its path (`AT_FDCWD</cwd>`, `3</tmp/x>`, `4<socket:[N]>`), so
            # files are absolute from the kernel's own cwd and sockets are known across processes.
            flags.append("-y")
        flags += ["-e", f"trace={LEVELS[level]}"]
        return tuple(flags)


def find_tracer(probes: Path | None = None) -> Tracer:
    """strace on PATH, its version and whether it has --seccomp-bpf. `probes`: a file that keeps what
    `strace -V` said per binary (`probed_version`), so a run need not start strace twice."""
    path = shutil.which("strace")
    if path is None:
        raise TracerMissing(f"strace not found on PATH; {INSTALL_HINT}")
    out = probed_version(path, probes) if probes is not None else _version_output(path)
    match = re.search(r"version (\d+)\.(\d+)", out)
    if match is None:
        return Tracer(path=path, version="unknown", seccomp_bpf=False)
    version = (int(match[1]), int(match[2]))
    return Tracer(path=path, version=f"{version[0]}.{version[1]}", seccomp_bpf=version >= SECCOMP_MIN)


def _version_output(path: str) -> str:
    return subprocess.run([path, "-V"], capture_output=True, text=True, check=False).stdout


def probed_version(path: str, probes: Path) -> str:
    """`strace -V`'s output for the binary at `path`, from `probes` when it was kept for this very file
    (device, inode, size, modification and change times: a binary replaced or upgraded in place, or
    another strace first on PATH, is probed again), else probed and kept there. The file is a cache:
    unreadable, malformed or not writable, it costs a probe, never a failure."""
    import orjson

    from capsule.stages import cache_file

    try:
        st = os.stat(path)
    except OSError:
        return _version_output(path)
    key = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    try:
        kept = orjson.loads(probes.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        kept = {}
    if not isinstance(kept, dict):
        kept = {}
    entry = kept.get(path)
    if isinstance(entry, dict) and entry.get("key") == key and isinstance(entry.get("out"), str):
        return str(entry["out"])
    out = _version_output(path)
    kept[path] = {"key": key, "out": out}
    cache_file.keep(probes, orjson.dumps(kept))
    return out


def probe_ptrace(tracer: Tracer) -> str | None:
    """Trace `true` once: None if it works, else strace's own error line."""
    flags = list(tracer.flags("process"))
    done = subprocess.run(
        [tracer.path, *flags, "-o", "/dev/null", "--", "true"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"strace exited with {done.returncode}"


def find_recorder(kind: str, probes: Path | None = None) -> Tracer | EbpfTracer:
    """The tracer for `--tracer KIND`: strace, ebpf (or TracerMissing saying why not), or auto, which
    takes eBPF where its requirements are met and strace elsewhere. `probes`: as for `find_tracer`."""
    if kind in ("ebpf", "auto"):
        from capsule.stages.ebpf_recorder import EbpfUnavailable, find_ebpf

        try:
            return find_ebpf()
        except EbpfUnavailable as exc:
            if kind == "ebpf":
                raise TracerMissing(f"eBPF recording is not available: {exc}") from None
    return find_tracer(probes)
