/* Fixture program: a non-leader thread calls execve, so strace shows the pid change / superseded leader. */
#include <pthread.h>
#include <unistd.h>

static void *run(void *arg) {
    (void)arg;
    execl("/bin/echo", "echo", "from-thread", (char *)NULL);
    return NULL;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, run, NULL);
    pthread_join(t, NULL);
    return 1;
}
