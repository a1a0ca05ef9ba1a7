// SPDX-License-Identifier: GPL-2.0
// The guard's launcher in C (stages/guard_build.py builds it; stages/guard_launch.py is the same program
// in Python, the fallback where no C compiler is, and its documentation): it puts itself under the
// policy's kernel mechanisms and then execs the rest of its command line.
//
//     capsule-guard-launch [--net off|loopback] [--notify FD] [--argv0 NAME] [--probe] -- PROG ARGS...
//
// Same options, order of work, messages and exit codes as the Python one (tests/guard/test_guard_launch.py
// runs both on the same cases): 125 and one line `capsule: error: guard: ...` when a mechanism cannot be
// set up, 126/127 when the exec fails. Why both: the Python one costs an interpreter start per guarded
// tree (25-66 ms measured while Capsule starts on the other core), on the critical path of every
// guarded start; this one costs about a millisecond.
//
// The filter is filter_program of the Python launcher, instruction for instruction (the test reads the
// installed one back from the kernel and compares it with filter_program's bytes).
//
// Security: as the fast path's library (guard_answer.c), the built program lives in Capsule's cache,
// read-only to a guarded tree under path rules, so no tree can swap the launcher of a later one;
// without path rules the cache is as writable to the tree as the rest of the user's files (as is the
// Python launcher in a user's own install).
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#if defined(__x86_64__)
#define MACHINE "x86_64"
#define ARCH_NATIVE 0xC000003E
#define NR_EXECVE 59
#define NR_EXECVEAT 322
#define ARCH_COMPAT 0x40000003
#define NR_COMPAT_EXECVE 11
#define NR_COMPAT_EXECVEAT 358
#define X32_BIT 0x40000000  // x32 ABI syscalls: refused outright
#elif defined(__aarch64__)
#define MACHINE "aarch64"
#define ARCH_NATIVE 0xC00000B7
#define NR_EXECVE 221
#define NR_EXECVEAT 281
#define ARCH_COMPAT 0x40000028
#define NR_COMPAT_EXECVE 11
#define NR_COMPAT_EXECVEAT 387
#define X32_BIT 0  // no x32 here: the JSET never jumps
#else
#error "the guard's launcher knows x86_64 and aarch64 only"
#endif

#define RET_ALLOW 0x7FFF0000U
#define RET_NOTIFY 0x7FC00000U
#define RET_EPERM (0x00050000U | 1)
#define OFF_NR 0    // offsets in struct seccomp_data
#define OFF_ARCH 4

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("capsule: error: guard: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(125);
}

// filter_program(machine) of stages/guard_launch.py; jump offsets count from the next instruction.
static struct sock_filter program[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, OFF_ARCH),                 // 0
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH_NATIVE, 0, 4),        // 1: native (2), other (6)
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, OFF_NR),                   // 2: native
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NR_EXECVE, 8, 0),          // 3: notify (12), n1 (4)
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NR_EXECVEAT, 7, 0),        // 4: notify, n2 (5)
    BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, X32_BIT, 5, 4),           // 5: eperm (11), allow (10)
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH_COMPAT, 0, 3),        // 6: other: compat (7), allow
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, OFF_NR),                   // 7: compat
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NR_COMPAT_EXECVE, 2, 0),   // 8: eperm, c1 (9)
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NR_COMPAT_EXECVEAT, 1, 0), // 9: eperm, allow
    BPF_STMT(BPF_RET | BPF_K, RET_ALLOW),                         // 10: allow
    BPF_STMT(BPF_RET | BPF_K, RET_EPERM),                         // 11: eperm
    BPF_STMT(BPF_RET | BPF_K, RET_NOTIFY),                        // 12: notify
};

static int install_notify(void) {
    struct utsname name;
    if (uname(&name) != 0 || strcmp(name.machine, MACHINE) != 0)
        fail("seccomp notify: unsupported machine %s", name.machine);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail("prctl(NO_NEW_PRIVS): %s", strerror(errno));
    struct sock_fprog fprog = {.len = sizeof(program) / sizeof(program[0]), .filter = program};
    long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &fprog);
    if (fd < 0) fail("seccomp user notification: %s", strerror(errno));
    return (int)fd;
}

static void send_listener(int channel, int listener) {
    char byte = 'L';
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof(control));
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof(control.buf)};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &listener, sizeof(int));
    ssize_t sent;
    do sent = sendmsg(channel, &msg, 0);
    while (sent < 0 && errno == EINTR);
    if (sent < 0) fail("seccomp user notification: passing the listener: %s", strerror(errno));
    close(listener);
    close(channel);
}

static void unshare_net(const char *mode) {
    if (unshare(CLONE_NEWNET) != 0) fail("network namespace: %s", strerror(errno));
    if (strcmp(mode, "loopback") != 0) return;
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) fail("network namespace: loopback: %s", strerror(errno));
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) != 0) fail("network namespace: loopback: %s", strerror(errno));
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(sock, SIOCSIFFLAGS, &ifr) != 0) fail("network namespace: loopback: %s", strerror(errno));
    close(sock);
}

// A descriptor number: decimal digits only, at most INT_MAX; -1 otherwise.
static int descriptor(const char *text) {
    long value = 0;
    if (!*text) return -1;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        value = value * 10 + (*p - '0');
        if (value > INT_MAX) return -1;
    }
    return (int)value;
}

static const char *value_of(int argc, char **argv, int *i, const char *flag) {
    if (*i >= argc) fail("launcher: %s needs a value", flag);
    return argv[(*i)++];
}

int main(int argc, char **argv) {
    const char *net = NULL, *argv0 = NULL;
    int notify = -1, probe = 0, i = 1;
    while (i < argc && strcmp(argv[i], "--") != 0) {
        const char *flag = argv[i++];
        if (strcmp(flag, "--net") == 0) {
            net = value_of(argc, argv, &i, flag);
            if (strcmp(net, "off") != 0 && strcmp(net, "loopback") != 0)
                fail("launcher: --net is off or loopback, not %s", net);
        } else if (strcmp(flag, "--notify") == 0) {
            const char *value = value_of(argc, argv, &i, flag);
            if ((notify = descriptor(value)) < 0)
                fail("launcher: --notify takes a descriptor number, not %s", value);
        } else if (strcmp(flag, "--argv0") == 0) {
            argv0 = value_of(argc, argv, &i, flag);
            if (!*argv0) fail("launcher: --argv0 is empty");
        } else if (strcmp(flag, "--probe") == 0) {
            probe = 1;
        } else {
            fail("launcher: unknown option %s", flag);
        }
    }
    char **prog = i < argc ? argv + i + 1 : argv + argc;  // after the "--"
    if (net) unshare_net(net);
    if (notify >= 0) send_listener(notify, install_notify());
    if (probe) return 0;
    if (!*prog) fail("launcher: nothing to run");
    const char *path = prog[0];
    if (argv0) prog[0] = (char *)argv0;
    // The tree gets the dispositions Capsule started the launcher with (the Python launcher's
    // interpreter ignores these two; both launchers put them back to the default before the exec).
    signal(SIGPIPE, SIG_DFL);
    signal(SIGXFSZ, SIG_DFL);
    execv(path, prog);
    // the first exec is the guard's own (bwrap, strace) or the command, both resolved beforehand
    int err = errno;
    fprintf(stderr, "capsule: error: %s: %s\n", path, strerror(err));
    return err == ENOENT ? 127 : 126;
}
