package kernel

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/fs/devpts"
	"github.com/umltools/umltools/internal/vfs"
)

// The kernel is procfs's Source. Its methods run with k.mu held (procfs
// is only reached from syscall handlers).

// Pids lists the guest pids of live processes.
func (k *Kernel) Pids() []int {
	out := make([]int, 0, len(k.procs))
	for _, p := range k.procs {
		if pid := p.Pid(); pid > 0 {
			out = append(out, pid)
		}
	}
	return out
}

func (k *Kernel) byPid(pid int) *Process {
	for _, p := range k.procs {
		if p.Pid() == pid {
			return p
		}
	}
	return nil
}

// Owner returns a process's effective ids and start time.
func (k *Kernel) Owner(pid int) (uint32, uint32, time.Time, bool) {
	p := k.byPid(pid)
	if p == nil {
		return 0, 0, time.Time{}, false
	}
	return p.Cred.Euid, p.Cred.Egid, k.boot.Add(time.Duration(p.Start) * 10 * time.Millisecond), true
}

// hostStat returns the fields of /proc/<tid>/stat after the comm.
func hostStat(tid int) []string { return hostStatAt(strconv.Itoa(tid)) }

// hostStatAt returns the fields after the comm of /proc/<rel>/stat.
func hostStatAt(rel string) []string {
	b, err := os.ReadFile("/proc/" + rel + "/stat")
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

func parseInt(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) }

// nsOf translates a host pid to the guest's, 0 when it is not a guest's.
func (k *Kernel) nsOf(host int) int {
	if p := k.procs[host]; p != nil {
		return p.Pid()
	}
	if t := k.threads[host]; t != nil {
		return t.NsID()
	}
	return 0
}

// ttyNr translates a host controlling-terminal number.
func (k *Kernel) ttyNr(host int64) int64 {
	if host != 0 && k.cfg.Console != nil && uint64(host) == k.cfg.Console.Rdev() {
		return int64(vfs.Mkdev(5, 1))
	}
	if g, ok := k.ttys[uint64(host)]; ok {
		return int64(g)
	}
	if devpts.Number(uint64(host)) >= 0 {
		return host // a guest pty keeps its host number
	}
	return 0
}

