package machine

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/cmdline"
	"github.com/umltools/umltools/internal/cow"
	"github.com/umltools/umltools/internal/ext4"
	"github.com/umltools/umltools/internal/fs/extfs"
	"github.com/umltools/umltools/internal/fs/sysfs"
	"github.com/umltools/umltools/internal/kernel"
	"github.com/umltools/umltools/internal/mconsole"
	"github.com/umltools/umltools/internal/ubd"
	"github.com/umltools/umltools/internal/vfs"
)

// This file is the machine's ubd disks after boot: the /dev/ubdX nodes,
// mount(2) of a disk's ext4 filesystem (kernel.Disks), and hot-plug by
// mconsole `config ubdN=…` / `remove ubdN`.

// ubdMajor is the block major of ubd disks; each has 16 minors.
const ubdMajor = 98

// ubdDev is the device number of disk unit n.
func ubdDev(n int) uint64 { return vfs.Mkdev(ubdMajor, uint32(n)<<4) }

// openDisk opens the device sp describes, with the C kernel's messages
// for a locked file.
func (m *machine) openDisk(sp *cmdline.Ubd) (ubd.Device, error) {
	d, err := ubd.Open(sp, &ubd.Options{Logf: m.logf})
	if err != nil {
		var le *cow.LockedError
		if errors.As(err, &le) {
			m.errorf("F_SETLK failed, file already locked by pid %d", le.Pid)
			m.errorf("Failed to lock '%s', err = 11", le.Path)
		}
	}
	return d, err
}

// addDiskNodes makes /dev/ubdX for every disk plugged in (at boot).
func (m *machine) addDiskNodes(k *kernel.Kernel) {
	m.diskMu.Lock()
	defer m.diskMu.Unlock()
	for n, d := range m.disks {
		if d != nil {
			if err := k.AddBlockDevice(m.cfg.Ubd[n].Name(), ubdDev(n)); err != nil {
				m.logf("ubd%c: /dev node: %v", 'a'+n, err)
			}
		}
	}
}

// plugDisk adds disk sp at run time (mconsole config ubdN=…): the C
// kernel's checks and messages, then /dev/ubdX in the running guest.
func (m *machine) plugDisk(sp *cmdline.Ubd) error {
	m.diskMu.Lock()
	defer m.diskMu.Unlock()
	n := sp.Unit
	if m.disks[n] != nil || (m.cfg.Ubd[n] != nil && m.cfg.Ubd[n].File != "") {
		return &mconsole.Error{Code: -int32(unix.EBUSY), Text: "Device is already configured"}
	}
	if sp.File == "" {
		m.cfg.Ubd[n] = sp // a device without a file, as the kernel allows
		return nil
	}
	d, err := m.openDisk(sp)
	if err != nil {
		var en syscall.Errno
		if errors.As(err, &en) && (en == syscall.ENOENT || en == syscall.EISDIR || en == syscall.ENOTDIR) {
			return &mconsole.Error{Code: -int32(en), Text: "Couldn't determine size of device's file"}
		}
		// The C kernel adds the device and logs the failed open.
		m.errorf("%s: Can't open \"%s\": %v", sp.Name(), sp.File, err)
		return &mconsole.Error{Code: 1, Text: fmt.Sprintf("%s: %v", sp.Name(), err)}
	}
	m.disks[n] = d
	m.cfg.Ubd[n] = sp
	if k := m.kern.Load(); k != nil {
		if err := k.AddBlockDevice(sp.Name(), ubdDev(n)); err != nil {
			m.logf("%s: /dev node: %v", sp.Name(), err)
		}
	}
	m.logf("%s: hot-added %s (%d bytes)", sp.Name(), sp.File, d.Size())
	return nil
}

// unplugDisk removes disk n (mconsole remove ubdN): refused while the
// guest has it mounted or it is the root.
func (m *machine) unplugDisk(n int) error {
	m.diskMu.Lock()
	defer m.diskMu.Unlock()
	d := m.disks[n]
	if d == nil && (m.cfg.Ubd[n] == nil || m.cfg.Ubd[n].File != "") {
		return mconsole.ErrNoDevice
	}
	if _, busy := m.mounted[n]; busy || (n == 0 && m.rootIsUbd) {
		return mconsole.ErrDeviceBusy
	}
	name := fmt.Sprintf("ubd%c", 'a'+n)
	if k := m.kern.Load(); k != nil {
		k.RemoveBlockDevice(name)
	}
	m.disks[n] = nil
	m.cfg.Ubd[n] = nil
	if d != nil {
		if err := d.Close(); err != nil {
			m.errorf("%s: %v", name, err)
		}
	}
	return nil
}

// diskUnit is the unit of plugged-in disk rdev (diskMu held): whole disks
// only, no partitions.
func (m *machine) diskUnit(rdev uint64) (int, bool) {
	n := int(vfs.Minor(rdev) >> 4)
	if vfs.Major(rdev) != ubdMajor || vfs.Minor(rdev)&15 != 0 || n >= len(m.disks) || m.disks[n] == nil {
		return 0, false
	}
	return n, true
}

