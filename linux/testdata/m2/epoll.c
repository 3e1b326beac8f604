/* epoll over pipes, an eventfd, a timerfd and a signalfd. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

int main(void) {
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int p[2];
	pipe(p);
	int ev = eventfd(0, EFD_NONBLOCK);
	int tf = timerfd_create(CLOCK_MONOTONIC, 0);
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	sigprocmask(SIG_BLOCK, &s, NULL);
	int sf = signalfd(-1, &s, 0);
	int fds[] = {p[0], ev, tf, sf};
	const char *names[] = {"pipe", "eventfd", "timerfd", "signalfd"};
	for (int i = 0; i < 4; i++) {
		struct epoll_event e = {.events = EPOLLIN, .data.u32 = i};
		epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &e);
	}
	struct epoll_event out[4];
	printf("idle: %d ready\n", epoll_wait(ep, out, 4, 10));
	write(p[1], "x", 1);
	uint64_t one = 1;
	write(ev, &one, 8);
	struct itimerspec its = {.it_value = {0, 5000000}};
	timerfd_settime(tf, 0, &its, NULL);
	kill(getpid(), SIGUSR1);
	int seen = 0;
	while (seen != 15) {
		int n = epoll_wait(ep, out, 4, 1000);
		if (n <= 0) break;
		for (int i = 0; i < n; i++) {
			int k = out[i].data.u32;
			if (seen & (1 << k)) continue;
			seen |= 1 << k;
			char buf[sizeof(struct signalfd_siginfo)];
			read(fds[k], buf, k == 3 ? sizeof buf : k == 0 ? 1 : 8);
		}
	}
	for (int k = 0; k < 4; k++) printf("%s: %s\n", names[k], seen & (1 << k) ? "ready" : "never");
	return 0;
}
