"""Build the eBPF recorder (stages/bpf: the kernel half, a CO-RE object, and its libbpf loader) once;
`cached_build` is the same cache for the guard's C fast path (stages/guard_answer.py).

The sources ship with Capsule; the build needs clang (the BPF target), a C compiler and libbpf's
headers and library (Debian: `apt-get install clang libbpf-dev`; the stub links glibc statically, libc6-dev; `just setup kernel` installs them).
It runs at the first `--tracer ebpf` recording or `capsule doctor` after an install or upgrade, takes
about a second, and is kept in the user's cache directory under a name that is the hash of the
sources and of this module (the recipe), so an upgraded Capsule builds again and an unchanged one never does (the loader links
libbpf's shared library, whose ABI is stable across its upgrades; a removed compiler does not
matter once it is built). The object is CO-RE (relocated against the running kernel's BTF when it is
loaded), so a kernel upgrade needs no rebuild. Concurrent first recordings build once: a lock, and
the result is moved into place whole.

The kernel's types for those relocations (`kernel_btf`): the loader writes the few the object reads,
from the kernel's own BTF, once per boot into the build's directory (~1 KB, 10-30 ms to make),
so that no recording's start reads the kernel's whole BTF again (~20 ms, see stages/bpf/recorder.bpf.c).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import attrs

SOURCES = ("recorder.bpf.c", "recorder.c", "record.h", "types.h", "stub.c")
OBJECT = "recorder.bpf.o"
LOADER = "capsule-ebpf-recorder"
STUB = "capsule-ebpf-stub"
VERSION = "version"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")  # new at every boot, so at every kernel
ARCH_DEFINES = {"x86_64": "x86"}  # the kernel half reads x86_64 syscall numbers and registers


class BuildFailed(RuntimeError):
    """The recorder cannot be built here; the message says why in one line."""


@attrs.frozen
class Built:
    loader: Path
    object: Path
    stub: Path  # the command's stub (static: it opens nothing before its exec)
    version: str  # the libbpf the loader runs with, as it says (`libbpf 1.1`)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "capsule"


def _sources() -> dict[str, bytes]:
    folder = resources.files("capsule.stages").joinpath("bpf")
    return {name: folder.joinpath(name).read_bytes() for name in SOURCES}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BuildFailed(
            f"{name} not found: the eBPF recorder is built with it (apt-get install clang libbpf-dev)"
        )
    return path


def ensure_built() -> Built:
    """The built recorder: from the cache, or built now (BuildFailed says why it cannot be)."""
    machine = os.uname().machine
    arch = ARCH_DEFINES.get(machine)
    if arch is None:
        raise BuildFailed(f"the eBPF recorder supports x86_64 only, not {machine}")
    sources = _sources()

    def build(work: Path) -> str:
        clang, cc = _tool("clang"), _tool("cc")
        multiarch = subprocess.run([cc, "-dumpmachine"], capture_output=True, text=True, check=False)
        include = f"/usr/include/{multiarch.stdout.strip()}"
        _compile([clang, "-O2", "-g", "-target", "bpf", f"-D__TARGET_ARCH_{arch}", "-I", str(work),
                  "-I", include, "-c", str(work / "recorder.bpf.c"), "-o", str(work / OBJECT)])  # fmt: skip
        _compile([cc, "-O2", "-o", str(work / LOADER), str(work / "recorder.c"), "-lbpf"])
        _compile([cc, "-O2", "-static", "-o", str(work / STUB), str(work / "stub.c")])
        said = subprocess.run([str(work / LOADER), "--version"], capture_output=True, text=True, check=False)
        if said.returncode != 0:
            raise BuildFailed(
                f"the built eBPF recorder does not run: {said.stderr.strip() or said.returncode}"
            )
        return said.stdout

    target = cached_build("ebpf", sources, build, what="the eBPF recorder")
    return Built(
        loader=target / LOADER,
        object=target / OBJECT,
        stub=target / STUB,
        version=(target / VERSION).read_text().strip(),
    )


def kernel_btf(built: Built) -> Path | None:
    """The running kernel's types that `built`'s object reads (made now at the first use since boot),
    or None if they cannot be made (the loader then reads the kernel's own BTF, as it did before)."""
    try:
        boot = BOOT_ID.read_text().strip()
    except OSError:
        return None
    # Keyed by boot: only a reboot changes the running kernel, and its layout is what the file holds
    # (the kernel's own BTF, /sys/kernel/btf/vmlinux, is too big to hash at each start).
    path = built.loader.parent / f"kernel-{boot}.btf"
    if path.exists():
        return path
    part = path.with_name(f"{path.name}.{os.getpid()}")
    done = subprocess.run(
        [str(built.loader), str(built.object), "--make-btf", str(part)], capture_output=True, check=False
    )
    try:
        if done.returncode != 0:
            return None
        os.rename(part, path)  # whole or not at all: a concurrent start makes the same file
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            part.unlink()
    for old in built.loader.parent.glob("kernel-*.btf"):  # earlier boots'
        if old != path:
            with contextlib.suppress(OSError):
                old.unlink()
    return path


def cached_build(
    kind: str, sources: dict[str, bytes], build: Callable[[Path], str], *, what: str, recipe: str = ""
) -> Path:
    """The folder `build(work)` made from `sources` (written into `work`; it returns the text kept as
    VERSION), from the cache or built now, named by the hash of the sources and of the recipe (this
    module, and the caller's `recipe`). BuildFailed says why it cannot be built."""
    digest = hashlib.sha256()
    for name, data in sources.items():
        digest.update(name.encode() + b"\0" + data + b"\0")
    digest.update(Path(__file__).read_bytes())  # how they are built is part of what is built
    digest.update(recipe.encode())
    home = cache_dir()
    target = home / f"{kind}-{digest.hexdigest()[:16]}"
    if not (target / VERSION).exists():
        try:
            home.mkdir(parents=True, exist_ok=True)
            with open(home / f"{kind}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not target.exists():
                    _build(kind, sources, build, home, target)
                    _drop_old_builds(home, kind, target)
        except OSError as e:
            raise BuildFailed(f"cannot build {what} in {home}: {e.strerror or e}") from None
    return target


KEPT_BUILDS = 3  # of each kind: the new one and the two before (another install of Capsule may use one)


def _drop_old_builds(home: Path, kind: str, target: Path) -> None:
    """Remove all but the newest KEPT_BUILDS builds of `kind` (every upgrade of Capsule builds anew, and
    nothing else ever removed the old ones). Under the build lock; a recording already running from a
    removed build keeps its open files, and a start that finds its build gone builds it again."""
    builds = [
        p
        for p in home.glob(f"{kind}-*")
        if p.is_dir() and p != target and not p.name.startswith(f"{kind}-build-")
    ]
    builds.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in builds[KEPT_BUILDS - 1 :]:
        shutil.rmtree(old, ignore_errors=True)


def _build(
    kind: str, sources: dict[str, bytes], build: Callable[[Path], str], home: Path, target: Path
) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"{kind}-build-", dir=home))
    try:
        for name, data in sources.items():
            (work / name).write_bytes(data)
        version = build(work)
        (work / VERSION).write_text(version)  # written last: its presence means the build is whole
        for name in sources:
            (work / name).unlink()
        os.rename(work, target)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)


def _compile(argv: list[str], what: str = "the eBPF recorder") -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = [ln for ln in done.stderr.splitlines() if "error" in ln] or done.stderr.splitlines() or [""]
        hint = " (apt-get install libbpf-dev)" if "bpf/" in done.stderr else ""
        raise BuildFailed(f"building {what} failed: {said[0].strip()}{hint}")
