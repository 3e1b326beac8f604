// Package procfs is the guest's /proc: a tree of per-process directories
// and machine-wide files whose content the kernel generates (Source). Each
// open takes a snapshot of the file in a memfd, so reads, seeks and mmaps
// of it run natively.
package procfs

import (
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/umltools/umltools/internal/fs/memfd"
	"github.com/umltools/umltools/internal/vfs"
)

// Magic is PROC_SUPER_MAGIC.
const Magic = 0x9fa0

// Source is what the kernel tells procfs.
type Source interface {
	// Pids lists the guest pids of live processes.
	Pids() []int
	// Owner returns a process's effective uid and gid and start time.
	Owner(pid int) (uid, gid uint32, start time.Time, ok bool)
	// PidFile generates /proc/<pid>/<name> (stat, status, cmdline, comm,
	// environ, mounts).
	PidFile(c *vfs.Ctx, pid int, name string) ([]byte, error)
	// PidLink resolves /proc/<pid>/<name> (cwd, exe, root).
	PidLink(c *vfs.Ctx, pid int, name string) (string, error)
	// Fds lists a process's fds and their link targets.
	Fds(pid int) (map[int]string, error)
	// File generates a machine-wide file such as meminfo.
	File(c *vfs.Ctx, name string) ([]byte, error)
	// Sys generates a file of /proc/sys, named by its path below it
	// ("kernel/hostname").
	Sys(c *vfs.Ctx, path string) ([]byte, error)
	// SysWrite is told of an open of a writable /proc/sys file for
	// writing: what the guest writes to f is the new value (the kernel
	// reads it before anything can observe the value). The kernel keeps
	// its own copy of f.
	SysWrite(c *vfs.Ctx, path string, f *os.File) error
	// Tids lists the guest tids of process pid's threads.
	Tids(pid int) []int
	// TaskOf returns the guest pid of the process thread tid is in.
	TaskOf(tid int) (pid int, ok bool)
	// TaskFile generates /proc/<pid>/task/<tid>/<name>: the thread's own
	// stat, status and comm; the process's for the rest.
	TaskFile(c *vfs.Ctx, pid, tid int, name string) ([]byte, error)
}

// pidFiles are the regular files of each /proc/<pid>.
var pidFiles = []string{"cmdline", "comm", "environ", "mounts", "stat", "statm", "status", "maps", "mountinfo", "limits", "oom_score_adj"}

// pidLinks are the symlinks of each /proc/<pid>.
var pidLinks = []string{"cwd", "exe", "root"}

// files are the machine-wide regular files.
var files = []string{"cmdline", "cpuinfo", "filesystems", "loadavg", "meminfo", "stat", "uptime", "version"}

// FS is a procfs instance.
type FS struct {
	src  Source
	boot time.Time
	// Mconsole, when set, makes /proc/mconsole exist: a write-only file
	// (mode 0200) whose opens for writing get the file it returns (the
	// C kernel's with mconsole=notify:, for MCONSOLE_USER_NOTIFY).
	Mconsole func() (*os.File, error)
}

// New returns a procfs over src.
func New(src Source) *FS { return &FS{src: src, boot: time.Now()} }

// Root returns /proc.
func (f *FS) Root() vfs.DirNode { return &root{f} }

// Type returns "proc".
func (f *FS) Type() string { return "proc" }

// Dynamic is true: processes come and go.
func (f *FS) Dynamic() bool { return true }

// Statfs reports procfs's numbers.
func (f *FS) Statfs() vfs.Statfs { return vfs.Statfs{Type: Magic, Bsize: 4096, NameLen: 255} }

func (f *FS) attr(ino uint64, mode uint32, uid, gid uint32, t time.Time) vfs.Attr {
	if t.IsZero() {
		t = f.boot
	}
	n := uint32(1)
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		n = 2
	}
	return vfs.Attr{Ino: ino, Mode: mode, Nlink: n, Uid: uid, Gid: gid, Blksize: 1024, Atime: t, Mtime: t, Ctime: t}
}

// ino numbers: 1 is the root; machine files 2..; per-pid nodes
// pid<<8 | index.
func pidIno(pid, idx int) uint64 { return uint64(pid)<<8 | uint64(idx) + 1<<20 }

type root struct{ f *FS }

