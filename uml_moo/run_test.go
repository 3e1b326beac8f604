package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/cow"
	"github.com/umltools/umltools/internal/testutil"
)

// TestBadInputs is acceptance 4: each bad input gives a clear message and a
// non-zero exit; where the C tool's message is sensible ours is identical
// (stdout, stderr and status), otherwise the difference is listed here and
// in the man page.
func TestBadInputs(t *testing.T) {
	const mtime = 1700000000
	dir := t.TempDir()
	back := filepath.Join(dir, "back.img")
	makeBacking(t, back, 1<<20, mtime, 1)
	good := filepath.Join(dir, "good.cow")
	testutil.CraftCOW(t, good, testutil.COWSpec{Version: 3, Backing: back, Mtime: mtime, Size: 1 << 20,
		Sectors: map[int64][]byte{5: make([]byte, 512), 2000: []byte(strings.Repeat("x", 512))}})
	raw, _ := os.ReadFile(good)
	variant := func(name string, edit func(b []byte) []byte) string {
		p := filepath.Join(dir, name)
		b := edit(append([]byte(nil), raw...))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	be := binary.BigEndian
	shortHdr := variant("short.cow", func(b []byte) []byte { return b[:6] })
	truncHdr := variant("trunc.cow", func(b []byte) []byte { return b[:100] })
	badMagic := variant("magic.cow", func(b []byte) []byte { b[0] = 'X'; return b })
	badVer := variant("ver.cow", func(b []byte) []byte { be.PutUint32(b[4:], 7); return b })
	align0 := variant("align0.cow", func(b []byte) []byte { be.PutUint32(b[24:], 0); return b })
	ss0 := variant("ss0.cow", func(b []byte) []byte { be.PutUint32(b[20:], 0); return b })
	sizeMis := variant("size.cow", func(b []byte) []byte { be.PutUint64(b[12:], 1<<20+512); return b })
	mtimeMis := variant("mtime.cow", func(b []byte) []byte { be.PutUint32(b[8:], mtime+5); return b })
	noBack := variant("noback.cow", func(b []byte) []byte { copy(b[32:], dir+"/missing.img\x00"); return b })
	truncBitmap := variant("tbitmap.cow", func(b []byte) []byte { return b[:8192+10] })
	truncData := variant("tdata.cow", func(b []byte) []byte { return b[:12288+100*512] })

	type tc struct {
		name string
		args []string
		// same: ours must print and return exactly what the C tool does.
		same bool
		// otherwise, ours must exit 1 and print these (stdout, stderr).
		stdout, stderr string
	}
	out := func(n string) string { return filepath.Join(dir, n) }
	cases := []tc{
		{name: "no args", args: nil, same: true},
		{name: "one arg", args: []string{good}, same: true},
		{name: "three args", args: []string{good, out("a"), out("b")}, same: true},
		{name: "-d two files", args: []string{"-d", good, out("a")}, same: true},
		{name: "-b without value", args: []string{"-b"}, same: true},
		{name: "missing COW", args: []string{out("nope.cow"), out("o1")}, same: true},
		{name: "short header", args: []string{shortHdr, out("o2")}, same: true},
		{name: "truncated header", args: []string{truncHdr, out("o3")}, same: true},
		{name: "wrong magic", args: []string{badMagic, out("o4")}, same: true},
		{name: "bad version", args: []string{badVer, out("o5")}, same: true},
		{name: "size mismatch", args: []string{sizeMis, out("o6")}, same: true},
		{name: "mtime mismatch", args: []string{mtimeMis, out("o7")}, same: true},
		{name: "missing backing", args: []string{noBack, out("o8")}, same: true},
		{name: "-b missing backing", args: []string{"-b", out("nob.img"), good, out("o9")}, same: true},
		{name: "unwritable output", args: []string{good, dir + "/nodir/out.img"}, same: true},
		// The C tool prints the note, then dies of SIGFPE.
		{name: "align 0", args: []string{align0, out("o10")},
			stdout: "read_cow_header - invalid COW header, align == 0\n", stderr: "Reading COW header failed\n"},
		{name: "sector size 0", args: []string{ss0, out("o11")},
			stdout: "read_cow_header - invalid COW header, sector size 0\n", stderr: "Reading COW header failed\n"},
		// The C tool says "...: Success" for a short read.
		{name: "truncated bitmap", args: []string{truncBitmap, out("o12")},
			stderr: "Reading COW bitmap: Unexpected end of file\n"},
		{name: "truncated data", args: []string{truncData, out("o13")},
			stderr: "Reading data: Unexpected end of file\n"},
		// The C tool truncates the backing file and loses it.
		{name: "output is the backing file", args: []string{good, back},
			stderr: "Output file open: " + back + " is the backing file\n"},
		{name: "unknown option", args: []string{"-x", good, out("o14")},
			stderr: "uml_moo: unknown option -x\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := ours(c.args...)
			if r.Code == 0 {
				t.Fatalf("exit 0: %+v", r)
			}
			if c.same {
				cr := theirs(t, c.args...)
				if cr != r {
					t.Fatalf("C: %+v\nours: %+v", cr, r)
				}
				return
			}
			if r.Code != 1 || r.Stdout != c.stdout || !strings.HasPrefix(r.Stderr, c.stderr) {
				t.Fatalf("got %+v\nwant stdout %q, stderr starting %q", r, c.stdout, c.stderr)
			}
		})
	}
	// No failed merge leaves a new output file behind, and the backing
	// file survived the "output is the backing file" attempt.
	for _, n := range []string{"o1", "o6", "o10", "o12", "o13"} {
		if _, err := os.Stat(out(n)); err == nil {
			t.Errorf("%s left behind", n)
		}
	}
	if err := cow.CheckBacking(mustHeader(t, good), back); err != nil {
		t.Errorf("backing file damaged: %v", err)
	}
}

