// SPDX-License-Identifier: GPL-2.0
// Capsule's eBPF recorder: the user half. Loads the CO-RE object built from recorder.bpf.c, follows
// the root pid it is given, and prints each ring-buffer record as one line of the trace format
// (capsule/parse/ebpf.py): `{"type": "printf", "data": "<line>\n"}`, JSON-escaped, the lines bpftrace
// printed for the program this replaced, so one parser reads both.
//
//   capsule-ebpf-recorder OBJECT ROOT_PID LEVEL    LEVEL: process | file | net | all | refused |
//                                                  refused+net (refused: process, and only the opens
//                                                  a path rule refuses; see recorder.bpf.c)
//   capsule-ebpf-recorder OBJECT - LEVEL [GATE_FD]  the same, once every program is attached (so
//                                                  loading overlaps Capsule's and the command's
//                                                  start) reading `ROOT_PID TRACE_PATH` from stdin:
//                                                  the trace is opened there (appending) as stdout,
//                                                  and `R` printed to it at once; then one byte
//                                                  to GATE_FD lets the command's stub go
//   capsule-ebpf-recorder OBJECT --probe           load and attach everything once, then exit 0
//   capsule-ebpf-recorder OBJECT --make-btf OUT    write the minimal BTF of the running kernel the
//                                                  object's CO-RE reads need (see make_btf)
//   capsule-ebpf-recorder --version                the libbpf it runs with
//
// `--btf PATH` first (any form with OBJECT): the CO-RE reads are relocated against PATH, a BTF that
// --make-btf wrote on this kernel, instead of the kernel's own (/sys/kernel/btf/vmlinux), which libbpf
// would otherwise read and search whole at every start (~20 ms of the load here, see recorder.bpf.c).
//
// Lines are written to stdout only whole, in one write() per batch: the trace is a file opened with
// O_APPEND that Capsule also appends to (a refused exec's line), so no line of either is ever torn.
// Errors: one line on stderr, exit 1. SIGTERM/SIGINT: drain what is in the buffer, then exit 0.
// SIGUSR1: read the buffer now rather than at the end of the current READ_EVERY_MS nap (Capsule's
// flush barrier sends it after its marker, so that the marker does not wait for the next read).
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include "record.h"

#define OUT_SIZE (4 << 20)
#define READ_EVERY_MS 4  // how often the ring buffer is read (32 MiB: ~130k records of room)
#define OUT_ROOM (64 << 10)  // flush before a record could overflow: a V record prints at most ~16 KiB

static char out[OUT_SIZE];
static size_t used;
static volatile sig_atomic_t stopping;
static int failed_write;

static void flush_out(void) {
    size_t done = 0;
    while (done < used) {
        ssize_t n = write(1, out + done, used - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            failed_write = 1;  // the trace file is gone: nothing more can be recorded
            break;
        }
        done += (size_t)n;
    }
    used = 0;
}

static void put(const char *s, size_t n) {
    memcpy(out + used, s, n);
    used += n;
}

static void puts_raw(const char *s) { put(s, strlen(s)); }

static void putf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out + used, OUT_SIZE - used, fmt, ap);
    va_end(ap);
    if (n > 0) used += (size_t)n;
}

// A text field as JSON string content: quotes, backslashes and control bytes escaped; other bytes as
// they are (bpftrace did the same; the parser reads bytes that are not UTF-8 with replacement).
static void put_text(const char *s, size_t max) {
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < max && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[used++] = '\\';
            out[used++] = (char)c;
        } else if (c < 0x20) {
            put("\\u00", 4);
            out[used++] = hex[c >> 4];
            out[used++] = hex[c & 15];
        } else {
            out[used++] = (char)c;
        }
    }
}

static void begin(void) { puts_raw("{\"type\": \"printf\", \"data\": \""); }
static void end(void) { puts_raw("\\n\"}\n"); }