func (r *root) Attr() (vfs.Attr, error) {
	return r.f.attr(1, syscall.S_IFDIR|0o555, 0, 0, time.Time{}), nil
}

func (r *root) Lookup(c *vfs.Ctx, name string) (vfs.Node, error) {
	switch name {
	case "self":
		return &selfLink{r.f, false}, nil
	case "thread-self":
		return &selfLink{r.f, true}, nil
	case "mounts":
		return &fixedLink{r.f, 100, "self/mounts"}, nil
	case "sys":
		return &sysDir{f: r.f, path: ""}, nil
	case "net":
		return &netDir{r.f}, nil
	case "mconsole":
		if r.f.Mconsole != nil {
			return &notifyFile{r.f}, nil
		}
	}
	for i, n := range files {
		if n == name {
			return &file{f: r.f, ino: uint64(2 + i), name: name}, nil
		}
	}
	pid, err := strconv.Atoi(name)
	if err != nil || pid <= 0 || strconv.Itoa(pid) != name {
		return nil, syscall.ENOENT
	}
	if _, _, _, ok := r.f.src.Owner(pid); !ok {
		// A thread's tid names its directory too, unlisted, as in
		// Linux.
		if tg, ok := r.f.src.TaskOf(pid); ok {
			return &pidDir{f: r.f, pid: tg, tid: pid}, nil
		}
		return nil, syscall.ENOENT
	}
	return &pidDir{f: r.f, pid: pid}, nil
}

func (r *root) ReadDir(c *vfs.Ctx) ([]vfs.Dirent, error) {
	var out []vfs.Dirent
	for i, n := range files {
		out = append(out, vfs.Dirent{Name: n, Ino: uint64(2 + i), Type: syscall.DT_REG})
	}
	out = append(out, vfs.Dirent{Name: "sys", Ino: sysIno(""), Type: syscall.DT_DIR},
		vfs.Dirent{Name: "net", Ino: netIno, Type: syscall.DT_DIR},
		vfs.Dirent{Name: "mounts", Ino: 100, Type: syscall.DT_LNK},
		vfs.Dirent{Name: "self", Ino: 101, Type: syscall.DT_LNK},
		vfs.Dirent{Name: "thread-self", Ino: 102, Type: syscall.DT_LNK})
	if r.f.Mconsole != nil {
		out = append(out, vfs.Dirent{Name: "mconsole", Ino: 103, Type: syscall.DT_REG})
	}
	pids := r.f.src.Pids()
	sort.Ints(pids)
	for _, p := range pids {
		out = append(out, vfs.Dirent{Name: strconv.Itoa(p), Ino: pidIno(p, 0), Type: syscall.DT_DIR})
	}
	return out, nil
}

type selfLink struct {
	f      *FS
	thread bool
}

func (s *selfLink) Attr() (vfs.Attr, error) {
	ino := uint64(101)
	if s.thread {
		ino = 102
	}
	return s.f.attr(ino, syscall.S_IFLNK|0o777, 0, 0, time.Time{}), nil
}

func (s *selfLink) Readlink(c *vfs.Ctx) (string, error) {
	pid, tid := c.Self()
	if pid == 0 {
		return "", syscall.ENOENT
	}
	if s.thread {
		return strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid), nil
	}
	return strconv.Itoa(pid), nil
}

type fixedLink struct {
	f      *FS
	ino    uint64
	target string
}

func (l *fixedLink) Attr() (vfs.Attr, error) {
	return l.f.attr(l.ino, syscall.S_IFLNK|0o777, 0, 0, time.Time{}), nil
}

func (l *fixedLink) Readlink(*vfs.Ctx) (string, error) { return l.target, nil }

// notifyFile is /proc/mconsole.
type notifyFile struct{ f *FS }

func (n *notifyFile) Attr() (vfs.Attr, error) {
	return n.f.attr(103, syscall.S_IFREG|0o200, 0, 0, time.Time{}), nil
}

func (n *notifyFile) Open(c *vfs.Ctx, flags int) (*os.File, error) {
	if flags&syscall.O_ACCMODE != syscall.O_WRONLY {
		return nil, syscall.EINVAL // it has no read side
	}
	return n.f.Mconsole()
}

// file is a generated regular file.
type file struct {
	f    *FS
	ino  uint64
	name string
	pid  int  // 0 for machine-wide files
	tid  int  // a thread's file (task/<tid>/), 0 for the process's
	sys  bool // a /proc/sys file: name is its path below /proc/sys
	uid  uint32
	gid  uint32
	t    time.Time
}

