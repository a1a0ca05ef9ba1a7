/* The signal work of tests/ebpf/test_parity.py, one case an argument:
 *   wait FILE  handles SIGUSR1: FILE is made once the handler is in place, then it waits for the
 *              signal and exits 7 (a SIGTERM that comes instead kills it)
 *   segv       a fault: SIGSEGV (SEGV_MAPERR), from the kernel
 *   self       signals it sends itself and handles: raise (SI_TKILL), sigqueue (SI_QUEUE)
 *   alarm      dies of SIGALRM from its own timer (SI_KERNEL: the kernel sends it as the timer fires)
 *   ignore     sends itself a SIGUSR2 it ignores (SIG_IGN), then exits 0
 */
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static volatile sig_atomic_t got;

static void on_signal(int sig) { (void)sig; got = 1; }

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "wait") && argc > 2) {
        sigset_t usr1, others;
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        sigprocmask(SIG_BLOCK, &usr1, &others);  // one sent before the wait stays pending until it
        signal(SIGUSR1, on_signal);
        close(open(argv[2], O_WRONLY | O_CREAT, 0600));
        while (!got) sigsuspend(&others);
        return 7;
    }
    if (!strcmp(what, "segv")) {
        volatile int *volatile nowhere = 0;  // the compiler cannot see it is NULL (and trap instead)
        *nowhere = 1;
        return 1;
    }
    if (!strcmp(what, "self")) {
        signal(SIGUSR1, on_signal);
        signal(SIGUSR2, on_signal);
        raise(SIGUSR1);
        union sigval value = {0};
        sigqueue(getpid(), SIGUSR2, value);
        return 0;
    }
    if (!strcmp(what, "alarm")) {
        struct itimerval soon = {.it_value = {0, 10000}};
        setitimer(ITIMER_REAL, &soon, 0);
        for (;;) pause();
    }
    if (!strcmp(what, "ignore")) {
        signal(SIGUSR2, SIG_IGN);
        kill(getpid(), SIGUSR2);
        return 0;
    }
    return 2;
}
