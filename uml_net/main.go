// Command uml_net is the privileged network helper the User Mode Linux
// kernel runs to create tap devices and set up host routes and proxy ARP
// for its guests: a drop-in replacement for the uml-utilities uml_net that
// runs no other program (netlink only) and acts only on devices it made
// for the calling user.
package main

import (
	"os"

	"github.com/umltools/umltools/internal/cli"
	"golang.org/x/sys/unix"
)

func main() {
	secureStart()
	cli.Main("uml_net", run)
}

// secureStart runs before anything else: uml_net is setuid root (or holds
// CAP_NET_ADMIN), so nothing from the caller's environment is trusted. The
// environment is emptied, and descriptors 0-2 are made to exist (closed
// ones point to /dev/null) so no file opened later can land on them; a
// /dev/null fd 1 is then refused as a reply channel.
func secureStart() {
	os.Clearenv()
	for fd := 0; fd <= 2; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == unix.EBADF {
			if _, err := unix.Open("/dev/null", unix.O_RDWR, 0); err != nil {
				os.Exit(1)
			}
		}
	}
	unix.Umask(0o022)
}
