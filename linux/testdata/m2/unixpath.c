/* AF_UNIX sockets bound to paths: stream and datagram servers and clients
 * across fork, the names the kernel reports, SCM_RIGHTS over a path
 * connection, a blocking connect on a full backlog, a blocked connect
 * interrupted by a signal, a blocking send to a full receiver, and the
 * errors of bind and connect. Paths are printed relative to the test's
 * directory so the output is the same everywhere. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dir[64];

static struct sockaddr_un addr(const char *name, socklen_t *len) {
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (name[0] == '/' || strchr(name, '/'))
		snprintf(a.sun_path, sizeof a.sun_path, "%s", name);
	else
		snprintf(a.sun_path, sizeof a.sun_path, "%s/%s", dir, name);
	*len = offsetof(struct sockaddr_un, sun_path) + strlen(a.sun_path) + 1;
	return a;
}

/* show prints an address the kernel reported, with the test directory as $D. */
static void show(const char *what, struct sockaddr_un *a, socklen_t len) {
	if (len <= offsetof(struct sockaddr_un, sun_path)) {
		printf("%s: unnamed (len %d)\n", what, (int)len);
		return;
	}
	const char *p = a->sun_path;
	size_t n = strlen(dir);
	if (strncmp(p, dir, n) == 0)
		printf("%s: $D%s (len %d)\n", what, p + n, (int)len - (int)n);
	else
		printf("%s: %s (len %d)\n", what, p, (int)len);
}

static int bindto(int type, const char *name) {
	int s = socket(AF_UNIX, type, 0);
	socklen_t l;
	struct sockaddr_un a = addr(name, &l);
	if (bind(s, (struct sockaddr *)&a, l) < 0) {
		printf("bind %s: %s\n", name, strerror(errno));
		close(s);
		return -1;
	}
	return s;
}

static int connectto(int type, const char *name) {
	int s = socket(AF_UNIX, type, 0);
	socklen_t l;
	struct sockaddr_un a = addr(name, &l);
	if (connect(s, (struct sockaddr *)&a, l) < 0) {
		int e = errno;
		close(s);
		errno = e;
		return -1;
	}
	return s;
}

/* sendfd sends one byte with fd, to the address to (NULL: the peer). */
static void sendfd(int s, int fd, struct sockaddr_un *to, socklen_t tolen) {
	char c = 'F';
	struct iovec iov = {&c, 1};
	char buf[CMSG_SPACE(sizeof(int))];
	memset(buf, 0, sizeof buf);
	struct msghdr m = {.msg_name = to, .msg_namelen = to ? tolen : 0, .msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf, .msg_controllen = sizeof buf};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof fd);
	if (sendmsg(s, &m, 0) != 1) printf("sendmsg: %s\n", strerror(errno));
}

/* recvfd receives one byte with an fd, and the sender's name if from. */
static int recvfd(int s, struct sockaddr_un *from, socklen_t *fromlen) {
	char c;
	struct iovec iov = {&c, 1};
	char buf[CMSG_SPACE(sizeof(int))];
	struct msghdr m = {.msg_name = from, .msg_namelen = from ? *fromlen : 0, .msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf, .msg_controllen = sizeof buf};
	if (recvmsg(s, &m, 0) != 1) return -1;
	if (from) *fromlen = m.msg_namelen;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	if (!cm || cm->cmsg_type != SCM_RIGHTS) return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(cm), sizeof fd);
	return fd;
}

