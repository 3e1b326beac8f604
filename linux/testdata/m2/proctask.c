/* /proc/<pid>/task as a threaded program sees it: one directory per
 * thread with its own stat, status and comm (named threads included), the
 * unlisted /proc/<tid>, and /proc/thread-self. Only facts independent of
 * the actual ids are printed, so the output is the same everywhere. */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define N 3

static pthread_barrier_t ready, done;
static pid_t tids[N];

static void *worker(void *arg) {
	int i = (int)(long)arg;
	tids[i] = syscall(SYS_gettid);
	char name[16];
	snprintf(name, sizeof name, "worker-%d", i);
	if (i != 1) prctl(PR_SET_NAME, name); /* worker 1 keeps the process's name */
	pthread_barrier_wait(&ready);
	pthread_barrier_wait(&done);
	return NULL;
}

static void slurp(const char *path, char *buf, size_t n) {
	buf[0] = 0;
	FILE *f = fopen(path, "r");
	if (!f) return;
	size_t r = fread(buf, 1, n - 1, f);
	buf[r] = 0;
	fclose(f);
}

/* field returns the value of "Key:" in a status text. */
static long field(const char *status, const char *key) {
	const char *p = strstr(status, key);
	return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

static int cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

int main(void) {
	pthread_barrier_init(&ready, NULL, N + 1);
	pthread_barrier_init(&done, NULL, N + 1);
	pthread_t th[N];
	for (long i = 0; i < N; i++) pthread_create(&th[i], NULL, worker, (void *)i);
	pthread_barrier_wait(&ready);

	pid_t pid = getpid();
	int listed[16], n = 0;
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (e->d_name[0] != '.' && n < 16) listed[n++] = atoi(e->d_name);
	}
	if (d) closedir(d);
	qsort(listed, n, sizeof(int), cmp);
	int want[N + 1] = {pid, tids[0], tids[1], tids[2]};
	qsort(want, N + 1, sizeof(int), cmp);
	printf("task entries: %d, the threads' tids: %s, sorted: yes\n", n,
	       n == N + 1 && memcmp(listed, want, sizeof want) == 0 ? "yes" : "no");

	char path[128], buf[4096];
	for (int i = -1; i < N; i++) {
		pid_t tid = i < 0 ? pid : tids[i];
		snprintf(path, sizeof path, "/proc/%d/task/%d/comm", pid, tid);
		slurp(path, buf, sizeof buf);
		buf[strcspn(buf, "\n")] = 0;
		char comm[64];
		snprintf(comm, sizeof comm, "%.63s", buf);
		snprintf(path, sizeof path, "/proc/%d/task/%d/stat", pid, tid);
		slurp(path, buf, sizeof buf);
		int sid = atoi(buf);
		char *lp = strchr(buf, '('), *rp = strrchr(buf, ')');
		int statComm = lp && rp && (int)(rp - lp - 1) == (int)strlen(comm) && strncmp(lp + 1, comm, rp - lp - 1) == 0;
		snprintf(path, sizeof path, "/proc/%d/task/%d/status", pid, tid);
		slurp(path, buf, sizeof buf);
		char sname[64] = "";
		sscanf(strstr(buf, "Name:") ? strstr(buf, "Name:") + 5 : "", "%63s", sname);
		printf("%s: comm %s; stat id %s, comm %s; status Pid %s Tgid %s Name %s\n", i < 0 ? "main" : "thread", comm,
		       sid == tid ? "ok" : "WRONG", statComm ? "ok" : "WRONG", field(buf, "\nPid:") == tid ? "ok" : "WRONG",
		       field(buf, "\nTgid:") == pid ? "ok" : "WRONG", strcmp(sname, comm) == 0 ? "ok" : "WRONG");
	}
	/* The thread's own directory at /proc/<tid>, not listed in /proc. */
	snprintf(path, sizeof path, "/proc/%d/status", tids[0]);
	slurp(path, buf, sizeof buf);
	printf("/proc/<tid>/status: Pid %s Tgid %s\n", field(buf, "\nPid:") == tids[0] ? "ok" : "WRONG",
	       field(buf, "\nTgid:") == pid ? "ok" : "WRONG");
	int inroot = 0;
	d = opendir("/proc");
	while (d && (e = readdir(d)))
		if (atoi(e->d_name) == tids[0]) inroot = 1;
	if (d) closedir(d);
	printf("/proc lists the thread: %s\n", inroot ? "yes" : "no");
	slurp("/proc/thread-self/stat", buf, sizeof buf);
	printf("/proc/thread-self/stat is the main thread's: %s\n", atoi(buf) == pid ? "yes" : "no");
	slurp("/proc/self/status", buf, sizeof buf);
	printf("process Threads: %ld\n", field(buf, "\nThreads:"));

	pthread_barrier_wait(&done);
	for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
	/* The threads' directories go once they are gone (a moment after
	 * the join: the kernel clears the tid before the thread is reaped). */
	for (int tries = 0; tries < 200; tries++) {
		d = opendir("/proc/self/task");
		n = 0;
		while (d && (e = readdir(d)))
			if (e->d_name[0] != '.') n++;
		if (d) closedir(d);
		if (n == 1) break;
		usleep(10000);
	}
	printf("after join: %d task entries\n", n);
	return 0;
}
