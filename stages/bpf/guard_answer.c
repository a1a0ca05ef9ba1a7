// SPDX-License-Identifier: GPL-2.0
// The guard's fast path (stages/guard_answer.py): a shared library the guard's server calls through
// ctypes, the interpreter lock released, to take the seccomp notifications off the listener. An exec
// whose (path, argv) the Python server judged allowed before (and told us to remember) is answered
// CONTINUE here, with no Python at all; every other one goes back to the Python server, which decides
// and answers it as without this library. Python-side state (the policy, infra, refusals, kill)
// stays in Python: this file only ever allows what Python allowed for the very same bytes.
//
// Fail closed: anything unusual (an unreadable or oversized argv, a string at its limit, a failed
// allocation) hands the notification to Python unread, which reads and judges it exactly as it always
// did; an error before a notification is in hand returns -1 and Python serves the listener itself.
// Reading is bounded as stages/guard_files.py's ProcessMemory: a page at a time, each string at most
// MAX_STRING, at most MAX_ARGS pointers, MAX_TOTAL bytes in all. process_vm_readv, not /proc/PID/mem:
// opening that file took ~14 us of the ~36 us a remembered exec took here, ~12 us without it (the
// same ptrace access check either way). It reads no page the process could not read itself
// (/proc/PID/mem can: FOLL_FORCE); such an exec fails here and goes to Python, which reads it as ever.
//
// Security: the built library lives in Capsule's cache (~/.cache/capsule/guard-*), which path rules
// make read-only to the guarded tree (as the eBPF recorder there), and Capsule loads it before the tree
// starts (Guard.prepare; the server is forked with it mapped), so no tree can swap what its guard runs.
// Without path rules the cache is as writable to the tree as the rest of the user's files.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_STRING (1 << 17)  // ProcessMemory.string's limit: at it, Python reads (its truncation rules)
#define MAX_ARGS 4096         // ProcessMemory.argv's limit
#define MAX_TOTAL (1 << 18)   // path and argv together; more is rare and goes to Python
#define MAX_KEPT 4096         // guard.py's ALLOWED_KEPT: Python clears both when its set is full
#define SLOTS 8192            // open addressing, at most half full
#define PAGE 4096
#define AT_EMPTY_PATH_FLAG 0x1000
#if defined(__x86_64__)
#define NR_EXECVEAT 322
#elif defined(__aarch64__)
#define NR_EXECVEAT 281
#else
#error "the guard's fast path knows x86_64 and aarch64 only"
#endif

// One notification handed to Python (ctypes mirrors it in stages/guard_answer.py).
struct handed {
    uint64_t id;
    uint32_t pid;
    int32_t nr;
    uint64_t args[6];
    int64_t start_ns;  // CLOCK_MONOTONIC (Python's time.monotonic_ns) when it was received
    int32_t read;      // 1: path and argv below were read and the id checked valid; 0: Python does both
    uint32_t argc;
    const char *path;  // NUL-terminated; the argv strings follow it in the same buffer
    uint64_t path_len;
    const char *argv;  // argc strings, each NUL-terminated
    uint64_t argv_len;
};

struct slot {
    uint64_t hash;
    uint32_t len;
    char *key;  // path NUL argv[0] NUL ... (no part holds a NUL, so the bytes say which parts)
};

static struct slot table[SLOTS];
static unsigned kept;
static char buffer[MAX_TOTAL];
static uint64_t *latencies;
static uint64_t answered, room;

int capsule_guard_abi(void) { return (int)(sizeof(struct seccomp_notif) << 8 | sizeof(struct handed)); }

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static uint64_t fnv(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
    return h;
}

static struct slot *find(const char *key, size_t len, uint64_t hash) {
    for (size_t i = hash & (SLOTS - 1);; i = (i + 1) & (SLOTS - 1)) {
        struct slot *s = &table[i];
        if (s->key == NULL || (s->hash == hash && s->len == len && memcmp(s->key, key, len) == 0)) return s;
    }
}

int capsule_guard_remember(const char *key, uint64_t len) {
    if (kept >= MAX_KEPT || len > MAX_TOTAL) return 0;
    uint64_t hash = fnv(key, len);
    struct slot *s = find(key, len, hash);
    if (s->key != NULL) return 1;
    char *copy = malloc(len ? len : 1);
    if (copy == NULL) return 0;  // not kept: Python's own set still allows it, judged there
    memcpy(copy, key, len);
    *s = (struct slot){hash, (uint32_t)len, copy};
    kept++;
    return 1;
}

void capsule_guard_forget(void) {
    for (size_t i = 0; i < SLOTS; i++) free(table[i].key);
    memset(table, 0, sizeof table);
    kept = 0;
}

uint64_t capsule_guard_answered(void) { return answered; }
const uint64_t *capsule_guard_latencies(void) { return latencies; }

static ssize_t peek(pid_t pid, void *into, size_t len, uint64_t address) {
    struct iovec local = {into, len}, remote = {(void *)(uintptr_t)address, len};
    return process_vm_readv(pid, &local, 1, &remote, 1, 0);
}

