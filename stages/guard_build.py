"""The guard's C programs, built once with the system C compiler into Capsule's cache (`cached_build`,
as the eBPF recorder): the fast path's library (stages/bpf/guard_answer.c, loaded by
stages/guard_answer.py) and the launcher (stages/bpf/guard_launch.c, the C twin of
stages/guard_launch.py). One build makes both, the first time either is asked for (the guard's start
probes its mechanisms with the launcher: that first start builds, ~0.3 s here; every later one finds the
build by its hash). Read-only to a guarded tree under path rules, as the rest of Capsule's cache.

No compiler, a failed build, or a machine other than x86_64 and aarch64: each is None, and the Python
server and the Python launcher serve, unchanged. For tests, `CAPSULE_GUARD_PRETEND_MISSING=c-answerer`
and `=c-launcher` (comma-separated) make each one missing.
"""

from __future__ import annotations

import os
import shutil
from functools import cache
from importlib import resources
from pathlib import Path

from capsule.stages.ebpf_build import BuildFailed, _compile, cached_build
from capsule.stages.guard_probe import PRETEND_MISSING

SOURCES = ("guard_answer.c", "guard_launch.c")
LIBRARY = "capsule-guard-answer.so"
LAUNCHER = "capsule-guard-launch"
PRETEND_ANSWERER = "c-answerer"
PRETEND_LAUNCHER = "c-launcher"
MACHINES = ("x86_64", "aarch64")


def library() -> Path | None:
    """The fast path's library, from the cache or built now; None where it cannot be."""
    return _artifact(PRETEND_ANSWERER, LIBRARY)


def launcher() -> Path | None:
    """The C launcher, from the cache or built now; None where it cannot be."""
    return _artifact(PRETEND_LAUNCHER, LAUNCHER)


def _artifact(pretend: str, name: str) -> Path | None:
    if pretend in {m.strip() for m in os.environ.get(PRETEND_MISSING, "").split(",")}:
        return None
    target = _built()
    return None if target is None else target / name


def _built() -> Path | None:
    cc = shutil.which("cc")
    if cc is None or os.uname().machine not in MACHINES:
        return None
    sources, recipe = _inputs()
    if (cc, recipe) in _failed:
        return None  # failed once in this process: not again at each guarded start

    def build(work: Path) -> str:
        _compile([cc, "-O2", "-shared", "-fPIC", "-o", str(work / LIBRARY), str(work / SOURCES[0])],
                 what="the guard's fast path")  # fmt: skip
        _compile([cc, "-O2", "-o", str(work / LAUNCHER), str(work / SOURCES[1])], what="the guard's launcher")
        return "1\n"

    try:
        return cached_build("guard", sources, build, what="the guard's C programs", recipe=recipe)
    except BuildFailed:
        _failed.add((cc, recipe))
        return None


_failed: set[tuple[str, str]] = set()


@cache
def _inputs() -> tuple[dict[str, bytes], str]:
    """The sources and this module's text (the recipe), read once per process: they are what this
    process's code was loaded with (the build's hash is computed at every call, a stat finds it)."""
    folder = resources.files("capsule.stages").joinpath("bpf")
    return {name: folder.joinpath(name).read_bytes() for name in SOURCES}, Path(__file__).read_text()
