// SPDX-License-Identifier: GPL-2.0
// Capsule's eBPF recorder: the kernel half. Built once with clang into a CO-RE object (see
// capsule/stages/ebpf_build.py) and loaded by recorder.c, which prints each record as the line the
// trace format names (capsule/parse/ebpf.py). Only the root's descendants are followed: `tracked`
// holds their thread-group ids, and every program returns at once for any other process.
//
// Processes are followed with raw tracepoints (task_newtask, sched_process_exec/exit), which cost
// nothing outside them. Raw, not BTF (`tp_btf/`): the same probe points and arguments (read the same
// way, BPF_CORE_READ), but a tp_btf program's attach point is a type id that libbpf finds by parsing
// the kernel's whole BTF (5.5 MB here) at every start; with raw ones and the minimal BTF the loader is
// given for the CO-RE reads (recorder.c, `--make-btf`), it never reads it: 35.6 -> 15.1 ms to load
// and attach everything (medians of 9, interleaved), the same relocated offsets. Exec attempts (a failed one fires nothing else), Capsule's handshakes and the
// file and net levels need syscall tracepoints; enabling any of them sends every syscall of the
// machine through the kernel's syscall-work path (~7 ns each, measured here). fentry/fexit on the
// syscall functions would not, but this kernel refuses BPF trampolines (EPERM), and has no kprobes.
#include "types.h"

char LICENSE[] SEC("license") = "GPL";

#define CLONE_THREAD 0x10000
// Records wake nobody: the loader reads the buffer every READ_EVERY_MS instead. Waking it on each
// record (libbpf's default, through epoll) cost the loader a context switch per record (~8 us of its
// CPU per trace line on fork-heavy work, measured), on the cores the traced tree needs.
#define QUIET BPF_RB_NO_WAKEUP
#define MAX_ARGS 48     // elements read at an exec attempt; an M record says there were more
#define AT_FDCWD -100

// The context of a syscall tracepoint (tracefs' format: 8 bytes of common fields, the number).
struct sys_enter { u64 common; s32 nr; u32 pad; u64 args[6]; };
struct sys_exit { u64 common; s32 nr; u32 pad; s64 ret; };

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __uint(map_flags, BPF_F_NO_PREALLOC);  // entries made as used: a preallocated one costs ~1-20 ms at load
    __type(key, u32);
    __type(value, u8);
} tracked SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __uint(map_flags, BPF_F_NO_PREALLOC);  // entries made as used: a preallocated one costs ~1-20 ms at load
    __type(key, u32);
    __type(value, u8);
} in_exec SEC(".maps");  // threads whose execve began (an X is printed only after an E)

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 32 << 20);
} events SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, u32);
    __type(value, u64);
} lost SEC(".maps");  // records the ring buffer had no room for


struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, u32);
    __type(value, s32);
} config SEC(".maps");  // [0]: the root's pid, set by the loader before it attaches

static __always_inline s32 root_pid(void) {
    u32 zero = 0;
    s32 *root = bpf_map_lookup_elem(&config, &zero);
    return root ? *root : 0;
}

static __always_inline bool followed(u32 tgid) { return bpf_map_lookup_elem(&tracked, &tgid) != 0; }

static __always_inline u32 self_tgid(void) { return bpf_get_current_pid_tgid() >> 32; }

static __always_inline void count_lost(void) {
    u32 zero = 0;
    u64 *n = bpf_map_lookup_elem(&lost, &zero);
    if (n) *n += 1;
}

static __always_inline struct rec *reserve(u8 tag) {
    struct rec *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
    if (!r) {
        count_lost();
        return 0;
    }
    r->tag = tag;
    r->ns = bpf_ktime_get_ns();
    r->tid = (u32)bpf_get_current_pid_tgid();
    r->tgid = self_tgid();
    r->a = 0;
    r->b = 0;
    r->c = 0;
    r->text[0] = 0;
    return r;
}

