package kernel

import (
	"encoding/binary"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/version"
)

// Release is the kernel release uname reports.
const Release = "6.1.0-umltools"

// UnameVersion is uname's version field.
func UnameVersion() string { return "#1 umltools " + version.Version }

// Uname returns the machine's utsname fields, after the writes to
// /proc/sys that came before (k.mu held).
func (k *Kernel) Uname() (sysname, nodename, release, ver, machine string) {
	k.applySysWrites()
	return "Linux", k.hostname, Release, UnameVersion(), "x86_64"
}

func (c *call) sysUname(buf uint64) int64 {
	var u abi.Utsname
	s, n, r, v, m := c.k.Uname()
	copy(u.Sysname[:64], s)
	copy(u.Nodename[:64], n)
	copy(u.Release[:64], r)
	copy(u.Version[:64], v)
	copy(u.Machine[:64], m)
	copy(u.Domainname[:64], c.k.domain)
	return c.write(buf, unsafe.Slice((*byte)(unsafe.Pointer(&u)), unsafe.Sizeof(u)))
}

func (c *call) sysSethostname(addr uint64, n int, domain bool) int64 {
	if !c.p.Cred.root() {
		return -abi.EPERM
	}
	if n < 0 || n > 64 {
		return -abi.EINVAL
	}
	b := make([]byte, n)
	if r := c.read(addr, b); r < 0 && n > 0 {
		return r
	}
	c.k.applySysWrites() // an earlier write to /proc/sys comes first
	if domain {
		c.k.domain = string(b)
	} else {
		c.k.hostname = string(b)
	}
	return 0
}

// Hostname returns the current nodename.
func (k *Kernel) Hostname() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.applySysWrites()
	return k.hostname
}

func (c *call) sysSysinfo(buf uint64) int64 {
	var si abi.Sysinfo
	var host unix.Sysinfo_t
	unix.Sysinfo(&host)
	si.Uptime = int64(time.Since(c.k.boot) / time.Second)
	si.Loads = [3]uint64{host.Loads[0], host.Loads[1], host.Loads[2]}
	total, free := c.k.memInfo()
	si.Totalram, si.Freeram = total, free
	si.Procs = uint16(len(c.k.threads))
	si.Unit = 1
	return c.write(buf, unsafe.Slice((*byte)(unsafe.Pointer(&si)), unsafe.Sizeof(si)))
}

// memInfo returns the machine's total memory (mem=, or 128 MiB like the
// C kernel's default... capped by the host) and an estimate of what is
// free: total minus the guests' resident memory.
func (k *Kernel) memInfo() (total, free uint64) {
	total = k.cfg.Mem
	if total == 0 {
		total = DefaultMem
	}
	used := uint64(0)
	for tgid := range k.procs {
		used += rss(tgid)
	}
	if used > total {
		used = total
	}
	return total, total - used
}

// DefaultMem is the memory size without mem= (the C kernel's default).
const DefaultMem = 32 << 20

// reboot(2) magic numbers and commands.
const (
	rebootMagic1      = 0xfee1dead
	rebootCmdRestart  = 0x01234567
	rebootCmdHalt     = 0xcdef0123
	rebootCmdPowerOff = 0x4321fedc
	rebootCmdRestart2 = 0xa1b2c3d4
	rebootCmdCadOn    = 0x89abcdef
	rebootCmdCadOff   = 0
)

func (c *call) sysReboot(magic1, magic2, cmd uint32) int64 {
	if !c.p.Cred.root() {
		return -abi.EPERM
	}
	if magic1 != rebootMagic1 {
		return -abi.EINVAL
	}
	switch magic2 {
	case 672274793, 85072278, 369367448, 537993216:
	default:
		return -abi.EINVAL
	}
	switch cmd {
	case rebootCmdCadOn, rebootCmdCadOff:
		c.k.cadOff = cmd == rebootCmdCadOff
		return 0
	case rebootCmdHalt:
		c.k.cfg.Logf("reboot: System halted")
		c.k.halt(Halt)
	case rebootCmdPowerOff:
		c.k.cfg.Logf("reboot: Power down")
		c.k.halt(PowerOff)
	case rebootCmdRestart, rebootCmdRestart2:
		c.k.cfg.Logf("reboot: Restarting system")
		c.k.halt(Restart)
	default:
		return -abi.EINVAL
	}
	return -abi.EINTR // never seen: the caller is already dying
}

// syslog(2) actions.
const (
	syslogRead       = 2
	syslogReadAll    = 3
	syslogReadClear  = 4
	syslogSizeBuf    = 10
	syslogSizeUnread = 9
)

