package kernel

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/umltools/umltools/internal/vfs"
)

// maps rewrites the host's /proc/<tgid>/maps for the guest: mappings of
// files the engine serves (page cache memfds, exec images and loaders in
// the private root) name the guest's file with its guest device and inode;
// any other host path is shown as an anonymous mapping, so no host path
// ever reaches the guest.
func (k *Kernel) maps(p *Process) ([]byte, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.Tgid) + "/maps")
	if err != nil {
		return nil, syscall.ESRCH
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 8192), 1<<20)
	for sc.Scan() {
		out.WriteString(k.mapsLine(p, sc.Text()))
		out.WriteByte('\n')
	}
	return out.Bytes(), nil
}

func (k *Kernel) mapsLine(p *Process, line string) string {
	f := strings.Fields(line)
	if len(f) < 5 {
		return line
	}
	path := ""
	if len(f) >= 6 {
		// The path is everything after the inode column.
		i := strings.Index(line, f[4]+" ")
		if i < 0 {
			return line
		}
		path = strings.TrimLeft(line[i+len(f[4]):], " ")
	}
	if path == "" || strings.HasPrefix(path, "[") {
		return line
	}
	var maj, min uint32
	fmt.Sscanf(f[3], "%x:%x", &maj, &min)
	ino, _ := strconv.ParseUint(f[4], 10, 64)
	key := hostKey{vfs.Mkdev(maj, min), ino}
	d := k.objs[key]
	if d == nil {
		d = k.images[key]
	}
	dev, gino, name := uint64(0), uint64(0), ""
	if d != nil {
		if a, err := d.Node.Attr(); err == nil {
			dev, gino = d.Mount.Dev, a.Ino
			name = k.vfs.Path(d, p.FS.Root)
		}
	}
	head := fmt.Sprintf("%s %s %s %02x:%02x %d", f[0], f[1], f[2], vfs.Major(dev), vfs.Minor(dev), gino)
	if name == "" {
		return head
	}
	if len(head) < 72 {
		head += strings.Repeat(" ", 72-len(head))
	}
	return head + " " + name
}

// mountFlagsText is a mount's per-mount options as /proc/mounts shows them.
func mountFlagsText(m *vfs.Mount) string {
	opts := "rw"
	if m.ReadOnly() {
		opts = "ro"
	}
	if m.Flags&vfs.NoSuid != 0 {
		opts += ",nosuid"
	}
	if m.Flags&vfs.NoDev != 0 {
		opts += ",nodev"
	}
	if m.Flags&vfs.NoExec != 0 {
		opts += ",noexec"
	}
	return opts + ",relatime"
}

// mountinfoText is /proc/<pid>/mountinfo for a process whose root is root.
func (k *Kernel) mountinfoText(root *vfs.Dentry) string {
	var b strings.Builder
	for _, m := range k.vfs.Mounts() {
		at, parent := "/", 1
		if pt := m.MountPoint(); pt != nil {
			at = k.vfs.Path(pt, root)
			parent = pt.Mount.ID
		}
		super := "rw"
		if m.ReadOnly() {
			super = "ro"
		}
		if m.Opts != "" {
			super += "," + m.Opts
		}
		fmt.Fprintf(&b, "%d %d %d:%d / %s %s - %s %s %s\n", m.ID, parent, vfs.Major(m.Dev), vfs.Minor(m.Dev),
			escapeMount(at), mountFlagsText(m), m.FS.Type(), escapeMount(m.Source), super)
	}
	return b.String()
}

// Sys generates the files of /proc/sys.
func (k *Kernel) Sys(c *vfs.Ctx, path string) ([]byte, error) {
	line := func(s string) ([]byte, error) { return []byte(s + "\n"), nil }
	_, _, release, ver, _ := k.Uname() // applies pending writes too
	if v, ok := k.sysw.vals[path]; ok {
		return line(v)
	}
	switch path {
	case "kernel/hostname":
		return line(k.hostname)
	case "kernel/domainname":
		return line(k.domain)
	case "kernel/osrelease":
		return line(release)
	case "kernel/ostype":
		return line("Linux")
	case "kernel/version":
		return line(ver)
	case "kernel/random/boot_id":
		return line(k.bootID)
	case "kernel/random/uuid":
		return line(newUUID())
	case "kernel/core_pattern":
		return line("core")
	case "kernel/panic":
		return line("0")
	case "kernel/yama/ptrace_scope":
		return line("1")
	case "kernel/printk":
		return line("4\t4\t1\t7")
	case "kernel/sysrq":
		return line("1")
	}
	if _, ok := sysHost[path]; ok {
		// Numbers that describe the host's limits, which are the
		// guest's too.
		return os.ReadFile("/proc/sys/" + path)
	}
	return nil, syscall.ENOENT
}