// A new process (never a thread): how it was made is the syscall its parent is in.
SEC("raw_tp/task_newtask")
int BPF_PROG(newtask, struct task_struct *task, u64 clone_flags) {
    u32 parent = self_tgid();
    if (!followed(parent) || (clone_flags & CLONE_THREAD)) return 0;
    u32 child = BPF_CORE_READ(task, pid);
    u8 one = 1;
    bpf_map_update_elem(&tracked, &child, &one, BPF_ANY);
    struct rec *r = reserve('F');
    if (!r) return 0;
    struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
    long nr = BPF_CORE_READ(regs, orig_ax);
    r->a = child;
    r->b = nr == SYS_FORK ? 1 : nr == SYS_VFORK ? 2 : nr == SYS_CLONE ? 3 : nr == SYS_CLONE3 ? 4 : 0;
    r->c = clone_flags;
    bpf_ringbuf_submit(r, QUIET);
    return 0;
}

struct args_walk { const char *const *argv; u32 tid; bool done; };

// One argv element of an exec attempt (bpf_loop's callback); returns 1 after the last.
static long exec_arg(u32 i, struct args_walk *w) {
    const char *p = 0;
    if (bpf_probe_read_user(&p, sizeof(p), &w->argv[i]) || !p) {
        w->done = true;
        return 1;
    }
    struct rec *r = reserve('A');
    if (!r) {
        w->done = true;
        return 1;
    }
    r->a = i;
    bpf_probe_read_user_str(r->text, STRLEN, p);
    bpf_ringbuf_submit(r, QUIET);
    return 0;
}

// An exec attempt: its path and argv as the caller gave them (E, A…, M when there were more).
static __always_inline void exec_begun(const char *filename, const char *const *argv) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u8 one = 1;
    bpf_map_update_elem(&in_exec, &tid, &one, BPF_ANY);
    struct rec *r = reserve('E');
    if (!r) return;
    bpf_probe_read_user_str(r->text, STRLEN, filename);
    bpf_ringbuf_submit(r, QUIET);
    struct args_walk walk = {.argv = argv, .tid = tid};
    bpf_loop(MAX_ARGS, exec_arg, &walk, 0);
    if (walk.done) return;
    r = reserve('M');
    if (r) bpf_ringbuf_submit(r, QUIET);
}

SEC("tracepoint/syscalls/sys_enter_execve")
int execve_enter(struct sys_enter *ctx) {
    if (!followed(self_tgid())) return 0;
    exec_begun((const char *)ctx->args[0], (const char *const *)ctx->args[1]);
    return 0;
}

SEC("tracepoint/syscalls/sys_enter_execveat")
int execveat_enter(struct sys_enter *ctx) {
    if (!followed(self_tgid())) return 0;
    exec_begun((const char *)ctx->args[1], (const char *const *)ctx->args[2]);
    return 0;
}

static __always_inline void exec_returned(long ret) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (!bpf_map_lookup_elem(&in_exec, &tid)) return;
    bpf_map_delete_elem(&in_exec, &tid);
    if (ret >= 0) return;
    struct rec *r = reserve('X');
    if (!r) return;
    r->a = -ret;
    bpf_ringbuf_submit(r, QUIET);
}

