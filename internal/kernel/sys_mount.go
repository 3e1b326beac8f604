package kernel

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/fs/hostfs"
	"github.com/umltools/umltools/internal/fs/tmpfs"
	"github.com/umltools/umltools/internal/vfs"
)

// filesystems lists the types mount(2) accepts, as /proc/filesystems
// shows them.
var filesystems = []struct {
	Name  string
	NoDev bool
}{
	{"sysfs", true}, {"tmpfs", true}, {"proc", true}, {"devtmpfs", true}, {"devpts", true}, {"ext4", false}, {"hostfs", true},
}

func (c *call) sysMount(srcAddr, targetAddr, typeAddr uint64, flags uint64, dataAddr uint64) int64 {
	if !c.p.Cred.root() {
		return -abi.EPERM
	}
	target, r := c.str(targetAddr)
	if r < 0 {
		return r
	}
	var source, fstype, data string
	if srcAddr != 0 {
		if source, r = c.str(srcAddr); r < 0 {
			return r
		}
	}
	if typeAddr != 0 {
		if fstype, r = c.str(typeAddr); r < 0 {
			return r
		}
	}
	if dataAddr != 0 {
		if data, r = c.str(dataAddr); r < 0 {
			data = ""
		}
	}
	at, r := c.lookup(abi.AT_FDCWD, target, true)
	if r < 0 {
		return r
	}
	mflags := uintptr(flags) & (vfs.ReadOnly | vfs.NoSuid | vfs.NoDev | vfs.NoExec)
	if flags&syscall.MS_REMOUNT != 0 {
		m := at.Mount
		if at != m.Root() {
			return -abi.EINVAL
		}
		if flags&syscall.MS_BIND != 0 {
			m.Flags = m.Flags&^(vfs.NoSuid|vfs.NoDev|vfs.NoExec|vfs.ReadOnly) | mflags
			return 0
		}
		if rm, ok := m.FS.(vfs.Remounter); ok {
			if err := rm.Remount(mflags&vfs.ReadOnly != 0); err != nil {
				return errno(err)
			}
		} else if mflags&vfs.ReadOnly == 0 && alwaysRO(m) {
			return -abi.EROFS
		}
		m.Flags = mflags
		return 0
	}
	if flags&(syscall.MS_BIND|syscall.MS_MOVE) != 0 {
		return -abi.EINVAL // bind and move mounts come later
	}
	if flags&(syscall.MS_SHARED|syscall.MS_PRIVATE|syscall.MS_SLAVE|syscall.MS_UNBINDABLE) != 0 {
		return 0 // propagation: one mount namespace, nothing to propagate
	}
	opts := mountOpts(data)
	var fs vfs.FS
	var diskDev uint64 // the block device of a disk's filesystem
	switch fstype {
	case "proc":
		fs = c.k.procfs
	case "devtmpfs":
		fs = c.k.devfs
	case "tmpfs":
		mode, uid, gid, err := tmpfsOpts(opts)
		if err != nil {
			return -abi.EINVAL
		}
		fs = tmpfs.New("tmpfs", tmpfs.Magic, mode, uid, gid)
	case "sysfs":
		fs = c.k.sysfs
		mflags |= vfs.NoSuid | vfs.NoDev | vfs.NoExec
	case "devpts":
		fs = c.k.devpts
		mflags |= vfs.NoSuid | vfs.NoExec
	case "hostfs":
		hf, r := c.mountHostfs(data, mflags)
		if r < 0 {
			return r
		}
		fs, opts = hf, []string{hf.HostPath()}
	case "ext4", "ext3", "ext2":
		var r int64
		if fs, diskDev, r = c.mountDisk(source, fstype, &mflags, data); r < 0 {
			return r
		}
	case "":
		return -abi.EINVAL
	default:
		return -abi.ENODEV
	}
	if source == "" {
		source = "none"
	}
	dev := c.k.vfs.AnonDev()
	switch {
	case fstype == "proc" || fstype == "devtmpfs" || fstype == "devpts" || fstype == "sysfs":
		dev = c.k.fsDev(fs)
	case diskDev != 0:
		dev = diskDev // st_dev of its files is the disk's, as in Linux
	}
	if _, err := c.k.vfs.Mount(fs, at, source, mflags, strings.Join(opts, ","), dev); err != nil {
		if c.k.disk(fs) {
			c.k.cfg.Disks.UnmountDisk(fs)
		}
		return errno(err)
	}
	return 0
}

// fsDev gives a shared filesystem (procfs, devtmpfs) the same device
// number at every mount.
func (k *Kernel) fsDev(fs vfs.FS) uint64 {
	for _, m := range k.vfs.Mounts() {
		if m.FS == fs {
			return m.Dev
		}
	}
	return k.vfs.AnonDev()
}

// alwaysRO reports whether a mount cannot be made writable: ext4 images,
// until the writable driver lands.
func alwaysRO(m *vfs.Mount) bool { return m.FS.Type() == "ext4" }

func mountOpts(data string) []string {
	var out []string
	for _, o := range strings.Split(data, ",") {
		if o != "" {
			out = append(out, o)
		}
	}
	return out
}

