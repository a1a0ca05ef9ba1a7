/* Golden session program (a copy of tests/data/traces/procs.c): fork, vfork, clone3, threads, signals, crashes, orphans. */
#define _GNU_SOURCE
#include <linux/sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void *worker(void *arg) { (void)arg; usleep(20000); return NULL; }

static void on_usr1(int sig) { (void)sig; }

int main(void) {
    pid_t p;
    /* fork + exec */
    if ((p = fork()) == 0) { execl("/bin/true", "true", "forked", (char *)NULL); _exit(127); }
    waitpid(p, NULL, 0);
    /* vfork + exec */
    if ((p = vfork()) == 0) { execl("/bin/true", "true", "vforked", (char *)NULL); _exit(127); }
    waitpid(p, NULL, 0);
    /* raw clone3 without CLONE_THREAD: a process */
    struct clone_args ca;
    memset(&ca, 0, sizeof ca);
    ca.exit_signal = SIGCHLD;
    p = (pid_t)syscall(SYS_clone3, &ca, sizeof ca);
    if (p == 0) { _exit(3); }
    waitpid(p, NULL, 0);
    /* two threads (glibc pthread_create uses clone3 with CLONE_THREAD) */
    pthread_t t1, t2;
    pthread_create(&t1, NULL, worker, NULL);
    pthread_create(&t2, NULL, worker, NULL);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    /* a child that segfaults, one that aborts, one killed by SIGKILL, one signalled with SIGUSR1 */
    if ((p = fork()) == 0) { volatile int *z = NULL; *z = 1; _exit(0); }
    waitpid(p, NULL, 0);
    if ((p = fork()) == 0) { abort(); }
    waitpid(p, NULL, 0);
    if ((p = fork()) == 0) { pause(); _exit(0); }
    usleep(20000); kill(p, SIGKILL); waitpid(p, NULL, 0);
    if ((p = fork()) == 0) { signal(SIGUSR1, on_usr1); pause(); _exit(4); }
    usleep(20000); kill(p, SIGUSR1); waitpid(p, NULL, 0);
    /* an orphan: the child forks a grandchild and exits at once; the grandchild outlives it */
    if ((p = fork()) == 0) {
        if (fork() == 0) { usleep(50000); execl("/bin/true", "true", "orphan", (char *)NULL); _exit(127); }
        _exit(0);
    }
    waitpid(p, NULL, 0);
    usleep(100000);
    return 5;
}
