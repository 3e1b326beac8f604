package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// The milestone 2 benchmark: Debian workloads on the Debian image, in our
// engine, in the C kernel and natively (chrooted into the same image,
// loop-mounted read-only), from one run. Run it with `make bench`, or:
//
//	make build && UMLBENCH=1 UMLTEST_BIN=$PWD/bin go test -count=1 -run TestBenchDebian -v ./linux/

// benchDebianRows are the workloads: a name and a shell command. Each is
// timed inside the machine.
var benchDebianRows = []struct{ name, cmd string }{
	{"2000 fork+exec+wait", "/bench-forkexec 2000 /usr/bin/true true >/dev/null"},
	{"2000-iteration expr loop", "i=0; while [ $i -lt 2000 ]; do i=$(expr $i + 1); done"},
	{"tar c /usr | wc -c", "tar c /usr 2>/dev/null | wc -c >/dev/null"},
	{"python3 -c pass x100", "for i in $(seq 100); do python3 -c pass; done"},
}

// benchDebianScript runs every workload with bash and prints
// "ROW<i> <seconds>" for each, then "ROWS-DONE"; with off, it powers off.
func benchDebianScript(off bool) string {
	var b strings.Builder
	b.WriteString("#!/bin/bash\nexport PATH=/usr/sbin:/usr/bin:/sbin:/bin\nt() { date +%s.%N; }\n")
	for i, r := range benchDebianRows {
		fmt.Fprintf(&b, "a=$(t); %s; z=$(t); echo ROW%d $(echo \"$z - $a\" | python3 -c 'import sys; print(eval(sys.stdin.read()))')\n", r.cmd, i)
	}
	b.WriteString("echo ROWS-DONE\n")
	if off {
		b.WriteString("busybox poweroff -f\n")
	}
	return b.String()
}

func TestBenchDebian(t *testing.T) {
	testutil.NeedBench(t)
	e := &benchEnv{eng: testutil.Bin(t, "linux"), dir: t.TempDir(), mem: "512M"}
	if k, err := testutil.LookPath("linux.uml"); err == nil {
		e.kern = k
	} else {
		e.noKern = "linux.uml not installed (make test installs it when run as root)"
	}
	e.img = testutil.DebianImage(t)
	forkexec := testutil.StaticC(t, "bench-forkexec", benchForkExecC)
	script := filepath.Join(e.dir, "bench-debian.sh")
	os.WriteFile(script, []byte(benchDebianScript(true)), 0o755)
	boot := filepath.Join(e.dir, "bench-boot.sh")
	os.WriteFile(boot, []byte("#!/bin/sh\necho "+benchBootMarker+"\nbusybox poweroff -f\n"), 0o755)
	testutil.AddFiles(t, e.img, map[string]string{"/bench-forkexec": forkexec, "/bench-debian.sh": script, "/bench-boot.sh": boot})
	e.cimg = filepath.Join(e.dir, "c.img")
	testutil.CopySparse(t, e.img, e.cimg)

	parse := func(out string) ([]float64, bool) {
		v := make([]float64, len(benchDebianRows))
		for i := range benchDebianRows {
			x, ok := benchNumber(out, fmt.Sprintf("ROW%d ", i))
			if !ok {
				return nil, false
			}
			v[i] = x
		}
		return v, true
	}

	// Ours.
	haveC := e.probe(t)
	r := e.ours(t, "/bench-debian.sh", "ROWS-DONE", 10*time.Minute)
	ours, ok := parse(r.out)
	if !ok {
		t.Fatalf("engine: no result rows in\n%s\n%s", benchTail(r.out, 2000), benchTail(r.errOut, 2000))
	}

	// Natively, chrooted into the same tree.
	var native []float64
	noNative := ""
	if os.Getuid() != 0 {
		noNative = "native runs need root (a read-only loop mount of the image and chroot)"
	} else {
		mnt := t.TempDir()
		if b, err := exec.Command("mount", "-o", "loop,ro", e.cimg, mnt).CombinedOutput(); err != nil {
			noNative = fmt.Sprintf("loop mount: %v %s", err, b)
		} else {
			for _, d := range []string{"proc", "dev"} {
				exec.Command("mount", "--bind", "/"+d, filepath.Join(mnt, d)).Run()
			}
			cmd := exec.Command("chroot", mnt, "/bin/bash", "-c", benchDebianScript(false))
			cmd.Env = append([]string{"HOME=/", "TERM=dumb"}, e.extra...)
			nr := benchRun(t, cmd, true, "ROWS-DONE", 10*time.Minute, 10*time.Second)
			for _, d := range []string{"proc", "dev"} {
				exec.Command("umount", filepath.Join(mnt, d)).Run()
			}
			if b, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
				t.Logf("umount %s: %v %s", mnt, err, b)
			}
			if native, ok = parse(nr.out); !ok {
				t.Fatalf("native: no result rows in\n%s", benchTail(nr.out, 2000))
			}
		}
	}

	// The C kernel.
	var ck []float64
	if haveC {
		cr, line := e.c(t, "/bench-debian.sh", "ROWS-DONE", 20*time.Minute)
		if ck, ok = parse(cr.out); !ok {
			t.Fatalf("%s\n%s: no result rows; output tail:\n%s", line, cr.state, benchTail(cr.out, 3000))
		}
	}

	t.Logf("BENCH: %-26s %-9s %-9s %-9s %s", "Debian workload (one run)", "ours", "native", "C kernel", "ratio")
	for i, row := range benchDebianRows {
		nat, cs, res := "n/a", "n/a", ""
		if native != nil {
			nat = fmt.Sprintf("%.2f s", native[i])
			res = fmt.Sprintf("%.2fx native", ours[i]/native[i])
		} else {
			res = "native n/a: " + noNative
		}
		if ck != nil {
			cs = fmt.Sprintf("%.2f s", ck[i])
			x := ck[i] / ours[i]
			v := "ok"
			if x < 5 {
				v = "MISSED"
			}
			res = fmt.Sprintf("%.1fx faster than C (target >= 5x) %s; %s", x, v, res)
			if native != nil {
				res += fmt.Sprintf("; C %.1fx native", ck[i]/native[i])
			}
		} else {
			res += "; C kernel n/a: " + e.noKern
		}
		t.Logf("BENCH: %-26s %-9s %-9s %-9s %s", row.name, fmt.Sprintf("%.2f s", ours[i]), nat, cs, res)
	}
}
