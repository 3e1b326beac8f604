package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/fs/sysfs"
	"github.com/umltools/umltools/internal/fs/tmpfs"
	"github.com/umltools/umltools/internal/sandbox"
	"github.com/umltools/umltools/internal/vfs"
)

// This file is the machine's control of a running kernel: what the
// management console (mconsole) and SysRq ask of it. None of these may be
// called with k.mu held.

// Halt ends the machine as reboot(2) with mode would, without asking the
// guest: every guest process is killed and OnHalt runs (mconsole halt and
// reboot, SysRq b and o).
func (k *Kernel) Halt(mode HaltMode) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.halt(mode)
}

// CtrlAltDel is the Ctrl-Alt-Del key (mconsole cad): while the guest has
// not disabled it with reboot(LINUX_REBOOT_CMD_CAD_OFF) the machine
// restarts at once, as Linux's default does; otherwise init gets SIGINT.
func (k *Kernel) CtrlAltDel() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.cadOff {
		k.cfg.Logf("reboot: Restarting system")
		k.halt(Restart)
		return
	}
	if k.init != nil && k.init.Tgid > 0 {
		unix.Kill(k.init.Tgid, unix.SIGINT)
	}
}

// Freeze stops every guest thread until Thaw (mconsole stop); the guest
// sees nothing of it.
func (k *Kernel) Freeze() error {
	sb, err := k.running()
	if err != nil {
		return err
	}
	return sb.Freeze()
}

// Thaw resumes what Freeze stopped (mconsole go).
func (k *Kernel) Thaw() error {
	sb, err := k.running()
	if err != nil {
		return err
	}
	return sb.Thaw()
}

// running returns the guest's sandbox, or an error before Start.
func (k *Kernel) running() (*sandbox.Sandbox, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.sb == nil {
		return nil, errors.New("kernel: no guest running")
	}
	return k.sb, nil
}

// ReadProc returns the contents of /proc/<path> as the kernel itself sees
// them (mconsole proc): from the machine's procfs, outside any guest
// process.
func (k *Kernel) ReadProc(path string) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v := vfs.New(k.procfs, "proc", vfs.ReadOnly, 0)
	w := &vfs.Walker{V: v, Root: v.Root(), Cwd: v.Root()}
	d, err := w.Lookup("/"+strings.TrimLeft(path, "/"), true)
	if err != nil {
		return nil, err
	}
	on, ok := d.Node.(vfs.OpenNode)
	if !ok {
		return nil, syscall.EISDIR
	}
	f, err := on.Open(nil, syscall.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// SignalAll sends sig to every guest process but init (SysRq e and i).
func (k *Kernel) SignalAll(sig syscall.Signal) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for tgid, p := range k.procs {
		if p != k.init {
			unix.Kill(tgid, sig)
		}
	}
}

// RemountReadOnly switches every writable mount to read-only after
// writing it back (SysRq u).
func (k *Kernel) RemountReadOnly() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, m := range k.vfs.Mounts() {
		if m.Flags&vfs.ReadOnly != 0 {
			continue
		}
		if s, ok := m.FS.(vfs.SyncFS); ok {
			s.Sync()
		}
		if rm, ok := m.FS.(vfs.Remounter); ok {
			if err := rm.Remount(true); err != nil {
				k.cfg.Logf("Emergency Remount: %s: %v", m.Source, err)
				continue
			}
			m.Flags |= vfs.ReadOnly
		}
	}
}

// SyncAll writes back every mounted filesystem (SysRq s).
func (k *Kernel) SyncAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.Sync()
}

// TaskInfo is one guest thread as SysRq t and mconsole stack show it.
type TaskInfo struct {
	Pid, Tid, PPid int    // guest ids
	HostTid        int    // the host thread
	Comm           string // the process's name
	State          string // the host's state letter and word, e.g. "S (sleeping)"
}

// Tasks lists the guest's threads by guest pid and tid.
func (k *Kernel) Tasks() []TaskInfo {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []TaskInfo
	for _, p := range k.procs {
		ppid := 0
		if p.Parent != nil {
			ppid = p.Parent.Pid()
		}
		for tid, th := range p.threads {
			out = append(out, TaskInfo{Pid: p.Pid(), Tid: th.NsID(), PPid: ppid, HostTid: tid,
				Comm: k.threadComm(p, tid), State: hostState(tid)})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pid != out[j].Pid {
			return out[i].Pid < out[j].Pid
		}
		return out[i].Tid < out[j].Tid
	})
	return out
}

