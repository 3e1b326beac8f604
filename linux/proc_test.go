package main

import (
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

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
