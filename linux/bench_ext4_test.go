package main

import (
	"archive/tar"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// The ext4 write benchmark (issue 10): dd 256 MiB write+sync, read it
// back, and tar x of a 50 MiB tarball (+sync), on the Debian image grown
// to hold it, in our engine, in the C kernel and natively (chrooted into
// a loop mount of the same image), from one run. Each kernel's boot runs
// the steps benchExt4Reps times and the table shows each row's median:
// single runs of these sub-second rows moved by up to 50% on our VMs
// with the host's own background writes. Run it with `make bench`, or:
//
//	make build && UMLBENCH=1 UMLTEST_BIN=$PWD/bin go test -count=1 -run TestBenchExt4 -v ./linux/

// benchExt4Steps are the timed steps. dd writes what yes prints, not
// zeros: the engine writes zero runs back as holes.
var benchExt4Steps = []string{
	"yes 0123456789abcdef | dd of=/bench-dd bs=1M count=256 iflag=fullblock 2>/dev/null; sync",
	"dd if=/bench-dd of=/dev/null bs=1M 2>/dev/null",
	"mkdir /bench-x && tar xf /bench.tar -C /bench-x",
	"sync",
}

// benchExt4Reps is how many times each boot runs the steps.
const benchExt4Reps = 3

// benchExt4Rows are the reported rows: the sum of some steps.
var benchExt4Rows = []benchExt4Row{
	{"dd 256 MiB write+sync", []int{0}},
	{"dd 256 MiB read (cached)", []int{1}},
	{"tar x 50 MiB + sync", []int{2, 3}},
	{"  of which tar x", []int{2}},
	{"  of which the sync", []int{3}},
}

// benchExt4Row is a reported row: its name and the steps it sums.
type benchExt4Row struct {
	name  string
	steps []int
}

// benchFloorRows are the floor's rows, of benchFloorSteps.
var benchFloorRows = []benchExt4Row{
	{"tar x 50 MiB + sync", []int{0, 1}},
	{"  of which tar x", []int{0}},
}

// benchExt4Script times each step with date and prints "STEP<i>.<rep>
// <start> <end>" for each repetition (the files of one are removed and
// synced away before the next), then ROWS-DONE. The root is remounted read-write when it is
// not (the C kernel mounts it read-only by default) and read-only at the
// end, so that every kernel leaves a clean filesystem; machine runs then
// power off.
//
// floor, if set (native runs only), is the path of the notifyfloor
// program (bench_floor_test.go): the tar x and its sync then run again
// under it, as "FLOOR<i>.<rep>" lines.
func benchExt4Script(machine bool, floor string) string {
	var b strings.Builder
	b.WriteString("#!/bin/bash\nexport PATH=/usr/sbin:/usr/bin:/sbin:/bin\nt() { date +%s.%N; }\n")
	if machine {
		b.WriteString("mount -n -t proc proc /proc 2>/dev/null\ngrep -q ' / ext4 ro[ ,]' /proc/mounts && mount -n -o remount,rw /\n")
	}
	for r := range benchExt4Reps {
		b.WriteString("rm -rf /bench-dd /bench-x; sync\n")
		for i, c := range benchExt4Steps {
			fmt.Fprintf(&b, "a=$(t); %s; z=$(t); echo STEP%d.%d $a $z\n", c, i, r)
		}
	}
	if floor != "" {
		for r := range benchExt4Reps {
			b.WriteString("rm -rf /bench-dd /bench-x; sync\n")
			for i, c := range benchFloorSteps(floor) {
				fmt.Fprintf(&b, "a=$(t); %s; z=$(t); echo FLOOR%d.%d $a $z\n", c, i, r)
			}
		}
	}
	b.WriteString("rm -rf /bench-dd /bench-x; sync\necho ROWS-DONE\n")
	if machine {
		b.WriteString("mount -n -o remount,ro / 2>/dev/null\nbusybox poweroff -f\n")
	}
	return b.String()
}

// benchTarball writes a deterministic tarball of about size bytes: 40
// directories of about 3,000 files, mostly small (85% under 8.5 KiB),
// some up to 1.1 MiB, of random bytes.
func benchTarball(path string, size int64) (files int, err error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	rng := rand.New(rand.NewSource(1))
	buf := make([]byte, 2<<20)
	var total int64
	mtime := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for d := 0; total < size; d++ {
		dir := fmt.Sprintf("d%02d/", d%40)
		if d < 40 {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: mtime}); err != nil {
				return files, err
			}
		}
		var n int
		switch p := rng.Intn(100); {
		case p < 85:
			n = 512 + rng.Intn(8<<10)
		case p < 99:
			n = 8<<10 + rng.Intn(92<<10)
		default:
			n = 100<<10 + rng.Intn(1<<20)
		}
		rng.Read(buf[:n])
		h := &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("%sf%05d", dir, files), Mode: 0o644, Size: int64(n), ModTime: mtime}
		if err := tw.WriteHeader(h); err != nil {
			return files, err
		}
		if _, err := tw.Write(buf[:n]); err != nil {
			return files, err
		}
		files++
		total += int64(n)
	}
	return files, tw.Close()
}