// PidFile generates /proc/<pid>/<name>.
func (k *Kernel) PidFile(c *vfs.Ctx, pid int, name string) ([]byte, error) {
	p := k.byPid(pid)
	if p == nil {
		return nil, syscall.ESRCH
	}
	hp := "/proc/" + strconv.Itoa(p.Tgid) + "/"
	switch name {
	case "cmdline", "environ", "statm":
		return os.ReadFile(hp + name)
	case "comm":
		return []byte(k.threadComm(p, p.Tgid) + "\n"), nil
	case "mounts":
		return []byte(k.mountsText(p.FS.Root)), nil
	case "stat":
		return k.statText(p, p.Tgid, p.Pid(), false)
	case "status":
		return k.status(p, p.Tgid, p.Pid(), false)
	case "maps":
		return k.maps(p)
	case "mountinfo":
		return []byte(k.mountinfoText(p.FS.Root)), nil
	case "limits":
		return os.ReadFile(hp + name) // the guest's own limits, no paths
	case "oom_score_adj":
		return os.ReadFile(hp + name)
	}
	return nil, syscall.ENOENT
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// statText rewrites the host's stat of p (thread false) or of its host
// thread tid with the guest's ids: id is the guest pid or tid.
func (k *Kernel) statText(p *Process, tid, id int, thread bool) ([]byte, error) {
	rel := strconv.Itoa(p.Tgid)
	if thread {
		rel = hostTask(p, tid)
	}
	f := hostStatAt(rel)
	if len(f) < 22 {
		return nil, syscall.ESRCH
	}
	f[1] = strconv.Itoa(k.nsOf(atoi(f[1])))
	for _, i := range []int{2, 3, 5} {
		if v := atoi(f[i]); v > 0 {
			f[i] = strconv.Itoa(k.nsOf(v))
		}
	}
	tty, _ := parseInt(f[4])
	f[4] = strconv.FormatInt(k.ttyNr(tty), 10)
	start := p.Start
	if thread && tid != p.Tgid {
		// A thread started after its process by the difference of
		// their host start times.
		if lf := hostStat(p.Tgid); len(lf) >= 22 {
			start += int64(atoi(f[19]) - atoi(lf[19]))
		}
	}
	f[19] = strconv.FormatInt(start, 10)
	return []byte(fmt.Sprintf("%d (%s) %s\n", id, k.threadComm(p, tid), strings.Join(f, " "))), nil
}

// hostTask is the host /proc directory name of thread tid of p: the
// thread's own under its process's task/ (where a thread's stat is its
// own, not the whole group's).
func hostTask(p *Process, tid int) string {
	return strconv.Itoa(p.Tgid) + "/task/" + strconv.Itoa(tid)
}

// threadComm is the name of host thread tid of p: the name the guest
// gave it (prctl PR_SET_NAME, pthread_setname_np) if it gave one, else
// the process's (the host's comm after exec names the engine's copy of
// the image, not what the guest ran).
func (k *Kernel) threadComm(p *Process, tid int) string {
	b, err := os.ReadFile("/proc/" + hostTask(p, tid) + "/comm")
	if err != nil {
		return p.Comm
	}
	host := strings.TrimSuffix(string(b), "\n")
	if host == p.Comm {
		return host
	}
	for _, h := range k.execs {
		if commOf(h) == host {
			return p.Comm
		}
	}
	for _, h := range k.loaders {
		if commOf(h) == host {
			return p.Comm
		}
	}
	return host
}

// status rewrites the host's status of p (thread false) or of its host
// thread tid with the guest's ids: id is the guest pid or tid.
func (k *Kernel) status(p *Process, tid, id int, thread bool) ([]byte, error) {
	rel := strconv.Itoa(p.Tgid)
	if thread {
		rel = hostTask(p, tid)
	}
	b, err := os.ReadFile("/proc/" + rel + "/status")
	if err != nil {
		return nil, syscall.ESRCH
	}
	ppid := 0
	if p.Parent != nil {
		ppid = 1 // reparented to init once its parent is gone
		if k.procs[p.Parent.Tgid] == p.Parent {
			ppid = p.Parent.Pid()
		}
	}
	cr := p.Cred
	groups := make([]string, len(cr.Groups))
	for i, g := range cr.Groups {
		groups[i] = strconv.Itoa(int(g))
	}
	var out strings.Builder
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		key, val, _ := strings.Cut(line, ":")
		switch key {
		case "Name":
			val = "\t" + k.threadComm(p, tid)
		case "Umask":
			val = fmt.Sprintf("\t%04o", p.FS.Umask)
		case "Tgid", "NStgid":
			val = "\t" + strconv.Itoa(p.Pid())
		case "Pid", "NSpid":
			val = "\t" + strconv.Itoa(id)
		case "PPid":
			val = "\t" + strconv.Itoa(ppid)
		case "TracerPid":
			val = "\t0"
		case "Uid":
			val = fmt.Sprintf("\t%d\t%d\t%d\t%d", cr.Uid, cr.Euid, cr.Suid, cr.Fsuid)
		case "Gid":
			val = fmt.Sprintf("\t%d\t%d\t%d\t%d", cr.Gid, cr.Egid, cr.Sgid, cr.Fsgid)
		case "Groups":
			val = "\t" + strings.Join(groups, " ")
		case "NSpgid", "NSsid":
			f := strings.Fields(val)
			if len(f) > 0 {
				val = "\t" + f[len(f)-1]
			}
		case "Ngid", "Seccomp", "Seccomp_filters", "NoNewPrivs":
			if key == "Ngid" {
				break
			}
			val = "\t0"
		}
		out.WriteString(key + ":" + val + "\n")
	}
	return []byte(out.String()), nil
}

// Tids lists the guest tids of process pid's threads.
func (k *Kernel) Tids(pid int) []int {
	p := k.byPid(pid)
	if p == nil {
		return nil
	}
	out := make([]int, 0, len(p.threads))
	for _, th := range p.threads {
		if id := th.NsID(); id > 0 {
			out = append(out, id)
		}
	}
	return out
}

