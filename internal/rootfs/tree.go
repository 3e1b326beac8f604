package rootfs

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Tree is a root tree being assembled in a staging directory, plus what the
// staging directory cannot hold when rootstrap runs unprivileged: the
// intended owner and mode of files whose real ones differ, and device
// nodes. Pack writes those into the image with debugfs.
//
// Unprivileged, every file in the staging directory belongs to the user
// running rootstrap and is packed as owned by root (0:0) unless an
// override says otherwise. Privileged (root), the staging directory's own
// ownership and device nodes are authoritative.
type Tree struct {
	// Root is the staging directory.
	Root string
	// Privileged is true when running as root.
	Privileged bool

	meta  map[string]meta // by path relative to Root, no leading slash
	nodes map[string]devNode
}

// meta is the intended ownership and permission of one path.
type meta struct {
	uid, gid int
	mode     uint32 // permission bits incl. setuid/setgid/sticky; 0 = as staged
}

// devNode is a device node to create in the image.
type devNode struct {
	typ          byte // 'c' or 'b'
	perm         uint32
	major, minor uint32
	uid, gid     int
}

// NewTree makes a tree rooted at dir (which must exist and be empty).
func NewTree(dir string, privileged bool) (*Tree, error) {
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	return &Tree{Root: dir, Privileged: privileged, meta: map[string]meta{}, nodes: map[string]devNode{}}, nil
}

// clean turns a path inside the tree ("/etc/x", "./etc/x", "etc/x") into
// its canonical relative form ("etc/x"), confined to the tree: ".." never
// climbs above the root. The root itself is "".
func clean(p string) string {
	return strings.TrimPrefix(filepath.Clean("/"+p), "/")
}

// Resolve returns the host path of rel inside the tree, following
// symlinks as a chroot would: absolute link targets restart at the tree's
// root and ".." stops there, so nothing outside the tree is ever reached.
// With followFinal false the last component is not followed. Components
// that do not exist are kept literally.
func (t *Tree) Resolve(rel string, followFinal bool) (string, error) {
	r, err := t.resolveRel(rel, followFinal)
	if err != nil {
		return "", err
	}
	return filepath.Join(t.Root, r), nil
}

func (t *Tree) resolveRel(rel string, followFinal bool) (string, error) {
	parts := strings.Split(clean(rel), "/")
	cur := ""
	links := 0
	for len(parts) > 0 {
		p := parts[0]
		parts = parts[1:]
		switch p {
		case "", ".":
			continue
		case "..":
			if i := strings.LastIndexByte(cur, '/'); i >= 0 {
				cur = cur[:i]
			} else {
				cur = ""
			}
			continue
		}
		next := p
		if cur != "" {
			next = cur + "/" + p
		}
		if len(parts) == 0 && !followFinal {
			cur = next
			break
		}
		fi, err := os.Lstat(filepath.Join(t.Root, next))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				cur = next
				continue
			}
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		links++
		if links > 40 {
			return "", fmt.Errorf("/%s: too many levels of symbolic links", clean(rel))
		}
		target, err := os.Readlink(filepath.Join(t.Root, next))
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(target, "/") {
			cur = ""
		}
		parts = append(strings.Split(target, "/"), parts...)
	}
	return cur, nil
}

