package main

import (
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// TestFifo: named pipes in the guest's filesystems behave as Linux's: a
// blocking open waits for its peer (other guest processes go on
// meanwhile), data passes, EOF comes when the writer closes, on tmpfs and
// on the ext4 root, and a signal ends an open blocked for ever.
func TestFifo(t *testing.T) {
	img := testutil.DefaultImage(t)
	script := strings.Join([]string{
		"mount -t tmpfs tmpfs /tmp",
		"mkfifo /tmp/f /f",
		// A reader blocks in open until the writer comes; a second
		// process runs meanwhile.
		"(cat /tmp/f > /tmp/got; echo reader-$((2+2))) &",
		"sleep 0.3; echo meanwhile-$((1+1))",
		"echo through-the-fifo > /tmp/f; wait",
		"cat /tmp/got",
		// A FIFO on the ext4 root, the writer first this time.
		"(echo on-ext4 > /f) & sleep 0.2; cat /f; wait",
		// A signal ends an open blocked for ever.
		"timeout -s INT 1 cat /tmp/f; echo timeout-rc=$((0+$?))",
		"ls -l /f | cut -c1",
		"poweroff -f",
	}, "\n") + "\n"
	r := boot(t, script, time.Minute, "ubd0="+img, "init=/bin/sh", "con0=fd:0,fd:1", "con=null")
	out := r.stdout
	for _, want := range []string{"meanwhile-2", "reader-4", "\nthrough-the-fifo", "\non-ext4", "timeout-rc=130", "\np"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the output:\n%s\nstderr:\n%s", want, out, lastLines(r.stderr, 10))
		}
	}
	if i, j := strings.Index(out, "meanwhile-2"), strings.Index(out, "reader-4"); i < 0 || j < i {
		t.Errorf("the reader finished before the writer came:\n%s", out)
	}
	fsckClean(t, img)
}

// execWaitC execs while another of its threads waits in an open the
// engine serves (a FIFO's, with no writer ever).
const execWaitC = `#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static void *reader(void *a) {
	open("/tmp/f", O_RDONLY);
	return a;
}

int main(void) {
	pthread_t t;
	pthread_create(&t, 0, reader, 0);
	usleep(300000);
	printf("exec-now\n");
	fflush(stdout);
	char *argv[] = {"/bin/sh", "-c", "echo exec-$((3+4))", 0};
	execv(argv[0], argv);
	perror("execv");
	return 1;
}
`

// TestExecWhileSiblingWaits: an exec stops the caller's other threads
// first; one that waits in a syscall the engine serves (here a FIFO open
// that never ends) cannot stop until it is answered, so the exec goes on
// without it, and Linux's exec ends it.
func TestExecWhileSiblingWaits(t *testing.T) {
	img := imageWithC(t, "execwait", execWaitC)
	script := "mount -t tmpfs tmpfs /tmp; mkfifo /tmp/f; /bin/execwait; echo rc-$?; poweroff -f\n"
	r := boot(t, script, time.Minute, "ubd0="+img, "init=/bin/sh", "con0=fd:0,fd:1", "con=null")
	for _, want := range []string{"exec-now", "\nexec-7", "\nrc-0"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("no %q in the output:\n%s\nstderr:\n%s", want, r.stdout, lastLines(r.stderr, 10))
		}
	}
	fsckClean(t, img)
}
