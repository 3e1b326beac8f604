package netdev

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/umltools/umltools/internal/cmdline"
	"github.com/umltools/umltools/internal/switchd"
)

// The vde transport (eth<N>=vde,[switch],[mac],[port],[group],[mode],
// [description]): a port on a vde_switch, spoken in Go as libvdeplug
// speaks it, which is the uml_switch protocol with a description after
// the request, the port in the request's type and the data socket a
// file in the switch's directory (vde_switch looks at its owner).

// vdeFallbacks are the control sockets tried without a switch, in
// libvdeplug's order.
var vdeFallbacks = []string{"/var/run/vde.ctl/ctl", "/tmp/vde.ctl/ctl", "/tmp/vde.ctl"}

// openVDE connects device e to its vde_switch.
func openVDE(e *cmdline.Eth) (Frames, string, error) {
	sw := e.Dev
	banner := "vde backend - " + sw + ", "
	if sw == "" {
		banner = "vde backend - (default socket), "
		if home := os.Getenv("HOME"); home != "" {
			for _, p := range []string{"/.vde2/default.switch", "/.vde2/stdsock"} {
				if _, err := os.Lstat(home + p); err == nil {
					sw = home + p
					break
				}
			}
		}
	}
	if e.Port != 0 {
		banner += "port " + strconv.Itoa(e.Port)
	} else {
		banner += "undefined port"
	}
	var ctls []string
	if sw != "" {
		ctls = []string{filepath.Join(sw, "ctl")}
	} else {
		ctls = vdeFallbacks
	}
	descr := e.VDEDescr
	if descr == "" {
		descr = "UML vde_transport"
	}
	name := "??"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	o := switchd.DialOptions{Port: e.Port, Description: fmt.Sprintf("%s user=%s PID=%d", descr, name, os.Getpid()),
		DataMode: os.FileMode(e.VDEMode), DataGroup: e.VDEGroup}
	var err error
	for _, ctl := range ctls {
		o.DataDir = filepath.Dir(ctl)
		var c *switchd.Conn
		if c, err = switchd.DialWith(ctl, o); err == nil {
			return c, banner + "\nvde backend - connection opened", nil
		}
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		errno = syscall.ECONNREFUSED
	}
	return nil, "", fmt.Errorf("vde_user_init: vde_open failed, errno = %d (%w)", int(errno), err)
}