func tmpfsOpts(opts []string) (mode, uid, gid uint32, err error) {
	mode = 0o1777
	for _, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "mode":
			n, e := strconv.ParseUint(v, 8, 32)
			if e != nil {
				return 0, 0, 0, fmt.Errorf("bad mode %q", v)
			}
			mode = uint32(n) & 0o7777
		case "uid", "gid":
			n, e := strconv.ParseUint(v, 10, 32)
			if e != nil {
				return 0, 0, 0, fmt.Errorf("bad %s %q", k, v)
			}
			if k == "uid" {
				uid = uint32(n)
			} else {
				gid = uint32(n)
			}
		}
	}
	return mode, uid, gid, nil
}

func (c *call) sysUmount(targetAddr uint64, flags int) int64 {
	if !c.p.Cred.root() {
		return -abi.EPERM
	}
	target, r := c.str(targetAddr)
	if r < 0 {
		return r
	}
	d, r := c.lookup(abi.AT_FDCWD, target, flags&0x8 == 0) // UMOUNT_NOFOLLOW
	if r < 0 {
		return r
	}
	if d != d.Mount.Root() {
		return -abi.EINVAL
	}
	// Processes whose cwd or root is inside keep it busy.
	for _, p := range c.k.procs {
		for _, x := range []*vfs.Dentry{p.FS.Cwd, p.FS.Root} {
			if x.Mount == d.Mount && flags&0x2 == 0 { // MNT_DETACH
				return -abi.EBUSY
			}
		}
	}
	fs := d.Mount.FS
	if err := c.k.vfs.Unmount(d); err != nil {
		return errno(err)
	}
	if hf, ok := fs.(*hostfs.FS); ok && flags&0x2 == 0 {
		hf.Close() // its host directory; nothing in the guest holds it
	}
	if c.k.cfg.Disks != nil && c.k.disk(fs) && flags&0x2 == 0 {
		// Written back and released: the disk may be unplugged now. (A
		// detached mount keeps its disk until the machine ends.)
		if err := c.k.cfg.Disks.UnmountDisk(fs); err != nil {
			c.k.cfg.Logf("umount %s: %v", target, err)
		}
	}
	return 0
}

// mountDisk opens the filesystem on the block device node source.
func (c *call) mountDisk(source, fstype string, mflags *uintptr, data string) (vfs.FS, uint64, int64) {
	if c.k.cfg.Disks == nil {
		return nil, 0, -abi.ENODEV
	}
	if source == "" {
		return nil, 0, -abi.ENOTBLK
	}
	d, r := c.lookup(abi.AT_FDCWD, source, true)
	if r < 0 {
		return nil, 0, r
	}
	a, err := d.Node.Attr()
	if err != nil {
		return nil, 0, errno(err)
	}
	if a.Type() != syscall.S_IFBLK {
		return nil, 0, -abi.ENOTBLK
	}
	if d.Mount.Flags&vfs.NoDev != 0 {
		return nil, 0, -abi.EACCES
	}
	fs, ro, err := c.k.cfg.Disks.MountDisk(a.Rdev, fstype, *mflags&vfs.ReadOnly != 0, data)
	if err != nil {
		c.k.cfg.Logf("mount %s: %v", source, err)
		return nil, 0, errno(err)
	}
	if ro {
		*mflags |= vfs.ReadOnly
	}
	c.k.disks = append(c.k.disks, fs)
	return fs, a.Rdev, 0
}

// disk reports whether fs came from Disks, and forgets it.
func (k *Kernel) disk(fs vfs.FS) bool {
	for i, f := range k.disks {
		if f == fs {
			k.disks = append(k.disks[:i], k.disks[i+1:]...)
			return true
		}
	}
	return false
}

// mountHostfs opens the host directory that mount(2) data names, beneath
// the hostfs= directory. A refusal is logged with its reason (the option
// to set), as the guest sees only the errno.
func (c *call) mountHostfs(data string, mflags uintptr) (*hostfs.FS, int64) {
	path, o, err := hostfs.ParseData(data)
	if err != nil {
		c.k.cfg.Logf("%v", err)
		return nil, -abi.EINVAL
	}
	o.ReadOnly = mflags&vfs.ReadOnly != 0
	hf, err := c.k.cfg.HostFS.Mount(path, o)
	if err != nil {
		c.k.cfg.Logf("%v", err)
		if errors.Is(err, hostfs.ErrNotAllowed) || errors.Is(err, hostfs.ErrEscape) {
			return nil, -abi.EPERM
		}
		return nil, errno(err)
	}
	return hf, 0
}

// mountsText is /proc/mounts as seen from root.
func (k *Kernel) mountsText(root *vfs.Dentry) string {
	var b strings.Builder
	for _, m := range k.vfs.Mounts() {
		at := "/"
		if p := m.MountPoint(); p != nil {
			at = k.vfs.Path(p, root)
		}
		opts := mountFlagsText(m)
		if m.Opts != "" {
			opts += "," + m.Opts
		}
		fmt.Fprintf(&b, "%s %s %s %s 0 0\n", m.Source, escapeMount(at), m.FS.Type(), opts)
	}
	return b.String()
}

func escapeMount(s string) string {
	r := strings.NewReplacer(" ", `\040`, "\t", `\011`, "\n", `\012`, `\`, `\134`)
	return r.Replace(s)
}
