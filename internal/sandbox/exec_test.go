package sandbox

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/umltools/umltools/internal/abi"
)

func TestShebang(t *testing.T) {
	long := "#!/" + strings.Repeat("x", 300)
	for _, c := range []struct {
		in          string
		interp, arg string
		ok          bool
		noexec      bool
	}{
		{"#!/bin/sh\necho", "/bin/sh", "", true, false},
		{"#! /bin/sh -e \t\nx", "/bin/sh", "-e", true, false},
		{"#!/usr/bin/env python3 -u -x\n", "/usr/bin/env", "python3 -u -x", true, false},
		{"#!/bin/sh", "/bin/sh", "", true, false},
		{"#!\t/bin/busybox\tsh\n", "/bin/busybox", "sh", true, false},
		{"#!/bin/sh\x00junk\n", "/bin/sh", "", true, false},
		{"#!/bin/sh a\x00b\n", "/bin/sh", "a", true, false},
		{"#!   \n", "", "", true, true},
		{"#!\n", "", "", true, true},
		{"#!" + strings.Repeat(" ", 300), "", "", true, true},
		{long, "", "", true, true},
		{"#!/bin/sh " + strings.Repeat("a", 300), "/bin/sh", strings.Repeat("a", 300-(300+10-255)), true, false},
		{"\x7fELF", "", "", false, false},
		{"", "", "", false, false},
		{"#", "", "", false, false},
	} {
		interp, arg, ok, err := Shebang([]byte(c.in))
		if ok != c.ok || errors.Is(err, ErrNoExec) != c.noexec || (err == nil) == c.noexec && err != nil {
			t.Errorf("%.40q: ok %v err %v", c.in, ok, err)
			continue
		}
		if interp != c.interp || arg != c.arg {
			t.Errorf("%.40q: got %q %q, want %q %q", c.in, interp, arg, c.interp, c.arg)
		}
	}
}

func TestShebangArgv(t *testing.T) {
	got := ShebangArgv("/bin/sh", "-e", "/s", []string{"s", "a", "b"})
	if want := []string{"/bin/sh", "-e", "/s", "a", "b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q want %q", got, want)
	}
	got = ShebangArgv("/bin/sh", "", "/s", []string{"s"})
	if want := []string{"/bin/sh", "/s"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q want %q", got, want)
	}
}

// TestInterp reads and patches PT_INTERP of host binaries.
func TestInterp(t *testing.T) {
	if b, err := os.ReadFile("/bin/busybox"); err == nil {
		if in, err := Interp(b); err != nil || in != "" {
			t.Errorf("busybox (static): %q %v", in, err)
		}
		if _, err := PatchInterp(b, "/x"); !errors.Is(err, ErrNoExec) {
			t.Errorf("patching a static ELF: %v", err)
		}
	}
	b, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	in, err := Interp(b)
	if err != nil || in != "/lib64/ld-linux-x86-64.so.2" {
		t.Fatalf("/bin/true: %q %v", in, err)
	}
	p, err := PatchInterp(b, "/dev/shm/uml1234567890/ld")
	if err != nil {
		t.Fatal(err)
	}
	if in, err := Interp(p); err != nil || in != "/dev/shm/uml1234567890/ld" {
		t.Errorf("patched: %q %v", in, err)
	}
	if len(p) != len(b) || bytes.Equal(p, b) {
		t.Errorf("patched image: same length %v, changed %v", len(p) == len(b), !bytes.Equal(p, b))
	}
	if _, err := PatchInterp(b, "/a/path/that/is/much/too/long/for/it"); err == nil {
		t.Errorf("a too long path was accepted")
	}
	for _, bad := range [][]byte{nil, []byte("#!/bin/sh\n"), b[:64]} {
		if _, err := Interp(bad); !errors.Is(err, ErrNoExec) {
			t.Errorf("Interp(%.10q): %v, want ErrNoExec", bad, err)
		}
	}
}

func FuzzShebang(f *testing.F) {
	f.Add([]byte("#!/bin/sh -e\n"))
	f.Add([]byte("#!" + strings.Repeat(" ", 260)))
	f.Fuzz(func(t *testing.T, b []byte) {
		interp, arg, ok, err := Shebang(b)
		if err == nil && ok && (interp == "" || strings.ContainsAny(interp, " \t\x00\n") || strings.ContainsAny(arg, "\x00\n")) {
			t.Fatalf("%q: interp %q arg %q", b, interp, arg)
		}
	})
}