// benchFloorSteps are the tar x steps of benchExt4Steps (the tar and
// its sync) run under the floor program.
func benchFloorSteps(floor string) []string {
	return []string{"mkdir /bench-x && " + floor + " tar xf /bench.tar -C /bench-x", "sync"}
}

// benchExt4Parse returns each row's seconds from a run's output: the
// median over the repetitions of the row's steps.
func benchExt4Parse(out string) ([]float64, bool) {
	return benchRowsParse(out, "STEP", len(benchExt4Steps), benchExt4Rows)
}

// benchRowsParse is benchExt4Parse for lines "<prefix><step>.<rep> <start>
// <end>" of nsteps steps.
func benchRowsParse(out, prefix string, nsteps int, rows []benchExt4Row) ([]float64, bool) {
	reps := make([][]time.Duration, len(rows))
	for r := range benchExt4Reps {
		step := make([]float64, nsteps)
		for i := range nsteps {
			f := guestField(out, fmt.Sprintf("%s%d.%d", prefix, i, r))
			if len(f) != 2 {
				return nil, false
			}
			a, err1 := strconv.ParseFloat(f[0], 64)
			z, err2 := strconv.ParseFloat(f[1], 64)
			if err1 != nil || err2 != nil {
				return nil, false
			}
			step[i] = z - a
		}
		for i, row := range rows {
			var sum float64
			for _, s := range row.steps {
				sum += step[s]
			}
			reps[i] = append(reps[i], time.Duration(sum*float64(time.Second)))
		}
	}
	v := make([]float64, len(rows))
	for i := range v {
		v[i] = benchMedian(reps[i]).Seconds()
	}
	return v, true
}

func TestBenchExt4(t *testing.T) {
	testutil.NeedBench(t)
	e := newBenchEnv(t, "512M")
	e.img = testutil.DebianImage(t)
	testutil.GrowImage(t, e.img, 1280<<20)
	tarball := filepath.Join(e.dir, "bench.tar")
	nfiles, err := benchTarball(tarball, 50<<20)
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(e.dir, "bench-ext4.sh")
	os.WriteFile(script, []byte(benchExt4Script(true, "")), 0o755)
	e.addDebianFiles(t, map[string]string{"/bench.tar": tarball, "/bench-ext4.sh": script})
	e.cimg = filepath.Join(e.dir, "c.img")
	testutil.CopySparse(t, e.img, e.cimg)
	nimg := filepath.Join(e.dir, "native.img")
	testutil.CopySparse(t, e.img, nimg)
	t.Logf("tarball: %d files, 50 MiB", nfiles)
	// The floor runs in the native chroot only.
	floor, why := "/notifyfloor", ""
	if bin, err := testutil.BuildStaticC("notifyfloor", benchFloorSrc()); err != nil {
		floor, why = "", err.Error()
	} else {
		testutil.AddFiles(t, nimg, map[string]string{floor: bin})
	}

	// Ours, natively (chrooted into a read-write loop mount of its own
	// copy) and the C kernel.
	var floorCols []float64
	parse := func(out string) ([]float64, bool) {
		if v, ok := benchRowsParse(out, "FLOOR", 2, benchFloorRows); ok {
			floorCols = v
		}
		return benchExt4Parse(out)
	}
	cols := benchThree(t, e, "/bench-ext4.sh", benchExt4Script(false, floor), nimg, true, parse)
	var names []string
	for _, r := range benchExt4Rows {
		names = append(names, r.name)
	}
	benchTable(t, fmt.Sprintf("ext4 write (median of %d)", benchExt4Reps), names, cols, 2, 3)
	benchFloorTable(t, cols, floorCols, why)
	// Every kernel left a consistent filesystem.
	e2fsckQuiet(t, e.img)
	if cols.ck != nil {
		e2fsckQuiet(t, e.cimg)
	}
	if cols.native != nil {
		e2fsckQuiet(t, nimg)
	}
}

// newBenchEnv returns the machines of one benchmark with the C kernel's
// mem=; the images are the caller's to set.
func newBenchEnv(t *testing.T, mem string) *benchEnv {
	t.Helper()
	e := &benchEnv{eng: testutil.Bin(t, "linux"), dir: t.TempDir(), mem: mem}
	if k, err := testutil.LookPath("linux.uml"); err == nil {
		e.kern = k
	} else {
		e.noKern = "linux.uml not installed (make test installs it when run as root)"
	}
	return e
}

