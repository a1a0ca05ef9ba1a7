/* Fixture program: the leader exits while a thread is blocked in a syscall; the thread's call never returns. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static void *run(void *arg) { (void)arg; pause(); return NULL; }

int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, run, NULL);
    usleep(20000);
    exit(2);
}