// hostState is the State: line of a host thread's status.
func hostState(tid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return "X (dead)"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "State:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// AddBlockDevice makes the block device node /dev/<name> (a ubd disk
// plugged in at boot or through mconsole config).
func (k *Kernel) AddBlockDevice(name string, rdev uint64) error {
	root := k.devfs.Root().(*tmpfs.Dir)
	_, err := root.Mknod(name, syscall.S_IFBLK|0o660, rdev, 0, diskGid)
	return err
}

// AddTTY makes the terminal node /dev/<name> (a console or serial line
// the machine has), root:tty 0620 as devtmpfs makes them.
func (k *Kernel) AddTTY(name string, rdev uint64) error {
	root := k.devfs.Root().(*tmpfs.Dir)
	_, err := root.Mknod(name, syscall.S_IFCHR|0o620, rdev, 0, ttyGid)
	return err
}

// ttyGid is Debian's "tty" group.
const ttyGid = 5

// RemoveBlockDevice removes /dev/<name> (a ubd disk unplugged).
func (k *Kernel) RemoveBlockDevice(name string) error {
	return k.devfs.Root().(*tmpfs.Dir).Unlink(name)
}

// diskGid is Debian's "disk" group, which owns block device nodes.
const diskGid = 6

// Disks is the machine's block devices as mount(2) reaches them.
type Disks interface {
	// MountDisk returns the filesystem of fstype on block device rdev,
	// mounted with the mount(2) data, and whether it is read-only (asked
	// for, or all the driver can do); it fails with ENXIO when no disk is
	// plugged in there and EBUSY when it is mounted already.
	MountDisk(rdev uint64, fstype string, readOnly bool, data string) (fs vfs.FS, ro bool, err error)
	// UnmountDisk writes back and releases what MountDisk returned.
	UnmountDisk(fs vfs.FS) error
	// OpenDisk opens block device rdev itself for a guest (fsck reads
	// the raw disk) with the open(2) flags; ENXIO when no disk is there.
	OpenDisk(rdev uint64, flags int) (*os.File, error)
	// List lists the disks plugged in, for /sys.
	List() []sysfs.Disk
}

// NetIfaces lists the machine's network interfaces for /sys/class/net
// (sysfs.Source).
func (k *Kernel) NetIfaces() []sysfs.NetIface {
	if k.cfg.Net == nil {
		return nil
	}
	var l []sysfs.NetIface
	for _, f := range k.cfg.Net.Ifaces() {
		l = append(l, sysfs.NetIface{Name: f.Name, Index: f.Index, MAC: f.MAC, MTU: f.MTU, Up: f.Up, Loopback: f.Loopback,
			Flags: ifFlags(f), RxBytes: f.RxBytes, RxPackets: f.RxPackets, TxBytes: f.TxBytes, TxPackets: f.TxPackets})
	}
	return l
}

// Disks lists the machine's disks (sysfs.Source; k.mu held).
func (k *Kernel) Disks() []sysfs.Disk {
	if k.cfg.Disks == nil {
		return nil
	}
	return k.cfg.Disks.List()
}

// Nodename is the machine's hostname (uname's nodename).
func (k *Kernel) Nodename() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, n, _, _, _ := k.Uname()
	return n
}

// ErrNoPid is returned by Stack for a pid no guest thread has.
var ErrNoPid = errors.New("kernel: no such guest pid")

