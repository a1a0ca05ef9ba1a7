/* Golden session program: four threads; one forks and execs a child, then a non-leader thread execs. */
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

static void *work(void *arg) { usleep(10000 * (1 + (int)(long)arg)); return NULL; }

static void *spawn(void *arg) {
    (void)arg;
    pid_t p = fork();
    if (p == 0) { execl("/bin/true", "true", "from-thread", (char *)NULL); _exit(127); }
    waitpid(p, NULL, 0);
    return NULL;
}

static void *replace(void *arg) {
    (void)arg;
    execl("/bin/echo", "echo", "exec-from-thread", (char *)NULL);
    return NULL;
}

int main(void) {
    pthread_t t[4];
    for (long i = 0; i < 3; i++) pthread_create(&t[i], NULL, work, (void *)i);
    pthread_create(&t[3], NULL, spawn, NULL);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    /* The thread's execve replaces the whole process: strace reports the leader superseded. */
    pthread_t r;
    pthread_create(&r, NULL, replace, NULL);
    pthread_join(r, NULL);
    return 1;
}