func FuzzInterp(f *testing.F) {
	if b, err := os.ReadFile("/bin/true"); err == nil {
		f.Add(b[:4096])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := Interp(b); err != nil {
			return
		}
		p, err := PatchInterp(b, "/l")
		if err != nil {
			return
		}
		if in, err := Interp(p); err != nil || in != "/l" {
			t.Fatalf("patched interp %q %v", in, err)
		}
	})
}

// mapHandler redirects guest execs: a path in elf runs that host file with
// the guest's argv; a path in scripts is a host script whose "#!"
// interpreter (a guest path) maps through elf.
type mapHandler struct {
	PassThrough
	elf     map[string]string
	scripts map[string]string
	errs    []error
}

func (h *mapHandler) Syscall(t *Task, r *abi.Regs) Action {
	if r.OrigRax != abi.SYS_EXECVE {
		return Native()
	}
	path, err := t.ReadString(r.Rdi, 4096)
	if err != nil {
		return Fail(abi.EFAULT)
	}
	if host, ok := h.elf[path]; ok {
		if err := t.RedirectExec(r, host); err != nil {
			h.errs = append(h.errs, err)
			return Fail(abi.EFAULT)
		}
		return Native()
	}
	if host, ok := h.scripts[path]; ok {
		head, err := os.ReadFile(host)
		if err != nil {
			return Fail(abi.ENOENT)
		}
		interp, arg, ok, err := Shebang(head)
		if !ok || err != nil {
			return Fail(abi.ENOEXEC)
		}
		hostInterp, found := h.elf[interp]
		if !found {
			return Fail(abi.ENOENT)
		}
		prefix := []string{interp}
		if arg != "" {
			prefix = append(prefix, arg)
		}
		if err := t.RewriteExec(r, hostInterp, append(prefix, path), 1); err != nil {
			h.errs = append(h.errs, err)
			return Fail(abi.EFAULT)
		}
	}
	return Native()
}

// TestDynamicExecRedirect: a dynamic host ELF runs from an ExecDir copy
// whose PT_INTERP names the ExecDir copy of the dynamic loader.
func TestDynamicExecRedirect(t *testing.T) {
	img, err := os.ReadFile("/bin/echo")
	if err != nil {
		t.Fatal(err)
	}
	interp, err := Interp(img)
	if err != nil || interp == "" {
		t.Fatalf("/bin/echo: interp %q %v", interp, err)
	}
	ld, err := os.ReadFile(interp)
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewExecDir(-1, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ldPath, err := d.Add("ld", ld)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := PatchInterp(img, ldPath)
	if err != nil {
		t.Fatal(err)
	}
	echo, err := d.Add("e", patched)
	if err != nil {
		t.Fatal(err)
	}
	h := &mapHandler{elf: map[string]string{"/guest/echo": echo}}
	ws, out := runGuest(t, Config{Path: probe(t), Handler: h, Argv: []string{"probe", "exec", "/guest/echo", "dynamic", "ok"}})
	if out != "dynamic ok\n" || ws.ExitStatus() != 0 || h.errs != nil {
		t.Errorf("output %q status %v errors %v", out, ws, h.errs)
	}
}

// TestScriptExec: "#!" handled by the engine: argv becomes interpreter,
// argument, script path, then the original arguments.
func TestScriptExec(t *testing.T) {
	needBusybox(t)
	script := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(script, []byte("#!/guest/busybox sh\necho \"$0|$1|$2\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The script is a host file (the pass-through interpreter opens it by
	// its path), but its interpreter exists only as a guest path: the host
	// kernel alone would fail with ENOENT.
	h := &mapHandler{elf: map[string]string{"/guest/busybox": "/bin/busybox"}, scripts: map[string]string{script: script}}
	ws, out := runGuest(t, Config{Path: probe(t), Handler: h, Argv: []string{"probe", "exec", script, "one", "two words"}})
	if want := script + "|one|two words\n"; out != want || ws.ExitStatus() != 0 || h.errs != nil {
		t.Errorf("output %q status %v errors %v, want %q", out, ws, h.errs, want)
	}
}
