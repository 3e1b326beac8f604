// Package tuntap creates and opens host tap devices through the tun clone
// device (/dev/net/tun). It is shared by tunctl, uml_net, uml_switch -tap
// and the engine's tuntap transport.
package tuntap

import (
	"fmt"
	"os"
	"strings"
	"unsafe"

	"github.com/umltools/umltools/internal/errtext"

	"golang.org/x/sys/unix"
)

// DefaultClone is the tun clone device.
const DefaultClone = "/dev/net/tun"

// ifreq is struct ifreq as TUNSETIFF reads it: a name and the flags.
type ifreq struct {
	Name  [unix.IFNAMSIZ]byte
	Flags uint16
	_     [22]byte
}

// Open attaches to (or creates) the tap device name through clone (empty
// means DefaultClone) with IFF_TAP|IFF_NO_PI: frames are raw Ethernet with
// no packet-information header. An empty name lets the host pick "tapN".
// It returns the open device and the name the host gave it.
func Open(clone, name string) (*os.File, string, error) { return OpenFlags(clone, name, 0) }

// OpenFlags is Open with more TUNSETIFF flags (IFF_VNET_HDR: each frame
// read or written has a struct virtio_net_hdr before it).
func OpenFlags(clone, name string, flags uint16) (*os.File, string, error) {
	if clone == "" {
		clone = DefaultClone
	}
	if len(name) >= unix.IFNAMSIZ {
		return nil, "", fmt.Errorf("tap name %q: longer than %d bytes", name, unix.IFNAMSIZ-1)
	}
	fd, err := unix.Open(clone, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("open %s: %w", clone, err)
	}
	var req ifreq
	copy(req.Name[:], name)
	req.Flags = unix.IFF_TAP | unix.IFF_NO_PI | flags
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); e != 0 {
		unix.Close(fd)
		return nil, "", fmt.Errorf("TUNSETIFF %q on %s: %w", name, clone, e)
	}
	got := strings.TrimRight(string(req.Name[:]), "\x00")
	return os.NewFile(uintptr(fd), clone+":"+got), got, nil
}

// ioctlInt issues a TUN ioctl whose argument is a plain integer (not a
// pointer), as TUNSETPERSIST, TUNSETOWNER and TUNSETGROUP take.
func ioctlInt(f *os.File, req uint, arg uintptr) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	if cerr := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), arg)
	}); cerr != nil {
		return cerr
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// SetPersist makes the tap attached to f persistent (it outlives f) or
// not (it vanishes when its last descriptor closes): TUNSETPERSIST.
func SetPersist(f *os.File, on bool) error {
	var v uintptr
	if on {
		v = 1
	}
	if err := ioctlInt(f, unix.TUNSETPERSIST, v); err != nil {
		return fmt.Errorf("TUNSETPERSIST %d on %s: %w", v, f.Name(), err)
	}
	return nil
}

// SetOwner lets user uid attach to the tap without CAP_NET_ADMIN
// (TUNSETOWNER).
func SetOwner(f *os.File, uid int) error {
	if err := ioctlInt(f, unix.TUNSETOWNER, uintptr(uint32(uid))); err != nil {
		return fmt.Errorf("TUNSETOWNER %d on %s: %w", uid, f.Name(), err)
	}
	return nil
}

// SetGroup lets members of gid attach to the tap (TUNSETGROUP).
func SetGroup(f *os.File, gid int) error {
	if err := ioctlInt(f, unix.TUNSETGROUP, uintptr(uint32(gid))); err != nil {
		return fmt.Errorf("TUNSETGROUP %d on %s: %w", gid, f.Name(), err)
	}
	return nil
}

// ValidName reports whether name is acceptable to the kernel as an
// interface name (dev_valid_name): 1 to 15 bytes, not "." or "..", and no
// '/', ':', NUL or white space.
func ValidName(name string) bool {
	if name == "" || len(name) >= unix.IFNAMSIZ || name == "." || name == ".." {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '/' || c == ':' || c == 0:
			return false
		case c == ' ' || (c >= '\t' && c <= '\r'):
			return false
		}
	}
	return true
}

// Strerror renders err as glibc's strerror does; see errtext.Strerror.
func Strerror(err error) string { return errtext.Strerror(err) }