SEC("tracepoint/syscalls/sys_exit_execve")
int execve_exit(struct sys_exit *ctx) {
    exec_returned(ctx->ret);
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_execveat")
int execveat_exit(struct sys_exit *ctx) {
    exec_returned(ctx->ret);
    return 0;
}

struct area_walk { u64 start, size; u32 tgid; };

// Piece `i` of the argv area: bytes i * (AREA_BIG - 1) onwards (bpf_loop's callback: the verifier
// checks it once, which it can only do if nothing it carries over changes; hence the fixed stride).
// Returns 1 when the area is done or cannot be read.
static long area_piece(u32 i, struct area_walk *w) {
    u64 off = (u64)(i & (AREA_PIECES - 1)) * (AREA_BIG - 1);
    if (off >= w->size) return 1;
    u64 left = w->size - off;
    bool small = left < AREA_SMALL;
    struct area *v = bpf_ringbuf_reserve(&events, sizeof(*v) + (small ? AREA_SMALL : AREA_BIG), 0);
    if (!v) {
        count_lost();
        return 1;
    }
    u32 n = small ? (left & (AREA_SMALL - 1)) : (left < AREA_BIG ? left : AREA_BIG - 1) & (AREA_BIG - 1);
    v->tag = 'V';
    v->pid = w->tgid;
    v->size = w->size;
    v->offset = off;
    v->len = n;
    if (n == 0 || bpf_probe_read_user(v->data, n, (void *)(w->start + off))) {
        bpf_ringbuf_discard(v, 0);
        return 1;
    }
    bpf_ringbuf_submit(v, QUIET);
    return 0;
}

// A successful exec: the new program's whole argv area (arg_start..arg_end, NUL separated), then the
// exec itself (S, with the pid of the thread that exec'd: a thread's exec returns in the leader).
SEC("raw_tp/sched_process_exec")
int BPF_PROG(exec_done, struct task_struct *p, s32 old_pid, struct linux_binprm *bprm) {
    u32 tgid = self_tgid();
    if (!followed(tgid)) return 0;
    bpf_map_delete_elem(&in_exec, &old_pid);
    struct task_struct *task = bpf_get_current_task_btf();
    struct area_walk walk = {.tgid = tgid};
    walk.start = BPF_CORE_READ(task, mm, arg_start);
    walk.size = BPF_CORE_READ(task, mm, arg_end) - walk.start;
    bpf_loop(AREA_PIECES, area_piece, &walk, 0);
    struct rec *r = reserve('S');
    if (!r) return 0;
    r->a = old_pid;
    bpf_probe_read_kernel_str(r->text, STRLEN, BPF_CORE_READ(bprm, filename));
    bpf_ringbuf_submit(r, QUIET);
    return 0;
}

// The last thread of a process: signal->live has just dropped to 0 (do_exit, before this tracepoint).
SEC("raw_tp/sched_process_exit")
int BPF_PROG(process_exit, struct task_struct *p) {
    u32 tgid = self_tgid();
    if (!followed(tgid)) return 0;
    struct task_struct *task = bpf_get_current_task_btf();
    if (BPF_CORE_READ(task, signal, live.counter) != 0) return 0;
    struct rec *r = reserve('Q');
    if (r) {
        r->a = BPF_CORE_READ(task, exit_code);
        bpf_ringbuf_submit(r, QUIET);
    }
    bpf_map_delete_elem(&tracked, &tgid);
    return 0;
}

// Signal deliveries (G), at every level: strace's %process level shows them too. strace sees a signal
// when its receiver dequeues it (the signal-delivery stop), as signal_deliver does: get_signal fires it
// in the receiving thread before the handler or the default action runs. Without a tracer, though, the
// kernel takes a shortcut that ptrace rules out: a signal whose default action kills without a core
// (SIGTERM, SIGINT, SIGHUP, SIGPIPE…) starts its group's exit as it is sent (complete_signal), and is
// never dequeued: get_signal traces only a SIGKILL with no siginfo (info NULL) for it. So that one is
// recorded where it is sent (signal_generate, in the sender, for the receiver's process). Left out:
// SIGCHLD (the noise of every fork; the tracker drops it too) and SIGKILL, which never stops a tracee,
// so strace shows none. An ignored signal (SIG_IGN, or by default: SIGCONT, SIGWINCH, SIGURG) is dropped
// as it is sent, so it is never delivered here; under ptrace it is queued, and strace shows it.
#define SIGILL 4
#define SIGTRAP 5
#define SIGBUS 7
#define SIGFPE 8
#define SIGKILL 9
#define SIGSEGV 11
#define SIGCHLD 17
#define SIGIO 29
#define SIGSYS 31
#define SI_USER 0
#define SI_KERNEL 0x80
#define SI_TIMER -2
#define SI_SIGIO -5
#define SEND_SIG_PRIV 1  // signal_generate's info for a signal of the kernel's own, with no siginfo
#define SIGNAL_GROUP_EXIT 0x4
#define TRACE_SIGNAL_DELIVERED 0

// The head of a kernel_siginfo: si_signo, si_errno, si_code, then the union (8-byte aligned, at 16),
// whose _kill._pid comes first. Read raw, not CO-RE: it is the uapi layout, the bytes every program's
// handler is given (copy_siginfo_to_user), an ABI that does not change.
struct siginfo_head { s32 si_signo, si_errno, si_code, pad, si_pid; };

// The sender's pid where strace prints one (its print_si_info), else 0: for a code <= 0 (a process
// sent it: kill, sigqueue, tgkill…) but SI_TIMER and SI_SIGIO, whose union holds other fields; for a
// code > 0 (the kernel sent it) only for a signal with no fields of its own (a fault's, SIGIO's and
// SIGSYS's have them), and the kernel's own (SI_KERNEL: the terminal's, a timer's) name none.
static __always_inline s32 sender(int sig, s32 code, s32 pid) {
    if (code <= 0) return code == SI_TIMER || code == SI_SIGIO ? 0 : pid;
    bool own = sig == SIGILL || sig == SIGTRAP || sig == SIGBUS || sig == SIGFPE || sig == SIGSEGV ||
               sig == SIGIO || sig == SIGSYS;
    return own ? 0 : pid;
}

static __always_inline void signaled(u32 tgid, int sig, s32 code, s32 pid) {
    struct rec *r = reserve('G');
    if (!r) return;
    r->tgid = tgid;
    r->a = sig;
    r->b = code;
    r->c = sender(sig, code, pid);
    bpf_ringbuf_submit(r, QUIET);
}

SEC("raw_tp/signal_deliver")
int BPF_PROG(signal_delivered, int sig, const void *info) {
    u32 tgid = self_tgid();
    if (sig == SIGCHLD || sig == SIGKILL || !followed(tgid)) return 0;
    struct siginfo_head si;
    if (bpf_probe_read_kernel(&si, sizeof(si), info)) return 0;
    signaled(tgid, sig, si.si_code, si.si_pid);
    return 0;
}

// A signal that started its receiver's group exit as it was sent (see above): sent, not ignored, and
// the group now exiting of it (it was not before, or the signal would have been dropped as ignored).
SEC("raw_tp/signal_generate")
int BPF_PROG(signal_fatal, int sig, const void *info, struct task_struct *task, int group, int result) {
    if (result != TRACE_SIGNAL_DELIVERED || sig == SIGKILL) return 0;
    struct signal_struct *signal = BPF_CORE_READ(task, signal);
    if (!(BPF_CORE_READ(signal, flags) & SIGNAL_GROUP_EXIT) || BPF_CORE_READ(signal, group_exit_code) != sig)
        return 0;
    u32 tgid = BPF_CORE_READ(task, tgid);
    if (!followed(tgid)) return 0;
    // info NULL (SEND_SIG_NOINFO): sent by the caller, as the kernel fills it in (SI_USER, its pid)
    struct siginfo_head si = {.si_code = SI_USER, .si_pid = self_tgid()};
    if ((unsigned long)info == SEND_SIG_PRIV) {
        si.si_code = SI_KERNEL;
        si.si_pid = 0;
    } else if (info && bpf_probe_read_kernel(&si, sizeof(si), info)) {
        return 0;
    }
    signaled(tgid, sig, si.si_code, si.si_pid);
    return 0;
}

// Readiness and flush barrier, both signal-0 kills by Capsule: of the root (R: every program is
// attached) and of -root (B: everything the tree did before it is in the ring buffer, which is one
// buffer in reservation order for all CPUs).
SEC("tracepoint/syscalls/sys_enter_kill")
int kill_enter(struct sys_enter *ctx) {
    if (ctx->args[1] != 0) return 0;
    s32 pid = (s32)ctx->args[0];  // the raw 8-byte register: its low half is the pid_t
    s32 root = root_pid();
    if (root == 0 || (pid != root && pid != -root)) return 0;
    struct rec *r = reserve(pid == root ? 'R' : 'B');
    if (!r) return 0;
    r->a = bpf_get_smp_processor_id();
    bpf_ringbuf_submit(r, QUIET);
    return 0;
}

// Trace level file: opens with the directory they are relative to, and working-directory changes.
// The arguments are kept at the syscall's entry (by thread) for its exit, which has only the result.
struct call { s32 dirfd; u32 flags; u64 ptr; };

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __uint(map_flags, BPF_F_NO_PREALLOC);  // entries made as used: a preallocated one costs ~1-20 ms at load
    __type(key, u32);
    __type(value, struct call);
} calls SEC(".maps");

