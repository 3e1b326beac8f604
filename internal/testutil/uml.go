package testutil

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// UML is a running C kernel (/usr/bin/linux.uml) started by a test.
type UML struct {
	Umid   string
	UMLDir string // the uml_dir= base; the machine dir is UMLDir/Umid
	Cmd    *exec.Cmd

	mu       sync.Mutex
	out      bytes.Buffer
	done     chan struct{}
	err      error
	restarts int
}

// UMLOptions configures StartUML.
type UMLOptions struct {
	// Umid defaults to a name derived from the test.
	Umid string
	// Init is the text of a shell script run as init (pid 1) inside a
	// hostfs-root guest (the host's / as root). It should power off with
	// `echo o > /proc/sysrq-trigger` when done. Ignored when Args sets
	// the root (e.g. a ubd0 image) — then use Extra.
	Init string
	// Args replaces the default root/init arguments entirely (umid=,
	// uml_dir= and con= are still added unless present).
	Args []string
	// Extra arguments appended to the command line.
	Extra []string
	// Mem defaults to 64M.
	Mem string
	// Stdin, if set, feeds the console (con0=fd:0,fd:1).
	Stdin *os.File
}

// StartUML boots the C kernel, skipping t if it is not installed. The
// machine is killed when the test ends. Console output (con0) and kernel
// messages are collected; see Output and WaitOutput.
func StartUML(t testing.TB, o UMLOptions) *UML {
	t.Helper()
	kern := NeedCmd(t, "linux.uml")[0]
	dir := t.TempDir()
	u := &UML{Umid: o.Umid, UMLDir: filepath.Join(dir, "uml"), done: make(chan struct{})}
	if u.Umid == "" {
		u.Umid = umidFor(t)
	}
	mem := o.Mem
	if mem == "" {
		mem = "64M"
	}
	args := []string{"mem=" + mem}
	if o.Args != nil {
		args = append(args, o.Args...)
	} else {
		script := filepath.Join(dir, "init.sh")
		body := "#!/bin/sh\nmount -t proc proc /proc 2>/dev/null\n" + o.Init
		if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		args = append(args, "rootfstype=hostfs", "rootflags=/", "rw", "init="+script)
	}
	if !hasPrefixArg(args, "con0=") {
		args = append(args, "con0=fd:0,fd:1")
	}
	if !hasPrefixArg(args, "con=") {
		args = append(args, "con=null")
	}
	if !hasPrefixArg(args, "ssl") {
		args = append(args, "ssl=null")
	}
	args = append(args, "umid="+u.Umid, "uml_dir="+u.UMLDir+"/")
	args = append(args, o.Extra...)
	cmd := UMLCommand(kern, args...)
	cmd.Dir = dir
	if o.Stdin != nil {
		cmd.Stdin = o.Stdin
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	w := &lockedWriter{u: u}
	cmd.Stdout, cmd.Stderr = w, w
	if err := u.start(cmd); err != nil {
		t.Fatalf("starting linux.uml: %v", err)
	}
	t.Cleanup(func() {
		u.Kill()
		if t.Failed() {
			t.Logf("linux.uml output (tail):\n%s", tail(u.Output(), 3000))
		}
	})
	return u
}

// start runs cmd as the machine.
func (u *UML) start(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	u.Cmd = cmd
	done := make(chan struct{})
	u.done = done
	go func() {
		u.err = cmd.Wait()
		close(done)
	}()
	return nil
}

// bootAgain starts the same command line again after the kernel died
// before running init: the 6.1 C kernel now and then fails its own boot
// under load (a boot-time crypto self-test times out in zswap's init, a
// warning, then SIGABRT, or a panic: "VFS: Cannot open root device …
// error -12"). Nothing of the test has run yet then.
func (u *UML) bootAgain(t testing.TB) bool {
	t.Helper()
	out := u.Output()
	if u.restarts >= 2 || u.err == nil || strings.Contains(out, "as init process") ||
		!strings.Contains(u.err.Error(), "aborted") && !strings.Contains(out, "Kernel panic") {
		return false
	}
	u.restarts++
	t.Logf("linux.uml failed its own boot (%v), booting it again; output tail:\n%s", u.err, tail(out, 800))
	old := u.Cmd
	cmd := &exec.Cmd{Path: old.Path, Args: old.Args, Env: old.Env, Dir: old.Dir, Stdin: old.Stdin,
		Stdout: old.Stdout, Stderr: old.Stderr, SysProcAttr: old.SysProcAttr}
	u.mu.Lock()
	u.out.Reset()
	u.mu.Unlock()
	if err := u.start(cmd); err != nil {
		t.Fatalf("starting linux.uml again: %v", err)
	}
	return true
}

type lockedWriter struct{ u *UML }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.u.mu.Lock()
	defer w.u.mu.Unlock()
	return w.u.out.Write(p)
}

