"""The sampler reads the recorded tree only: its own descendants from the kernel's children lists."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import psutil
import pytest

from capsule.stages.sample import sample_tree


def _wait_children(proc: subprocess.Popen[bytes], count: int) -> list[int]:
    deadline = time.monotonic() + 15
    while len(kids := psutil.Process(proc.pid).children(recursive=True)) < count:
        assert time.monotonic() < deadline, "the tree did not start"
        time.sleep(0.02)
    return sorted(k.pid for k in kids)


@pytest.fixture
def tree() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sh", "-c", "sleep 600 & sleep 600 & wait"], stdin=subprocess.DEVNULL)
    yield proc
    for kid in psutil.Process(proc.pid).children(recursive=True):
        kid.kill()
    proc.kill()
    proc.wait()


def test_one_sample_per_descendant_without_a_scan_of_every_process(tree, monkeypatch) -> None:
    kids = _wait_children(tree, 2)

    def scan(*_a: object, **_k: object) -> None:
        raise AssertionError("the sampler scanned every process")

    monkeypatch.setattr(psutil.Process, "children", scan)
    monkeypatch.setattr(psutil, "process_iter", scan)
    seen: dict[int, psutil.Process] = {}
    first = sample_tree(tree.pid, seen)
    assert sorted(e.pid for e in first) == kids  # the root (strace's place) is left out
    assert all(e.rss_bytes > 0 for e in first)
    handles = dict(seen)
    again = sample_tree(tree.pid, seen, include_root=True)
    assert sorted(e.pid for e in again) == sorted([tree.pid, *kids])
    assert all(seen[p] is handles[p] for p in kids)  # kept between samples: cpu_percent needs the last


def test_a_gone_root_gives_no_sample() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert sample_tree(proc.pid, {}) == []
    assert sample_tree(proc.pid, {}, include_root=True) == []