static void print_area(const struct area *v) {
    static const char hex[] = "0123456789abcdef";
    begin();
    putf("V %u %u %u ", v->pid, v->size, v->offset);
    for (__u32 i = 0; i < v->len; i++) {  // \xNN, the backslash escaped for JSON
        unsigned char c = (unsigned char)v->data[i];
        put("\\\\x", 3);
        out[used++] = hex[c >> 4];
        out[used++] = hex[c & 15];
    }
    end();
}

static void print_connect(const struct rec *r) {
    putf("N %llu %u %lld %d ", (unsigned long long)r->ns, r->tgid, (long long)r->b, r->a);
    char addr[INET6_ADDRSTRLEN] = "";
    unsigned port = 0;
    const unsigned char *sa = (const unsigned char *)r->text;
    if (r->a == AF_INET || r->a == AF_INET6) {
        port = ((unsigned)sa[2] << 8) | sa[3];
        inet_ntop(r->a, r->a == AF_INET ? (const void *)(sa + 4) : (const void *)(sa + 8), addr, sizeof(addr));
        putf("%u %lld %s", port, (long long)r->c, addr);
    } else if (r->a == AF_UNIX) {
        putf("0 %lld ", (long long)r->c);
        put_text(r->text, STRLEN);
    } else {
        putf("0 %lld ", (long long)r->c);
    }
}

static int on_record(void *ctx, void *data, size_t size) {
    (void)ctx;
    if (size < 1) return 0;
    if (used > OUT_SIZE - OUT_ROOM) flush_out();
    if (*(const __u8 *)data == 'V') {
        const struct area *v = data;
        if (size >= sizeof(*v) && v->len <= size - sizeof(*v)) print_area(v);
        return 0;
    }
    if (size < sizeof(struct rec)) return 0;
    const struct rec *r = data;
    unsigned long long ns = r->ns;
    begin();
    switch (r->tag) {
    case 'F': putf("F %llu %d %u %lld %llx", ns, r->a, r->tgid, (long long)r->b, (unsigned long long)r->c); break;
    case 'E': putf("E %llu %u %u ", ns, r->tid, r->tgid); put_text(r->text, STRLEN); break;
    case 'A': putf("A %u %d ", r->tid, r->a); put_text(r->text, STRLEN); break;
    case 'M': putf("M %u", r->tid); break;
    case 'X': putf("X %llu %u %u %d", ns, r->tid, r->tgid, r->a); break;
    case 'S': putf("S %llu %u %d ", ns, r->tgid, r->a); put_text(r->text, STRLEN); break;
    case 'Q': putf("Q %llu %u %d", ns, r->tgid, r->a); break;
    case 'P': putf("P %llu %u %d %lld %lld ", ns, r->tgid, r->a, (long long)r->b, (long long)r->c); put_text(r->text, STRLEN); break;
    case 'D': putf("D %llu %u ", ns, r->tgid); put_text(r->text, STRLEN); break;
    case 'N': print_connect(r); break;
    case 'K': putf("K %llu %u %lld %d", ns, r->tgid, (long long)r->b, r->a); break;
    case 'G': putf("G %llu %u %d %lld %lld", ns, r->tgid, r->a, (long long)r->b, (long long)r->c); break;
    case 'R': putf("R %llu", ns); break;
    case 'B': putf("B %llu %d", ns, r->a); break;
    default: putf("? %d", r->tag); break;
    }
    end();
    return 0;
}

static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

static void on_poke(int sig) { (void)sig; }  // nanosleep returns early (EINTR, never restarted)

static int libbpf_errors_only(enum libbpf_print_level level, const char *fmt, va_list ap) {
    return level == LIBBPF_WARN ? vfprintf(stderr, fmt, ap) : 0;
}

static int fail(const char *what, int err) {
    fprintf(stderr, "capsule-ebpf-recorder: %s: %s\n", what, strerror(err < 0 ? -err : err));
    return 1;
}