// Output returns everything the machine printed so far.
func (u *UML) Output() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.out.String()
}

// MachineDir returns UMLDir/Umid, where the pid file and mconsole live.
func (u *UML) MachineDir() string { return filepath.Join(u.UMLDir, u.Umid) }

// MconsolePath returns the machine's mconsole socket path.
func (u *UML) MconsolePath() string { return filepath.Join(u.MachineDir(), "mconsole") }

// WaitOutput waits until the output contains s, failing t on timeout or if
// the machine exits first.
func (u *UML) WaitOutput(t testing.TB, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if strings.Contains(u.Output(), s) {
			return
		}
		u.skipIfUnusable(t)
		select {
		case <-u.done:
			if strings.Contains(u.Output(), s) {
				return
			}
			u.skipIfUnusable(t)
			if u.bootAgain(t) {
				deadline = time.Now().Add(timeout)
				continue
			}
			t.Fatalf("linux.uml exited (%v) before printing %q; output tail:\n%s", u.err, s, tail(u.Output(), 3000))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("timeout (%v) waiting for %q from linux.uml; output tail:\n%s", timeout, s, tail(u.Output(), 3000))
		}
	}
}

// UMLCommand returns the command that runs the C kernel kern with args,
// under the xstate workaround (see xstate.go) when this host needs it; its
// Args are then args with NoAVX512 after the first word, so that the word
// reaches init's environment even when args holds "--".
func UMLCommand(kern string, args ...string) *exec.Cmd {
	w := xstateWrapper(kern)
	if w == "" {
		return exec.Command(kern, args...)
	}
	a := append([]string{kern}, args...)
	if len(a) > 1 {
		a = append(a[:2], append([]string{NoAVX512}, a[2:]...)...)
	} else {
		a = append(a, NoAVX512)
	}
	return &exec.Cmd{Path: w, Args: a, Env: append(os.Environ(), "UMLTEST_XSTATE_EXEC="+kern)}
}

