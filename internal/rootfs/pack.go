package rootfs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/umltools/umltools/internal/hosttool"
)

const mib = 1 << 20

// PackOptions says how to make the filesystem.
type PackOptions struct {
	// FSType is ext2, ext3 or ext4.
	FSType string
	// SizeMB is the image size; 0 sizes it from the tree plus FreeMB.
	SizeMB int64
	// FreeMB is the free space to leave when sizing automatically; 0
	// picks a quarter of the tree plus 16 MiB.
	FreeMB int64
	// Label is the filesystem label (may be empty).
	Label string
}

// validFSType reports whether rootstrap can make fs.
func validFSType(fs string) bool { return fs == "ext2" || fs == "ext3" || fs == "ext4" }

// imageSize returns the image size in bytes for a tree of data bytes and
// inodes files.
func imageSize(o PackOptions, data, inodes int64) (size int64, need int64) {
	// Metadata: inode tables (256 bytes an inode, and mkfs allocates
	// about one inode per 4-16 KiB), bitmaps and group descriptors, the
	// 5 % reserved for root, and the journal.
	need = data + inodes*512 + data/16 + 2*mib
	if o.FSType != "ext2" {
		j := int64(4 * mib)
		if data > 256*mib {
			j = 64 * mib
		} else if data > 64*mib {
			j = 16 * mib
		}
		need += j
	}
	need = need * 100 / 94
	if o.SizeMB > 0 {
		return o.SizeMB * mib, need
	}
	free := o.FreeMB * mib
	if free <= 0 {
		free = data/4 + 16*mib
	}
	size = (need + free + mib - 1) / mib * mib
	if size < 32*mib {
		size = 32 * mib
	}
	return size, need
}

// pack makes the filesystem image at dst (which must not exist yet and is
// created sparse) from the tree.
func (b *builder) pack(t *Tree, o PackOptions, dst string) error {
	if !validFSType(o.FSType) {
		return fmt.Errorf("unsupported fstype %q (want ext2, ext3 or ext4)", o.FSType)
	}
	mkfs, err := lookTool("mke2fs")
	if err != nil {
		return err
	}
	debugfs, err := lookTool("debugfs")
	if err != nil {
		return err
	}
	data, inodes, err := t.Usage()
	if err != nil {
		return fmt.Errorf("measuring the tree: %w", err)
	}
	size, need := imageSize(o, data, inodes)
	b.p.Infof("packing %d files (%d MiB) into a %d MiB %s image", inodes, (data+mib-1)/mib, size/mib, o.FSType)
	if size < need {
		return fmt.Errorf("image size %d MB is too small: the tree needs about %d MB (omit --image-size to size it automatically)", size/mib, (need+mib-1)/mib)
	}
	args := []string{"-t", o.FSType, "-F", "-q", "-E", "root_owner=0:0", "-d", t.Root}
	if o.Label != "" {
		args = append(args, "-L", o.Label)
	}
	args = append(args, dst, fmt.Sprintf("%dk", size/1024))

	// Unprivileged, mkfs runs in a user namespace where the builder is
	// root, so the files it copies are owned by 0:0. Without user
	// namespaces, every path's owner is rewritten afterwards.
	var all []string
	userns := !t.Privileged && !b.noUserns
	if err := b.run(runSpec{name: "mke2fs", path: mkfs, args: args, userns: userns}); err != nil {
		if userns && isUsernsErr(err) {
			b.p.Debugf("user namespaces unavailable (%v): rewriting owners with debugfs", err)
			userns = false
			err = b.run(runSpec{name: "mke2fs", path: mkfs, args: args})
		}
		if err != nil {
			if strings.Contains(err.Error(), "Could not allocate") || strings.Contains(err.Error(), "No space left") {
				return fmt.Errorf("image size %d MB is too small for the tree: %w", size/mib, err)
			}
			return err
		}
	}
	if !t.Privileged && !userns {
		if all, err = t.allPaths(); err != nil {
			return err
		}
	}
	cmds, err := t.fixups(all)
	if err != nil {
		return err
	}
	if len(cmds) > 0 {
		b.p.Debugf("debugfs: %d fix-ups (owners, modes, device nodes)", len(cmds))
		if err := b.debugfs(debugfs, dst, cmds); err != nil {
			return err
		}
	}
	if fsck, err := lookTool("e2fsck"); err == nil {
		if err := b.run(runSpec{name: "e2fsck", path: fsck, args: []string{"-fn", dst}}); err != nil {
			return fmt.Errorf("the new image does not check clean: %w", err)
		}
	}
	return nil
}

// debugfs runs a debugfs command script against img. debugfs exits 0 even
// when a command fails, so any diagnostic on its stderr (beyond its
// version banner) is an error.
func (b *builder) debugfs(debugfs, img string, cmds []string) error {
	f, err := os.CreateTemp(b.tmp, "debugfs-*.cmd")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(strings.Join(cmds, "\n") + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	cmd := exec.Command(debugfs, "-w", "-f", f.Name(), img)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	for _, l := range strings.Split(string(out), "\n") {
		if l != "" {
			b.p.Output(l)
		}
	}
	var bad []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if l == "" || strings.HasPrefix(l, "debugfs ") {
			continue
		}
		bad = append(bad, l)
	}
	if err != nil {
		return fmt.Errorf("debugfs %s: %w: %s", img, err, strings.Join(bad, "; "))
	}
	if len(bad) > 0 {
		if len(bad) > 5 {
			bad = append(bad[:5], "…")
		}
		return fmt.Errorf("debugfs %s: %s", img, strings.Join(bad, "; "))
	}
	return nil
}

// lookTool finds an e2fsprogs tool, saying which package provides it.
func lookTool(name string) (string, error) {
	p, err := hosttool.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%w (install e2fsprogs)", err)
	}
	return p, nil
}

// usernsAttr makes the child root in a new user namespace mapping only the
// caller's uid and gid.
func usernsAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		GidMappingsEnableSetgroups: false,
	}
}

// startErr marks a command that could not be started at all.
type startErr struct{ err error }

func (e *startErr) Error() string { return e.err.Error() }
func (e *startErr) Unwrap() error { return e.err }

func isUsernsErr(err error) bool {
	var se *startErr
	return errors.As(err, &se) && (errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EACCES))
}

// UsernsWorks reports whether this process can create a user namespace
// (for mkfs ownership and for mmdebstrap --mode=unshare).
func UsernsWorks() bool {
	cmd := exec.Command("/bin/true")
	if _, err := os.Stat("/bin/true"); err != nil {
		return false
	}
	cmd.SysProcAttr = usernsAttr()
	return cmd.Run() == nil
}
