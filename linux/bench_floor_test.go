package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/umltools/umltools/internal/kernel"
)

// The floor of the design: a program run natively with the syscalls our
// engine serves (kernel.Notified) sent to a seccomp user-notification
// supervisor that lets each one run at once (SECCOMP_USER_NOTIF_FLAG_CONTINUE,
// synchronous wake-ups). What it adds to a native run is what the traps
// alone cost on this host, before the engine does any work; no engine
// built on user notification can do better.

// benchFloorSrc is the supervisor's C source with the syscall numbers
// filled in: notifyfloor CMD ARGS... runs CMD under it and exits with
// its status.
func benchFloorSrc() string {
	var nrs []string
	for _, nr := range kernel.Notified() {
		nrs = append(nrs, fmt.Sprint(nr))
	}
	return strings.Replace(benchFloorC, "@NRS@", strings.Join(nrs, ", "), 1)
}

const benchFloorC = `
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP 1
#endif
static const int nrs[] = { @NRS@ };
#define NNR ((int)(sizeof nrs / sizeof nrs[0]))

int main(int argc, char **argv) {
	struct sock_filter f[8 + NNR];
	int k = 0, st;
	if (argc < 2) {
		fprintf(stderr, "usage: notifyfloor CMD [ARG...]\n");
		return 2;
	}
	f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
	f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
	f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
	for (int i = 0; i < NNR; i++)
		f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nrs[i], NNR - i, 0);
	f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF);
	struct sock_fprog prog = { (unsigned short)k, f };
	/* The child installs the filter and says its listener's number;
	   the parent copies it (pidfd_getfd) before the child goes on. Only
	   syscalls the filter lets through run in between. */
	int up[2], down[2];
	if (pipe2(up, O_CLOEXEC) || pipe2(down, O_CLOEXEC)) {
		perror("notifyfloor: pipe");
		return 1;
	}
	pid_t pid = fork();
	if (pid == 0) {
		int l;
		char c;
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
		    (l = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog)) < 0) {
			perror("notifyfloor: seccomp");
			_exit(1);
		}
		if (write(up[1], &l, sizeof l) != sizeof l || read(down[0], &c, 1) != 1)
			_exit(1);
		close(l);
		execvp(argv[1], argv + 1);
		perror(argv[1]);
		_exit(127);
	}
	int num, l = -1, pidfd = -1;
	if (read(up[0], &num, sizeof num) == sizeof num && (pidfd = syscall(SYS_pidfd_open, pid, 0)) >= 0)
		l = syscall(SYS_pidfd_getfd, pidfd, num, 0);
	if (l < 0) {
		perror("notifyfloor: the child's listener");
		return 1;
	}
	if (write(down[1], "g", 1) != 1)
		return 1;
	if (ioctl(l, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP))
		perror("notifyfloor: synchronous wake-ups");
	for (;;) {
		struct seccomp_notif req;
		memset(&req, 0, sizeof req);
		if (ioctl(l, SECCOMP_IOCTL_NOTIF_RECV, &req)) {
			struct pollfd p = { l, POLLIN, 0 };
			if (errno == EINTR || (poll(&p, 1, 0) >= 0 && !(p.revents & POLLHUP)))
				continue;
			break; /* no process uses the filter any more */
		}
		struct seccomp_notif_resp r = { .id = req.id, .flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE };
		ioctl(l, SECCOMP_IOCTL_NOTIF_SEND, &r);
	}
	if (waitpid(pid, &st, 0) < 0)
		return 1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
`

// benchFloorTable logs the floor's BENCH lines beside the ext4 table's
// tar rows (2 and 3 of benchExt4Rows): how far the traps alone take the
// native run, and what a target of 2x native leaves for the engine's own
// work. why says why there is no floor.
func benchFloorTable(t *testing.T, c benchCols, floor []float64, why string) {
	t.Helper()
	switch {
	case c.native == nil:
		why = "native n/a: " + c.noNative
	case floor == nil && why == "":
		why = "no FLOOR lines in the native run's output"
	}
	if why != "" {
		t.Logf("BENCH: floor n/a: %s", why)
		return
	}
	t.Logf("BENCH: floor: the native run with the syscalls our engine serves trapped (seccomp user notification) and let through at once by a C supervisor")
	for i, row := range benchFloorRows {
		nat, ours := c.native[2+i], c.ours[2+i]
		line := fmt.Sprintf("BENCH: %-26s %-9s %.2fx native; ours %.2fx the floor", row.name, fmt.Sprintf("%.2f s", floor[i]), floor[i]/nat, ours/floor[i])
		if i == 0 {
			line += fmt.Sprintf("; at 2x native the engine's own work may take %.0f ms", (2*nat-floor[i])*1e3)
		}
		t.Log(line)
	}
}
