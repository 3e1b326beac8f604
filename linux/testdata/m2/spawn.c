/* vfork + exec, posix_spawn, and the exit statuses and pids they give. */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
	if (argc == 2) return atoi(argv[1]);
	volatile int shared = 0;
	pid_t p = vfork();
	if (p == 0) {
		shared = 1; /* vfork shares memory until exec */
		execl("/proc/self/exe", "spawn", "3", (char *)NULL);
		_exit(127);
	}
	int st;
	waitpid(p, &st, 0);
	printf("vfork: shared=%d exit=%d\n", shared, WEXITSTATUS(st));

	char *args[] = {"spawn", "5", NULL};
	pid_t q;
	int r = posix_spawn(&q, "/proc/self/exe", NULL, NULL, args, environ);
	waitpid(q, &st, 0);
	printf("posix_spawn: r=%d exit=%d\n", r, WEXITSTATUS(st));

	char *bad[] = {"/nonexistent", NULL};
	r = posix_spawn(&q, "/nonexistent", NULL, NULL, bad, environ);
	if (r == 0) {
		waitpid(q, &st, 0);
		printf("posix_spawn missing: exit=%d\n", WEXITSTATUS(st));
	} else
		printf("posix_spawn missing: %s\n", strerror(r));

	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", 1, 0);
	char *sh[] = {"/bin/sh", "-c", "echo hidden; exit 4", NULL};
	r = posix_spawn(&q, "/bin/sh", &fa, NULL, sh, environ);
	waitpid(q, &st, 0);
	printf("file actions: r=%d exit=%d\n", r, WEXITSTATUS(st));
	return 0;
}