static __always_inline void call_begun(s32 dirfd, u32 flags, u64 ptr) {
    if (!followed(self_tgid())) return;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct call c = {.dirfd = dirfd, .flags = flags, .ptr = ptr};
    bpf_map_update_elem(&calls, &tid, &c, BPF_ANY);
}

static __always_inline bool call_ended(struct call *c) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct call *found = bpf_map_lookup_elem(&calls, &tid);
    if (!found) return false;
    *c = *found;
    bpf_map_delete_elem(&calls, &tid);
    return true;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int file_openat_enter(struct sys_enter *ctx) {
    call_begun(ctx->args[0], ctx->args[2], ctx->args[1]);
    return 0;
}

SEC("tracepoint/syscalls/sys_enter_open")
int file_open_enter(struct sys_enter *ctx) {
    call_begun(AT_FDCWD, ctx->args[1], ctx->args[0]);
    return 0;
}

SEC("tracepoint/syscalls/sys_enter_creat")
int file_creat_enter(struct sys_enter *ctx) {
    call_begun(AT_FDCWD, 0x241, ctx->args[0]);
    return 0;
}

static __always_inline void opened(long ret) {
    struct call c;
    if (!call_ended(&c)) return;
    struct rec *r = reserve('P');
    if (!r) return;
    r->a = c.dirfd;
    r->b = c.flags;
    r->c = ret;
    bpf_probe_read_user_str(r->text, STRLEN, (const char *)c.ptr);
    bpf_ringbuf_submit(r, QUIET);
}

