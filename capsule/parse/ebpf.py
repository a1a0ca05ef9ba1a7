r"""The eBPF trace parser: sans-I/O, `feed(bytes) -> records`, like the strace parser beside it.

Theory of operation. `capsule run --tracer ebpf` runs Capsule's eBPF recorder
(`stages/bpf`), which prints the lines bpftrace's `-f json` printed for the program it replaced (traces
of either read the same); the trace file is one JSON object per line. Capsule writes the first one itself:

    {"type": "capsule", "root": 4242, "clock": 1796149857245714449, "cwd": "/home/me/project"}

(the root pid, CLOCK_REALTIME minus CLOCK_MONOTONIC in ns, so the kernel's `nsecs` become epoch
seconds, and the root's working directory: older traces have none, and keep relative paths). The recorder then writes `{"type": "printf", "data": "<line>\n"}` objects whose data is one of:

    F <ns> <child> <parent tgid> <via 0-4> <clone flags hex>   a new process (never a thread)
    E <ns> <tid> <tgid> <path>                               an execve/execveat attempt begins
    A <tid> <index> <text>                                   one argv element of that attempt
    M <tid>                                                  argv had more elements than were read
    X <ns> <tid> <tgid> <errno>                              the attempt failed
    V <pid> <size> <offset> <\xNN…>                          a piece of a new program's argv area
    S <ns> <pid> <old pid> <path>                            an exec succeeded (old pid: the thread)
    Q <ns> <tgid> <exit status>                              the last thread of a process exited
    O <ns> <tgid> <flags> <ret> <path>                       an open (traces before P was written)
    P <ns> <tgid> <dirfd> <flags> <ret> <path>               an open (trace level file; -100: AT_FDCWD;
                                                             level refused: only EACCES, EROFS ones)
    D <ns> <tgid> <path>                                     a chdir (empty path: an fchdir; levels
                                                             file and refused)
    N <ns> <tgid> <fd> <family> <port> <ret> <address>       a connect (trace level net)
    C <ns> <tgid> <family> <port> <ret> <address>            a connect (traces before N: no fd)
    K <ns> <tgid> <fd> <error>                               getsockopt(fd, SOL_SOCKET, SO_ERROR) said
                                                             `error` (0: a non-blocking connect worked)
    G <ns> <tgid> <signo> <si_code> <sender pid>             a signal delivered to the process (sender: 0
                                                             when strace would print no si_pid)
    R <ns>                                                   the readiness handshake (ignored)
    B <ns> <cpu>                                             a flush barrier's marker from one CPU

Capsule also writes, under the guard, one line for each exec the guard refuses (seccomp answers it
before the `sys_enter` tracepoints, and the program prints an `X` only after its own `E`):

    {"type": "capsule", "refused": {"ns": N, "tid": T, "tgid": G, "path": P, "argv": [...], "errno": 1}}

which parses as the `E`, `A` and `X` lines of that attempt would.

Text fields come last on their line, so spaces in them need no quoting, and JSON carries any byte
(a newline inside an argument stays inside its `data`). Other objects (attached_probes,
lost_events, …) and anything malformed become `Unparsed` records: counted, never fatal.
"""

from __future__ import annotations

import json
from typing import Final

import attrs
import orjson

from capsule.parse.records import Unparsed

# A path or argv element is read up to STRLEN - 1 bytes (stages/bpf/record.h; bpftrace's str() with
# BPFTRACE_STRLEN=200, its maximum, before it): one that long may have been cut.
STRLEN: Final = 200
_VIA: Final = {1: "fork", 2: "vfork", 3: "clone", 4: "clone3"}
_NS: Final = 1e-9


@attrs.frozen(kw_only=True)
class Header:
    line_no: int
    root: int
    clock_ns: int
    ts: float | None = None
    cwd: str | None = None  # the root's working directory (traces before it was written have none)


@attrs.frozen(kw_only=True)
class Forked:
    line_no: int
    ts: float
    pid: int
    parent: int
    via: str


@attrs.frozen(kw_only=True)
class ExecBegun:
    line_no: int
    ts: float
    tid: int
    tgid: int
    path: str


