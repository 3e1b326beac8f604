package sandbox

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
)

// notifHandler serves open/openat of /guest/* by installing an engine-made
// fd (a host file the guest could not name), emulates getppid, and lets
// every other notified syscall continue.
type notifHandler struct {
	PassThrough
	mu      sync.Mutex
	files   map[string]string
	served  int
	invalid int
}

func (h *notifHandler) Notify(n *Notification) {
	switch n.Nr {
	case abi.SYS_GETPPID:
		n.Return(4242)
		return
	case abi.SYS_OPENAT, abi.SYS_OPEN:
		addr, flags := n.Args[0], n.Args[1]
		if n.Nr == abi.SYS_OPENAT {
			addr, flags = n.Args[1], n.Args[2]
		}
		path, err := n.Task().ReadString(addr, 4096)
		if err != nil {
			n.Fail(abi.EFAULT)
			return
		}
		if !n.Valid() {
			h.mu.Lock()
			h.invalid++
			h.mu.Unlock()
			return
		}
		h.mu.Lock()
		host, ok := h.files[path]
		h.mu.Unlock()
		if !ok {
			n.Continue()
			return
		}
		f, err := os.Open(host)
		if err != nil {
			n.Fail(abi.ENOENT)
			return
		}
		defer f.Close()
		if _, err := n.AddFd(f, flags&unix.O_CLOEXEC != 0); err == nil {
			h.mu.Lock()
			h.served++
			h.mu.Unlock()
		}
		return
	}
	n.Continue()
}

// TestNotifyAddFd: open of a guest-only path returns an fd the engine
// opened; the guest reads it, dups it and passes it to a child natively.
func TestNotifyAddFd(t *testing.T) {
	needBusybox(t)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("from the engine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := &notifHandler{files: map[string]string{"/guest/hello": secret}}
	ws, out := runGuest(t, Config{Handler: h, Notify: []int{abi.SYS_OPEN, abi.SYS_OPENAT},
		Argv: []string{"sh", "-c", "cat /guest/hello; exec 5</guest/hello; cat <&5; cat /guest/missing 2>/dev/null || echo missing"}})
	if want := "from the engine\nfrom the engine\nmissing\n"; out != want || ws.ExitStatus() != 0 {
		t.Errorf("output %q status %v, want %q", out, ws, want)
	}
	if h.served != 2 {
		t.Errorf("served %d opens, want 2", h.served)
	}
}

// TestNotifyRefusesExec: exec must stay traced.
func TestNotifyRefusesExec(t *testing.T) {
	_, err := Start(Config{Path: "/bin/busybox", Argv: []string{"true"}, Handler: &notifHandler{}, Notify: []int{abi.SYS_EXECVE}})
	if err == nil {
		t.Fatal("exec routed to user notification was accepted")
	}
	if _, err := Start(Config{Path: "/bin/busybox", Argv: []string{"true"}, Notify: []int{abi.SYS_OPENAT}}); err == nil {
		t.Fatal("Notify without a Notifier was accepted")
	}
}

// TestNotifyEmulate: a notified syscall answered with a value.
func TestNotifyEmulate(t *testing.T) {
	h := &notifHandler{}
	ws, out := runGuest(t, Config{Path: probe(t), Handler: h, Notify: []int{abi.SYS_GETPPID},
		Argv: []string{"probe", "loop", "1000", strconv.Itoa(abi.SYS_GETPPID)}})
	if out != "4242\n" || ws.ExitStatus() != 0 {
		t.Errorf("output %q status %v", out, ws)
	}
}

// detachHandler answers every getppid but the first from another
// goroutine, once a getuid (of another process) has been served: the
// loop must go on receiving while those wait.
type detachHandler struct {
	PassThrough
	mu       sync.Mutex
	ppids    int
	release  chan struct{}
	released bool
}

func (h *detachHandler) Notify(n *Notification) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch n.Nr {
	case abi.SYS_GETPPID:
		h.ppids++
		if h.ppids == 1 {
			n.Return(1)
			return
		}
		later := n.Detach()
		go func() {
			<-h.release
			later.Return(4242)
		}()
		return
	case abi.SYS_GETUID:
		if !h.released {
			h.released = true
			close(h.release)
		}
	}
	n.Continue()
}

// TestNotifyDetach: a notification answered later, from another
// goroutine, while the loop serves other processes.
func TestNotifyDetach(t *testing.T) {
	needBusybox(t)
	h := &detachHandler{release: make(chan struct{})}
	ws, out := runGuest(t, Config{Handler: h, Notify: []int{abi.SYS_GETPPID, abi.SYS_GETUID},
		Argv: []string{"sh", "-c", "sh -c 'echo ppid $PPID' & sleep 0.2; id -u; wait"}})
	// Which getuid releases it (sleep's, id's) does not matter; that
	// the waiting answer arrives, and nothing else waited, does.
	lines := strings.Split(strings.TrimSpace(out), "\n")
	sort.Strings(lines)
	if got := strings.Join(lines, ","); got != "0,ppid 4242" || ws.ExitStatus() != 0 {
		t.Errorf("output %q status %v, want the lines 0 and ppid 4242", out, ws)
	}
}
