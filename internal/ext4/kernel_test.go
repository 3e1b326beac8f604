package ext4

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/testutil"
)

// loopMount mounts img on a new directory and returns it; the mount is
// undone at the end of the test.
func loopMount(t *testing.T, img, fstype string, opts ...string) string {
	t.Helper()
	mnt := t.TempDir()
	o := strings.Join(append([]string{"loop"}, opts...), ",")
	if out, err := exec.Command("mount", "-t", fstype, "-o", o, img, mnt).CombinedOutput(); err != nil {
		testutil.Skip(t, "loop mount not available: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	return mnt
}

// waitDetached waits until no loop device is attached to img: the loop
// driver finishes writing the backing file asynchronously after umount
// (observed here: the superblock still said needs_recovery right after
// umount returned).
func waitDetached(t *testing.T, img string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		out, err := exec.Command("losetup", "-j", img).Output()
		if err == nil && len(strings.TrimSpace(string(out))) == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("loop device still attached to %s after 10 s", img)
}

func runCmd(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// kernelWorkload changes a mounted filesystem the way a guest would: a copy
// of the generated tree, a 6,000-entry directory (the kernel indexes it
// with an htree), renames, unlinks, a 30 MB file, a symlink, deep dirs.
func kernelWorkload(t *testing.T, src, mnt string) {
	// Small directories: inline with inline_data, some spilling from
	// i_block into the system.data attribute.
	for n := 1; n <= 6; n++ {
		d := filepath.Join(mnt, fmt.Sprintf("small%d", n))
		os.Mkdir(d, 0o755)
		for i := 0; i < n; i++ {
			os.WriteFile(filepath.Join(d, fmt.Sprintf("e%d", i)), []byte("tiny"), 0o644)
		}
	}
	runCmd(t, "cp", "-a", src+"/.", mnt+"/tree")
	d := filepath.Join(mnt, "kdir")
	os.Mkdir(d, 0o755)
	for i := 0; i < 6000; i++ {
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("kernel-made-%05d", i)), []byte{byte(i)}, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 6000; i += 7 {
		os.Rename(filepath.Join(d, fmt.Sprintf("kernel-made-%05d", i)), filepath.Join(d, fmt.Sprintf("renamed-%05d", i)))
	}
	for i := 1; i < 6000; i += 11 {
		os.Remove(filepath.Join(d, fmt.Sprintf("kernel-made-%05d", i)))
	}
	big := make([]byte, 30<<20)
	for i := range big {
		big[i] = byte(i * 7 >> 9)
	}
	os.WriteFile(filepath.Join(mnt, "thirty"), big, 0o644)
	os.Symlink("tree/small.txt", filepath.Join(mnt, "sym"))
	os.MkdirAll(filepath.Join(mnt, "a/b/c/d/e/f/g"), 0o700)
	os.Rename(filepath.Join(mnt, "tree/many"), filepath.Join(mnt, "many-moved"))
}

// fsyncWorkload changes the mounted filesystem and makes each change
// durable with fsync (journal commit) rather than sync (which would also
// write the metadata in place).
func fsyncWorkload(t *testing.T, mnt string) {
	t.Helper()
	fsync := func(p string) {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	j := filepath.Join(mnt, "journalled")
	os.Mkdir(j, 0o750)
	for i := 0; i < 200; i++ {
		p := filepath.Join(j, fmt.Sprintf("j%03d", i))
		os.WriteFile(p, bytes.Repeat([]byte{byte(i)}, i*37), 0o640)
		fsync(p)
	}
	big := filepath.Join(mnt, "journalled-big")
	os.WriteFile(big, bytes.Repeat([]byte("journal"), 300000), 0o600)
	fsync(big)
	os.Rename(filepath.Join(mnt, "thirty"), filepath.Join(j, "thirty-moved"))
	os.Remove(filepath.Join(mnt, "tree/small.txt"))
	os.Chmod(filepath.Join(mnt, "tree/etc/hostname"), 0o604)
	os.Symlink("journalled-big", filepath.Join(j, "link"))
	fsync(j)
	// Free metadata blocks (a multi-block directory) and reuse them for
	// data, so that later transactions revoke earlier journalled copies.
	tmp := filepath.Join(mnt, "to-revoke")
	os.Mkdir(tmp, 0o755)
	for i := 0; i < 300; i++ {
		os.WriteFile(filepath.Join(tmp, fmt.Sprintf("a-rather-long-file-name-%04d", i)), nil, 0o644)
	}
	fsync(tmp)
	fsync(mnt)
	os.RemoveAll(tmp)
	fsync(mnt)
	reuse := filepath.Join(mnt, "reuse")
	os.WriteFile(reuse, bytes.Repeat([]byte("data over freed metadata "), 40000), 0o644)
	fsync(reuse)
	fsync(mnt)
	fsync(filepath.Join(mnt, "tree"))
}

// TestKernelWritten is acceptance 2: images the Linux kernel wrote through
// a loop mount read back as the kernel itself shows them, and a copy taken
// while mounted (needs_recovery set, transactions in the journal) reads
// back correctly after our in-memory journal replay.
func TestKernelWritten(t *testing.T) {
	testutil.NeedRoot(t)
	testutil.NeedCmd(t, "mount", "umount", "losetup", "mke2fs")
	src, _ := testutil.Ext4Tree(t)
	cases := []struct {
		name, fstype string
		opts         []string
	}{
		{"ext4-1k", "ext4", []string{"-t", "ext4", "-b", "1024"}},
		{"ext4-4k", "ext4", []string{"-t", "ext4", "-b", "4096"}},
		{"ext4-nocsum", "ext4", []string{"-t", "ext4", "-O", "^metadata_csum"}},
		{"ext4-inline", "ext4", []string{"-t", "ext4", "-O", "inline_data"}},
		{"ext3", "ext3", []string{"-t", "ext3"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			empty := t.TempDir()
			img := testutil.MkfsImage(t, empty, "300M", c.opts...)
			mnt := loopMount(t, img, c.fstype)
			kernelWorkload(t, src, mnt)
			runCmd(t, "sync")
			// The dirty copy: a second round of changes made durable by
			// fsync only, so they are committed in the journal but not yet
			// checkpointed to their final places.
			fsyncWorkload(t, mnt)
			dirty := filepath.Join(t.TempDir(), "dirty.img")
			runCmd(t, "cp", "--sparse=always", img, dirty)
			want := walkHost(t, mnt, true)
			runCmd(t, "sync")
			var sfs syscall.Statfs_t
			if err := syscall.Statfs(mnt, &sfs); err != nil {
				t.Fatal(err)
			}
			runCmd(t, "umount", mnt)
			waitDetached(t, img)

			t.Run("clean", func(t *testing.T) {
				f := openImage(t, img)
				if f.ReplayedTransactions() != 0 {
					t.Errorf("clean image replayed %d transactions", f.ReplayedTransactions())
				}
				compareTrees(t, want, walkImage(t, f, true), exactTimes)
				if got := f.Statfs(); got.Blocks != sfs.Blocks || got.FreeBlocks != sfs.Bfree || got.AvailBlocks != sfs.Bavail ||
					got.Inodes != sfs.Files || got.FreeInodes != sfs.Ffree || got.BlockSize != sfs.Bsize {
					t.Errorf("statfs %+v, the kernel said %+v", got, sfs)
				}
				kd, err := f.Lookup(RootIno, "kdir")
				if err != nil {
					t.Fatal(err)
				}
				if in, _ := f.Inode(kd); in.Flags&flagIndex == 0 {
					t.Errorf("kernel did not index the 6,000-entry directory")
				}
			})
			t.Run("needs_recovery", func(t *testing.T) {
				fh, _ := os.Open(dirty)
				defer fh.Close()
				st, _ := fh.Stat()
				if _, err := Open(fh, st.Size(), &Options{NoReplay: true}); !errors.Is(err, ErrNeedsRecovery) {
					t.Fatalf("NoReplay open of the dirty copy: %v, want ErrNeedsRecovery", err)
				}
				f := openImage(t, dirty)
				t.Logf("replayed %d transactions, %d blocks, %d revoke records, %d revoked copies skipped", f.ReplayedTransactions(), len(f.overlay), f.revokes, f.skipped)
				if f.ReplayedTransactions() == 0 {
					t.Fatalf("the dirty copy had nothing to replay (needs_recovery %v)", f.sb.FeatureIncompat&incompatRecover != 0)
				}
				compareTrees(t, want, walkImage(t, f, true), exactTimes)
			})
		})
	}
}
