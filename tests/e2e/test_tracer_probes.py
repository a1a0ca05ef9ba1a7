"""What `strace -V` said, kept per binary in `$CAPSULE_HOME/tracer-probes.json`: used for that very
file only (a copy, a replaced or touched binary is probed again), and a cache that cannot be read or
written costs a probe, never a failure. The recorder's start time read without psutil is psutil's."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import orjson
import psutil
import pytest

from capsule.stages.launch import own_start_time
from capsule.stages.tracer import find_tracer, probed_version

STRACE = shutil.which("strace")
pytestmark = pytest.mark.skipif(STRACE is None, reason="strace is not installed")


def _said(path: str) -> str:
    return subprocess.run([path, "-V"], capture_output=True, text=True, check=False).stdout


def _pretend(probes: Path, path: str, out: str) -> None:
    """Replace what the cache says `path` answered, keeping its key."""
    kept = orjson.loads(probes.read_bytes())
    kept[path]["out"] = out
    probes.write_bytes(orjson.dumps(kept))


def test_kept_for_the_same_binary_and_probed_again_for_another(tmp_path: Path) -> None:
    """The kept answer is used for the same file; a copy (another inode) and a touched file are probed."""
    assert STRACE is not None
    probes = tmp_path / "tracer-probes.json"
    real = _said(STRACE)
    assert "version" in real
    assert probed_version(STRACE, probes) == real
    assert (probes.stat().st_mode & 0o777) == 0o600
    _pretend(probes, STRACE, "strace -- version 4.0\n")
    assert probed_version(STRACE, probes) == "strace -- version 4.0\n"  # the same file: kept

    copy = str(tmp_path / "strace")
    shutil.copy2(STRACE, copy)
    assert probed_version(copy, probes) == real  # another binary: probed, whatever STRACE's entry says
    _pretend(probes, copy, "strace -- version 4.0\n")
    st = os.stat(copy)
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # upgraded in place
    assert probed_version(copy, probes) == real
    assert orjson.loads(probes.read_bytes())[copy]["out"] == real


def test_a_cache_that_cannot_be_used_costs_a_probe(tmp_path: Path) -> None:
    """Malformed, of the wrong shape, or in a folder that is not there: the answer is still strace's."""
    assert STRACE is not None
    real = _said(STRACE)
    probes = tmp_path / "tracer-probes.json"
    for text in (b"{not json", b"[1, 2]", b'{"' + STRACE.encode() + b'": "nonsense"}'):
        probes.write_bytes(text)
        assert probed_version(STRACE, probes) == real
    assert probed_version(STRACE, tmp_path / "missing" / "tracer-probes.json") == real
    assert find_tracer(probes) == find_tracer()


def test_own_start_time_is_psutils() -> None:
    """The header's recorder_started, read from /proc, equals psutil's create_time exactly."""
    assert own_start_time() == psutil.Process().create_time()