static __u64 lost_total(int fd, int cpus) {
    __u64 values[cpus];
    __u32 zero = 0;
    __u64 sum = 0;
    if (bpf_map_lookup_elem(fd, &zero, values)) return 0;
    for (int i = 0; i < cpus; i++) sum += values[i];
    return sum;
}

// Type `id` of `b` with its modifiers and typedefs skipped (their target's id in *res).
static const struct btf_type *skip_mods(const struct btf *b, __u32 id, __u32 *res) {
    const struct btf_type *t = btf__type_by_id(b, id);
    while (t && (btf_is_mod(t) || btf_is_typedef(t))) t = btf__type_by_id(b, id = t->type);
    *res = id;
    return t;
}

// The member `name` of the kernel's composite `kt`, looked for through its anonymous members as CO-RE
// does; *bits: its bit offset in `kt`.
static const struct btf_member *find_member(const struct btf *kb, const struct btf_type *kt, const char *name,
                                            __u32 *bits) {
    const struct btf_member *m = btf_members(kt);
    for (int i = 0; i < btf_vlen(kt); i++, m++) {
        const char *mine = btf__name_by_offset(kb, m->name_off);
        if (mine && *mine) {
            if (strcmp(mine, name)) continue;
            *bits = btf_member_bit_offset(kt, i);
            return m;
        }
        __u32 id, sub;
        const struct btf_type *inner = skip_mods(kb, m->type, &id);
        const struct btf_member *found = inner && btf_is_composite(inner) ? find_member(kb, inner, name, &sub) : 0;
        if (found) {
            *bits = btf_member_bit_offset(kt, i) + sub;
            return found;
        }
    }
    return 0;
}

// The kernel's type `kid` (of `kb`) into `out` as the object's type `lid` (of `lb`) reads it: a
// struct or union keeps its name and size and only the members the object's names, at the kernel's
// offsets; a pointer becomes void * (CO-RE matches any pointer with any pointer); an int stays as it
// is. Its id in `out`, or a negative errno (-ENOENT: the kernel's type lacks a member).
static int copy_type(struct btf *out, const struct btf *kb, __u32 kid, const struct btf *lb, __u32 lid) {
    const struct btf_type *kt = skip_mods(kb, kid, &kid), *lt = skip_mods(lb, lid, &lid);
    if (!kt || !lt || btf_kind(kt) != btf_kind(lt)) return -EINVAL;
    if (btf_is_ptr(kt)) return btf__add_ptr(out, 0);
    if (btf_is_int(kt)) return btf__add_int(out, btf__name_by_offset(kb, kt->name_off), kt->size, btf_int_encoding(kt));
    if (!btf_is_composite(kt) || btf_vlen(lt) > 32) return -EINVAL;
    int types[32];
    __u32 bits[32];
    const struct btf_member *m = btf_members(lt);
    for (int i = 0; i < btf_vlen(lt); i++, m++) {  // the members' types first: fields follow their struct
        const struct btf_member *k = find_member(kb, kt, btf__name_by_offset(lb, m->name_off), &bits[i]);
        if (!k) return -ENOENT;
        if ((types[i] = copy_type(out, kb, k->type, lb, m->type)) < 0) return types[i];
    }
    const char *name = btf__name_by_offset(kb, kt->name_off);
    int id = btf_is_struct(kt) ? btf__add_struct(out, name, kt->size) : btf__add_union(out, name, kt->size);
    m = btf_members(lt);
    for (int i = 0; id > 0 && i < btf_vlen(lt); i++, m++) {
        int err = btf__add_field(out, btf__name_by_offset(lb, m->name_off), types[i], bits[i], 0);
        if (err) return err;
    }
    return id;
}