// TaskOf returns the guest pid of the process whose thread has guest
// tid tid.
func (k *Kernel) TaskOf(tid int) (int, bool) {
	th := k.byTid(tid)
	if th == nil {
		return 0, false
	}
	return th.Proc.Pid(), true
}

func (k *Kernel) byTid(tid int) *Thread {
	for _, th := range k.threads {
		if th.NsID() == tid {
			return th
		}
	}
	return nil
}

// TaskFile generates /proc/<pid>/task/<tid>/<name>.
func (k *Kernel) TaskFile(c *vfs.Ctx, pid, tid int, name string) ([]byte, error) {
	th := k.byTid(tid)
	if th == nil || th.Proc.Pid() != pid {
		return nil, syscall.ESRCH
	}
	p := th.Proc
	switch name {
	case "stat":
		return k.statText(p, th.Tid, tid, true)
	case "status":
		return k.status(p, th.Tid, tid, true)
	case "comm":
		return []byte(k.threadComm(p, th.Tid) + "\n"), nil
	case "statm", "limits", "oom_score_adj":
		return os.ReadFile("/proc/" + hostTask(p, th.Tid) + "/" + name)
	}
	return k.PidFile(c, pid, name)
}

// PidLink resolves cwd, exe and root.
func (k *Kernel) PidLink(c *vfs.Ctx, pid int, name string) (string, error) {
	p := k.byPid(pid)
	if p == nil {
		return "", syscall.ESRCH
	}
	switch name {
	case "cwd":
		return k.vfs.Path(p.FS.Cwd, p.FS.Root), nil
	case "root":
		return k.vfs.Path(p.FS.Root, k.vfs.Root()), nil
	case "exe":
		return p.Exe, nil
	}
	return "", syscall.ENOENT
}

// Fds lists a process's fds with what they name in the guest.
func (k *Kernel) Fds(pid int) (map[int]string, error) {
	p := k.byPid(pid)
	if p == nil {
		return nil, syscall.ESRCH
	}
	dir := "/proc/" + strconv.Itoa(p.Tgid) + "/fd/"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, syscall.ESRCH
	}
	out := map[int]string{}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		o, r := k.fdObject(p.Tgid, n)
		if r < 0 {
			continue
		}
		if name := k.ttyName(&o.st); name != "" {
			out[n] = name // whichever node opened it
			continue
		}
		if o.d != nil {
			out[n] = k.vfs.Path(o.d, p.FS.Root)
			continue
		}
		t, err := os.Readlink(dir + e.Name())
		if err != nil {
			continue
		}
		if k.cfg.Console != nil && o.st.Rdev == k.cfg.Console.Rdev() && o.st.Mode&syscall.S_IFMT == syscall.S_IFCHR {
			t = "/dev/console"
		} else if strings.HasPrefix(t, "/") && !strings.HasPrefix(t, "/memfd:") {
			t = "anon_inode:[host]" // never show a host path
		}
		out[n] = t
	}
	return out, nil
}

