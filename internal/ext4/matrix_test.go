package ext4

import (
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
		{"ext2", []string{"-t", "ext2"}},
		{"ext2-4k", []string{"-t", "ext2", "-b", "4096"}},
		{"ext3", []string{"-t", "ext3"}},
		{"ext3-I128", []string{"-t", "ext3", "-I", "128"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := testutil.MkfsImage(t, src, "200M", c.opts...)
			f := openImage(t, img)
			compareTrees(t, host, walkImage(t, f, true))
		})
	}
}
