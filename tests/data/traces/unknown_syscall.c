/* Fixture program: an unknown syscall number, which strace cannot name. */
#include <sys/syscall.h>
#include <unistd.h>

int main(void) { syscall(999, 1, 2); return 0; }
