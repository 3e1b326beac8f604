package netdev

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/hosttool"
)

// A tuntap device without a tap named is made by the uml_net helper, as
// the C kernel does: `uml_net 4 tuntap up <gate>` with its stdout one end
// of a datagram socketpair, which answers with one message (the tap's
// name in 16 bytes, then its log) carrying the tap's fd. Each IPv4
// address the guest gives the device is then announced to the host with
// `uml_net 4 add|del <tap> <addr> <mask>` (a host route and proxy ARP).
// uml_net is found on PATH (ours or Debian's: the protocol is the same).

// umlNetVersion is the helper protocol version the C kernel speaks.
const umlNetVersion = "4"

// umlNetTap runs uml_net to make a tap with gate (may be empty) as its
// host address, and returns the tap and what uml_net printed.
func umlNetTap(gate string) (*umlNetFrames, string, error) {
	bin, err := hosttool.LookPath("uml_net")
	if err != nil {
		return nil, "", err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, "", err
	}
	defer unix.Close(fds[0])
	out := os.NewFile(uintptr(fds[1]), "uml_net")
	cmd := exec.Command(bin, umlNetVersion, "tuntap", "up", gate)
	cmd.Stdout = out
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Start()
	out.Close()
	if err != nil {
		return nil, "", err
	}
	buf := make([]byte, 16+8192)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, rerr := unix.Recvmsg(fds[0], buf, oob, 0)
	werr := cmd.Wait()
	var tapfd = -1
	if rerr == nil && oobn > 0 {
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(msgs) > 0 {
			if fdl, err := unix.ParseUnixRights(&msgs[0]); err == nil && len(fdl) > 0 {
				tapfd = fdl[0]
				for _, extra := range fdl[1:] {
					unix.Close(extra)
				}
			}
		}
	}
	if tapfd < 0 || n < 16 {
		return nil, "", fmt.Errorf("tuntap_open_tramp : didn't receive a message (uml_net: %v %s)", werr, strings.TrimSpace(stderr.String()))
	}
	name := string(bytes.TrimRight(buf[:16], "\x00"))
	text := string(bytes.TrimRight(buf[16:n], "\x00"))
	unix.CloseOnExec(tapfd)
	if err := unix.SetNonblock(tapfd, true); err != nil {
		unix.Close(tapfd)
		return nil, "", err
	}
	return &umlNetFrames{tapFrames: tapFrames{f: os.NewFile(uintptr(tapfd), "tap:"+name)}, bin: bin, dev: name}, text, nil
}

// umlNetFrames is a tap made by uml_net.
type umlNetFrames struct {
	tapFrames
	bin string
	dev string
}

// AddrChanged tells the host of an IPv4 address the guest gave (add) or
// took from the device, and returns uml_net's output.
func (u *umlNetFrames) AddrChanged(add bool, p netip.Prefix) string {
	op := "del"
	if add {
		op = "add"
	}
	mask := netip.PrefixFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), p.Bits()).Masked().Addr()
	out, err := exec.Command(u.bin, umlNetVersion, op, u.dev, p.Addr().String(), mask.String()).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("uml_net %s %s: %v %s", op, u.dev, err, out)
	}
	return string(out)
}

// AddrChanger is a transport the host must hear address changes from.
type AddrChanger interface {
	AddrChanged(add bool, p netip.Prefix) string
}
