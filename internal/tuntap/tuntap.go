// Package tuntap creates and opens host tap devices through the tun clone
// device (/dev/net/tun). It is shared by tunctl, uml_net, uml_switch -tap
// and the engine's tuntap transport.
package tuntap

import (
	"fmt"
	"os"
	"strings"
	"unsafe"

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
func Open(clone, name string) (*os.File, string, error) {
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
	req.Flags = unix.IFF_TAP | unix.IFF_NO_PI
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); e != 0 {
		unix.Close(fd)
		return nil, "", fmt.Errorf("TUNSETIFF %q on %s: %w", name, clone, e)
	}
	got := strings.TrimRight(string(req.Name[:]), "\x00")
	return os.NewFile(uintptr(fd), clone+":"+got), got, nil
}
