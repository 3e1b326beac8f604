/* exec (of /proc/self/exe) from a thread that is not the group leader: the new image gets the leader's pid. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


static void *execer(void *arg) {
	(void)arg;
	char pid[32];
	snprintf(pid, sizeof pid, "%d", (int)getpid());
	execl("/proc/self/exe", "execthread", "child", pid, (char *)NULL);
	perror("execl");
	exit(1);
}

static void *idle(void *arg) { (void)arg; for (;;) pause(); }

int main(int argc, char **argv) {
	if (argc == 3 && strcmp(argv[1], "child") == 0) {
		printf("exec'd image: same pid %s\n", atoi(argv[2]) == getpid() ? "yes" : "no");
		return 0;
	}
	pthread_t a, b;
	pthread_create(&a, NULL, idle, NULL);
	pthread_create(&b, NULL, execer, NULL);
	pthread_join(b, NULL);
	return 1;
}