// WriteFile writes a file inside the tree (following symlinks within the
// tree), creating parent directories, owned by root with mode perm.
func (t *Tree) WriteFile(rel string, data []byte, perm os.FileMode) error {
	r, err := t.resolveRel(rel, true)
	if err != nil {
		return err
	}
	p := filepath.Join(t.Root, r)
	if err := t.mkdirAllRel(filepath.Dir(r)); err != nil {
		return err
	}
	if fi, err := os.Lstat(p); err == nil {
		if fi.Mode().IsRegular() {
			// An existing file keeps its owner and mode.
			return os.WriteFile(p, data, 0)
		}
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	if err := os.WriteFile(p, data, t.stagePerm(perm, false)); err != nil {
		return err
	}
	if err := os.Chmod(p, t.stagePerm(perm, false)); err != nil {
		return err
	}
	t.setMeta(r, 0, 0, uint32(perm.Perm())|modeExtra(perm), false)
	return nil
}

// ReadFile reads a file inside the tree.
func (t *Tree) ReadFile(rel string) ([]byte, error) {
	p, err := t.Resolve(rel, true)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

// Exists reports whether rel exists (following symlinks within the tree).
func (t *Tree) Exists(rel string) bool {
	p, err := t.Resolve(rel, true)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}

// Mkdir creates a directory (and parents) owned by root with mode perm.
func (t *Tree) Mkdir(rel string, perm os.FileMode) error {
	r, err := t.resolveRel(rel, true)
	if err != nil {
		return err
	}
	if err := t.mkdirAllRel(r); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Join(t.Root, r), t.stagePerm(perm, true)); err != nil {
		return err
	}
	t.setMeta(r, 0, 0, uint32(perm.Perm())|modeExtra(perm), true)
	return nil
}

// Symlink creates (or replaces) a symbolic link at rel pointing to target.
func (t *Tree) Symlink(target, rel string) error {
	r, err := t.resolveRel(rel, false)
	if err != nil {
		return err
	}
	if err := t.mkdirAllRel(filepath.Dir(r)); err != nil {
		return err
	}
	p := filepath.Join(t.Root, r)
	if fi, err := os.Lstat(p); err == nil {
		if fi.IsDir() {
			return fmt.Errorf("/%s: is a directory", r)
		}
		os.Remove(p)
	}
	delete(t.meta, r)
	return os.Symlink(target, p)
}

// Mknod records (unprivileged) or creates (privileged) a device node.
// typ is 'c' or 'b'.
func (t *Tree) Mknod(rel string, typ byte, perm uint32, major, minor uint32, uid, gid int) error {
	r, err := t.resolveRel(rel, false)
	if err != nil {
		return err
	}
	if typ != 'c' && typ != 'b' {
		return fmt.Errorf("/%s: bad device type %q", r, typ)
	}
	if err := t.mkdirAllRel(filepath.Dir(r)); err != nil {
		return err
	}
	p := filepath.Join(t.Root, r)
	if fi, err := os.Lstat(p); err == nil && !fi.IsDir() {
		os.Remove(p)
	}
	if t.Privileged {
		mode := perm | syscall.S_IFCHR
		if typ == 'b' {
			mode = perm | syscall.S_IFBLK
		}
		if err := syscall.Mknod(p, mode, int(mkdev(major, minor))); err != nil {
			return fmt.Errorf("mknod /%s: %w", r, err)
		}
		return os.Lchown(p, uid, gid)
	}
	t.nodes[r] = devNode{typ: typ, perm: perm & 0o7777, major: major, minor: minor, uid: uid, gid: gid}
	return nil
}

func mkdev(major, minor uint32) uint64 {
	return uint64(minor&0xff) | uint64(major&0xfff)<<8 | uint64(minor&^0xff)<<12 | uint64(major&^0xfff)<<32
}

// mkdirAllRel creates directory r (relative, already resolved) and its
// parents; new directories are owned by root, mode 0755.
func (t *Tree) mkdirAllRel(r string) error {
	if r == "" || r == "." {
		return nil
	}
	p := filepath.Join(t.Root, r)
	if fi, err := os.Stat(p); err == nil {
		if fi.IsDir() {
			return nil
		}
		return fmt.Errorf("/%s: not a directory", r)
	}
	if err := t.mkdirAllRel(filepath.Dir(r)); err != nil {
		return err
	}
	if err := os.Mkdir(p, 0o755); err != nil && !os.IsExist(err) {
		return err
	}
	return nil
}

// stagePerm is the permission to give a staged file: unprivileged, the
// owner must keep read (and, for directories, write and search) access so
// later modules and mkfs can use it; the real mode is recorded.
func (t *Tree) stagePerm(perm os.FileMode, dir bool) os.FileMode {
	m := perm.Perm() | perm&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky)
	if t.Privileged {
		return m
	}
	if dir {
		return m | 0o700
	}
	return m | 0o600
}

func modeExtra(m os.FileMode) uint32 {
	var x uint32
	if m&os.ModeSetuid != 0 {
		x |= syscall.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		x |= syscall.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		x |= syscall.S_ISVTX
	}
	return x
}