static void msleep(int ms) {
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void stream(void) {
	int srv = bindto(SOCK_STREAM, "s.sock");
	listen(srv, 8);
	struct sockaddr_un a;
	socklen_t l = sizeof a;
	getsockname(srv, (struct sockaddr *)&a, &l);
	show("stream getsockname", &a, l);
	struct stat st;
	if (stat("s.sock", &st) == 0)
		printf("node: socket %d mode %o\n", S_ISSOCK(st.st_mode), st.st_mode & 0777);
	int p[2];
	pipe(p);
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		int c = connectto(SOCK_STREAM, "s.sock");
		if (c < 0) {
			printf("child connect: %s\n", strerror(errno));
			_exit(1);
		}
		struct sockaddr_un pa;
		socklen_t pl = sizeof pa;
		char go;
		read(c, &go, 1); /* after the server's line */
		getpeername(c, (struct sockaddr *)&pa, &pl);
		show("child getpeername", &pa, pl);
		fflush(stdout);
		write(c, "hello", 5);
		sendfd(c, p[1], NULL, 0);
		_exit(0);
	}
	close(p[1]);
	struct sockaddr_un ca;
	socklen_t cl = sizeof ca;
	int c = accept(srv, (struct sockaddr *)&ca, &cl);
	show("accept peer", &ca, cl);
	write(c, "g", 1);
	char buf[16] = {0};
	int n = read(c, buf, 5);
	printf("server read %d: %s\n", n, buf);
	int fd = recvfd(c, NULL, NULL);
	write(fd, "via fd\n", 7);
	close(fd);
	n = read(p[0], buf, sizeof buf - 1);
	buf[n > 0 ? n : 0] = 0;
	printf("pipe got: %s", buf);
	waitpid(pid, NULL, 0);

	/* a bound client: its name reaches the server */
	int bc = bindto(SOCK_STREAM, "client.sock");
	socklen_t sl;
	struct sockaddr_un sa = addr("s.sock", &sl);
	connect(bc, (struct sockaddr *)&sa, sl);
	cl = sizeof ca;
	int c2 = accept(srv, (struct sockaddr *)&ca, &cl);
	show("accept bound peer", &ca, cl);
	/* a buffer too small for the name: cut, with the full length */
	l = 12;
	memset(&a, 0, sizeof a);
	getpeername(c2, (struct sockaddr *)&a, &l);
	printf("short getpeername: len %d starts %.10s\n", (int)l - (int)strlen(dir), a.sun_path);
	close(c2);
	close(bc);
	close(c);

	/* errors */
	if (bindto(SOCK_STREAM, "s.sock") < 0) {}
	int again = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un x = addr("other.sock", &sl);
	bind(again, (struct sockaddr *)&x, sl);
	x = addr("third.sock", &sl);
	printf("second bind: %s; third.sock exists: %d\n", bind(again, (struct sockaddr *)&x, sl) < 0 ? strerror(errno) : "ok",
	       access("third.sock", F_OK) == 0);
	close(again);
	close(open("plain", O_CREAT | O_WRONLY, 0644));
	printf("connect plain file: %s\n", connectto(SOCK_STREAM, "plain") < 0 ? strerror(errno) : "ok");
	printf("connect missing: %s\n", connectto(SOCK_STREAM, "missing") < 0 ? strerror(errno) : "ok");
	printf("connect other.sock (not listening): %s\n", connectto(SOCK_STREAM, "other.sock") < 0 ? strerror(errno) : "ok");
	printf("dgram connect to stream: %s\n", connectto(SOCK_DGRAM, "s.sock") < 0 ? strerror(errno) : "ok");
	printf("bind missing dir: %s\n", bindto(SOCK_STREAM, "nodir/x.sock") < 0 ? "refused" : "ok");

	/* unlink: the binding is orphaned; the name can be bound again */
	unlink("s.sock");
	printf("connect after unlink: %s\n", connectto(SOCK_STREAM, "s.sock") < 0 ? strerror(errno) : "ok");
	int srv2 = bindto(SOCK_STREAM, "s.sock");
	listen(srv2, 1);
	int c3 = connectto(SOCK_STREAM, "s.sock");
	printf("rebind and connect: %s\n", c3 >= 0 ? "ok" : strerror(errno));
	close(c3);
	close(srv2);
	close(srv);
	printf("connect after close: %s\n", connectto(SOCK_STREAM, "s.sock") < 0 ? strerror(errno) : "ok");
}

static void onalarm(int sig) { (void)sig; }

static void backlog(void) {
	int srv = bindto(SOCK_STREAM, "b.sock");
	listen(srv, 0); /* one connection fits; the next waits */
	int first = connectto(SOCK_STREAM, "b.sock");
	printf("first connect: %s\n", first >= 0 ? "ok" : strerror(errno));
	int nb = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	socklen_t l;
	struct sockaddr_un a = addr("b.sock", &l);
	printf("non-blocking connect on a full backlog: %s\n", connect(nb, (struct sockaddr *)&a, l) < 0 ? strerror(errno) : "ok");
	close(nb);

	struct sigaction sa = {.sa_handler = onalarm};
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval it = {.it_value = {0, 200000}};
	setitimer(ITIMER_REAL, &it, NULL);
	int blk = socket(AF_UNIX, SOCK_STREAM, 0);
	printf("blocked connect, then SIGALRM: %s\n", connect(blk, (struct sockaddr *)&a, l) < 0 ? strerror(errno) : "ok");
	close(blk);

	pid_t pid = fork();
	if (pid == 0) {
		int c = connectto(SOCK_STREAM, "b.sock"); /* waits for the accept */
		printf("child: blocking connect %s\n", c >= 0 ? "ok" : strerror(errno));
		fflush(stdout);
		_exit(0);
	}
	msleep(300);
	printf("parent: accepting\n");
	fflush(stdout);
	close(accept(srv, NULL, NULL));
	close(accept(srv, NULL, NULL));
	waitpid(pid, NULL, 0);
	close(first);
	close(srv);
}