// Stack writes what mconsole `stack <pid>` shows of guest thread pid (a
// pid or a tid of the guest's namespace): its registers and a user-space
// backtrace found by following frame pointers, each address named by the
// guest mapping it falls in.
func (k *Kernel) Stack(pid int, w io.Writer) error {
	k.mu.Lock()
	sb := k.sb
	var th *Thread
	for _, p := range k.procs {
		for _, t := range p.threads {
			if t.NsID() == pid {
				th = t
			}
		}
	}
	var maps []byte
	if th != nil {
		maps, _ = k.maps(th.Proc)
	}
	k.mu.Unlock()
	if th == nil || pid <= 0 || sb == nil {
		return ErrNoPid
	}
	regs, err := sb.Regs(th.Tid)
	if err != nil {
		return fmt.Errorf("stack %d: %w", pid, err)
	}
	m := parseMaps(maps)
	fmt.Fprintf(w, "Task %d (%s), host thread %d\n", pid, k.commOf(th), th.Tid)
	writeRegs(w, &regs)
	fmt.Fprintf(w, "Call Trace (frame pointers):\n")
	mem := &sandbox.Task{Tid: th.Tid, Tgid: th.Proc.Tgid}
	fmt.Fprintf(w, " [<%016x>] %s\n", regs.Rip, m.name(regs.Rip))
	fp := regs.Rbp
	for i := 0; i < 64 && fp != 0 && fp%8 == 0; i++ {
		var fr [16]byte
		if _, err := mem.ReadMem(fp, fr[:]); err != nil {
			break
		}
		next := binary.LittleEndian.Uint64(fr[:8])
		ret := binary.LittleEndian.Uint64(fr[8:])
		if !m.exec(ret) {
			break // not a frame: the code was built without frame pointers
		}
		fmt.Fprintf(w, " [<%016x>] %s\n", ret, m.name(ret))
		if next <= fp {
			break
		}
		fp = next
	}
	return nil
}

func (k *Kernel) commOf(th *Thread) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.threadComm(th.Proc, th.Tid)
}

// writeRegs prints registers in the layout of Linux's __show_regs.
func writeRegs(w io.Writer, r *abi.Regs) {
	fmt.Fprintf(w, "RIP: %04x:%016x\n", r.Cs, r.Rip)
	fmt.Fprintf(w, "RSP: %04x:%016x EFLAGS: %08x\n", r.Ss, r.Rsp, r.Eflags)
	fmt.Fprintf(w, "RAX: %016x RBX: %016x RCX: %016x\n", r.Rax, r.Rbx, r.Rcx)
	fmt.Fprintf(w, "RDX: %016x RSI: %016x RDI: %016x\n", r.Rdx, r.Rsi, r.Rdi)
	fmt.Fprintf(w, "RBP: %016x R08: %016x R09: %016x\n", r.Rbp, r.R8, r.R9)
	fmt.Fprintf(w, "R10: %016x R11: %016x R12: %016x\n", r.R10, r.R11, r.R12)
	fmt.Fprintf(w, "R13: %016x R14: %016x R15: %016x\n", r.R13, r.R14, r.R15)
	fmt.Fprintf(w, "ORIG_RAX: %016x FS_BASE: %016x\n", r.OrigRax, r.FsBase)
}

// mapping is one line of a guest's /proc/<pid>/maps.
type mapping struct {
	start, end, off uint64
	exec            bool
	name            string
}

type mappings []mapping

func parseMaps(b []byte) mappings {
	var out mappings
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		var m mapping
		if _, err := fmt.Sscanf(f[0], "%x-%x", &m.start, &m.end); err != nil {
			continue
		}
		m.off, _ = strconv.ParseUint(f[2], 16, 64)
		m.exec = strings.Contains(f[1], "x")
		if len(f) >= 6 {
			m.name = f[len(f)-1]
		}
		out = append(out, m)
	}
	return out
}

func (ms mappings) find(a uint64) *mapping {
	for i := range ms {
		if a >= ms[i].start && a < ms[i].end {
			return &ms[i]
		}
	}
	return nil
}

func (ms mappings) exec(a uint64) bool {
	m := ms.find(a)
	return m != nil && m.exec
}

// name is an address as "<file>+0x<offset in file>", or "?".
func (ms mappings) name(a uint64) string {
	m := ms.find(a)
	switch {
	case m == nil:
		return "?"
	case m.name == "":
		return fmt.Sprintf("[anon %x]+0x%x", m.start, a-m.start)
	}
	return fmt.Sprintf("%s+0x%x", m.name, a-m.start+m.off)
}

// MemInfo returns the machine's memory size and what is free, in bytes.
func (k *Kernel) MemInfo() (total, free uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.memInfo()
}

// SetMem changes the machine's memory size (mconsole config mem=±N).
func (k *Kernel) SetMem(bytes uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cfg.Mem = bytes
}

// openNotify opens /proc/mconsole for a guest: the write end of a pipe
// whose reader passes each chunk, at most 512 bytes (the notify packet's
// limit), to UserNotify until every writer has closed it.
func (k *Kernel) openNotify() (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	go func() {
		defer r.Close()
		buf := make([]byte, 512)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				k.cfg.UserNotify(append([]byte(nil), buf[:n]...))
			}
			if err != nil {
				return
			}
		}
	}()
	return w, nil
}
