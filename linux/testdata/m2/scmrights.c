/* SCM_RIGHTS over a socketpair: a pipe's write end and an open file pass to a child. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void sendfds(int s, int *fds, int n) {
	char c = 'x';
	struct iovec iov = {&c, 1};
	char buf[CMSG_SPACE(sizeof(int) * 4)];
	memset(buf, 0, sizeof buf);
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf, .msg_controllen = CMSG_SPACE(sizeof(int) * n)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int) * n);
	memcpy(CMSG_DATA(cm), fds, sizeof(int) * n);
	sendmsg(s, &m, 0);
}

static int recvfds(int s, int *fds) {
	char c;
	struct iovec iov = {&c, 1};
	char buf[CMSG_SPACE(sizeof(int) * 4)];
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf, .msg_controllen = sizeof buf};
	if (recvmsg(s, &m, 0) != 1) return -1;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	if (!cm || cm->cmsg_type != SCM_RIGHTS) return -1;
	int n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
	memcpy(fds, CMSG_DATA(cm), sizeof(int) * n);
	return n;
}

int main(void) {
	int sv[2], p[2];
	socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
	pipe(p);
	pid_t pid = fork();
	if (pid == 0) {
		close(sv[0]);
		close(p[1]);
		int fds[4];
		int n = recvfds(sv[1], fds);
		char line[128] = {0};
		int r = read(fds[1], line, sizeof line - 1);
		char msg[200];
		int l = snprintf(msg, sizeof msg, "child got %d fds; file starts: %.3s\n", n, r >= 4 ? line + 1 : "");
		write(fds[0], msg, l);
		_exit(0);
	}
	close(sv[1]);
	int f = open("/proc/self/exe", O_RDONLY);
	int fds[2] = {p[1], f};
	sendfds(sv[0], fds, 2);
	close(p[1]);
	char buf[256] = {0};
	int n = read(p[0], buf, sizeof buf - 1);
	waitpid(pid, NULL, 0);
	printf("%.*s", n, buf);
	return 0;
}