@attrs.frozen(kw_only=True)
class ExecArg:
    line_no: int
    tid: int
    index: int
    text: str
    ts: float | None = None


@attrs.frozen(kw_only=True)
class ExecMore:
    line_no: int
    tid: int
    ts: float | None = None


@attrs.frozen(kw_only=True)
class ArgvPiece:
    """Bytes `offset…` of the `size`-byte argv area (NUL-terminated strings) of a program just exec'd."""

    line_no: int
    pid: int
    size: int
    offset: int
    data: bytes
    ts: float | None = None


@attrs.frozen(kw_only=True)
class ExecFailed:
    line_no: int
    ts: float
    tid: int
    tgid: int
    errno: int


@attrs.frozen(kw_only=True)
class ExecDone:
    line_no: int
    ts: float
    pid: int
    old_pid: int
    path: str


@attrs.frozen(kw_only=True)
class ProcessEnded:
    line_no: int
    ts: float
    tgid: int
    status: int  # the kernel's exit_code: (code << 8) for exit(code), else the signal | 0x80 if core


@attrs.frozen(kw_only=True)
class FileOpen:
    line_no: int
    ts: float
    tgid: int
    flags: int
    ret: int
    path: str
    dirfd: int | None = None  # what a relative path is relative to (-100: the cwd); None: `O`, not said


@attrs.frozen(kw_only=True)
class CwdChanged:
    line_no: int
    ts: float
    tgid: int
    path: str  # as chdir was given it; "" for an fchdir (a directory the trace does not name)


@attrs.frozen(kw_only=True)
class NetConnect:
    line_no: int
    ts: float
    tgid: int
    family: int
    port: int
    ret: int
    address: str
    fd: int | None = None  # None in traces written before N lines


@attrs.frozen(kw_only=True)
class SockError:
    """getsockopt(SO_ERROR): how the non-blocking connect on `fd` went (0: it worked, else its errno)."""

    line_no: int
    ts: float
    tgid: int
    fd: int
    error: int


@attrs.frozen(kw_only=True)
class SignalDelivered:
    """A signal delivered to process `tgid` (never SIGCHLD or SIGKILL: stages/bpf/recorder.bpf.c)."""

    line_no: int
    ts: float
    tgid: int
    signo: int
    code: int  # si_code, as the kernel gives it (SI_USER 0, SI_KERNEL 0x80, SEGV_MAPERR 1…)
    sender: int | None  # si_pid, where strace prints one (a process sent it)


@attrs.frozen(kw_only=True)
class Flushed:
    """A flush barrier's marker (Capsule's own signal-0 kill of -root, made from CPU `cpu`): every line
    that CPU's buffer held before it has been read. It makes no event; the tracker counts them."""

    line_no: int
    ts: float
    cpu: int


EbpfRecord = (
    Header
    | Forked
    | ExecBegun
    | ExecArg
    | ExecMore
    | ArgvPiece
    | ExecFailed
    | ExecDone
    | ProcessEnded
    | FileOpen
    | CwdChanged
    | NetConnect
    | SockError
    | SignalDelivered
    | Flushed
    | Unparsed
)

_IGNORED_TYPES: Final = frozenset({"attached_probes"})