// MountDisk mounts the ext4 filesystem of the disk with device number
// rdev (kernel.Disks).
func (m *machine) MountDisk(rdev uint64, fstype string, readOnly bool, data string) (vfs.FS, bool, error) {
	m.diskMu.Lock()
	defer m.diskMu.Unlock()
	n, ok := m.diskUnit(rdev)
	if !ok {
		return nil, false, syscall.ENXIO
	}
	if _, busy := m.mounted[n]; busy || (n == 0 && m.rootIsUbd) {
		return nil, false, syscall.EBUSY
	}
	d := m.disks[n]
	name := m.cfg.Ubd[n].Name()
	ro := readOnly || d.ReadOnly()
	opts := extfs.Options{ReadOnly: ro, Discard: !m.cfg.Ubd[n].NoTrim && hasFlag(data, "discard"), Logf: m.logf, Held: m.held, Dropped: m.dropped}
	fs, err := extfs.Mount(d, d.Size(), opts)
	if err != nil && !ro && errors.Is(err, ext4.ErrReadOnly) {
		// What the driver reads but cannot write (ext2/ext3 block maps,
		// inline data): read-only, with the reason, as for the root.
		m.logf("EXT4-fs (%s): %v; mounting read-only", name, err)
		opts.ReadOnly = true
		fs, err = extfs.Mount(d, d.Size(), opts)
	}
	if err != nil {
		m.logf("EXT4-fs (%s): %v", name, err)
		return nil, false, syscall.EINVAL
	}
	m.mounted[n] = fs
	mode := "read-write"
	if !fs.Writable() {
		mode = "read-only"
	}
	m.logf("EXT4-fs (%s): mounted filesystem without journal (%s).", name, mode)
	return fs, !fs.Writable(), nil
}

// OpenDisk opens the disk with device number rdev for a guest that opens
// its node (kernel.Disks): the raw image's host file, with the guest's
// flags. Writing is refused (EBUSY) while the filesystem on it is mounted
// read-write, as the driver's cache would not see the writes (the kernel
// checks the root's mount, this the other disks'); a COW
// device has no single host file (ENXIO, logged).
func (m *machine) OpenDisk(rdev uint64, flags int) (*os.File, error) {
	m.diskMu.Lock()
	defer m.diskMu.Unlock()
	n, ok := m.diskUnit(rdev)
	if !ok {
		return nil, syscall.ENXIO
	}
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		if fs, ok := m.mounted[n]; ok && fs.Writable() {
			return nil, syscall.EBUSY
		}
	}
	f, err := ubd.Reopen(m.disks[n], flags)
	if errors.Is(err, ubd.ErrNotRaw) {
		m.logf("%s: a COW device cannot be opened by the guest (only its filesystem mounted)", m.cfg.Ubd[n].Name())
		return nil, syscall.ENXIO
	}
	return f, err
}

// List lists the disks plugged in (kernel.Disks, for /sys).
func (m *machine) List() []sysfs.Disk {
	m.diskMu.Lock()
	defer m.diskMu.Unlock()
	var out []sysfs.Disk
	for n, d := range m.disks {
		if d != nil {
			out = append(out, sysfs.Disk{Name: m.cfg.Ubd[n].Name(), Major: ubdMajor, Minor: uint32(n) << 4,
				Sectors: uint64(d.Size()) / 512, ReadOnly: d.ReadOnly()})
		}
	}
	return out
}

// UnmountDisk writes back and releases a filesystem MountDisk returned.
func (m *machine) UnmountDisk(fs vfs.FS) error {
	m.diskMu.Lock()
	defer m.diskMu.Unlock()
	for n, f := range m.mounted {
		if vfs.FS(f) == fs {
			delete(m.mounted, n)
			m.logf("EXT4-fs (%s): unmounting filesystem.", m.cfg.Ubd[n].Name())
			return f.Close()
		}
	}
	return os.ErrNotExist
}

// unmountDisks cleanly unmounts every disk the guest left mounted (the
// boot is over: its mount tree is gone).
func (m *machine) unmountDisks() {
	m.diskMu.Lock()
	defer m.diskMu.Unlock()
	for n, f := range m.mounted {
		delete(m.mounted, n)
		if err := f.Close(); err != nil {
			m.errorf("EXT4-fs (%s): unmount: %v", m.cfg.Ubd[n].Name(), err)
		}
	}
}

// closeDisks closes every disk (the machine's end).
func (m *machine) closeDisks() {
	m.diskMu.Lock()
	defer m.diskMu.Unlock()
	for n, d := range m.disks {
		if d != nil {
			d.Close()
			m.disks[n] = nil
		}
	}
}

// held is the memfds guest processes hold, for the filesystems' orphans.
func (m *machine) held() map[uint64]bool {
	if k := m.kern.Load(); k != nil {
		return k.HeldMemfds()
	}
	return nil // no guest yet: keep every orphan
}

// dropped tells the kernel a page cache memfd is gone (from a syscall).
func (m *machine) dropped(hostIno uint64) {
	if k := m.kern.Load(); k != nil {
		k.ForgetMemfd(hostIno)
	}
}