// setMeta records the intended owner and mode of r. Privileged, it applies
// them for real instead.
func (t *Tree) setMeta(r string, uid, gid int, mode uint32, dir bool) {
	if t.Privileged {
		// chown clears setuid and setgid: restore the mode after it.
		p := filepath.Join(t.Root, r)
		os.Lchown(p, uid, gid)
		os.Chmod(p, os.FileMode(mode&0o777)|unextra(mode))
		return
	}
	staged := uint32(t.stagePerm(os.FileMode(mode&0o777)|unextra(mode), dir).Perm()) | mode&0o7000
	m := meta{uid: uid, gid: gid}
	if staged != mode {
		m.mode = mode | 1<<31 // bit 31 marks "mode set", so mode 0 is expressible
	}
	if m.uid == 0 && m.gid == 0 && m.mode == 0 {
		delete(t.meta, r)
		return
	}
	t.meta[r] = m
}

func unextra(mode uint32) os.FileMode {
	var m os.FileMode
	if mode&syscall.S_ISUID != 0 {
		m |= os.ModeSetuid
	}
	if mode&syscall.S_ISGID != 0 {
		m |= os.ModeSetgid
	}
	if mode&syscall.S_ISVTX != 0 {
		m |= os.ModeSticky
	}
	return m
}

// Entry is one file of a source tree (a tar member or a file of a host
// directory).
type Entry struct {
	Name     string // path inside the tree
	Type     byte   // tar.TypeReg, TypeDir, TypeSymlink, TypeLink, TypeChar, TypeBlock, TypeFifo
	Mode     uint32 // permission bits incl. setuid/setgid/sticky
	UID, GID int
	Linkname string // symlink target, or hard link source (a tree path)
	Major    uint32
	Minor    uint32
	ModTime  time.Time
}

// Add creates e in the tree, reading a regular file's content from r.
func (t *Tree) Add(e Entry, r io.Reader) error {
	rel, err := t.resolveRel(filepath.Dir(clean(e.Name)), true)
	if err != nil {
		return err
	}
	base := filepath.Base(clean(e.Name))
	if clean(e.Name) == "" {
		// The root directory itself: mkfs sets its owner; keep its mode.
		if e.Type == tar.TypeDir && e.Mode != 0 {
			return os.Chmod(t.Root, os.FileMode(e.Mode&0o777)|unextra(e.Mode)|0o700*boolPerm(!t.Privileged))
		}
		return nil
	}
	if rel != "" {
		rel += "/"
	}
	rel += base
	p := filepath.Join(t.Root, rel)
	if err := t.mkdirAllRel(filepath.Dir(rel)); err != nil {
		return err
	}
	// Replace whatever is there, except a directory by a directory.
	if fi, err := os.Lstat(p); err == nil && !(fi.IsDir() && e.Type == tar.TypeDir) {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	delete(t.nodes, rel)
	fm := os.FileMode(e.Mode&0o777) | unextra(e.Mode)
	switch e.Type {
	case tar.TypeDir:
		if err := os.Mkdir(p, 0o700); err != nil && !os.IsExist(err) {
			return err
		}
		if err := os.Chmod(p, t.stagePerm(fm, true)); err != nil {
			return err
		}
		t.setMeta(rel, e.UID, e.GID, e.Mode&0o7777, true)
	case tar.TypeReg, tar.TypeRegA:
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("/%s: %w", rel, err)
		}
		if err := os.Chmod(p, t.stagePerm(fm, false)); err != nil {
			return err
		}
		t.setMeta(rel, e.UID, e.GID, e.Mode&0o7777, false)
	case tar.TypeSymlink:
		if err := os.Symlink(e.Linkname, p); err != nil {
			return err
		}
		if t.Privileged {
			os.Lchown(p, e.UID, e.GID)
		} else if e.UID != 0 || e.GID != 0 {
			t.meta[rel] = meta{uid: e.UID, gid: e.GID}
		}
	case tar.TypeLink:
		src, err := t.resolveRel(clean(e.Linkname), false)
		if err != nil {
			return err
		}
		if _, ok := t.nodes[src]; ok {
			n := t.nodes[src]
			t.nodes[rel] = n
			return nil
		}
		if err := os.Link(filepath.Join(t.Root, src), p); err != nil {
			return fmt.Errorf("hard link /%s to /%s: %w", rel, src, err)
		}
	case tar.TypeChar, tar.TypeBlock:
		typ := byte('c')
		if e.Type == tar.TypeBlock {
			typ = 'b'
		}
		return t.Mknod(rel, typ, e.Mode&0o7777, e.Major, e.Minor, e.UID, e.GID)
	case tar.TypeFifo:
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			return fmt.Errorf("mkfifo /%s: %w", rel, err)
		}
		if err := os.Chmod(p, t.stagePerm(fm, false)); err != nil {
			return err
		}
		t.setMeta(rel, e.UID, e.GID, e.Mode&0o7777, false)
	default:
		return fmt.Errorf("/%s: unsupported file type %q", rel, e.Type)
	}
	if !e.ModTime.IsZero() && e.Type != tar.TypeSymlink && e.Type != tar.TypeLink {
		os.Chtimes(p, e.ModTime, e.ModTime)
	}
	return nil
}

