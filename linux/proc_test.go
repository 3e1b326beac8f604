package main

import (
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// Writes to /proc/sys as boot scripts make them: the host and domain
// names are the kernel's (uname, hostname(1)), vm/ and net/ values read
// back, read-only entries refuse root, and only root may write.
func TestDebianProcSys(t *testing.T) {
	img := testutil.DebianImage(t)
	r := debianBoot(t, img, strings.Join([]string{
		quietShell,
		"mount -t proc proc /proc",
		mark("hostname"), "echo foo > /proc/sys/kernel/hostname; hostname; uname -n; cat /proc/sys/kernel/hostname",
		mark("domain"), "echo example.org > /proc/sys/kernel/domainname; domainname; cat /proc/sys/kernel/domainname",
		mark("sethostname"), "hostname bar; cat /proc/sys/kernel/hostname",
		mark("vm"), "cat /proc/sys/vm/swappiness >/dev/null && echo 10 > /proc/sys/vm/swappiness && cat /proc/sys/vm/swappiness",
		mark("net"), "printf '1024 65000\\n' > /proc/sys/net/ipv4/ip_local_port_range; cat /proc/sys/net/ipv4/ip_local_port_range",
		mark("readonly"), "(echo x > /proc/sys/kernel/osrelease) 2>&1 | sed 's/.*: //'; cat /proc/sys/kernel/osrelease | grep -c umltools",
		mark("user"), `python3 -c 'import os; os.setgroups([]); os.setgid(65534); os.setuid(65534); os.execv("/bin/bash", ["bash", "-c", "echo u > /proc/sys/kernel/hostname"])' 2>&1 | sed 's/.*: //'; hostname`,
		mark("mode"), "stat -c '%a %U' /proc/sys/kernel/hostname /proc/sys/kernel/osrelease",
		mark("end"),
	}, "\n"), 2*time.Minute)
	got := marked(r.stdout)
	want := map[string]string{
		"hostname":    "foo\nfoo\nfoo\n",
		"domain":      "example.org\nexample.org\n",
		"sethostname": "bar\n",
		"vm":          "10\n",
		"net":         "1024\t65000\n",
		"readonly":    "Permission denied\n1\n",
		"user":        "Permission denied\nbar\n",
		"mode":        "644 root\n444 root\n",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %q, want %q", k, got[k], w)
		}
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
}

// /proc/<pid>/task for Python's threads: one entry per thread, named
// threads' comm, each thread's own stat, and the entries going with the
// threads.
func TestDebianProcTask(t *testing.T) {
	img := testutil.DebianImage(t)
	py := `import ctypes, os, threading, time
libc = ctypes.CDLL(None)
ready, done = threading.Barrier(4), threading.Event()
tids = []
def work(i):
    tids.append(threading.get_native_id())
    libc.prctl(15, ("py-%d" % i).encode())
    ready.wait()
    done.wait()
ts = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(3)]
for th in ts: th.start()
ready.wait()
listed = sorted(int(x) for x in os.listdir("/proc/self/task"))
print("tasks", len(listed), listed == sorted(tids + [os.getpid()]))
print("comms", sorted(open("/proc/self/task/%d/comm" % t).read().strip() for t in listed))
print("stat ids", all(int(open("/proc/self/task/%d/stat" % t).read().split()[0]) == t for t in listed))
print("status", all("\nPid:\t%d\n" % t in open("/proc/self/task/%d/status" % t).read() for t in listed))
print("thread-self", os.readlink("/proc/thread-self") == "%d/task/%d" % (os.getpid(), threading.get_native_id()))
print("hidden", str(tids[0]) not in os.listdir("/proc"), open("/proc/%d/comm" % tids[0]).read().strip())
done.set()
for th in ts: th.join()
for _ in range(200):
    if len(os.listdir("/proc/self/task")) == 1: break
    time.sleep(0.01)
print("after join", len(os.listdir("/proc/self/task")))`
	r := debianBoot(t, img, quietShell+"\nmount -t proc proc /proc\n"+mark("py")+"\npython3 - <<'PY'\n"+py+"\nPY\n"+mark("end"), 2*time.Minute)
	want := "tasks 4 True\ncomms ['py-0', 'py-1', 'py-2', 'python3']\nstat ids True\nstatus True\nthread-self True\nhidden True py-0\nafter join 1\n"
	if got := marked(r.stdout)["py"]; got != want {
		t.Errorf("got\n%s\nwant\n%s\nstderr: %s", got, want, r.stderr)
	}
}
