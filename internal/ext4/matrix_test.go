package ext4

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/umltools/umltools/internal/testutil"
)

// TestMkfsMatrix is acceptance 1: images made by mke2fs -d from a generated
// tree, in every layout Debian's mke2fs can produce, walk back to the
// source tree exactly (content, mode, owner, nlink, rdev, symlink target,
// xattrs) for every file.
func TestMkfsMatrix(t *testing.T) {
	src, note := testutil.Ext4Tree(t)
	if note != "" {
		t.Log(note)
	}
	host := walkHost(t, src, true)
	cases := []struct {
		name string
		opts []string
	}{
		{"ext4-1k", []string{"-t", "ext4", "-b", "1024"}},
		{"ext4-4k", []string{"-t", "ext4", "-b", "4096"}},
		{"ext4-I128", []string{"-t", "ext4", "-I", "128"}},
		{"ext4-I256-4k", []string{"-t", "ext4", "-I", "256", "-b", "4096"}},
		{"ext4-nocsum", []string{"-t", "ext4", "-O", "^metadata_csum"}},
		{"ext4-nocsum-nogdt", []string{"-t", "ext4", "-O", "^metadata_csum,^uninit_bg"}},
		{"ext4-inline", []string{"-t", "ext4", "-O", "inline_data"}},
		{"ext4-metabg", []string{"-t", "ext4", "-O", "meta_bg,^resize_inode"}},
		{"ext4-32bit", []string{"-t", "ext4", "-O", "^64bit"}},
		{"ext4-csumseed", []string{"-t", "ext4", "-O", "metadata_csum_seed"}},
		{"ext4-64k", []string{"-t", "ext4", "-b", "65536"}}, // size below
		{"ext4-bigalloc", []string{"-t", "ext4", "-b", "1024", "-O", "bigalloc", "-C", "16384"}},
		{"ext4-plain", []string{"-t", "ext4", "-O", "^flex_bg,^dir_index,^has_journal,^huge_file,^dir_nlink"}},
		{"ext2", []string{"-t", "ext2"}},
		{"ext2-4k", []string{"-t", "ext2", "-b", "4096"}},
		{"ext3", []string{"-t", "ext3"}},
		{"ext3-I128", []string{"-t", "ext3", "-I", "128"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			size := "200M"
			if c.name == "ext4-64k" {
				size = "1G" // 3,000 small files take 64 KiB each
			}
			img := testutil.MkfsImage(t, src, size, c.opts...)
			f := openImage(t, img)
			got := walkImage(t, f, true)
			want := host
			if c.name == "ext4-inline" {
				want = inlineMkfsBug(t, f, img, host, got)
			}
			compareTrees(t, want, got, mkfsTimes)
		})
	}
}

// inlineMkfsBug handles a bug of mke2fs 1.47.0: with inline_data, "-d"
// drops the trailing hole of sparse files (i_size ends at the last data
// block). For those files the image, not the source, is the reference:
// our read must equal debugfs's dump of the same inode. It also checks
// that inline data was really used.
func inlineMkfsBug(t *testing.T, f *FS, img string, host, got map[string]rec) map[string]rec {
	debugfs := testutil.NeedCmd(t, "debugfs")[0]
	want := maps.Clone(host)
	for p, h := range host {
		g, ok := got[p]
		if !ok || h.size == g.size || h.mode&0o170000 != 0o100000 {
			continue
		}
		out := filepath.Join(t.TempDir(), "dump")
		if b, err := exec.Command(debugfs, "-R", "dump "+p+" "+out, img).CombinedOutput(); err != nil {
			t.Fatalf("debugfs dump %s: %v\n%s", p, err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		h.size, h.sum = uint64(len(b)), hex.EncodeToString(sum[:])
		want[p] = h
		t.Logf("%s: mke2fs stored size %d (source %d); compared with debugfs dump", p, g.size, host[p].size)
	}
	ino, err := f.Lookup(RootIno, "small.txt")
	if err != nil {
		t.Fatal(err)
	}
	if in, _ := f.Inode(ino); in.Flags&flagInlineData == 0 {
		t.Errorf("small.txt is not inline in the inline_data image")
	}
	return want
}
