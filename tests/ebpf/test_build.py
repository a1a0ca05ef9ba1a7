"""Building the eBPF recorder (stages/bpf) once per source version, into the user's cache directory.

Real clang and cc (the machine and CI have them: `just setup kernel`); elsewhere the tests skip, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from capsule.stages import ebpf_build
from capsule.stages.ebpf_build import BuildFailed, ensure_built, kernel_btf

TOOLS = [t for t in ("clang", "cc") if shutil.which(t) is None]
needs_toolchain = pytest.mark.skipif(bool(TOOLS), reason=f"no {', '.join(TOOLS)} here to build the recorder")


@needs_toolchain
def test_built_once_then_taken_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = ensure_built()
    assert first.loader.parent.parent == tmp_path / "capsule"
    assert os.access(first.loader, os.X_OK)
    assert first.object.stat().st_size > 0
    assert first.version.startswith("libbpf ")
    said = subprocess.run([str(first.loader), "--version"], capture_output=True, text=True, check=True)
    assert said.stdout.strip() == first.version
    stamp = first.loader.stat().st_mtime_ns
    again = ensure_built()
    assert again == first
    assert again.loader.stat().st_mtime_ns == stamp
    # only the build's products are kept: no sources, no half-built directory beside it
    assert sorted(p.name for p in first.loader.parent.iterdir()) == sorted(
        [ebpf_build.LOADER, ebpf_build.OBJECT, ebpf_build.STUB, ebpf_build.VERSION]
    )
    assert sorted(p.name for p in (tmp_path / "capsule").iterdir()) == sorted(
        ["ebpf.lock", first.loader.parent.name]
    )


@needs_toolchain
def test_concurrent_first_builds_build_once(tmp_path: Path) -> None:
    """Two recordings starting together on a fresh cache: one builds, the other waits for it."""
    code = "from capsule.stages.ebpf_build import ensure_built; print(ensure_built().loader)"
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outs = {p.communicate()[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(outs) == 1
    assert len([p for p in (tmp_path / "capsule").iterdir() if p.name.startswith("ebpf-")]) == 1


def test_without_clang_the_build_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BuildFailed) as failed:
        ensure_built()
    said = str(failed.value)
    assert "\n" not in said
    assert "clang not found" in said
    assert "apt-get install clang libbpf-dev" in said
    assert not [p for p in (tmp_path / "capsule").iterdir() if p.name.startswith("ebpf-")]


@needs_toolchain
def test_a_compile_error_is_one_line_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    real = ebpf_build._sources
    monkeypatch.setattr(ebpf_build, "_sources", lambda: {**real(), "recorder.bpf.c": b"this is not C;\n"})
    with pytest.raises(BuildFailed) as failed:
        ensure_built()
    assert str(failed.value).startswith("building the eBPF recorder failed: ")
    assert "\n" not in str(failed.value)
    assert [p.name for p in (tmp_path / "capsule").iterdir()] == ["ebpf.lock"]


needs_kernel_btf = pytest.mark.skipif(
    not Path("/sys/kernel/btf/vmlinux").exists(), reason="the kernel has no BTF to take the types from"
)


@needs_toolchain
@needs_kernel_btf
def test_the_kernel_btf_is_made_once_per_boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's types the object reads: made at the first use since boot, beside the build, then
    reused; an earlier boot's file goes when this boot's is made."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    built = ensure_built()
    earlier = built.loader.parent / "kernel-an-earlier-boot.btf"
    earlier.write_bytes(b"stale")
    made = kernel_btf(built)
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert made == built.loader.parent / f"kernel-{boot}.btf"
    assert made.read_bytes()[:2] == b"\x9f\xeb"  # raw BTF's magic (0xeb9f, little-endian)
    assert not earlier.exists()
    stamp = made.stat().st_mtime_ns
    assert kernel_btf(built) == made
    assert made.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in built.loader.parent.iterdir()) == sorted(
        [ebpf_build.LOADER, ebpf_build.OBJECT, ebpf_build.STUB, ebpf_build.VERSION, made.name]
    )


def test_no_kernel_btf_without_a_boot_id_or_when_the_loader_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Either way the loader reads the kernel's own BTF instead (None); a failed make leaves no file."""
    loader = tmp_path / "loader"
    loader.write_text("#!/bin/sh\necho 'capsule-ebpf-recorder: read the kernel BTF: gone' >&2\nexit 1\n")
    loader.chmod(0o755)
    built = ebpf_build.Built(loader=loader, object=tmp_path / "o", stub=tmp_path / "s", version="libbpf 1.1")
    assert kernel_btf(built) is None
    assert [p.name for p in tmp_path.iterdir()] == ["loader"]
    monkeypatch.setattr(ebpf_build, "BOOT_ID", tmp_path / "no-boot-id")
    assert kernel_btf(built) is None


def test_old_builds_are_removed_but_the_newest_few(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each upgrade of Capsule builds anew under a new hash: a new build removes all but the newest
    KEPT_BUILDS of its kind (another kind's are not touched)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    home = tmp_path / "capsule"
    other = ebpf_build.cached_build("other", {"x.c": b"x"}, lambda work: "1\n", what="another helper")

    def build(work: Path) -> str:
        (work / "made").write_text("yes")
        return "1\n"

    made = []
    for version in range(5):
        made.append(ebpf_build.cached_build("kind", {"s.c": b"v%d" % version}, build, what="a test build"))
        os.utime(made[-1], ns=(version * 10**9, version * 10**9))  # each older than the next
    kept = sorted(p for p in home.iterdir() if p.name.startswith("kind-"))
    assert kept == sorted(made[-ebpf_build.KEPT_BUILDS :])
    assert all((p / "made").read_text() == "yes" for p in kept)
    assert other.is_dir()
    # a build still in the cache is taken from it, untouched
    assert ebpf_build.cached_build("kind", {"s.c": b"v4"}, build, what="a test build") == made[-1]
