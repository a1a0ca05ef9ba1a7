"""The guard's launcher: a stand-alone script (standard library only, run as `python -I -S THIS`) that
puts itself under the policy's kernel mechanisms and then execs the rest of its command line.

    guard_launch.py [--net off|loopback] [--notify FD] [--argv0 NAME] [--probe] -- PROG ARGS...

`--net` unshares a network namespace (`off`: no interface is up; `loopback`: lo is brought up).
`--notify FD` sets no_new_privs and installs a seccomp filter that sends every execve/execveat to a
user-notification listener, passes the listener to Capsule over the unix socket FD (SCM_RIGHTS) and
closes both before exec, so nothing in the tree can answer its own notifications. `--argv0` gives PROG
that argv[0] (Capsule's own processes' titles: strace as `capsule: task <id>`). `--probe` stops
before exec (capsule doctor). Exit 125 when a mechanism cannot be set up or the command line is bad,
with one line on stderr; 126/127 when the exec fails.

The same program in C (stages/bpf/guard_launch.c, built by stages/guard_build.py) is what Capsule runs
where a C compiler is: this one costs an interpreter start per guarded tree (25-66 ms measured, on the
critical path of every guarded start), that one about a millisecond. This one stays as the fallback
(no compiler, a failed build) and as the definition: same options, order, messages and exit codes, and
its `filter_program` is the C one's instruction for instruction (tests/guard/test_guard_launch.py runs
both on the same cases). One difference neither can remove: under a C locale the interpreter sets
LC_CTYPE=C.UTF-8 in its environment (PEP 538), which the tree then inherits from this one only.
"""

import ctypes
import os
import signal
import socket
import struct
import sys

PR_SET_NO_NEW_PRIVS = 38
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
CLONE_NEWNET = 0x40000000
RET_ALLOW, RET_NOTIFY, RET_EPERM = 0x7FFF0000, 0x7FC00000, 0x00050000 | 1
# (audit arch, seccomp syscall number, execve, execveat, (compat arch, execve, execveat)) per machine
ARCHES = {
    "x86_64": (0xC000003E, 317, 59, 322, (0x40000003, 11, 358)),
    "aarch64": (0xC00000B7, 277, 221, 281, (0x40000028, 11, 387)),
}
X32_BIT = 0x40000000  # x32 ABI syscalls on x86_64: refused outright
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
LD_ABS, JEQ, JSET, RET = 0x20, 0x15, 0x45, 0x06
NR, ARCH = 0, 4  # offsets in struct seccomp_data


def _fail(message: str) -> None:
    sys.stderr.write(f"capsule: error: guard: {message}\n")
    sys.exit(125)


def _assemble(program: list[tuple[object, ...]]) -> bytes:
    """A tiny BPF assembler: ("label", name) marks a place; jumps name their targets."""
    places, index = {}, 0
    for op in program:
        if op[0] == "label":
            places[op[1]] = index
        else:
            index += 1
    out, index = [], 0
    for op in program:
        if op[0] == "label":
            continue
        index += 1
        if op[0] in (JEQ, JSET):
            code, k, yes, no = op
            out.append(struct.pack("HBBI", code, places[yes] - index, places[no] - index, k))
        else:
            out.append(struct.pack("HBBI", op[0], 0, 0, op[1]))
    return b"".join(out)


def filter_program(machine: str) -> bytes:
    """execve/execveat -> user notification; 32-bit compat execs and x32 syscalls -> EPERM (the guard
    reads 64-bit argv only); everything else allowed."""
    arch, _, execve, execveat, (compat, compat_execve, compat_execveat) = ARCHES[machine]
    return _assemble(
        [
            (LD_ABS, ARCH),
            (JEQ, arch, "native", "other"),
            ("label", "native"),
            (LD_ABS, NR),
            (JEQ, execve, "notify", "n1"),
            ("label", "n1"),
            (JEQ, execveat, "notify", "n2"),
            ("label", "n2"),
            (JSET, X32_BIT if machine == "x86_64" else 0, "eperm", "allow"),
            ("label", "other"),
            (JEQ, compat, "compat", "allow"),
            ("label", "compat"),
            (LD_ABS, NR),
            (JEQ, compat_execve, "eperm", "c1"),
            ("label", "c1"),
            (JEQ, compat_execveat, "eperm", "allow"),
            ("label", "allow"),
            (RET, RET_ALLOW),
            ("label", "eperm"),
            (RET, RET_EPERM),
            ("label", "notify"),
            (RET, RET_NOTIFY),
        ]
    )