// benchThree runs one workload: script (a path in the image, which
// prints ROWS-DONE at the end) in our engine and the C kernel, and
// native, the same rows for bash, chrooted into a loop mount of nimg
// (read-write with rw). parse reads each run's row times.
func benchThree(t *testing.T, e *benchEnv, script, native, nimg string, rw bool, parse func(string) ([]float64, bool)) benchCols {
	t.Helper()
	haveC := e.probe(t)
	var c benchCols
	r := e.ours(t, script, "ROWS-DONE", 10*time.Minute)
	var ok bool
	if c.ours, ok = parse(r.out); !ok {
		t.Fatalf("engine: no result rows in\n%s\n%s", benchTail(r.out, 2000), benchTail(r.errOut, 2000))
	}
	nr, why := benchChroot(t, nimg, rw, native, "ROWS-DONE", e.extra)
	if c.noNative = why; why == "" {
		if c.native, ok = parse(nr.out); !ok {
			t.Fatalf("native: no result rows in\n%s", benchTail(nr.out, 2000))
		}
	}
	if haveC {
		cr, line := e.c(t, script, "ROWS-DONE", 20*time.Minute)
		if c.ck, ok = parse(cr.out); !ok {
			t.Fatalf("%s\n%s: no result rows; output tail:\n%s", line, cr.state, benchTail(cr.out, 3000))
		}
	}
	c.noKern = e.noKern
	return c
}

// benchChroot runs script with bash chrooted into a loop mount of img
// (read-only unless rw) with the host's /proc and /dev bound in, until a
// line starting with marker. why says why it cannot run here.
func benchChroot(t *testing.T, img string, rw bool, script, marker string, env []string) (r benchProc, why string) {
	t.Helper()
	if os.Getuid() != 0 {
		return r, "native runs need root (a loop mount of the image and chroot)"
	}
	opts := "loop,ro"
	if rw {
		opts = "loop"
	}
	mnt := t.TempDir()
	if b, err := exec.Command("mount", "-o", opts, img, mnt).CombinedOutput(); err != nil {
		return r, fmt.Sprintf("loop mount: %v %s", err, b)
	}
	for _, d := range []string{"proc", "dev"} {
		exec.Command("mount", "--bind", "/"+d, filepath.Join(mnt, d)).Run()
	}
	cmd := exec.Command("chroot", mnt, "/bin/bash", "-c", script)
	cmd.Env = append([]string{"HOME=/", "TERM=dumb"}, env...)
	r = benchRun(t, cmd, true, marker, 10*time.Minute, 10*time.Second)
	for _, d := range []string{"proc", "dev"} {
		exec.Command("umount", filepath.Join(mnt, d)).Run()
	}
	if b, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
		t.Logf("umount %s: %v %s", mnt, err, b)
	}
	return r, ""
}

// benchCols are one run's seconds per row: ours, native and the C
// kernel's (nil when not measured, with the reason).
type benchCols struct {
	ours, native, ck []float64
	noNative, noKern string
}

// benchTable logs the BENCH lines of a table: each row's times and
// ratios, against the targets ours <= nativeMax x native (none when 0)
// and the C kernel >= cMin x ours.
func benchTable(t *testing.T, title string, names []string, c benchCols, nativeMax, cMin float64) {
	t.Helper()
	verdict := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "MISSED"
	}
	t.Logf("BENCH: %-26s %-9s %-9s %-9s %s", title, "ours", "native", "C kernel", "ratio")
	for i, name := range names {
		nat, cs := "n/a", "n/a"
		var res []string
		// Rows indented under another ("  of which …") show where its
		// time goes; the targets are the whole row's.
		part := strings.HasPrefix(name, "  ")
		if c.ck != nil {
			cs = fmt.Sprintf("%.2f s", c.ck[i])
			x := c.ck[i] / c.ours[i]
			if part {
				res = append(res, fmt.Sprintf("%.1fx faster than C", x))
			} else {
				res = append(res, fmt.Sprintf("%.1fx faster than C (target >= %gx) %s", x, cMin, verdict(x >= cMin)))
			}
		} else {
			res = append(res, "C kernel n/a: "+c.noKern)
		}
		if c.native != nil {
			nat = fmt.Sprintf("%.2f s", c.native[i])
			x := c.ours[i] / c.native[i]
			r := fmt.Sprintf("%.2fx native", x)
			if nativeMax > 0 && !part {
				r += fmt.Sprintf(" (target <= %gx) %s", nativeMax, verdict(x <= nativeMax))
			}
			res = append(res, r)
			if c.ck != nil {
				res = append(res, fmt.Sprintf("C %.1fx native", c.ck[i]/c.native[i]))
			}
		} else {
			res = append(res, "native n/a: "+c.noNative)
		}
		t.Logf("BENCH: %-26s %-9s %-9s %-9s %s", name, fmt.Sprintf("%.2f s", c.ours[i]), nat, cs, strings.Join(res, "; "))
	}
}
