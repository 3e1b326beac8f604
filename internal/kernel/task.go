package kernel

import (
	"golang.org/x/sys/unix"

	"os"
	"strconv"
	"strings"

	"github.com/umltools/umltools/internal/vfs"
)

// Cred is a process's credentials.
type Cred struct {
	Uid, Euid, Suid, Fsuid uint32
	Gid, Egid, Sgid, Fsgid uint32
	Groups                 []uint32
}

// root reports whether the effective uid is 0 (the engine's guests have
// every capability as root and none otherwise).
func (c *Cred) root() bool { return c.Euid == 0 }

func (c *Cred) clone() *Cred {
	n := *c
	n.Groups = append([]uint32(nil), c.Groups...)
	return &n
}

// FSContext is what CLONE_FS shares: root, cwd and umask.
type FSContext struct {
	Root  *vfs.Dentry
	Cwd   *vfs.Dentry
	Umask uint32
}

// Process is a guest thread group.
type Process struct {
	Tgid   int // host id
	pid    int // guest (namespace) id, 0 until first asked (Pid)
	Parent *Process
	FS     *FSContext
	Cred   *Cred
	Exe    string // guest path of the executable
	Comm   string
	Start  int64 // boot-relative start time in clock ticks

	threads map[int]*Thread
}

// Thread is a guest thread.
type Thread struct {
	Tid  int // host id
	nsID int // guest id, 0 until first asked (NsID)
	Proc *Process

	pendingExe  string // set at an exec trap, applied at the exec event
	pendingComm string

	// fdDir is an O_PATH descriptor of the host's /proc/<Tid>/fd, plus
	// one (0: none yet): fdObject stats the thread's fds through it,
	// without walking /proc/<Tid> each time.
	fdDir int
}

// closeFdDir drops the thread's /proc/<Tid>/fd descriptor (exit, exec).
func (th *Thread) closeFdDir() {
	if th.fdDir > 0 {
		unix.Close(th.fdDir - 1)
		th.fdDir = 0
	}
}

// Pid returns the process's guest pid, read from the host the first time
// (a fork does not pay for it).
func (p *Process) Pid() int {
	if p.pid == 0 {
		p.pid = nsID(p.Tgid)
	}
	return p.pid
}

// NsID returns the thread's guest tid.
func (t *Thread) NsID() int {
	if t.nsID == 0 {
		t.nsID = nsID(t.Tid)
	}
	return t.nsID
}

// nsID returns the guest id of host task tid from /proc/<tid>/status.
func nsID(tid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "NSpid:") {
			f := strings.Fields(line)
			n, _ := strconv.Atoi(f[len(f)-1])
			return n
		}
	}
	return 0
}

func commOf(path string) string {
	base := path[strings.LastIndexByte(path, '/')+1:]
	if len(base) > 15 {
		base = base[:15]
	}
	return base
}