SEC("tracepoint/syscalls/sys_exit_openat")
int file_openat_exit(struct sys_exit *ctx) {
    opened(ctx->ret);
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_open")
int file_open_exit(struct sys_exit *ctx) {
    opened(ctx->ret);
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_creat")
int file_creat_exit(struct sys_exit *ctx) {
    opened(ctx->ret);
    return 0;
}

SEC("tracepoint/syscalls/sys_enter_chdir")
int file_chdir_enter(struct sys_enter *ctx) {
    call_begun(0, 0, ctx->args[0]);
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_chdir")
int file_chdir_exit(struct sys_exit *ctx) {
    struct call c;
    if (!call_ended(&c) || ctx->ret != 0) return 0;
    struct rec *r = reserve('D');
    if (!r) return 0;
    bpf_probe_read_user_str(r->text, STRLEN, (const char *)c.ptr);
    bpf_ringbuf_submit(r, QUIET);
    return 0;
}

// An fchdir: the working directory is no longer known (the record names none).
static __always_inline void cwd_unknown(long ret) {
    if (ret != 0 || !followed(self_tgid())) return;
    struct rec *r = reserve('D');
    if (r) bpf_ringbuf_submit(r, QUIET);
}

SEC("tracepoint/syscalls/sys_exit_fchdir")
int file_fchdir_exit(struct sys_exit *ctx) {
    cwd_unknown(ctx->ret);
    return 0;
}

// Trace levels refused and refused+net (the guard enforces path rules; the user did not ask for files):
// only the opens the guard's mount namespace refuses (capsule/policy/enforce.py `refused_open`: EACCES
// on a hidden path, EROFS on a read-only one) and the working-directory changes their relative paths
// are resolved with. The result is tested first, so every other open of the machine costs one
// comparison, and no enter programs run: the arguments are read at the exit from the registers the
// syscall was entered with (x86-64: di, si, dx; the kernel leaves them as they were, as `newtask` reads
// orig_ax). An open refused before the path's memory is faulted in records an empty path, as at level
// file.
#define EACCES 13
#define EROFS 30

static __always_inline struct pt_regs *entry_regs(void) {
    return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

static __always_inline void refused(long ret, bool at, bool creat) {
    if ((ret != -EACCES && ret != -EROFS) || !followed(self_tgid())) return;
    struct pt_regs *regs = entry_regs();
    struct rec *r = reserve('P');
    if (!r) return;
    r->a = at ? (s32)BPF_CORE_READ(regs, di) : AT_FDCWD;
    r->b = creat ? 0x241 : (u32)(at ? BPF_CORE_READ(regs, dx) : BPF_CORE_READ(regs, si));
    r->c = ret;
    bpf_probe_read_user_str(r->text, STRLEN, (const char *)(at ? BPF_CORE_READ(regs, si) : BPF_CORE_READ(regs, di)));
    bpf_ringbuf_submit(r, QUIET);
}

SEC("tracepoint/syscalls/sys_exit_openat")
int refused_openat_exit(struct sys_exit *ctx) {
    refused(ctx->ret, true, false);
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_open")
int refused_open_exit(struct sys_exit *ctx) {
    refused(ctx->ret, false, false);
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_creat")
int refused_creat_exit(struct sys_exit *ctx) {
    refused(ctx->ret, false, true);
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_chdir")
int refused_chdir_exit(struct sys_exit *ctx) {
    if (ctx->ret != 0 || !followed(self_tgid())) return 0;
    struct rec *r = reserve('D');
    if (!r) return 0;
    bpf_probe_read_user_str(r->text, STRLEN, (const char *)BPF_CORE_READ(entry_regs(), di));
    bpf_ringbuf_submit(r, QUIET);
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_fchdir")
int refused_fchdir_exit(struct sys_exit *ctx) {
    cwd_unknown(ctx->ret);
    return 0;
}

// Trace level net: connects (N: with their fd), with the address as the caller gave it (the loader
// formats it), and how a non-blocking one went: getsockopt(fd, SOL_SOCKET, SO_ERROR) (K).
SEC("tracepoint/syscalls/sys_enter_connect")
int net_connect_enter(struct sys_enter *ctx) {
    call_begun(ctx->args[0], 0, ctx->args[1]);
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int net_connect_exit(struct sys_exit *ctx) {
    struct call c;
    if (!call_ended(&c)) return 0;
    struct rec *r = reserve('N');
    if (!r) return 0;
    r->b = c.dirfd;
    r->c = ctx->ret;
    const void *sa = (const void *)c.ptr;
    u16 family = 0;
    bpf_probe_read_user(&family, sizeof(family), sa);
    r->a = family;
    if (family == 1)
        bpf_probe_read_user_str(r->text, STRLEN, sa + 2);  // sun_path
    else
        bpf_probe_read_user(r->text, 28, sa);  // sockaddr_in / sockaddr_in6, read whole
    bpf_ringbuf_submit(r, QUIET);
    return 0;
}

SEC("tracepoint/syscalls/sys_enter_getsockopt")
int net_getsockopt_enter(struct sys_enter *ctx) {
    if (ctx->args[1] == 1 && ctx->args[2] == 4)  // SOL_SOCKET, SO_ERROR: the result of a connect
        call_begun(ctx->args[0], 0, ctx->args[3]);
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_getsockopt")
int net_getsockopt_exit(struct sys_exit *ctx) {
    struct call c;
    if (!call_ended(&c) || ctx->ret != 0) return 0;
    s32 error = 0;
    if (bpf_probe_read_user(&error, sizeof(error), (const void *)c.ptr)) return 0;
    struct rec *r = reserve('K');
    if (!r) return 0;
    r->a = error;
    r->b = c.dirfd;
    bpf_ringbuf_submit(r, QUIET);
    return 0;
}
