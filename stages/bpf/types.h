// SPDX-License-Identifier: GPL-2.0
// The few kernel types the recorder reads, declared with preserve_access_index: libbpf relocates each
// field access against the running kernel's BTF at load time (CO-RE), so no vmlinux.h is needed and
// the object built once runs on any kernel with BTF. These declarations are also what the loader
// copies from the kernel's BTF into the minimal one it is given (recorder.c, make_btf): a member named
// here is looked up in the kernel's struct of the same name.
#ifndef CAPSULE_TYPES_H
#define CAPSULE_TYPES_H
#include <linux/types.h>
#include <linux/bpf.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;
typedef _Bool bool;
#define true 1
#define false 0

#define __VMLINUX_H__  // bpf_tracing.h: the kernel's register names (di, si, …), not the uapi ones
#define CORE __attribute__((preserve_access_index))

struct pt_regs {
    unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
} CORE;

typedef struct { int counter; } atomic_t;

struct mm_struct { unsigned long arg_start, arg_end; } CORE;
struct signal_struct { atomic_t live; int group_exit_code; unsigned int flags; } CORE;
struct linux_binprm { const char *filename; } CORE;
struct task_struct {
    int pid;
    int tgid;
    int exit_code;
    struct mm_struct *mm;
    struct signal_struct *signal;
} CORE;

// x86_64 syscall numbers of the fork family (the `via` of a new process)
#define SYS_CLONE 56
#define SYS_FORK 57
#define SYS_VFORK 58
#define SYS_CLONE3 435

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "record.h"
#endif