func (fl *file) Attr() (vfs.Attr, error) {
	mode := uint32(0o444)
	switch {
	case fl.sys && sysReadOnly[fl.name]:
		mode = 0o444
	case fl.sys:
		mode = 0o644
	case fl.name == "environ":
		mode = 0o400
	case fl.name == "oom_score_adj":
		mode = 0o644
	}
	return fl.f.attr(fl.ino, syscall.S_IFREG|mode, fl.uid, fl.gid, fl.t), nil
}

func (fl *file) Open(c *vfs.Ctx, flags int) (*os.File, error) {
	acc := flags & syscall.O_ACCMODE
	if acc != syscall.O_RDONLY && fl.sys {
		return fl.openSysWrite(c, flags)
	}
	if acc != syscall.O_RDONLY {
		return nil, syscall.EACCES
	}
	b, path, err := fl.content(c)
	if err != nil {
		return nil, err
	}
	return memfd.FromBytes(path, b)
}

// content generates the file and names it for its memfd.
func (fl *file) content(c *vfs.Ctx) ([]byte, string, error) {
	var b []byte
	var err error
	path := "proc:/proc/"
	switch {
	case fl.sys:
		b, err = fl.f.src.Sys(c, fl.name)
		path += "sys/"
	case fl.pid == 0:
		b, err = fl.f.src.File(c, fl.name)
	case fl.tid != 0:
		b, err = fl.f.src.TaskFile(c, fl.pid, fl.tid, fl.name)
		path += strconv.Itoa(fl.pid) + "/task/" + strconv.Itoa(fl.tid) + "/"
	default:
		b, err = fl.f.src.PidFile(c, fl.pid, fl.name)
		path += strconv.Itoa(fl.pid) + "/"
	}
	return b, path + fl.name, err
}

