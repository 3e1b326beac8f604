package testutil

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Ext4Tree builds, in a fresh temporary directory, a source tree that
// exercises a filesystem driver: files with holes (leading, inner,
// trailing), a large random file, a large sparse file, a 3,000-entry
// directory, short and long symlinks, hard links, character and block
// devices, fifos, a socket, setuid/setgid/sticky modes, odd owners (also
// above 65535), user/trusted/security xattrs (security.capability, values
// big enough to need an xattr block) and a POSIX ACL. Device nodes, owners
// and trusted.* need root; without root those parts are left out (the
// returned note says so). Content is deterministic.
func Ext4Tree(t testing.TB) (dir string, note string) {
	t.Helper()
	dir = t.TempDir()
	root := os.Geteuid() == 0
	rng := rand.New(rand.NewPCG(7, 11))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	p := func(rel string) string { return filepath.Join(dir, rel) }
	write := func(rel string, data []byte, mode os.FileMode) {
		must(os.MkdirAll(filepath.Dir(p(rel)), 0o755))
		must(os.WriteFile(p(rel), data, mode))
		must(os.Chmod(p(rel), mode))
	}
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	// sparse writes chunks at the given offsets and sets the final size.
	sparse := func(rel string, size int64, chunks map[int64]int) {
		f, err := os.Create(p(rel))
		must(err)
		for off, n := range chunks {
			_, err := f.WriteAt(random(n), off)
			must(err)
		}
		must(f.Truncate(size))
		must(f.Close())
	}
	write("etc/hostname", []byte("uml\n"), 0o644)
	write("empty", nil, 0o600)
	write("small.txt", []byte("hello, ext4\n"), 0o644)
	write("bin/prog", random(70000), 0o755)
	write("big/random.bin", random(12<<20+333), 0o644)
	must(os.MkdirAll(p("holes"), 0o755))
	sparse("holes/lead", 200000, map[int64]int{150000: 5000})
	sparse("holes/inner", 300000, map[int64]int{0: 4096, 100000: 3000, 250000: 50000})
	sparse("holes/trail", 1<<20, map[int64]int{0: 10000})
	sparse("holes/odd", 70001, map[int64]int{1: 1, 1023: 2, 4095: 3, 65537: 100})
	sparse("holes/allhole", 5<<20, nil)
	sparse("holes/huge", 100<<20, map[int64]int{0: 100, 33 << 20: 70000, 100<<20 - 10: 10})
	for i := 0; i < 3000; i++ {
		name := fmt.Sprintf("f%04d", i)
		if i%97 == 0 {
			name += "-" + strings.Repeat("n", 200+i%50)
		}
		write("many/"+name, []byte(name), 0o644)
	}
	// Symlinks: fast (<60 bytes), slow, and one near a 1 KiB block.
	must(os.MkdirAll(p("links"), 0o755))
	must(os.MkdirAll(p("dev"), 0o755))
	for _, n := range []int{1, 59, 60, 61, 200, 1000} {
		target := strings.Repeat("t", n)
		must(os.Symlink(target, p(fmt.Sprintf("links/len%d", n))))
	}
	must(os.Symlink("../small.txt", p("links/rel")))
	must(os.Symlink("/etc/hostname", p("links/abs")))
	write("hard/a", []byte("linked three times\n"), 0o640)
	must(os.Link(p("hard/a"), p("hard/b")))
	must(os.MkdirAll(p("other"), 0o755))
	must(os.Link(p("hard/a"), p("other/c")))
	must(unix.Mkfifo(p("fifo"), 0o620))
	l, err := net.Listen("unix", p("sock"))
	must(err)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	write("modes/setuid", []byte("#!/bin/sh\n"), 0o755)
	must(os.Chmod(p("modes/setuid"), os.ModeSetuid|0o755))
	write("modes/setgid", []byte("x"), 0o755)
	must(os.Chmod(p("modes/setgid"), os.ModeSetgid|0o711))
	must(os.MkdirAll(p("modes/sticky"), 0o755))
	must(os.Chmod(p("modes/sticky"), os.ModeSticky|0o777))
	// Deep nesting.
	deep := "deep"
	for i := 0; i < 20; i++ {
		deep = filepath.Join(deep, fmt.Sprintf("d%d", i))
	}
	write(filepath.Join(deep, "leaf"), []byte("bottom"), 0o644)
	// Extended attributes: small (in the inode with 256-byte inodes), big
	// (an xattr block), many.
	write("xattr/small", []byte("x"), 0o644)
	must(unix.Setxattr(p("xattr/small"), "user.comment", []byte("hi"), 0))
	write("xattr/big", []byte("y"), 0o644)
	must(unix.Setxattr(p("xattr/big"), "user.blob", random(700), 0))
	must(unix.Setxattr(p("xattr/big"), "user.empty", nil, 0))
	write("xattr/many", []byte("z"), 0o644)
	for i := 0; i < 12; i++ {
		must(unix.Setxattr(p("xattr/many"), fmt.Sprintf("user.k%02d", i), []byte(strings.Repeat("v", i*5)), 0))
	}
	must(os.MkdirAll(p("xattr/dir"), 0o755))
	must(unix.Setxattr(p("xattr/dir"), "user.ondir", []byte("d"), 0))
	write("xattr/acl", []byte("acl"), 0o640)
	must(unix.Setxattr(p("xattr/acl"), "system.posix_acl_access", posixACL(1234), 0))
	write("bin/ping", random(3000), 0o755)
	if !root {
		return dir, "not root: no device nodes, owners, mode-0 file, security.capability or trusted.* xattrs in the tree"
	}
	// Unreadable to anyone but root (and mke2fs -d must read it).
	write("modes/none", []byte("no perms"), 0)
	// security.capability v2: cap_net_raw (bit 13) permitted+effective.
	// Setting it needs CAP_SETFCAP.
	capv := make([]byte, 20)
	binary.LittleEndian.PutUint32(capv[0:], 0x02000001)
	binary.LittleEndian.PutUint32(capv[4:], 1<<13)
	must(unix.Setxattr(p("bin/ping"), "security.capability", capv, 0))
	must(unix.Mknod(p("dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(p("dev/sda1"), unix.S_IFBLK|0o660, int(unix.Mkdev(8, 1))))
	must(unix.Mknod(p("dev/bigmajor"), unix.S_IFCHR|0o600, int(unix.Mkdev(300, 70000))))
	for rel, ids := range map[string][2]int{
		"small.txt": {1234, 5678}, "hard/a": {65534, 65534}, "modes/setuid": {0, 50},
		"xattr/big": {100000, 200000}, "links/len200": {42, 43}, "dev/null": {7, 8},
	} {
		must(os.Lchown(p(rel), ids[0], ids[1]))
	}
	must(os.Chmod(p("modes/setuid"), os.ModeSetuid|0o755)) // chown cleared it
	must(unix.Setxattr(p("xattr/small"), "trusted.t", []byte("trusted value"), 0))
	return dir, ""
}

// posixACL builds a user-space (version 2) ACL xattr: owner rw, user uid
// r, group r, mask r, other none.
func posixACL(uid uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	add := func(tag, perm uint16, id uint32) {
		b = binary.LittleEndian.AppendUint16(b, tag)
		b = binary.LittleEndian.AppendUint16(b, perm)
		b = binary.LittleEndian.AppendUint32(b, id)
	}
	add(1, 6, 0xFFFFFFFF)
	add(2, 4, uid)
	add(4, 4, 0xFFFFFFFF)
	add(0x10, 4, 0xFFFFFFFF)
	add(0x20, 0, 0xFFFFFFFF)
	return b
}

// MkfsImage runs `mkfs.<fstype> -d src` with the extra options into a new
// image of the given size (e.g. "200M") in t.TempDir() and returns its path.
func MkfsImage(t testing.TB, src, size string, opts ...string) string {
	t.Helper()
	mkfs := NeedCmd(t, "mke2fs")[0]
	img := filepath.Join(t.TempDir(), "fs.img")
	args := append([]string{"-q", "-F"}, opts...)
	args = append(args, "-d", src, img, size)
	if b, err := exec.Command(mkfs, args...).CombinedOutput(); err != nil {
		t.Fatalf("mke2fs %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return img
}

// minbaseRecipe is part of the cache key of the Debian minbase image.
const minbaseRecipe = "minbase-v1"

// MinbaseImage returns the path of a cached ext4 image (mke2fs defaults,
// 1 GiB) of a Debian bookworm minbase tree made by debootstrap, and the
// path of that tree. Callers must not modify either (copy the image
// first). Building the tree needs root, debootstrap and the Debian archive
// (about 25-80 s here); without them a missing cache skips t with the
// reason. Set UMLTEST_NOMINBASE=1 to skip instead of building.
func MinbaseImage(t testing.TB) (img, tree string) {
	t.Helper()
	cache := CacheDir(t)
	tree = filepath.Join(cache, minbaseRecipe+".tree")
	img = filepath.Join(cache, minbaseRecipe+".img")
	if _, err := os.Stat(img); err == nil {
		return img, tree
	}
	if _, err := os.Stat(tree); err != nil {
		if os.Getenv("UMLTEST_NOMINBASE") != "" {
			Skip(t, "no cached Debian minbase image in %s and UMLTEST_NOMINBASE is set", cache)
		}
		NeedRoot(t)
		db := NeedCmd(t, "debootstrap")[0]
		tmp := tree + ".tmp"
		os.RemoveAll(tmp)
		cmd := exec.Command(db, "--variant=minbase", "bookworm", tmp, "http://deb.debian.org/debian")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("debootstrap: %v\n%s", err, tail(string(b), 2000))
		}
		if err := os.Rename(tmp, tree); err != nil {
			t.Fatal(err)
		}
	}
	mkfs := NeedCmd(t, "mke2fs")[0]
	tmp := img + ".tmp"
	os.Remove(tmp)
	if b, err := exec.Command(mkfs, "-q", "-F", "-t", "ext4", "-d", tree, tmp, "1G").CombinedOutput(); err != nil {
		t.Fatalf("mke2fs minbase: %v\n%s", err, b)
	}
	if err := os.Rename(tmp, img); err != nil {
		t.Fatal(err)
	}
	return img, tree
}