func mustHeader(t *testing.T, p string) *cow.Header {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := cow.ReadHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestHelpVersion checks -h, --help and --version go to stdout with exit 0.
func TestHelpVersion(t *testing.T) {
	for _, a := range []string{"-h", "--help", "--version"} {
		r := ours(a)
		if r.Code != 0 || r.Stdout == "" || r.Stderr != "" {
			t.Errorf("%s: %+v", a, r)
		}
	}
	if r := ours("--help"); !strings.Contains(r.Stdout, "--info") {
		t.Errorf("help does not mention --info: %q", r.Stdout)
	}
}

// TestInfo checks --info and --json on a crafted v2 file.
func TestInfo(t *testing.T) {
	dir := t.TempDir()
	back := filepath.Join(dir, "b.img")
	makeBacking(t, back, 8<<20, 1700000000, 3)
	c := filepath.Join(dir, "x.cow")
	testutil.CraftCOW(t, c, testutil.COWSpec{Version: 2, Backing: back, Mtime: 1700000000, Size: 8 << 20,
		Sectors: map[int64][]byte{0: make([]byte, 512), 9: make([]byte, 512), 16383: make([]byte, 512)}})
	r := ours("--info", c)
	for _, want := range []string{"version:         2\n", "backing file:    " + back + "\n",
		"sectors present: 3 of 16384", "data offset:     6656\n", "backing check:   ok\n",
		"mtime:           1700000000 (2023-11-14T22:13:20Z)\n"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("--info lacks %q:\n%s", want, r.Stdout)
		}
	}
	r = ours("--info", "--json", c)
	for _, want := range []string{`"version": 2`, `"sectors_present": 3`, `"data_offset": 6656`, `"backing_status": "ok"`} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("--json lacks %q:\n%s", want, r.Stdout)
		}
	}
	tm := time.Unix(1700000100, 0)
	os.Chtimes(back, tm, tm)
	if r := ours("--info", c); !strings.Contains(r.Stdout, "backing check:   mtime mismatch (1700000000 vs 1700000100)") {
		t.Errorf("mismatch not reported:\n%s", r.Stdout)
	}
	if r := ours("--json", c, "x"); r.Code != 1 {
		t.Errorf("--json without --info accepted: %+v", r)
	}
}

func TestProgress(t *testing.T) {
	var b strings.Builder
	p := &progress{w: &b, total: 4 << 30, start: time.Now().Add(-2 * time.Second)}
	p.update(1 << 30)
	got := b.String()
	if !strings.HasPrefix(got, "\r1.0 GiB / 4.0 GiB  ") || !strings.Contains(got, "MiB/s  ETA 6s") {
		t.Fatalf("progress line %q", got)
	}
	p.update(2 << 30) // within 200 ms: not redrawn
	if b.String() != got {
		t.Fatalf("redrawn too soon: %q", b.String())
	}
	p.finish()
	if !strings.HasSuffix(b.String(), "\r") {
		t.Fatalf("line not cleared: %q", b.String())
	}
	var nilp *progress
	nilp.update(1)
	nilp.finish()
	if isTerminal(&b) {
		t.Fatal("a strings.Builder is not a terminal")
	}
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 50 << 20: "50.0 MiB"} {
		if got := human(n); got != want {
			t.Errorf("human(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestParse(t *testing.T) {
	cases := []struct {
		args  string
		want  options
		usage string
	}{
		{"cow out", options{files: []string{"cow", "out"}}, ""},
		{"-d -b back cow", options{inPlace: true, backing: "back", files: []string{"cow"}}, ""},
		{"-b back -d cow", options{inPlace: true, backing: "back", files: []string{"cow"}}, ""},
		// Options end at the first operand: the C tool writes a file
		// named "-d" here, so must we.
		{"cow -d", options{files: []string{"cow", "-d"}}, ""},
		{"-q -d cow", options{inPlace: true, quiet: true, files: []string{"cow"}}, ""},
		{"--info --json cow", options{info: true, json: true, files: []string{"cow"}}, ""},
		{"-- -d out", options{files: []string{"-d", "out"}}, ""},
		{"- out", options{files: []string{"-", "out"}}, ""},
		{"-b", options{}, "-b"},
		{"-z cow out", options{}, "unknown option -z"},
	}
	for _, c := range cases {
		got, why := parse(strings.Fields(c.args))
		if why != c.usage {
			t.Errorf("%q: usage %q, want %q", c.args, why, c.usage)
			continue
		}
		if why == "" && fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%q: %+v, want %+v", c.args, got, c.want)
		}
	}
}
