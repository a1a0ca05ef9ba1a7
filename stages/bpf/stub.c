// SPDX-License-Identifier: GPL-2.0
// The command's stub under the eBPF recorder: `capsule-ebpf-stub FD PATH ARGV...` waits until FD (a
// pipe) is closed, then execv(PATH, ARGV); if that fails, one line and exit 1, as strace does.
// Linked statically: it opens no file before the exec (a dynamic loader's opens would be recorded at
// trace level file, since the recorder may start following the stub while it loads).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s FD PATH ARGV...\n", argv[0]);
        return 2;
    }
    int gate = atoi(argv[1]);
    char byte;
    while (read(gate, &byte, 1) < 0 && errno == EINTR) {
    }
    close(gate);
    execv(argv[2], argv + 3);
    fprintf(stderr, "capsule: exec: %s\n", strerror(errno));
    return 1;
}