class EbpfParser:
    """Feed the bytes of a `trace.ebpf` in chunks of any size; get records in trace order."""

    def __init__(self) -> None:
        self.lines = 0
        self.ended_mid_line = False  # the trace's last line was torn (the tracer was killed mid-write)
        self._buffer = b""
        self._clock_ns = 0

    def feed(self, data: bytes) -> list[EbpfRecord]:
        data = self._buffer + data
        cut = data.rfind(b"\n") + 1
        self._buffer = data[cut:]
        out: list[EbpfRecord] = []
        for raw in data[:cut].splitlines():
            self._parse(raw, out)
        return out

    def close(self) -> list[EbpfRecord]:
        """End of trace: a torn last line (the tracer was killed mid-write) is reported, not guessed."""
        out: list[EbpfRecord] = []
        if self._buffer:
            self.lines += 1
            self.ended_mid_line = True
            out.append(_unparsed(self.lines, self._buffer, "torn last line"))
            self._buffer = b""
        return out

    def _parse(self, raw: bytes, out: list[EbpfRecord]) -> None:
        self.lines += 1
        line_no = self.lines
        if not raw.strip():
            return
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            try:  # bytes that are not UTF-8 are copied into the JSON as they are
                obj = json.loads(raw.decode("utf-8", "replace"))
            except ValueError:
                out.append(_unparsed(line_no, raw, "not JSON"))
                return
        if not isinstance(obj, dict):
            out.append(_unparsed(line_no, raw, "not a JSON object"))
            return
        kind = obj.get("type")
        if kind == "printf" and isinstance(obj.get("data"), str):
            record = self._printf(obj["data"], line_no)
        elif kind == "capsule" and "refused" in obj:
            records = self._refused(obj["refused"], line_no)
            if records:
                out += records
                return
            record = None
        elif kind == "capsule":
            record = self._header(obj, line_no)
        elif kind in _IGNORED_TYPES:
            return
        else:
            record = None
        if record is _SKIP:
            return
        out.append(record if record is not None else _unparsed(line_no, raw, f"unknown {kind!r} line"))

    def _header(self, obj: dict[str, object], line_no: int) -> Header | None:
        root, clock, cwd = obj.get("root"), obj.get("clock"), obj.get("cwd")
        if not isinstance(root, int) or not isinstance(clock, int) or not 0 < root < 2**31:
            return None
        self._clock_ns = clock
        return Header(
            line_no=line_no, root=root, clock_ns=clock, cwd=cwd if isinstance(cwd, str) and cwd else None
        )

    def _refused(self, obj: object, line_no: int) -> list[EbpfRecord]:
        """An exec the guard refused (written by Capsule): its begin, argv and error, as the `E`, `A` and
        `X` lines of an attempt give them (the program prints none of them for it)."""
        if not isinstance(obj, dict):
            return []
        ns, tid, tgid, path, argv, errno = (
            obj.get(k) for k in ("ns", "tid", "tgid", "path", "argv", "errno")
        )
        if not (
            isinstance(errno, int)
            and 0 < errno < 4096
            and isinstance(ns, int)
            and isinstance(tid, int)
            and isinstance(tgid, int)
            and 0 < tid < 2**31
            and 0 < tgid < 2**31
            and isinstance(path, str)
            and isinstance(argv, list)
            and all(isinstance(a, str) for a in argv)
        ):
            return []
        ts = self._ts(str(ns))
        begun: list[EbpfRecord] = [ExecBegun(line_no=line_no, ts=ts, tid=tid, tgid=tgid, path=path)]
        args: list[EbpfRecord] = [
            ExecArg(line_no=line_no, tid=tid, index=i, text=a) for i, a in enumerate(argv)
        ]
        return [*begun, *args, ExecFailed(line_no=line_no, ts=ts, tid=tid, tgid=tgid, errno=errno)]

    def _ts(self, ns: str) -> float:
        return (int(ns) + self._clock_ns) * _NS

    def _printf(self, data: str, line_no: int) -> EbpfRecord | None:
        text = data[:-1] if data.endswith("\n") else data
        tag, _, rest = text.partition(" ")
        try:
            return self._record(tag, rest, line_no)
        except (ValueError, IndexError):
            return None

    def _record(self, tag: str, rest: str, line_no: int) -> EbpfRecord | None:
        if tag == "A":
            tid, index, arg = _fields(rest, 2)
            return ExecArg(line_no=line_no, tid=_pid(tid), index=_small(index), text=arg)
        if tag == "F":
            ns, child, parent, via, _flags = rest.split(" ")
            return Forked(
                line_no=line_no,
                ts=self._ts(ns),
                pid=_pid(child),
                parent=_pid(parent),
                via=_VIA.get(int(via), "clone"),
            )
        if tag == "E":
            ns, tid, tgid, path = _fields(rest, 3)
            return ExecBegun(line_no=line_no, ts=self._ts(ns), tid=_pid(tid), tgid=_pid(tgid), path=path)
        if tag == "S":
            ns, pid, old, path = _fields(rest, 3)
            return ExecDone(line_no=line_no, ts=self._ts(ns), pid=_pid(pid), old_pid=_pid(old), path=path)
        if tag == "X":
            ns, tid, tgid, errno = rest.split(" ")
            return ExecFailed(
                line_no=line_no, ts=self._ts(ns), tid=_pid(tid), tgid=_pid(tgid), errno=_small(errno)
            )
        if tag == "Q":
            ns, tgid, status = rest.split(" ")
            return ProcessEnded(line_no=line_no, ts=self._ts(ns), tgid=_pid(tgid), status=_small(status))
        if tag == "V":
            pid, size, offset, hexed = _fields(rest, 3)
            return ArgvPiece(
                line_no=line_no,
                pid=_pid(pid),
                size=_small(size),
                offset=_small(offset),
                data=_unhex(hexed),
            )
        if tag == "M":
            return ExecMore(line_no=line_no, tid=_pid(rest))
        if tag == "O":
            ns, tgid, flags, ret, path = _fields(rest, 4)
            return FileOpen(
                line_no=line_no, ts=self._ts(ns), tgid=_pid(tgid), flags=int(flags), ret=int(ret), path=path
            )
        if tag == "P":
            ns, tgid, dirfd, flags, ret, path = _fields(rest, 5)
            return FileOpen(
                line_no=line_no, ts=self._ts(ns), tgid=_pid(tgid), flags=int(flags), ret=int(ret),
                path=path, dirfd=int(dirfd),
            )  # fmt: skip
        if tag == "D":
            ns, tgid, path = _fields(rest, 2)
            return CwdChanged(line_no=line_no, ts=self._ts(ns), tgid=_pid(tgid), path=path)
        if tag == "N" or tag == "C":
            fd = None
            if tag == "N":
                ns, tgid, fd, family, port, ret, address = _fields(rest, 6)
            else:
                ns, tgid, family, port, ret, address = _fields(rest, 5)
            return NetConnect(
                line_no=line_no,
                ts=self._ts(ns),
                tgid=_pid(tgid),
                family=int(family),
                port=int(port),
                ret=int(ret),
                address=address,
                fd=None if fd is None else int(fd),
            )
        if tag == "K":
            ns, tgid, fd, error = rest.split(" ")
            return SockError(line_no=line_no, ts=self._ts(ns), tgid=_pid(tgid), fd=int(fd), error=int(error))
        if tag == "G":
            ns, tgid, signo, code, sender = rest.split(" ")
            return SignalDelivered(
                line_no=line_no,
                ts=self._ts(ns),
                tgid=_pid(tgid),
                signo=_small(signo),
                code=_int32(code),
                sender=None if sender == "0" else _pid(sender),
            )
        if tag == "R":
            int(rest)
            return _SKIP
        if tag == "B":
            ns, cpu = rest.split(" ")
            return Flushed(line_no=line_no, ts=self._ts(ns), cpu=_small(cpu))
        return None