func boolPerm(b bool) os.FileMode {
	if b {
		return 1
	}
	return 0
}

// AddTar extracts a tar stream (plain or gzip-compressed) into the tree. Ownership, modes, device
// nodes and hard links are kept (recorded for the image when
// unprivileged); extended attributes are not. step, if not nil, is called
// per member.
func (t *Tree) AddTar(r io.Reader, step func()) error {
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("reading tar.gz: %w", err)
		}
		defer zr.Close()
		r = zr
	} else {
		r = br
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading tar: %w", err)
		}
		switch h.Typeflag {
		case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
			continue
		}
		e := Entry{
			Name: h.Name, Type: h.Typeflag, Mode: uint32(h.Mode) & 0o7777,
			UID: h.Uid, GID: h.Gid, Linkname: h.Linkname,
			Major: uint32(h.Devmajor), Minor: uint32(h.Devminor), ModTime: h.ModTime,
		}
		if err := t.Add(e, tr); err != nil {
			return fmt.Errorf("tar member %s: %w", h.Name, err)
		}
		if step != nil {
			step()
		}
	}
}

// AddDir copies a host directory tree into the tree. Files owned by the
// invoking user become root's when unprivileged (the usual case for a
// tree the user unpacked); other owners are kept. step, if not nil, is
// called per file.
func (t *Tree) AddDir(dir string, step func()) error {
	myUID, myGID := os.Getuid(), os.Getgid()
	links := map[[2]uint64]string{}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no stat data", path)
		}
		e := Entry{Name: rel, Mode: uint32(st.Mode) & 0o7777, UID: int(st.Uid), GID: int(st.Gid), ModTime: fi.ModTime()}
		if !t.Privileged {
			if e.UID == myUID {
				e.UID = 0
			}
			if e.GID == myGID {
				e.GID = 0
			}
		}
		var content io.Reader
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			e.Type = tar.TypeDir
		case syscall.S_IFREG:
			key := [2]uint64{st.Dev, st.Ino}
			if first, ok := links[key]; ok && st.Nlink > 1 {
				e.Type, e.Linkname = tar.TypeLink, first
				break
			}
			if st.Nlink > 1 {
				links[key] = rel
			}
			e.Type = tar.TypeReg
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			content = f
		case syscall.S_IFLNK:
			e.Type = tar.TypeSymlink
			if e.Linkname, err = os.Readlink(path); err != nil {
				return err
			}
		case syscall.S_IFCHR, syscall.S_IFBLK:
			e.Type = tar.TypeChar
			if st.Mode&syscall.S_IFMT == syscall.S_IFBLK {
				e.Type = tar.TypeBlock
			}
			rdev := uint64(st.Rdev)
			e.Major = uint32((rdev>>8)&0xfff | (rdev>>32)&^0xfff)
			e.Minor = uint32(rdev&0xff | (rdev>>12)&^0xff)
		case syscall.S_IFIFO:
			e.Type = tar.TypeFifo
		default:
			return nil // sockets are not packed
		}
		if err := t.Add(e, content); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if step != nil {
			step()
		}
		return nil
	})
}

