// Command linux is the umltools User Mode Linux engine: it boots a root
// filesystem image (ubd0=rootfs.img) as an unprivileged process and runs
// its unmodified x86-64 programs. Its command line is the UML kernel's;
// see linux(1).
package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"runtime/pprof"

	"github.com/umltools/umltools/internal/machine"
	_ "github.com/umltools/umltools/internal/sandbox" // the guest stub runs from its init
)

func main() {
	// The engine's heap is small and short-lived (syscall requests,
	// paths, stat buffers): collecting it less often costs little memory
	// and saves a few percent of every trap.
	debug.SetGCPercent(400)
	io := machine.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	if p := os.Getenv("UMLTOOLS_CPUPROFILE"); p != "" {
		os.Exit(profiled(p, io))
	}
	os.Exit(machine.Run(os.Args[1:], io))
}

// profiled runs the machine while writing a Go CPU profile of the engine
// to path (for performance reports; see linux(1), ENVIRONMENT).
func profiled(path string, io machine.IO) int {
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "linux: UMLTOOLS_CPUPROFILE: %v\n", err)
		return 1
	}
	rc := machine.Run(os.Args[1:], io)
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "linux: UMLTOOLS_CPUPROFILE: %v\n", err)
	}
	return rc
}