// --make-btf: every named struct or union of the object (types.h) that the running kernel has, with
// the members the object reads, written to `path` as raw BTF: the only types its CO-RE relocations
// look up, so relocating against this file gives exactly the offsets the kernel's own BTF would (a
// type the object reads that is missing here fails the load, never a read at a wrong offset). The
// object's own types (its records) are skipped: the kernel has none of their names, or not with
// their members. Valid for this kernel only: Capsule keys the file by boot (ebpf_recorder.py).
static int make_btf(const char *object, const char *path) {
    struct btf *lb = btf__parse_elf(object, NULL);
    if (!lb) return fail("read the object's BTF", errno);
    struct btf *kb = btf__load_vmlinux_btf();
    if (!kb) return fail("read the kernel's BTF", errno);
    struct btf *out = btf__new_empty();
    if (!out) return fail("make a BTF", errno);
    for (__u32 id = 1; id < btf__type_cnt(lb); id++) {
        const struct btf_type *t = btf__type_by_id(lb, id);
        const char *name = btf__name_by_offset(lb, t->name_off);
        if (!btf_is_composite(t) || !name || !*name) continue;
        int kid = btf__find_by_name_kind(kb, name, btf_kind(t));
        if (kid < 0) continue;
        int err = copy_type(out, kb, kid, lb, id);
        if (err == -ENOENT) continue;
        if (err < 0) {
            char what[160];
            snprintf(what, sizeof(what), "copy the kernel's struct %s", name);
            return fail(what, err);
        }
    }
    __u32 size;
    const void *raw = btf__raw_data(out, &size);
    if (!raw) return fail("write the BTF", errno);
    FILE *f = fopen(path, "wbx");
    if (!f) return fail("create the BTF file", errno);
    if (fwrite(raw, 1, size, f) != size || fclose(f)) return fail("write the BTF file", errno);
    return 0;
}

