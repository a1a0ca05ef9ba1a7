"""Whether eBPF recording works here, for tests that need it (and say plainly why they skip)."""

from __future__ import annotations

import pytest


def _ebpf_unavailable() -> str | None:
    from capsule.stages.ebpf_recorder import EbpfUnavailable, find_ebpf

    try:
        find_ebpf()
    except EbpfUnavailable as exc:
        return str(exc)
    return None


WHY = _ebpf_unavailable()
needs_ebpf = pytest.mark.skipif(WHY is not None, reason=f"eBPF recording unavailable here: {WHY}")
# Parametrise a test over the tracers (`--tracer`): the eBPF case skips, saying why, where it cannot run.
TRACERS = [
    pytest.param("strace", id="strace"),
    pytest.param("ebpf", id="ebpf", marks=[needs_ebpf, pytest.mark.ebpf]),
]
