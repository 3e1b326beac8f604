/* pthread create, join, cancel (deferred, at a cancellation point), cleanup handlers. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static int cleaned;
static void cleanup(void *arg) { (void)arg; cleaned++; }

static void *worker(void *arg) {
	long n = (long)arg, s = 0;
	for (long i = 0; i <= n * 1000; i++) s += i;
	return (void *)s;
}

static void *sleeper(void *arg) {
	(void)arg;
	pthread_cleanup_push(cleanup, NULL);
	for (;;) pause(); /* a cancellation point */
	pthread_cleanup_pop(0);
	return NULL;
}

int main(void) {
	pthread_t t[8];
	for (long i = 0; i < 8; i++) pthread_create(&t[i], NULL, worker, (void *)i);
	for (int i = 0; i < 8; i++) {
		void *r;
		pthread_join(t[i], &r);
		printf("worker %d: %ld\n", i, (long)r);
	}
	pthread_t s;
	pthread_create(&s, NULL, sleeper, NULL);
	usleep(20000);
	pthread_cancel(s);
	void *r;
	pthread_join(s, &r);
	printf("cancelled: %d, cleanup ran %d\n", r == PTHREAD_CANCELED, cleaned);
	return 0;
}
