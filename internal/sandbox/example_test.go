package sandbox_test

import (
	"fmt"
	"os"
	"unsafe"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/sandbox"
)

// kernel is the smallest Handler: it serves uname and lets the rest run.
type kernel struct {
	sandbox.PassThrough
}

func (kernel) Syscall(t *sandbox.Task, r *abi.Regs) sandbox.Action {
	if r.OrigRax != abi.SYS_UNAME {
		return sandbox.Native()
	}
	var u abi.Utsname
	copy(u.Sysname[:], "Linux")
	copy(u.Nodename[:], "guest")
	if _, err := t.WriteMem(r.Rdi, unsafe.Slice((*byte)(unsafe.Pointer(&u)), unsafe.Sizeof(u))); err != nil {
		return sandbox.Fail(abi.EFAULT)
	}
	return sandbox.Emulate(0)
}

// Start a static program as the guest's init (pid 1, uid 0) and wait for
// it. A real engine serves every traced syscall from its VFS instead of
// letting it run on host paths.
func Example() {
	ws, err := sandbox.Run(sandbox.Config{
		Path:    "/bin/busybox",
		Argv:    []string{"sh", "-c", "echo $$; uname -n"},
		Env:     []string{"PATH=/bin"},
		Files:   []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Handler: kernel{},
	})
	fmt.Println(ws.ExitStatus(), err)
}