// `ROOT_PID TRACE_PATH`, a line on stdin (`-`): the trace becomes stdout; the root pid, or 0 if the
// line never comes (Capsule ended, or did not need the recorder after all) or names no trace.
static int read_root(void) {
    static char line[4200];
    size_t n = 0;
    char *end = NULL;
    while (n < sizeof(line) - 1 && !end) {
        ssize_t got = read(0, line + n, sizeof(line) - 1 - n);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        n += (size_t)got;
        end = memchr(line, '\n', n);
    }
    if (!end) return 0;
    *end = 0;
    char *path = strchr(line, ' ');
    if (!path) return 0;
    *path++ = 0;
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0 || dup2(fd, 1) < 0) return 0;
    close(fd);
    return atoi(line);
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("libbpf %u.%u\n", libbpf_major_version(), libbpf_minor_version());
        return 0;
    }
    libbpf_set_print(libbpf_errors_only);
    if (argc == 4 && strcmp(argv[2], "--make-btf") == 0) return make_btf(argv[1], argv[3]);
    const char *self = argv[0];
    const char *btf = NULL;  // the kernel's types for the CO-RE reads (NULL: libbpf reads the kernel's own)
    if (argc > 2 && strcmp(argv[1], "--btf") == 0) {
        btf = argv[2];
        argc -= 2;
        argv += 2;
    }
    if (argc != 4 && argc != 5 && !(argc == 3 && strcmp(argv[2], "--probe") == 0)) {
        fprintf(stderr,
                "usage: %s [--btf BTF] OBJECT ROOT_PID|- process|file|net|all|refused|refused+net [GATE_FD]  |  %s [--btf BTF] OBJECT "
                "--probe  |  %s OBJECT --make-btf OUT\n",
                self, self, self);
        return 2;
    }
    int gate = argc == 5 ? atoi(argv[4]) : -1;  // the stub's gate: one byte lets the command go
    int probe = argc == 3;
    const char *level = probe ? "all" : argv[3];
    int later = !probe && strcmp(argv[2], "-") == 0;
    int root = probe ? getpid() : later ? 1 : atoi(argv[2]);
    int files = !strcmp(level, "file") || !strcmp(level, "all");
    int refused = !strcmp(level, "refused") || !strcmp(level, "refused+net");
    int net = !strcmp(level, "net") || !strcmp(level, "all") || !strcmp(level, "refused+net");
    if (root <= 0 || (!files && !net && !refused && strcmp(level, "process"))) {
        fprintf(stderr, "capsule-ebpf-recorder: bad root pid or level\n");
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGUSR1, on_poke);

    LIBBPF_OPTS(bpf_object_open_opts, options, .btf_custom_path = btf);
    struct bpf_object *obj = bpf_object__open_file(argv[1], &options);
    if (!obj) return fail("open the object", errno);
    struct bpf_program *prog;
    bpf_object__for_each_program(prog, obj) {
        const char *name = bpf_program__name(prog);
        if ((!strncmp(name, "file_", 5) && !files) || (!strncmp(name, "net_", 4) && !net) ||
            (!strncmp(name, "refused_", 8) && !refused && !probe))
            bpf_program__set_autoload(prog, false);
    }
    if (!files && !net)  // only the file and net programs use it (not the refused ones): not made (a 65536-bucket table, ~1 ms)
        bpf_map__set_autocreate(bpf_object__find_map_by_name(obj, "calls"), false);
    int err = bpf_object__load(obj);
    if (err) return fail("load the programs", err);
    int attached = 0;
    bpf_object__for_each_program(prog, obj) {
        if (!bpf_program__autoload(prog)) continue;
        if (!bpf_program__attach(prog)) {
            int e = errno;
            char what[160];
            snprintf(what, sizeof(what), "attach %s", bpf_program__name(prog));
            return fail(what, e);
        }
        attached++;
    }
    if (probe) {  // said before the exit, whose teardown of the tracepoints takes ~1.3 s here
        putf("attached %d\n", attached);
        flush_out();
        return 0;
    }
    if (later && (root = read_root()) <= 0) return fail("read the root pid and trace", EINVAL);
    // Followed from here on: every program is attached, so nothing the root does is missed.
    __u32 zero = 0;
    __s32 root_pid = root;
    __u8 one = 1;
    if (bpf_map_update_elem(bpf_object__find_map_fd_by_name(obj, "config"), &zero, &root_pid, BPF_ANY) ||
        bpf_map_update_elem(bpf_object__find_map_fd_by_name(obj, "tracked"), &root_pid, &one, BPF_ANY))
        return fail("set the root", errno);
    struct ring_buffer *rb = ring_buffer__new(bpf_object__find_map_fd_by_name(obj, "events"), on_record, NULL, NULL);
    if (!rb) return fail("open the ring buffer", errno);
    int lost_fd = bpf_object__find_map_fd_by_name(obj, "lost");
    int cpus = libbpf_num_possible_cpus();
    __u64 lost_said = 0;
    putf("{\"type\": \"attached_probes\", \"data\": {\"probes\": %d}}\n", attached);
    if (later) {  // the handshake Capsule waits for; a signal-0 kill of the root gives another
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        putf("{\"type\": \"printf\", \"data\": \"R %llu\\n\"}\n",
             (unsigned long long)now.tv_sec * 1000000000ull + (unsigned long long)now.tv_nsec);
    }
    flush_out();
    if (gate >= 0) {  // following the root, the readiness line written: the command may start
        if (write(gate, "1", 1) != 1) return fail("let the command go", errno);
        close(gate);
    }
    while (!stopping && !failed_write) {
        // The programs never wake the loader (QUIET in recorder.bpf.c): it reads what is there.
        struct timespec nap = {0, READ_EVERY_MS * 1000000L};
        nanosleep(&nap, NULL);
        err = ring_buffer__consume(rb);
        if (err < 0 && err != -EINTR) return fail("read the ring buffer", err);
        __u64 lost = lost_total(lost_fd, cpus);
        if (lost > lost_said) {
            putf("{\"type\": \"lost_events\", \"data\": {\"events\": %llu}}\n", (unsigned long long)(lost - lost_said));
            lost_said = lost;
        }
        flush_out();
    }
    ring_buffer__consume(rb);
    flush_out();
    return failed_write;
}
