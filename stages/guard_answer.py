"""The guard's C fast path (stages/bpf/guard_answer.c): a shared library the server loads with ctypes.

Measured before it (5,000 `/bin/true`, eBPF tracer): the Python server's wake-up and work per exec made
a guarded loop 1.33x of an unguarded one, where a C answer costs ~5%. The library takes the
notifications off the listener with the interpreter lock released and answers CONTINUE itself for a
(path, argv) the guard judged allowed before (`remember`, exactly what guard.py keeps in `_allowed`);
everything else comes back to Python (`next`), which decides and answers it as it always has.

Built once with the system C compiler into Capsule's cache with the C launcher (stages/guard_build.py),
read-only to a guarded tree under path rules. No compiler, a failed build or a library that does not
load: `library()` is None and the Python server serves alone, unchanged. For tests,
`CAPSULE_GUARD_PRETEND_MISSING=c-answerer` makes it missing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path

from capsule.stages.guard_build import LIBRARY, library

__all__ = ["LIBRARY", "Answerer", "Handed", "library"]


class _Handed(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("nr", ctypes.c_int32),
        ("args", ctypes.c_uint64 * 6),
        ("start_ns", ctypes.c_int64),
        ("read", ctypes.c_int32),
        ("argc", ctypes.c_uint32),
        ("path", ctypes.c_void_p),
        ("path_len", ctypes.c_uint64),
        ("argv", ctypes.c_void_p),
        ("argv_len", ctypes.c_uint64),
    ]


# (id, pid, nr, args, start_ns, (path, argv) or None when Python must read them)
Handed = tuple[int, int, int, tuple[int, ...], int, "tuple[str, list[str]] | None"]


class Answerer:
    """The loaded library: one per server (its memo and counts are the library's globals)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self._handed = _Handed()

    @classmethod
    def load(cls, path: Path | None) -> Answerer | None:
        """The library at `path`, or None (missing, does not load, or its layout is not ours)."""
        if path is None:
            return None
        try:
            lib = ctypes.CDLL(str(path))
            lib.capsule_guard_next.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Handed))
            lib.capsule_guard_remember.argtypes = (ctypes.c_char_p, ctypes.c_uint64)
            lib.capsule_guard_answered.restype = ctypes.c_uint64
            lib.capsule_guard_latencies.restype = ctypes.POINTER(ctypes.c_uint64)
            if lib.capsule_guard_abi() != (80 << 8 | ctypes.sizeof(_Handed)):
                return None
        except (OSError, AttributeError):
            return None
        return cls(lib)

    def next(self, listener: int, wake: int) -> Handed | bool:
        """The next notification for Python to judge; True: stop (woken, or the tree is gone); False: the
        library failed with nothing in hand (Python serves the listener from here on)."""
        got: int = self._lib.capsule_guard_next(listener, wake, ctypes.byref(self._handed))
        if got != 1:
            return got == 0
        h = self._handed
        read = None
        if h.read:
            path = ctypes.string_at(h.path, h.path_len).decode(errors="surrogateescape")
            raw = ctypes.string_at(h.argv, h.argv_len)
            argv = [a.decode(errors="surrogateescape") for a in raw.split(b"\0")[: h.argc]]
            read = (path, argv)
        return h.id, h.pid, h.nr, tuple(h.args), h.start_ns, read

    def remember(self, path: str, argv: Sequence[str]) -> None:
        """Answer (path, argv) CONTINUE from now on, in C (bytes as read: surrogateescape round-trips)."""
        key = b"".join(s.encode(errors="surrogateescape") + b"\0" for s in (path, *argv))
        self._lib.capsule_guard_remember(key, len(key))

    def forget(self) -> None:
        self._lib.capsule_guard_forget()

    def totals(self) -> list[int]:
        """The latency (ns) of each exec the library answered itself."""
        n = self._lib.capsule_guard_answered()
        return self._lib.capsule_guard_latencies()[:n] if n else []