def install_notify() -> int:
    machine = os.uname().machine
    if machine not in ARCHES:
        _fail(f"seccomp notify: unsupported machine {machine}")
    nr_seccomp = ARCHES[machine][1]
    prog = filter_program(machine)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        _fail(f"prctl(NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}")
    buf = ctypes.create_string_buffer(prog, len(prog))

    class Fprog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

    fprog = Fprog(len(prog) // 8, ctypes.addressof(buf))
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(
        ctypes.c_long(nr_seccomp),
        ctypes.c_long(SECCOMP_SET_MODE_FILTER),
        ctypes.c_long(SECCOMP_FILTER_FLAG_NEW_LISTENER),
        ctypes.byref(fprog),
    )
    if fd < 0:
        _fail(f"seccomp user notification: {os.strerror(ctypes.get_errno())}")
    return int(fd)


def unshare_net(mode: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        _fail(f"network namespace: {os.strerror(ctypes.get_errno())}")
    if mode == "loopback":
        import fcntl

        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                ifreq = struct.pack("16sH14s", b"lo", 0, b"")
                flags = struct.unpack("16sH14s", fcntl.ioctl(sock, SIOCGIFFLAGS, ifreq))[1]
                fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))
        except OSError as exc:
            _fail(f"network namespace: loopback: {exc.strerror}")


def send_listener(channel_fd: int, listener: int) -> None:
    try:
        channel = socket.socket(fileno=channel_fd)
        socket.send_fds(channel, [b"L"], [listener])
    except OSError as exc:
        _fail(f"seccomp user notification: passing the listener: {exc.strerror}")
    os.close(listener)
    channel.close()


def _value(args: list[str], flag: str) -> str:
    if not args:
        _fail(f"launcher: {flag} needs a value")
    return args.pop(0)


def main(args: list[str]) -> None:
    net = notify = argv0 = None
    probe = False
    while args and args[0] != "--":
        flag = args.pop(0)
        if flag == "--net":
            net = _value(args, flag)
            if net not in ("off", "loopback"):
                _fail(f"launcher: --net is off or loopback, not {net}")
        elif flag == "--notify":
            value = _value(args, flag)
            # decimal digits only, at most INT_MAX (as the C launcher reads it)
            if not (value.isascii() and value.isdigit() and int(value) <= 0x7FFFFFFF):
                _fail(f"launcher: --notify takes a descriptor number, not {value}")
            notify = int(value)
        elif flag == "--argv0":
            argv0 = _value(args, flag)
            if not argv0:
                _fail("launcher: --argv0 is empty")
        elif flag == "--probe":
            probe = True
        else:
            _fail(f"launcher: unknown option {flag}")
    argv = args[1:]
    if net is not None:
        unshare_net(net)
    if notify is not None:
        send_listener(notify, install_notify())
    if probe:
        sys.exit(0)
    if not argv:
        _fail("launcher: nothing to run")
    # The interpreter ignores these two at its start, and an exec keeps what is ignored: put back the
    # default Capsule started this with (else every guarded tree ran with SIGPIPE ignored: `yes | head`
    # said "Broken pipe").
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    try:
        if not argv[0]:  # os.execv refuses an empty argv[0] itself; the kernel's answer to an empty path
            raise FileNotFoundError(2, os.strerror(2))
        os.execv(argv[0], [argv[0] if argv0 is None else argv0, *argv[1:]])  # noqa: S606 - exec is the point
    except OSError as exc:
        # the first exec is the guard's own (bwrap, strace) or the command, both resolved beforehand
        sys.stderr.write(f"capsule: error: {argv[0]}: {exc.strerror}\n")
        sys.exit(126 if exc.errno != 2 else 127)


if __name__ == "__main__":
    main(sys.argv[1:])
