package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// The hostfs benchmark (issue 14): tar x of a 20 MiB tarball (+sync) and
// `find | xargs cat` of the tree, on a hostfs mount and on the ext4 root
// of the busybox image in our engine, and natively on the host, from one
// run. Run it with `make bench`, or:
//
//	UMLBENCH=1 go test -count=1 -run TestBenchHostfs -v ./linux/

// benchHostfsScript times untar and cat into dir for each target (a
// name and a directory) with /proc/uptime and prints "<step>-<name>
// <start> <end>" lines, then ROWS-DONE. The tarball is tar.
func benchHostfsScript(tar string, targets [][2]string) string {
	var b strings.Builder
	b.WriteString("t() { cut -d' ' -f1 /proc/uptime; }\n")
	for _, tg := range targets {
		name, dir := tg[0], tg[1]
		fmt.Fprintf(&b, "rm -rf %[1]s; mkdir -p %[1]s; sync\n", dir)
		fmt.Fprintf(&b, "a=$(t); tar xf %s -C %s; sync; z=$(t); echo UNTAR-%s $a $z\n", tar, dir, name)
		fmt.Fprintf(&b, "a=$(t); find %s -type f | xargs cat >/dev/null; z=$(t); echo CAT-%s $a $z\n", dir, name)
		fmt.Fprintf(&b, "rm -rf %s\n", dir)
	}
	b.WriteString("echo ROWS-DONE\n")
	return b.String()
}

// benchHostfsParse returns the seconds of each "<step>-<name>" line.
func benchHostfsParse(out string) map[string]float64 {
	got := map[string]float64{}
	for _, l := range lines(out) {
		f := strings.Fields(l)
		if len(f) != 3 || !(strings.HasPrefix(f[0], "UNTAR-") || strings.HasPrefix(f[0], "CAT-")) {
			continue
		}
		a, e1 := strconv.ParseFloat(f[1], 64)
		z, e2 := strconv.ParseFloat(f[2], 64)
		if e1 == nil && e2 == nil {
			got[f[0]] = z - a
		}
	}
	return got
}

func TestBenchHostfs(t *testing.T) {
	testutil.NeedBench(t)
	img := testutil.BusyboxImage(t)
	testutil.GrowImage(t, img, 256<<20)
	share := t.TempDir()
	tarball := filepath.Join(share, "bench.tar")
	files, err := benchTarball(tarball, 20<<20)
	if err != nil {
		t.Fatal(err)
	}
	// Ours: the tarball is read from hostfs by both rows.
	script := "mount -t proc proc /proc\nmount -t hostfs none /mnt -o / || echo NO-MOUNT\n" +
		benchHostfsScript("/mnt/bench.tar", [][2]string{{"hostfs", "/mnt/x"}, {"ext4", "/x"}})
	start := time.Now()
	r := boot(t, script+"exit 0\n", 15*time.Minute, "ubd0="+img, "hostfs="+share, "init=/bin/sh",
		"con0=fd:0,fd:1", "con=null", "quiet", "mem=256M")
	ours := benchHostfsParse(r.stdout)
	t.Logf("engine run %.1f s", time.Since(start).Seconds())
	if !hasLine(r.stdout, "ROWS-DONE") || len(ours) != 4 {
		t.Fatalf("engine run incomplete (%v):\nstdout:\n%s\nstderr:\n%s", ours, lastLines(r.stdout, 40), lastLines(r.stderr, 20))
	}
	// Native: the same script with the host's busybox sh.
	nat := filepath.Join(t.TempDir(), "x")
	cmd := exec.Command("/bin/busybox", "sh", "-c", benchHostfsScript(tarball, [][2]string{{"native", nat}}))
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/bin")
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("native run: %v\n%s", err, b)
	}
	native := benchHostfsParse(string(b))
	for _, step := range []string{"UNTAR", "CAT"} {
		h, e, n := ours[step+"-hostfs"], ours[step+"-ext4"], native[step+"-native"]
		ratio := func(x float64) string {
			if n <= 0 {
				return "n/a"
			}
			return fmt.Sprintf("%.1fx", x/n)
		}
		what := map[string]string{"UNTAR": fmt.Sprintf("tar x 20 MiB (%d files) + sync", files), "CAT": "find | xargs cat"}[step]
		t.Logf("BENCH: hostfs %s: hostfs mount %.2f s (%s native), ext4 root %.2f s (%s native), native %.2f s",
			what, h, ratio(h), e, ratio(e), n)
	}
}
