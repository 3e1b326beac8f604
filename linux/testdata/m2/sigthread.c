/* Per-thread signals: pthread_kill reaches the named thread; a process-directed signal
   reaches the one thread that does not block it; sigwait in a thread. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>

static __thread int mine;
static volatile int who[4];
static pthread_t main_t;

static void handler(int sig) { (void)sig; mine++; }

static void *t1(void *arg) {
	long i = (long)arg;
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &s, NULL);
	while (!mine) pause();
	who[i] = mine;
	return NULL;
}

static void *waiter(void *arg) {
	(void)arg;
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	int sig;
	sigwait(&s, &sig);
	printf("sigwait got %s\n", sig == SIGUSR2 ? "SIGUSR2" : "other");
	return NULL;
}

int main(void) {
	signal(SIGUSR1, handler);
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &s, NULL); /* inherited by every thread */
	main_t = pthread_self();
	pthread_t t[2], w;
	for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, t1, (void *)i);
	pthread_create(&w, NULL, waiter, NULL);
	usleep(20000);
	pthread_kill(t[1], SIGUSR1);
	usleep(20000);
	printf("after pthread_kill(t1): t0=%d t1=%d\n", who[0], who[1]);
	pthread_kill(t[0], SIGUSR1);
	pthread_join(t[0], NULL);
	pthread_join(t[1], NULL);
	printf("both: t0=%d t1=%d main=%d\n", who[0], who[1], mine);
	kill(getpid(), SIGUSR2); /* only the sigwait thread takes it */
	pthread_join(w, NULL);
	/* tgkill to ourselves */
	syscall(SYS_tgkill, getpid(), (int)syscall(SYS_gettid), SIGUSR1);
	printf("main after tgkill: %d\n", mine);
	return 0;
}
