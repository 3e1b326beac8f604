package ext4

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/umltools/umltools/internal/testutil"
)

// TestDirHashMatchesDebugfs checks every hash version, signed and unsigned,
// with and without a seed, against e2fsprogs' own implementation.
func TestDirHashMatchesDebugfs(t *testing.T) {
	debugfs := testutil.NeedCmd(t, "debugfs")[0]
	src := t.TempDir()
	img := testutil.MkfsImage(t, src, "4M", "-t", "ext4")
	names := []string{"a", "hello", "lost+found", "f0001", strings.Repeat("x", 31), strings.Repeat("y", 32),
		strings.Repeat("z", 33), strings.Repeat("q", 255), "h\xe9llo\xff", "\x80\x81\x82abc", "0123456789abcdef01"}
	seeds := []string{"", "3f1a4c2e-9b7d-4e11-8a2b-5c6d7e8f9012"}
	algs := []string{"legacy", "half_md4", "tea", "HASHALG_3", "HASHALG_4", "HASHALG_5"} // debugfs names the unsigned ones by number
	re := regexp.MustCompile(`is 0x([0-9a-f]+) \(minor 0x([0-9a-f]+)\)`)
	var script strings.Builder
	type q struct {
		name string
		alg  int
		seed [4]uint32
	}
	var qs []q
	for _, s := range seeds {
		var seed [4]uint32
		if s != "" {
			raw, _ := hexUUID(s)
			for i := range seed {
				seed[i] = binary.LittleEndian.Uint32(raw[4*i:])
			}
		}
		for ai, a := range algs {
			for _, n := range names {
				arg := ""
				if s != "" {
					arg = " -s " + s
				}
				fmt.Fprintf(&script, "dx_hash -h %s%s \"%s\"\n", a, arg, n)
				qs = append(qs, q{n, ai, seed})
			}
		}
	}
	cmdf := filepath.Join(t.TempDir(), "cmds")
	os.WriteFile(cmdf, []byte(script.String()), 0o644)
	out, err := exec.Command(debugfs, "-f", cmdf, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs: %v\n%s", err, out)
	}
	ms := re.FindAllStringSubmatch(string(out), -1)
	if len(ms) != len(qs) {
		t.Fatalf("debugfs gave %d hashes for %d queries:\n%s", len(ms), len(qs), out)
	}
	for i, m := range ms {
		wantH, _ := strconv.ParseUint(m[1], 16, 32)
		wantM, _ := strconv.ParseUint(m[2], 16, 32)
		h, mi := dirHash(qs[i].name, uint8(qs[i].alg), qs[i].seed)
		if qs[i].alg == hashLegacy || qs[i].alg == hashLegacyUnsigned {
			mi = uint32(wantM) // legacy has no minor hash
		}
		if h != uint32(wantH) || mi != uint32(wantM) {
			t.Errorf("%s %q seed %x: ours %#x/%#x, debugfs %#x/%#x", algs[qs[i].alg], qs[i].name, qs[i].seed, h, mi, wantH, wantM)
		}
	}
}

func hexUUID(s string) ([]byte, error) {
	s = strings.ReplaceAll(s, "-", "")
	b := make([]byte, 16)
	for i := range b {
		v, err := strconv.ParseUint(s[2*i:2*i+2], 16, 8)
		if err != nil {
			return nil, err
		}
		b[i] = byte(v)
	}
	return b, nil
}

// TestHtreeLookup indexes a 1,500-entry directory of long names (two index
// levels with 1 KiB blocks) with e2fsck -D and finds every name by hash
// alone.
func TestHtreeLookup(t *testing.T) {
	e2fsck := testutil.NeedCmd(t, "e2fsck")[0]
	src := t.TempDir()
	dir := filepath.Join(src, "big")
	os.Mkdir(dir, 0o755)
	var names []string
	for i := 0; i < 1500; i++ {
		n := fmt.Sprintf("entry-%06d-%s", i, strings.Repeat("p", 180+i%40))
		names = append(names, n)
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, opts := range [][]string{{"-b", "1024"}, {"-b", "4096", "-O", "^metadata_csum"}, {"-b", "1024", "-T", "tea"}} {
		t.Run(strings.Join(opts, ""), func(t *testing.T) {
			tea := opts[len(opts)-1] == "tea"
			if tea {
				opts = opts[:len(opts)-2]
			}
			img := testutil.MkfsImage(t, src, "64M", append([]string{"-t", "ext4"}, opts...)...)
			if tea {
				if out, err := exec.Command(testutil.NeedCmd(t, "tune2fs")[0], "-E", "hash_alg=tea", img).CombinedOutput(); err != nil {
					t.Fatalf("tune2fs: %v\n%s", err, out)
				}
			}
			if out, err := exec.Command(e2fsck, "-fyD", img).CombinedOutput(); err != nil {
				if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() > 1 {
					t.Fatalf("e2fsck -fyD: %v\n%s", err, out)
				}
			}
			f := openImage(t, img)
			bigIno, err := f.Lookup(RootIno, "big")
			if err != nil {
				t.Fatal(err)
			}
			d, err := f.openDir(bigIno)
			if err != nil {
				t.Fatal(err)
			}
			if d.in.Flags&flagIndex == 0 {
				t.Fatal("e2fsck -D did not index the directory")
			}
			root, _, _ := f.dirBlock(d, 0)
			t.Logf("htree levels %d, hash version %d", root[0x1E]+1, root[0x1C])
			byName := map[string]uint32{}
			f.ReadDir(bigIno, 0, func(e DirEntry) bool { byName[e.Name] = e.Ino; return true })
			if len(byName) != len(names)+2 {
				t.Fatalf("readdir found %d entries, want %d", len(byName), len(names)+2)
			}
			for _, n := range names {
				ino, found, err := f.htreeLookup(d, n)
				if err != nil || !found || ino != byName[n] {
					t.Fatalf("htree lookup %q = %d, %v, %v; want %d", n, ino, found, err, byName[n])
				}
			}
			for _, n := range []string{"nope", "entry-000001-", "entry-999999", strings.Repeat("p", 255)} {
				if _, found, err := f.htreeLookup(d, n); found || err != nil {
					t.Errorf("htree lookup of missing %q: found %v, err %v", n, found, err)
				}
			}
			// Readdir cookies resume exactly where a partial read stopped.
			var first []DirEntry
			f.ReadDir(bigIno, 0, func(e DirEntry) bool { first = append(first, e); return len(first) < 500 })
			var rest []string
			f.ReadDir(bigIno, first[len(first)-1].Next, func(e DirEntry) bool { rest = append(rest, e.Name); return true })
			if len(first)+len(rest) != len(names)+2 {
				t.Errorf("resumed readdir: %d + %d entries, want %d", len(first), len(rest), len(names)+2)
			}
		})
	}
}