// One string at `address` into buffer[*at...], NUL included, as ProcessMemory.string reads it (a page
// at a time: a read across into an unmapped page fails as a whole). 0, or -1: Python reads instead.
static int read_string(pid_t pid, uint64_t address, size_t *at) {
    size_t start = *at;
    for (;;) {
        size_t want = PAGE - (address + (*at - start)) % PAGE;
        if (*at + want > MAX_TOTAL) return -1;
        ssize_t got = peek(pid, buffer + *at, want, address + (*at - start));
        if (got <= 0) return -1;
        char *end = memchr(buffer + *at, '\0', (size_t)got);
        if (end != NULL) {
            *at = (size_t)(end - buffer) + 1;
            return *at - start - 1 >= MAX_STRING ? -1 : 0;
        }
        *at += (size_t)got;
        if (*at - start >= MAX_STRING) return -1;
    }
}

static int read_argv(pid_t pid, uint64_t address, size_t *at, uint32_t *argc) {
    *argc = 0;
    if (address == 0) return 0;
    for (;;) {
        uint64_t pointers[PAGE / 8];
        uint64_t from = address + 8 * (uint64_t)*argc;
        ssize_t got = peek(pid, pointers, PAGE - from % PAGE, from);
        if (got < 8) return -1;
        for (ssize_t i = 0; i < got / 8; i++) {
            if (pointers[i] == 0) return 0;
            if (*argc == MAX_ARGS || read_string(pid, pointers[i], at) < 0) return -1;
            (*argc)++;
        }
    }
}

// Path and argv as Guard._read makes them: execveat's AT_EMPTY_PATH names its fd's file; a relative
// path is joined to the process's cwd (os.path.join). 0, or -1: Python reads instead.
static int read_exec(const struct seccomp_notif *n, struct handed *out) {
    char name[64];
    pid_t pid = (pid_t)n->pid;
    int at_nr = n->data.nr == NR_EXECVEAT;
    size_t at = 0;
    int ok = read_string(pid, at_nr ? n->data.args[1] : n->data.args[0], &at);
    size_t path_len = at ? at - 1 : 0;
    if (ok == 0 && at_nr && path_len == 0 && (n->data.args[4] & AT_EMPTY_PATH_FLAG)) {
        snprintf(name, sizeof name, "/proc/%u/fd/%d", n->pid, (int)n->data.args[0]);
        ssize_t len = readlink(name, buffer, PAGE);
        ok = len <= 0 || len >= PAGE ? -1 : 0;
        path_len = ok == 0 ? (size_t)len : 0;
        buffer[path_len] = '\0';
        at = path_len + 1;
    }
    if (ok == 0 && path_len > 0 && buffer[0] != '/') {
        char cwd[PAGE];
        snprintf(name, sizeof name, "/proc/%u/cwd", n->pid);
        ssize_t len = readlink(name, cwd, sizeof cwd);
        size_t slash = len > 0 && cwd[len - 1] != '/';
        if (len <= 0 || len >= PAGE || (size_t)len + slash + at > MAX_TOTAL) {
            ok = -1;
        } else {
            memmove(buffer + len + slash, buffer, at);
            memcpy(buffer, cwd, (size_t)len);
            if (slash) buffer[len] = '/';
            path_len += (size_t)len + slash;
            at += (size_t)len + slash;
        }
    }
    if (ok == 0) ok = read_argv(pid, at_nr ? n->data.args[2] : n->data.args[1], &at, &out->argc);
    out->path = buffer;
    out->path_len = path_len;
    out->argv = buffer + path_len + 1;
    out->argv_len = at - path_len - 1;
    return ok;
}

// The next notification Python must judge: 1 (in *out), 0 when the guard should stop (the wake pipe,
// or the listener hung up: every process under the filter is gone), -1 on an error with nothing in hand.
int capsule_guard_next(int listener, int wake, struct handed *out) {
    struct pollfd fds[2] = {{.fd = listener, .events = POLLIN}, {.fd = wake, .events = POLLIN}};
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (fds[1].revents) return 0;
        if (!(fds[0].revents & POLLIN)) return fds[0].revents & (POLLHUP | POLLERR) ? 0 : -1;
        struct seccomp_notif n;
        memset(&n, 0, sizeof n);  // the kernel refuses a buffer that is not zeroed
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &n) < 0) {
            if (errno == ENOENT || errno == EINTR) continue;  // gone (or signalled) before we read it
            return -1;
        }
        int64_t start = now_ns();
        *out = (struct handed){.id = n.id, .pid = n.pid, .nr = n.data.nr, .start_ns = start};
        memcpy(out->args, n.data.args, sizeof out->args);
        if (read_exec(&n, out) < 0) return 1;  // read = 0: Python reads and checks it itself
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &n.id) < 0) continue;  // gone: nothing to answer
        out->read = 1;
        size_t len = out->path_len + 1 + out->argv_len;
        struct slot *s = kept ? find(buffer, len, fnv(buffer, len)) : NULL;
        if (s == NULL || s->key == NULL) return 1;
        if (answered == room) {  // room for its latency first: a hit must be counted
            uint64_t *more = realloc(latencies, (room ? 2 * room : 4096) * sizeof *latencies);
            if (more == NULL) return 1;
            latencies = more;
            room = room ? 2 * room : 4096;
        }
        struct seccomp_notif_resp resp = {.id = n.id, .flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE};
        ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);  // ENOENT: it died meanwhile, as in Python
        latencies[answered++] = (uint64_t)(now_ns() - start);
    }
}
