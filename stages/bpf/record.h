// SPDX-License-Identifier: GPL-2.0
// The records the kernel half (recorder.bpf.c) puts in the ring buffer and the loader (recorder.c)
// prints as trace lines: shared by both, so their layouts cannot drift apart.
#ifndef CAPSULE_RECORD_H
#define CAPSULE_RECORD_H
#include <linux/types.h>

#define STRLEN 200      // a path or an argv element: at most 199 bytes, as bpftrace's str() read them
#define AREA_SMALL 256  // a new program's argv area is read in pieces of < AREA_SMALL bytes (the
#define AREA_BIG 4096   // last one) or AREA_BIG - 1, at most AREA_PIECES of them
#define AREA_PIECES 64

struct rec {            // every record but V: `a`, `b`, `c` and `text` mean what its tag's line says
    __u8 tag;
    __u8 pad[3];
    __u32 tid;
    __u32 tgid;
    __s32 a;
    __s64 b;
    __s64 c;
    __u64 ns;
    char text[STRLEN];
};

struct area {           // V: `len` bytes at `offset` of the `size`-byte argv area of the program `pid`
    __u8 tag;           //    just exec'd; `data` has AREA_SMALL or AREA_BIG bytes of room
    __u8 pad[3];
    __u32 pid;
    __u32 size;
    __u32 offset;
    __u32 len;
    char data[];
};
#endif
