/* A robust, process-shared mutex whose owner dies: the next locker gets EOWNERDEAD. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static void *die_holding(void *m) {
	pthread_mutex_lock(m);
	return NULL; /* exits holding it */
}

int main(void) {
	pthread_mutex_t *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	pthread_mutex_init(m, &a);

	/* a thread dies holding the lock */
	pthread_t t;
	pthread_create(&t, NULL, die_holding, m);
	pthread_join(t, NULL);
	int r = pthread_mutex_lock(m);
	printf("after thread death: %s\n", r == EOWNERDEAD ? "EOWNERDEAD" : "other");
	pthread_mutex_consistent(m);
	pthread_mutex_unlock(m);

	/* a child process dies holding the lock */
	pid_t pid = fork();
	if (pid == 0) {
		pthread_mutex_lock(m);
		_exit(0);
	}
	waitpid(pid, NULL, 0);
	r = pthread_mutex_lock(m);
	printf("after process death: %s\n", r == EOWNERDEAD ? "EOWNERDEAD" : "other");
	pthread_mutex_consistent(m);
	pthread_mutex_unlock(m);
	r = pthread_mutex_lock(m);
	printf("then: %d\n", r);
	return 0;
}