// sysHost are the /proc/sys files whose host values the guest sees.
var sysHost = map[string]bool{
	"fs/file-max": true, "fs/file-nr": true, "fs/nr_open": true,
	"fs/inotify/max_queued_events": true, "fs/inotify/max_user_instances": true, "fs/inotify/max_user_watches": true,
	"kernel/cap_last_cap": true, "kernel/ngroups_max": true, "kernel/overflowgid": true, "kernel/overflowuid": true,
	"kernel/pid_max": true, "kernel/shmall": true, "kernel/shmmax": true, "kernel/shmmni": true, "kernel/threads-max": true,
	"kernel/random/entropy_avail": true, "kernel/random/poolsize": true,
	"net/core/somaxconn": true, "net/ipv4/ip_local_port_range": true,
	"vm/max_map_count": true, "vm/overcommit_memory": true, "vm/swappiness": true,
}

// newUUID returns a random (version 4) UUID as text.
func newUUID() string {
	var u [16]byte
	rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
}

// sysWrites are the writes to /proc/sys: the files open for writing
// (the guest writes their memfds natively; the kernel reads them back
// before anything observes a value: uname, sethostname, a read of
// /proc/sys) and the values written to the files the kernel only keeps.
type sysWrites struct {
	open []*sysWriter
	vals map[string]string
}

// sysWriter is one open of a /proc/sys file for writing.
type sysWriter struct {
	path string
	f    *os.File // the engine's copy of the guest's memfd
	seen []byte   // the content last applied
}

// maxSysWriters bounds the opens kept; the oldest are dropped (their
// writes were applied; a later write through one is missed).
const maxSysWriters = 32

// SysWrite takes note of a /proc/sys file opened for writing. Only root
// gets here (the files are 0644, owned by root).
func (k *Kernel) SysWrite(c *vfs.Ctx, path string, f *os.File) error {
	g, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(f.Fd())), os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("/proc/sys/%s: %w", path, err)
	}
	init, _ := io.ReadAll(g)
	w := &k.sysw
	if len(w.open) >= maxSysWriters {
		k.applySysWrites()
		w.open[0].f.Close()
		w.open = w.open[1:]
	}
	w.open = append(w.open, &sysWriter{path: path, f: g, seen: init})
	return nil
}

// applySysWrites reads what guests wrote to /proc/sys files and applies
// the values that changed. It runs with k.mu held.
func (k *Kernel) applySysWrites() {
	w := &k.sysw
	for _, o := range w.open {
		var st syscall.Stat_t
		if syscall.Fstat(int(o.f.Fd()), &st) != nil || st.Size > 1<<16 {
			continue
		}
		b := make([]byte, st.Size)
		n, _ := o.f.ReadAt(b, 0)
		b = b[:n]
		if bytes.Equal(b, o.seen) {
			continue
		}
		o.seen = b
		if len(b) > 0 {
			k.setSys(o.path, b)
		}
	}
}

// setSys applies a value written to /proc/sys/<path>: the host and
// domain names are the kernel's UTS names (the first line, at most 64
// bytes, as Linux's proc_dostring takes it); numbers (vm/*, net/*, the
// kernel's limits) are kept as whitespace-separated fields and read back
// tab-separated, strings as their first line.
func (k *Kernel) setSys(path string, b []byte) {
	first := string(b)
	if i := strings.IndexAny(first, "\n\x00"); i >= 0 {
		first = first[:i]
	}
	switch path {
	case "kernel/hostname", "kernel/domainname":
		if len(first) > 64 {
			first = first[:64]
		}
		if path == "kernel/hostname" {
			k.hostname = first
		} else {
			k.domain = first
		}
		return
	}
	if k.sysw.vals == nil {
		k.sysw.vals = map[string]string{}
	}
	if sysNumeric(path) {
		f := strings.Fields(string(b))
		for _, x := range f {
			if _, err := strconv.ParseInt(x, 10, 64); err != nil {
				return // Linux refuses it (EINVAL): the value stays
			}
		}
		if len(f) > 0 {
			k.sysw.vals[path] = strings.Join(f, "\t")
		}
		return
	}
	k.sysw.vals[path] = first
}

// sysNumeric reports whether a /proc/sys file holds numbers.
func sysNumeric(path string) bool {
	switch path {
	case "kernel/core_pattern", "kernel/hostname", "kernel/domainname":
		return false
	}
	return true
}