/* recvshow receives a datagram and prints it and its sender's name. */
static void recvshow(int s, const char *who, struct sockaddr_un *from, socklen_t *fl) {
	char buf[16] = {0};
	*fl = sizeof *from;
	int n = recvfrom(s, buf, sizeof buf - 1, 0, (struct sockaddr *)from, fl);
	printf("%s got %d: %s\n", who, n, buf);
	char what[32];
	snprintf(what, sizeof what, "%s: from", who);
	show(what, from, *fl);
}

static void dgram(void) {
	int srv = bindto(SOCK_DGRAM, "d.sock");
	pid_t pid = fork();
	if (pid == 0) {
		int c = bindto(SOCK_DGRAM, "c.sock");
		socklen_t l;
		struct sockaddr_un a = addr("d.sock", &l);
		sendto(c, "ping", 4, 0, (struct sockaddr *)&a, l);
		struct sockaddr_un from;
		socklen_t fl;
		recvshow(c, "client", &from, &fl);
		/* sendmsg with a name and SCM_RIGHTS */
		int p[2];
		pipe(p);
		sendfd(c, p[1], &a, l);
		close(p[1]);
		char buf[16];
		int n = read(p[0], buf, sizeof buf - 1);
		buf[n > 0 ? n : 0] = 0;
		printf("client pipe: %s", buf);
		fflush(stdout);
		_exit(0);
	}
	struct sockaddr_un from;
	socklen_t fl;
	recvshow(srv, "server", &from, &fl);
	fflush(stdout);
	sendto(srv, "pong", 4, 0, (struct sockaddr *)&from, fl);
	/* the fd over SCM_RIGHTS, and the sender's name by recvmsg */
	struct sockaddr_un mfrom;
	socklen_t mlen = sizeof mfrom;
	int fd = recvfd(srv, &mfrom, &mlen);
	if (fd >= 0) {
		show("recvmsg from", &mfrom, mlen);
		write(fd, "dgram fd\n", 9);
		close(fd);
	}
	waitpid(pid, NULL, 0);

	/* a full receiver: non-blocking sends fail, a blocking one waits */
	int full = bindto(SOCK_DGRAM, "full.sock");
	int snd = socket(AF_UNIX, SOCK_DGRAM, 0);
	socklen_t l;
	struct sockaddr_un a = addr("full.sock", &l);
	char big[2048] = {0};
	int sent = 0;
	while (sendto(snd, big, sizeof big, MSG_DONTWAIT, (struct sockaddr *)&a, l) == sizeof big) sent++;
	printf("filled after some sends: %s (%s)\n", sent > 0 ? "yes" : "no", strerror(errno));
	pid = fork();
	if (pid == 0) {
		int r = sendto(snd, "last", 4, 0, (struct sockaddr *)&a, l);
		printf("child: blocking send %d\n", r);
		fflush(stdout);
		_exit(0);
	}
	msleep(300);
	printf("parent: draining\n");
	fflush(stdout);
	int got = recv(full, big, sizeof big, 0) > 0; /* room for one */
	waitpid(pid, NULL, 0);
	int n;
	while ((n = recv(full, big, sizeof big, MSG_DONTWAIT)) > 0) {
		got++;
		if (n == 4) printf("last: %.4s\n", big);
	}
	printf("received all: %s\n", got == sent + 1 ? "yes" : "no");
	close(snd);
	close(full);
	close(srv);
}

static void relative(void) {
	int s = bindto(SOCK_STREAM, "./rel.sock");
	struct sockaddr_un a;
	socklen_t l = sizeof a;
	getsockname(s, (struct sockaddr *)&a, &l);
	show("relative getsockname", &a, l);
	close(s);
}

int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	umask(022);
	snprintf(dir, sizeof dir, "/tmp/unixpath.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	chdir(dir);
	stream();
	backlog();
	dgram();
	relative();
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	system(cmd);
	return 0;
}