# The handshake line carries nothing for the record; one shared marker keeps the parser loop simple.
_SKIP: Final = Unparsed(line_no=0, pid=None, ts=None, text="", reason="handshake")


def _fields(rest: str, n: int) -> list[str]:
    """`n` space-separated fields, then the text to the end of the line (which may hold spaces)."""
    parts = rest.split(" ", n)
    if len(parts) == n:  # an empty text field
        parts.append("")
    if len(parts) != n + 1:
        raise ValueError(rest)
    return parts


def _unhex(text: str) -> bytes:
    r"""`\x61\x62` (the recorder's hex, bpftrace's %rx) -> b"ab"."""
    if len(text) % 4 or text[::4].strip("\\") or text[1::4].strip("x"):
        raise ValueError(text[:40])
    return bytes.fromhex(text.replace("\\x", ""))


def _pid(text: str) -> int:
    value = int(text)
    if not 0 < value < 2**31:  # pid_t; hostile or corrupt input must not reach the events
        raise ValueError(text)
    return value


def _small(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**31:
        raise ValueError(text)
    return value


def _int32(text: str) -> int:
    value = int(text)
    if not -(2**31) <= value < 2**31:
        raise ValueError(text)
    return value


def _unparsed(line_no: int, raw: bytes, reason: str) -> Unparsed:
    return Unparsed(line_no=line_no, pid=None, ts=None, text=raw.decode("utf-8", "replace"), reason=reason)