// openSysWrite opens a /proc/sys file for writing: the guest writes into
// a memfd of its own (starting empty, or with the value for O_RDWR) that
// the kernel reads as the new value. Entries that are read-only in Linux
// (mode 0444) refuse even root.
func (fl *file) openSysWrite(c *vfs.Ctx, flags int) (*os.File, error) {
	if sysReadOnly[fl.name] {
		return nil, syscall.EACCES
	}
	var init []byte
	if flags&syscall.O_ACCMODE == syscall.O_RDWR {
		b, _, err := fl.content(c)
		if err != nil {
			return nil, err
		}
		init = b
	}
	f, err := memfd.New("proc:/proc/sys/" + fl.name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Write(init); err != nil {
		return nil, err
	}
	if err := fl.f.src.SysWrite(c, fl.name, f); err != nil {
		return nil, err
	}
	return memfd.Reopen(f, flags)
}

// pidDir is /proc/<pid>, or with tid set a thread's directory
// (/proc/<pid>/task/<tid>, or the unlisted /proc/<tid>).
type pidDir struct {
	f   *FS
	pid int
	tid int
}

func (d *pidDir) owner() (uint32, uint32, time.Time) {
	uid, gid, t, _ := d.f.src.Owner(d.pid)
	return uid, gid, t
}

// ino numbers the directory's entries: a thread's are its tid's, past
// the process's (a leader's tid is its pid).
func (d *pidDir) ino(idx int) uint64 {
	if d.tid != 0 {
		return pidIno(d.tid, 128+idx)
	}
	return pidIno(d.pid, idx)
}

func (d *pidDir) Attr() (vfs.Attr, error) {
	uid, gid, t := d.owner()
	return d.f.attr(d.ino(0), syscall.S_IFDIR|0o555, uid, gid, t), nil
}

func (d *pidDir) Lookup(c *vfs.Ctx, name string) (vfs.Node, error) {
	uid, gid, t := d.owner()
	for i, n := range pidFiles {
		if n == name {
			return &file{f: d.f, ino: d.ino(1 + i), name: name, pid: d.pid, tid: d.tid, uid: uid, gid: gid, t: t}, nil
		}
	}
	for i, n := range pidLinks {
		if n == name {
			return &pidLink{f: d.f, ino: d.ino(32 + i), name: name, pid: d.pid, uid: uid, gid: gid, t: t}, nil
		}
	}
	switch name {
	case "fd":
		return &fdDir{f: d.f, pid: d.pid, ino: d.ino(64), uid: uid, gid: gid, t: t}, nil
	case "task":
		if d.tid == 0 {
			return &taskDir{f: d.f, pid: d.pid, uid: uid, gid: gid, t: t}, nil
		}
	}
	return nil, syscall.ENOENT
}

func (d *pidDir) ReadDir(c *vfs.Ctx) ([]vfs.Dirent, error) {
	out := []vfs.Dirent{{Name: "fd", Ino: d.ino(64), Type: syscall.DT_DIR}}
	if d.tid == 0 {
		out = append(out, vfs.Dirent{Name: "task", Ino: d.ino(65), Type: syscall.DT_DIR})
	}
	for i, n := range pidFiles {
		out = append(out, vfs.Dirent{Name: n, Ino: d.ino(1 + i), Type: syscall.DT_REG})
	}
	for i, n := range pidLinks {
		out = append(out, vfs.Dirent{Name: n, Ino: d.ino(32 + i), Type: syscall.DT_LNK})
	}
	return out, nil
}

// taskDir is /proc/<pid>/task: a directory per thread.
type taskDir struct {
	f        *FS
	pid      int
	uid, gid uint32
	t        time.Time
}

func (d *taskDir) Attr() (vfs.Attr, error) {
	return d.f.attr(pidIno(d.pid, 65), syscall.S_IFDIR|0o555, d.uid, d.gid, d.t), nil
}

func (d *taskDir) Lookup(c *vfs.Ctx, name string) (vfs.Node, error) {
	tid, err := strconv.Atoi(name)
	if err != nil || strconv.Itoa(tid) != name {
		return nil, syscall.ENOENT
	}
	for _, t := range d.f.src.Tids(d.pid) {
		if t == tid {
			return &pidDir{f: d.f, pid: d.pid, tid: tid}, nil
		}
	}
	return nil, syscall.ENOENT
}

func (d *taskDir) ReadDir(c *vfs.Ctx) ([]vfs.Dirent, error) {
	tids := d.f.src.Tids(d.pid)
	sort.Ints(tids)
	out := make([]vfs.Dirent, 0, len(tids))
	for _, t := range tids {
		out = append(out, vfs.Dirent{Name: strconv.Itoa(t), Ino: pidIno(t, 128), Type: syscall.DT_DIR})
	}
	return out, nil
}

type pidLink struct {
	f        *FS
	ino      uint64
	name     string
	pid      int
	uid, gid uint32
	t        time.Time
}

func (l *pidLink) Attr() (vfs.Attr, error) {
	return l.f.attr(l.ino, syscall.S_IFLNK|0o777, l.uid, l.gid, l.t), nil
}

func (l *pidLink) Readlink(c *vfs.Ctx) (string, error) { return l.f.src.PidLink(c, l.pid, l.name) }

type fdDir struct {
	f        *FS
	pid      int
	ino      uint64
	uid, gid uint32
	t        time.Time
}

func (d *fdDir) Attr() (vfs.Attr, error) {
	return d.f.attr(d.ino, syscall.S_IFDIR|0o500, d.uid, d.gid, d.t), nil
}

func (d *fdDir) Lookup(c *vfs.Ctx, name string) (vfs.Node, error) {
	n, err := strconv.Atoi(name)
	if err != nil || strconv.Itoa(n) != name {
		return nil, syscall.ENOENT
	}
	fds, err := d.f.src.Fds(d.pid)
	if err != nil {
		return nil, err
	}
	target, ok := fds[n]
	if !ok {
		return nil, syscall.ENOENT
	}
	return &fixedLink{d.f, pidIno(d.pid, 0)<<12 | uint64(n), target}, nil
}

func (d *fdDir) ReadDir(c *vfs.Ctx) ([]vfs.Dirent, error) {
	fds, err := d.f.src.Fds(d.pid)
	if err != nil {
		return nil, err
	}
	nums := make([]int, 0, len(fds))
	for n := range fds {
		nums = append(nums, n)
	}
	sort.Ints(nums)
	out := make([]vfs.Dirent, 0, len(nums))
	for _, n := range nums {
		out = append(out, vfs.Dirent{Name: strconv.Itoa(n), Ino: pidIno(d.pid, 0)<<12 | uint64(n), Type: syscall.DT_LNK})
	}
	return out, nil
}

// netFiles are the files of /proc/net, generated by Source.File as
// "net/<name>".
var netFiles = []string{"arp", "dev", "route", "tcp", "tcp6", "udp", "udp6"}

// netIno is /proc/net's inode; its files follow.
const netIno = 110

// netDir is /proc/net.
type netDir struct{ f *FS }

func (d *netDir) Attr() (vfs.Attr, error) {
	return d.f.attr(netIno, syscall.S_IFDIR|0o555, 0, 0, time.Time{}), nil
}

func (d *netDir) Lookup(c *vfs.Ctx, name string) (vfs.Node, error) {
	for i, n := range netFiles {
		if n == name {
			return &file{f: d.f, ino: netIno + 1 + uint64(i), name: "net/" + n}, nil
		}
	}
	return nil, syscall.ENOENT
}

func (d *netDir) ReadDir(c *vfs.Ctx) ([]vfs.Dirent, error) {
	var out []vfs.Dirent
	for i, n := range netFiles {
		out = append(out, vfs.Dirent{Name: n, Ino: netIno + 1 + uint64(i), Type: syscall.DT_REG})
	}
	return out, nil
}

// sysTree is /proc/sys: each directory (by its path below /proc/sys) and
// its entries; a name with a trailing slash is a directory.
var sysTree = map[string][]string{
	"":              {"fs/", "kernel/", "net/", "vm/"},
	"fs":            {"file-max", "file-nr", "nr_open", "inotify/"},
	"fs/inotify":    {"max_queued_events", "max_user_instances", "max_user_watches"},
	"kernel":        {"cap_last_cap", "core_pattern", "domainname", "hostname", "ngroups_max", "osrelease", "ostype", "overflowgid", "overflowuid", "panic", "pid_max", "printk", "random/", "shmall", "shmmax", "shmmni", "sysrq", "threads-max", "version", "yama/"},
	"kernel/random": {"boot_id", "entropy_avail", "poolsize", "uuid"},
	"kernel/yama":   {"ptrace_scope"},
	"net":           {"core/", "ipv4/"},
	"net/core":      {"somaxconn"},
	"net/ipv4":      {"ip_local_port_range"},
	"vm":            {"max_map_count", "overcommit_memory", "swappiness"},
}

// sysReadOnly are the /proc/sys files Linux makes mode 0444: no one may
// write them, root included. The others are 0644: root may.
var sysReadOnly = map[string]bool{
	"fs/file-nr": true, "kernel/cap_last_cap": true, "kernel/ngroups_max": true,
	"kernel/osrelease": true, "kernel/ostype": true, "kernel/version": true,
	"kernel/random/boot_id": true, "kernel/random/entropy_avail": true,
	"kernel/random/poolsize": true, "kernel/random/uuid": true,
}

func sysIno(path string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(path); i++ {
		h = (h ^ uint64(path[i])) * 1099511628211
	}
	return 1<<19 | h&(1<<19-1)
}

// sysDir is a directory of /proc/sys.
type sysDir struct {
	f    *FS
	path string
}

func (d *sysDir) Attr() (vfs.Attr, error) {
	return d.f.attr(sysIno(d.path), syscall.S_IFDIR|0o555, 0, 0, time.Time{}), nil
}

func (d *sysDir) join(name string) string {
	if d.path == "" {
		return name
	}
	return d.path + "/" + name
}

func (d *sysDir) Lookup(c *vfs.Ctx, name string) (vfs.Node, error) {
	for _, e := range sysTree[d.path] {
		switch e {
		case name + "/":
			return &sysDir{f: d.f, path: d.join(name)}, nil
		case name:
			p := d.join(name)
			return &file{f: d.f, ino: sysIno(p), name: p, sys: true}, nil
		}
	}
	return nil, syscall.ENOENT
}

func (d *sysDir) ReadDir(c *vfs.Ctx) ([]vfs.Dirent, error) {
	var out []vfs.Dirent
	for _, e := range sysTree[d.path] {
		if n, ok := strings.CutSuffix(e, "/"); ok {
			out = append(out, vfs.Dirent{Name: n, Ino: sysIno(d.join(n)), Type: syscall.DT_DIR})
		} else {
			out = append(out, vfs.Dirent{Name: e, Ino: sysIno(d.join(e)), Type: syscall.DT_REG})
		}
	}
	return out, nil
}