// UMLArgv returns the argv (for an exec through env(1), sudo and the
// like: the environment assignments come first) that runs the C kernel
// kern with args, under the xstate workaround when this host needs it.
// The wrapper is copied into dir, which the caller makes reachable for the
// user it runs as.
func UMLArgv(t testing.TB, dir, kern string, args ...string) []string {
	t.Helper()
	w := xstateWrapper(kern)
	if w == "" {
		return append([]string{kern}, args...)
	}
	b, err := os.ReadFile(w)
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(dir, "noxstate")
	if err := os.WriteFile(local, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if len(args) > 0 {
		args = append(args[:1:1], append([]string{NoAVX512}, args[1:]...)...)
	}
	return append([]string{"UMLTEST_XSTATE_EXEC=" + kern, local}, args...)
}

// fpRegsFailure is what linux.uml 6.1 prints when it cannot restore a
// process's registers on this host CPU: its ptrace xsave buffer is too
// small for the host's state (seen on Sapphire Rapids hosts with AMX),
// and every user process, init first, dies with SIGSEGV.
const fpRegsFailure = "ptrace set fp regs failed"

// skipIfUnusable skips t when the C kernel cannot run user processes on
// this host at all.
func (u *UML) skipIfUnusable(t testing.TB) {
	t.Helper()
	if strings.Contains(u.Output(), fpRegsFailure) {
		u.Kill()
		SkipIfUnusableUML(t, u.Output())
	}
}

// SkipIfUnusableUML skips t when output, a C kernel's console and log,
// shows that linux.uml cannot run user processes on this host CPU.
func SkipIfUnusableUML(t testing.TB, output string) {
	t.Helper()
	if strings.Contains(output, fpRegsFailure) {
		Skip(t, "linux.uml cannot run user processes on this host CPU (%q: its xsave area is smaller than the host's, e.g. with AMX) and the workaround is unavailable (%s); no C-kernel interop here", fpRegsFailure, xstate.note)
	}
}

// Wait waits for the machine to exit, killing it after timeout. It returns
// the process's wait error and whether it exited on its own.
func (u *UML) Wait(timeout time.Duration) (error, bool) {
	select {
	case <-u.done:
		return u.err, true
	case <-time.After(timeout):
		u.Kill()
		return fmt.Errorf("killed after %v", timeout), false
	}
}

// PowerOff waits up to timeout for the machine to end by itself and fails
// t unless it ended cleanly. One unclean end is only logged: the 6.1 C
// kernel now and then dies of SIGABRT on its way out after its last word
// ("reboot: System halted" or "reboot: Power down"). By then init has
// synced and unmounted everything, so what the guest wrote is on disk;
// the caller's own checks of the image still decide.
func (u *UML) PowerOff(t testing.TB, timeout time.Duration) {
	t.Helper()
	err, ok := u.Wait(timeout)
	switch {
	case !ok:
		t.Fatalf("machine did not power off within %v; output tail:\n%s", timeout, tail(u.Output(), 3000))
	case err == nil:
	case strings.Contains(err.Error(), "aborted") && halted(u.Output()):
		t.Logf("linux.uml %v after it halted (the C kernel's own exit path); output tail:\n%s", err, tail(u.Output(), 400))
	default:
		t.Errorf("linux.uml exited with %v", err)
	}
}

// halted reports whether the kernel's last line of output says it halted.
func halted(out string) bool {
	out = strings.TrimRight(out, "\r\n")
	last := out[strings.LastIndexByte(out, '\n')+1:]
	return strings.HasSuffix(last, "reboot: System halted") || strings.HasSuffix(last, "reboot: Power down")
}

// Done is closed when the machine process has exited.
func (u *UML) Done() <-chan struct{} { return u.done }

// Kill kills the machine and all its host threads/processes and waits.
func (u *UML) Kill() {
	// Helpers the kernel forked into sessions of their own (a port
	// channel's) outlive it and its process group: they are found by the
	// machine's uml_dir= on their command line, which is the test's own.
	defer KillByArg("uml_dir=" + u.UMLDir + "/")
	select {
	case <-u.done:
		return
	default:
	}
	if u.Cmd.Process != nil {
		// The kernel's host helper processes share its process group.
		syscall.Kill(-u.Cmd.Process.Pid, syscall.SIGKILL)
	}
	select {
	case <-u.done:
	case <-time.After(10 * time.Second):
	}
}

// KillByArg kills every process with arg among its command-line words
// (a kernel that left its process group still carries its uml_dir=).
func KillByArg(arg string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, w := range strings.Split(string(b), "\x00") {
			if w == arg {
				if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil && pid != os.Getpid() {
					syscall.Kill(pid, syscall.SIGKILL)
				}
				break
			}
		}
	}
}

func hasPrefixArg(args []string, p string) bool {
	for _, a := range args {
		if strings.HasPrefix(a, p) {
			return true
		}
	}
	return false
}

// umidFor derives a short umid from the test name (umids are ≤63 chars).
func umidFor(t testing.TB) string {
	var b strings.Builder
	for _, r := range strings.ToLower(t.Name()) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	s := b.String()
	if len(s) > 20 {
		s = s[len(s)-20:]
	}
	return fmt.Sprintf("%s%d", s, time.Now().UnixNano()%100000)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
