package main

import (
	"strings"
	"testing"
	"time"
)

// forkExitC makes processes that fork without pause while another of
// their threads calls exit_group after a varying spin. Linux skips the
// tracer's fork event when the forking thread is killed between making
// the child and reporting it; every process inherits the stdout pipe.
const forkExitC = `#include <pthread.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void *ender(void *a) {
	for (volatile long i = 0; i < (long)a; i++)
		;
	_exit(0);
	return 0;
}

int main(int argc, char **argv) {
	int rounds = atoi(argv[1]);
	for (int i = 0; i < rounds; i++) {
		pid_t p = fork();
		if (p == 0) {
			pthread_t t;
			pthread_create(&t, 0, ender, (void *)(long)(20000 + (i * 7919) % 200000));
			for (;;)
				if (fork() == 0)
					_exit(0);
		}
		waitpid(p, 0, 0);
	}
	return 0;
}
`

// TestForkerKilled: a child made by a thread killed before it could
// report the fork (the tracer never sees that fork event) does not stay
// stopped for ever: here every process holds the write end of a pipe,
// and the reader sees its end.
func TestForkerKilled(t *testing.T) {
	img := imageWithC(t, "forkexit", forkExitC)
	script := "/bin/forkexit 400 | cat >/dev/null; echo pipe-ended-$((6*7)); poweroff -f\n"
	r := boot(t, script, 90*time.Second, "ubd0="+img, "init=/bin/sh", "con0=fd:0,fd:1", "con=null")
	if !strings.Contains(r.stdout, "\npipe-ended-42") {
		t.Errorf("the pipe never ended:\n%s\nstderr:\n%s", lastLines(r.stdout, 5), lastLines(r.stderr, 10))
	}
}
