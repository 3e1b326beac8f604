// Command linux is the umltools User Mode Linux engine: it boots a root
// filesystem image (ubd0=rootfs.img) as an unprivileged process and runs
// its unmodified x86-64 programs. Its command line is the UML kernel's;
// see linux(1).
package main

import (
	"os"

	"github.com/umltools/umltools/internal/machine"
	_ "github.com/umltools/umltools/internal/sandbox" // the guest stub runs from its init
)

func main() {
	os.Exit(machine.Run(os.Args[1:], machine.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}))
}
