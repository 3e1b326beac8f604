package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	e := newBenchEnv(t, "512M")
	e.img = testutil.DebianImage(t)
	forkexec := testutil.StaticC(t, "bench-forkexec", benchForkExecC)
	script := filepath.Join(e.dir, "bench-debian.sh")
	os.WriteFile(script, []byte(benchDebianScript(true)), 0o755)
	e.addDebianFiles(t, map[string]string{"/bench-forkexec": forkexec, "/bench-debian.sh": script})
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

	// Ours, natively (chrooted into the same tree) and the C kernel.
	cols := benchThree(t, e, "/bench-debian.sh", benchDebianScript(false), e.cimg, false, parse)

	var names []string
	for _, r := range benchDebianRows {
		names = append(names, r.name)
	}
	benchTable(t, "Debian workload (one run)", names, cols, 0, 5)
}