// File generates the machine-wide files of /proc.
func (k *Kernel) File(c *vfs.Ctx, name string) ([]byte, error) {
	switch name {
	case "net/dev":
		return procNetDev(k.cfg.Net), nil
	case "net/route":
		return procNetRoute(k.cfg.Net), nil
	case "net/arp":
		return procNetARP(k.cfg.Net), nil
	case "net/tcp", "net/tcp6", "net/udp", "net/udp6":
		return k.procNetSockets(strings.TrimPrefix(name, "net/")), nil
	case "cmdline":
		return []byte(k.cfg.Cmdline + "\n"), nil
	case "version":
		s, n, r, v, _ := k.Uname()
		_ = n
		return []byte(fmt.Sprintf("%s version %s (umltools@engine) (%s) %s\n", s, r, runtime.Version(), v)), nil
	case "uptime":
		up := time.Since(k.boot).Seconds()
		return []byte(fmt.Sprintf("%.2f %.2f\n", up, up)), nil
	case "loadavg":
		var si unix.Sysinfo_t
		unix.Sysinfo(&si)
		l := func(v uint64) float64 { return float64(v) / 65536 }
		last := 0
		for _, p := range k.Pids() {
			if p > last {
				last = p
			}
		}
		return []byte(fmt.Sprintf("%.2f %.2f %.2f 1/%d %d\n", l(si.Loads[0]), l(si.Loads[1]), l(si.Loads[2]), len(k.threads), last)), nil
	case "meminfo":
		total, free := k.memInfo()
		kb := func(v uint64) uint64 { return v / 1024 }
		var b strings.Builder
		used := kb(total - free)
		// The 6.1 UML kernel's fields, in its order (free, top and
		// mconsole scripts read them); what the engine has no notion of
		// is 0.
		for _, kv := range []struct {
			k string
			v uint64
		}{{"MemTotal", kb(total)}, {"MemFree", kb(free)}, {"MemAvailable", kb(free)}, {"Buffers", 0},
			{"Cached", 0}, {"SwapCached", 0}, {"Active", used}, {"Inactive", 0},
			{"Active(anon)", used}, {"Inactive(anon)", 0}, {"Active(file)", 0}, {"Inactive(file)", 0},
			{"Unevictable", 0}, {"Mlocked", 0}, {"SwapTotal", 0}, {"SwapFree", 0}, {"Zswap", 0}, {"Zswapped", 0},
			{"Dirty", 0}, {"Writeback", 0}, {"AnonPages", used}, {"Mapped", 0}, {"Shmem", 0},
			{"KReclaimable", 0}, {"Slab", 0}, {"SReclaimable", 0}, {"SUnreclaim", 0}, {"KernelStack", 0},
			{"PageTables", 0}, {"SecPageTables", 0}, {"NFS_Unstable", 0}, {"Bounce", 0}, {"WritebackTmp", 0},
			{"CommitLimit", kb(total) / 2}, {"Committed_AS", used}, {"VmallocTotal", 34359738367},
			{"VmallocUsed", 0}, {"VmallocChunk", 0}, {"Percpu", 0}} {
			fmt.Fprintf(&b, "%-15s %8d kB\n", kv.k+":", kv.v)
		}
		return []byte(b.String()), nil
	case "filesystems":
		var b strings.Builder
		for _, f := range filesystems {
			if f.NoDev {
				b.WriteString("nodev")
			}
			b.WriteString("\t" + f.Name + "\n")
		}
		return []byte(b.String()), nil
	case "cpuinfo":
		return os.ReadFile("/proc/cpuinfo")
	case "stat":
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return nil, err
		}
		var out strings.Builder
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "cpu") || strings.HasPrefix(line, "ctxt") {
				out.WriteString(line + "\n")
			}
		}
		fmt.Fprintf(&out, "btime %d\nprocesses %d\nprocs_running 1\nprocs_blocked 0\n", k.boot.Unix(), len(k.procs))
		return []byte(out.String()), nil
	}
	return nil, syscall.ENOENT
}

// rss is a host process's resident memory in bytes.
func rss(tgid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tgid) + "/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.ParseUint(f[1], 10, 64)
	return n * 4096
}

// ttyName is the guest name of a host pty slave that is a console or
// line ("/dev/console", "/dev/tty1", "/dev/ttyS0"), or "".
func (k *Kernel) ttyName(st *unix.Stat_t) string {
	if st.Mode&syscall.S_IFMT != syscall.S_IFCHR {
		return ""
	}
	if k.cfg.Console != nil && st.Rdev == k.cfg.Console.Rdev() {
		return "/dev/console"
	}
	g, ok := k.ttys[st.Rdev]
	if !ok {
		if n := devpts.Number(st.Rdev); n >= 0 {
			if _, mine := k.ptyOwners[n]; mine {
				return "/dev/pts/" + strconv.Itoa(n)
			}
		}
		return ""
	}
	if m := vfs.Minor(g); m >= 64 {
		return "/dev/ttyS" + strconv.Itoa(int(m-64))
	}
	return "/dev/tty" + strconv.Itoa(int(vfs.Minor(g)))
}
