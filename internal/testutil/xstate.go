package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// On hosts whose CPU state is larger than linux.uml 6.1's XSAVE buffer
// (AMX, seen on Sapphire Rapids), the C kernel fails every
// PTRACE_SETREGSET(NT_X86_XSTATE) with EFAULT ("userspace - ptrace set fp
// regs failed, errno = 14") and no user process survives its first
// instruction. Run it under a seccomp filter that fails those two ptrace
// requests with EIO instead: UML then falls back to the FXSAVE format of
// PTRACE_GETFPREGS/SETFPREGS, as on a host without XSAVE. Guest syscalls
// stop at PTRACE_SYSEMU before seccomp, so the filter never sees them.
// FXSAVE keeps only the SSE state, so glibc in the guests must not use
// its AVX-512 string functions: NoAVX512 goes on the command line, and
// the kernel passes it to init's environment.
//
// The wrapper execs $UMLTEST_XSTATE_EXEC with its own argv, so a test's
// UML.Cmd.Args is exactly the kernel's argv either way.
const noXstateC = `
#include <stddef.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD|BPF_W|BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP|BPF_JEQ|BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET|BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD|BPF_W|BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP|BPF_JEQ|BPF_K, __NR_ptrace, 1, 0),
		BPF_STMT(BPF_RET|BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD|BPF_W|BPF_ABS, offsetof(struct seccomp_data, args[2])),
		BPF_JUMP(BPF_JMP|BPF_JEQ|BPF_K, 0x202 /* NT_X86_XSTATE */, 1, 0),
		BPF_STMT(BPF_RET|BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD|BPF_W|BPF_ABS, offsetof(struct seccomp_data, args[0])),
		BPF_JUMP(BPF_JMP|BPF_JEQ|BPF_K, 0x4204 /* PTRACE_GETREGSET */, 2, 0),
		BPF_JUMP(BPF_JMP|BPF_JEQ|BPF_K, 0x4205 /* PTRACE_SETREGSET */, 1, 0),
		BPF_STMT(BPF_RET|BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET|BPF_K, SECCOMP_RET_ERRNO|EIO),
	};
	struct sock_fprog p = { sizeof f / sizeof f[0], f };
	const char *prog = getenv("UMLTEST_XSTATE_EXEC");
	if (!prog) { fprintf(stderr, "noxstate: UMLTEST_XSTATE_EXEC not set\n"); return 2; }
	/* Root installs the filter without no_new_privs, so setuid helpers
	   (uml_net) still work; others must set it. */
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &p) &&
	    (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &p))) { perror("seccomp"); return 126; }
	unsetenv("UMLTEST_XSTATE_EXEC");
	execv(prog, argv);
	perror(prog);
	return 127;
}
`

// NoAVX512 is the kernel command-line word that keeps the C kernel's
// guests off AVX-512 when it runs under the xstate workaround.
const NoAVX512 = "GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ"

var xstate struct {
	once    sync.Once
	wrapper string // "" when linux.uml runs as is (or nothing helps)
	note    string
}

// UMLUnderWorkaround reports whether the C kernel runs under the xstate
// workaround on this host. As an ordinary user the wrapper must set
// no_new_privs, so setuid programs the kernel starts (uml_net) run
// without their privilege.
func UMLUnderWorkaround(kern string) bool { return xstateWrapper(kern) != "" }

// xstateWrapper decides once per test binary, with a probe boot, whether
// linux.uml needs the workaround here, and returns the wrapper to run it
// with ("" when it runs as is).
func xstateWrapper(kern string) string {
	xstate.once.Do(func() {
		if !strings.Contains(probeUML(kern, ""), fpRegsFailure) {
			return
		}
		w, err := buildNoXstate()
		if err != nil {
			xstate.note = err.Error()
			return
		}
		if out := probeUML(kern, w); strings.Contains(out, fpRegsFailure) || !strings.Contains(out, "PROBE-OK") {
			xstate.note = "linux.uml fails here even under the xstate workaround"
			return
		}
		xstate.wrapper = w
	})
	return xstate.wrapper
}

// probeUML boots linux.uml on the host's / with a one-line init and
// returns what it printed.
func probeUML(kern, wrapper string) string {
	dir, err := os.MkdirTemp("", "umlprobe")
	if err != nil {
		return ""
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "init.sh")
	os.WriteFile(script, []byte("#!/bin/sh\necho PROBE-OK\necho o > /proc/sysrq-trigger\n"), 0o755)
	args := []string{"mem=64M", "rootfstype=hostfs", "rootflags=/", "ro", "init=" + script, "con0=null,fd:1", "con=null", "ssl=null",
		fmt.Sprintf("umid=probe%d", os.Getpid()), "uml_dir=" + dir + "/"}
	cmd := exec.Command(kern, args...)
	if wrapper != "" {
		args = append(args, NoAVX512)
		cmd = &exec.Cmd{Path: wrapper, Args: append([]string{kern}, args...), Env: append(os.Environ(), "UMLTEST_XSTATE_EXEC="+kern)}
	}
	cmd.Dir = dir
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if cmd.Start() != nil {
		return ""
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
	}
	return out.String()
}

// buildNoXstate compiles the wrapper (once per source).
func buildNoXstate() (string, error) {
	w, err := BuildStaticC("noxstate", noXstateC)
	if err != nil {
		return "", fmt.Errorf("the xstate workaround: %w", err)
	}
	return w, nil
}