func (c *call) sysSyslog(typ int, buf uint64, n int) int64 {
	var log []byte
	if c.k.cfg.Dmesg != nil {
		log = c.k.cfg.Dmesg()
	}
	switch typ {
	case syslogReadAll, syslogReadClear, syslogRead:
		if n < 0 {
			return -abi.EINVAL
		}
		if len(log) > n {
			log = log[len(log)-n:]
		}
		if r := c.write(buf, log); r < 0 {
			return r
		}
		return int64(len(log))
	case syslogSizeBuf:
		return 1 << 17
	case syslogSizeUnread:
		return int64(len(log))
	case 0, 1, 5, 6, 7, 8:
		return 0
	}
	return -abi.EINVAL
}

// Credentials. A root process may take any ids; others may only move
// between their real, effective and saved ids, as setresuid(2) says.
func (c *call) sysSetresuid(r, e, s int64, gid bool) int64 {
	cr := c.p.Cred
	ids := []*uint32{&cr.Uid, &cr.Euid, &cr.Suid, &cr.Fsuid}
	if gid {
		ids = []*uint32{&cr.Gid, &cr.Egid, &cr.Sgid, &cr.Fsgid}
	}
	allowed := func(v int64) bool {
		if v == -1 || cr.root() {
			return true
		}
		u := uint32(v)
		return u == *ids[0] || u == *ids[1] || u == *ids[2]
	}
	if !allowed(r) || !allowed(e) || !allowed(s) {
		return -abi.EPERM
	}
	c.p.Cred = cr.clone()
	cr = c.p.Cred
	ids = []*uint32{&cr.Uid, &cr.Euid, &cr.Suid, &cr.Fsuid}
	if gid {
		ids = []*uint32{&cr.Gid, &cr.Egid, &cr.Sgid, &cr.Fsgid}
	}
	for i, v := range []int64{r, e, s} {
		if v != -1 {
			*ids[i] = uint32(v)
		}
	}
	*ids[3] = *ids[1]
	return 0
}

func (c *call) sysSetuid(id int64, gid bool) int64 {
	if c.p.Cred.root() {
		return c.sysSetresuid(id, id, id, gid)
	}
	return c.sysSetresuid(-1, id, -1, gid)
}

func (c *call) sysSetreuid(r, e int64, gid bool) int64 {
	cr := c.p.Cred
	real := cr.Uid
	if gid {
		real = cr.Gid
	}
	s := int64(-1)
	if r != -1 || (e != -1 && uint32(e) != real) {
		s = e
		if s == -1 {
			if gid {
				s = int64(cr.Egid)
			} else {
				s = int64(cr.Euid)
			}
		}
	}
	return c.sysSetresuid(r, e, s, gid)
}

func (c *call) sysGetres(a, b, d uint64, gid bool) int64 {
	cr := c.p.Cred
	v := [3]uint32{cr.Uid, cr.Euid, cr.Suid}
	if gid {
		v = [3]uint32{cr.Gid, cr.Egid, cr.Sgid}
	}
	for i, addr := range []uint64{a, b, d} {
		var buf [4]byte
		binary.LittleEndian.PutUint32(buf[:], v[i])
		if r := c.write(addr, buf[:]); r < 0 {
			return r
		}
	}
	return 0
}

func (c *call) sysSetfsuid(id int64, gid bool) int64 {
	cr := c.p.Cred
	old := cr.Fsuid
	if gid {
		old = cr.Fsgid
	}
	if id != -1 && (cr.root() || uint32(id) == old) {
		c.p.Cred = cr.clone()
		if gid {
			c.p.Cred.Fsgid = uint32(id)
		} else {
			c.p.Cred.Fsuid = uint32(id)
		}
	}
	return int64(old)
}

func (c *call) sysGetgroups(n int, addr uint64) int64 {
	g := c.p.Cred.Groups
	if n == 0 {
		return int64(len(g))
	}
	if n < len(g) {
		return -abi.EINVAL
	}
	b := make([]byte, 4*len(g))
	for i, v := range g {
		binary.LittleEndian.PutUint32(b[4*i:], v)
	}
	if r := c.write(addr, b); r < 0 {
		return r
	}
	return int64(len(g))
}

func (c *call) sysSetgroups(n int, addr uint64) int64 {
	if !c.p.Cred.root() {
		return -abi.EPERM
	}
	if n < 0 || n > 65536 {
		return -abi.EINVAL
	}
	b := make([]byte, 4*n)
	if n > 0 {
		if r := c.read(addr, b); r < 0 {
			return r
		}
	}
	g := make([]uint32, n)
	for i := range g {
		g[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	c.p.Cred = c.p.Cred.clone()
	c.p.Cred.Groups = g
	return 0
}

// Priorities: PRIO_USER would reach every host process of the engine's
// uid, so it is confined to the guest's processes; PRIO_PROCESS and
// PRIO_PGRP name guest ids and run natively in the guest's pid namespace.
func (c *call) sysPriority(set bool, which int) int64 {
	const prioUser = 2
	if which == prioUser {
		if !set {
			return 20 // nice 0, as getpriority(2) returns 20-nice
		}
		return 0
	}
	return continued
}