// Usage walks the staging tree and returns the bytes its files occupy
// (rounded to 4 KiB blocks) and its number of inodes.
func (t *Tree) Usage() (bytes int64, inodes int64, err error) {
	seen := map[uint64]bool{}
	err = filepath.WalkDir(t.Root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 && !fi.IsDir() {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		inodes++
		switch {
		case fi.Mode().IsRegular():
			bytes += (fi.Size() + 4095) &^ 4095
		case fi.IsDir():
			bytes += 4096
		case fi.Mode()&fs.ModeSymlink != 0 && fi.Size() >= 60:
			bytes += 4096
		}
		return nil
	})
	inodes += int64(len(t.nodes))
	return bytes, inodes, err
}

// allPaths lists every path of the staging tree (for the fallback where
// mkfs cannot run in a user namespace and ownership must be rewritten for
// all files).
func (t *Tree) allPaths() ([]string, error) {
	var out []string
	err := filepath.WalkDir(t.Root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if rel, _ := filepath.Rel(t.Root, path); rel != "." {
			out = append(out, rel)
		}
		return nil
	})
	return out, err
}

// fixups returns the debugfs commands that give the packed image the
// recorded owners, modes and device nodes. all, when not nil, lists paths
// whose owner must be reset to root (mkfs copied the builder's uid).
func (t *Tree) fixups(all []string) ([]string, error) {
	var cmds []string
	for _, r := range all {
		if strings.ContainsAny(r, "\n\r") {
			return nil, fmt.Errorf("file name %q has a newline: cannot be packed", r)
		}
	}
	for _, r := range all {
		if _, ok := t.meta[r]; ok {
			continue
		}
		if _, ok := t.nodes[r]; ok {
			continue
		}
		q := dq("/" + r)
		cmds = append(cmds, "sif "+q+" uid 0", "sif "+q+" gid 0")
	}
	keys := make([]string, 0, len(t.meta))
	for k := range t.meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, r := range keys {
		m := t.meta[r]
		fi, err := os.Lstat(filepath.Join(t.Root, r))
		if err != nil {
			continue // removed by a later module
		}
		if strings.ContainsAny(r, "\n\r") {
			return nil, fmt.Errorf("file name %q has a newline: cannot be packed", r)
		}
		q := dq("/" + r)
		cmds = append(cmds, fmt.Sprintf("sif %s uid %d", q, m.uid), fmt.Sprintf("sif %s gid %d", q, m.gid))
		if m.mode&(1<<31) != 0 && fi.Mode()&fs.ModeSymlink == 0 {
			st := fi.Sys().(*syscall.Stat_t)
			cmds = append(cmds, fmt.Sprintf("sif %s mode 0%o", q, st.Mode&syscall.S_IFMT|m.mode&0o7777))
		}
	}
	keys = keys[:0]
	for k := range t.nodes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, r := range keys {
		n := t.nodes[r]
		dir := filepath.Dir(r)
		if dir == "." {
			dir = ""
		}
		if fi, err := os.Stat(filepath.Join(t.Root, dir)); err != nil || !fi.IsDir() {
			continue // its directory was removed
		}
		if _, err := os.Lstat(filepath.Join(t.Root, r)); err == nil {
			continue // something else took its place
		}
		ft := uint32(syscall.S_IFCHR)
		if n.typ == 'b' {
			ft = syscall.S_IFBLK
		}
		q := dq("/" + r)
		cmds = append(cmds,
			"cd "+dq("/"+dir),
			fmt.Sprintf("mknod %s %c %d %d", dq(filepath.Base(r)), n.typ, n.major, n.minor),
			fmt.Sprintf("sif %s mode 0%o", q, ft|n.perm),
			fmt.Sprintf("sif %s uid %d", q, n.uid),
			fmt.Sprintf("sif %s gid %d", q, n.gid),
		)
	}
	return cmds, nil
}

// dq quotes a path for debugfs's command parser: inside double quotes a
// doubled quote stands for one.
func dq(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
