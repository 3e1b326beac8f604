package ext4

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// rec is what the walks compare for one path.
type rec struct {
	mode     uint32
	uid, gid uint32
	nlink    uint64
	rdev     uint64
	size     uint64
	sum      string
	link     string
	xattrs   string
	isDir    bool
	mtime    int64 // ns since the epoch
}

func (r rec) String() string {
	return fmt.Sprintf("mode %o uid %d gid %d nlink %d rdev %#x size %d sum %.12s link %q xattrs %s mtime %d",
		r.mode, r.uid, r.gid, r.nlink, r.rdev, r.size, r.sum, r.link, r.xattrs, r.mtime)
}

func openImage(t testing.TB, img string) *FS {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, _ := f.Stat()
	fsys, err := Open(f, st.Size(), nil)
	if err != nil {
		t.Fatalf("%s: %v", img, err)
	}
	return fsys
}

// walkImage walks the whole filesystem through the inode API and returns
// a record per path ("" is the root).
func walkImage(t testing.TB, f *FS, hashFiles bool) map[string]rec {
	t.Helper()
	out := map[string]rec{}
	buf := make([]byte, 1<<20)
	var walk func(dir uint32, prefix string)
	walk = func(dir uint32, prefix string) {
		var ents []DirEntry
		if err := f.ReadDir(dir, 0, func(e DirEntry) bool { ents = append(ents, e); return true }); err != nil {
			t.Fatalf("readdir %q: %v", prefix, err)
		}
		for _, e := range ents {
			if e.Name == "." || e.Name == ".." {
				continue
			}
			p := prefix + "/" + e.Name
			in, err := f.Inode(e.Ino)
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			if e.Type != 0 && e.Type != in.DirType() {
				t.Errorf("%s: dirent type %d, inode type %d", p, e.Type, in.DirType())
			}
			r := rec{mode: uint32(in.Mode), uid: in.Uid, gid: in.Gid, nlink: uint64(in.Nlink), rdev: in.Rdev(), isDir: in.IsDir(), mtime: in.Mtime.UnixNano()}
			switch {
			case in.IsRegular():
				r.size = in.Size
				if hashFiles {
					fl, err := f.Open(e.Ino)
					if err != nil {
						t.Fatalf("%s: %v", p, err)
					}
					h := sha256.New()
					for off := int64(0); ; {
						n, err := fl.ReadAt(buf, off)
						h.Write(buf[:n])
						off += int64(n)
						if err == io.EOF {
							break
						}
						if err != nil {
							t.Fatalf("%s: read: %v", p, err)
						}
					}
					r.sum = hex.EncodeToString(h.Sum(nil))
				}
			case in.IsSymlink():
				r.size = in.Size
				if r.link, err = f.Readlink(e.Ino); err != nil {
					t.Fatalf("%s: readlink: %v", p, err)
				}
			}
			xs, err := f.Xattrs(e.Ino)
			if err != nil {
				t.Fatalf("%s: xattrs: %v", p, err)
			}
			var parts []string
			for _, x := range xs {
				parts = append(parts, x.Name+"="+hex.EncodeToString(x.Value))
			}
			r.xattrs = strings.Join(parts, ",")
			out[p] = r
			if in.IsDir() {
				// Lookup must agree with readdir (hash path for htree).
				if got, err := f.Lookup(dir, e.Name); err != nil || got != e.Ino {
					t.Errorf("lookup %s = %d, %v; readdir says %d", p, got, err, e.Ino)
				}
				walk(e.Ino, p)
			}
		}
	}
	walk(RootIno, "")
	return out
}

// walkHost records the same facts for a host directory tree.
func walkHost(t testing.TB, root string, hashFiles bool) map[string]rec {
	t.Helper()
	out := map[string]rec{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == root {
			return nil
		}
		rel := "/" + strings.TrimPrefix(path, root+"/")
		var st syscall.Stat_t
		if err := syscall.Lstat(path, &st); err != nil {
			return err
		}
		r := rec{mode: st.Mode, uid: st.Uid, gid: st.Gid, nlink: st.Nlink, isDir: d.IsDir(), mtime: st.Mtim.Nano()}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFCHR, syscall.S_IFBLK:
			r.rdev = st.Rdev
		case syscall.S_IFREG:
			r.size = uint64(st.Size)
			if hashFiles {
				fh, err := os.Open(path)
				if err != nil {
					return err
				}
				h := sha256.New()
				_, err = io.Copy(h, fh)
				fh.Close()
				if err != nil {
					return err
				}
				r.sum = hex.EncodeToString(h.Sum(nil))
			}
		case syscall.S_IFLNK:
			r.size = uint64(st.Size)
			if r.link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		r.xattrs = hostXattrs(t, path)
		out[rel] = r
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func hostXattrs(t testing.TB, path string) string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		if err == unix.ENOTSUP {
			return ""
		}
		t.Fatalf("llistxattr %s: %v", path, err)
	}
	var names []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	sort.Strings(names)
	var parts []string
	val := make([]byte, 64<<10)
	for _, nm := range names {
		m, err := unix.Lgetxattr(path, nm, val)
		if err != nil {
			t.Fatalf("lgetxattr %s %s: %v", path, nm, err)
		}
		parts = append(parts, nm+"="+hex.EncodeToString(val[:m]))
	}
	return strings.Join(parts, ",")
}

// timePrecision says how mtimes are compared: mke2fs -d keeps whole
// seconds of regular files and directories only; the kernel keeps ns.
type timePrecision int

const (
	mkfsTimes timePrecision = iota
	exactTimes
)

// compareTrees reports every difference between the host tree and the
// image walk, ignoring lost+found.
func compareTrees(t testing.TB, host, img map[string]rec, tp timePrecision) {
	t.Helper()
	bad := 0
	report := func(format string, a ...any) {
		t.Helper()
		if bad++; bad <= 20 {
			t.Errorf(format, a...)
		}
	}
	for p, h := range host {
		g, ok := img[p]
		if !ok {
			report("%s: missing from the image", p)
			continue
		}
		if h.isDir {
			// Sizes of directories differ by design.
			h.size, g.size = 0, 0
		}
		if tp == mkfsTimes {
			if h.mode&S_IFMT == S_IFREG || h.isDir {
				h.mtime, g.mtime = h.mtime/1e9, g.mtime/1e9
			} else {
				h.mtime, g.mtime = 0, 0
			}
		}
		if h != g {
			report("%s:\n host  %v\n image %v", p, h, g)
		}
	}
	for p := range img {
		if _, ok := host[p]; !ok && p != "/lost+found" {
			report("%s: in the image, not in the source", p)
		}
	}
	if bad > 20 {
		t.Errorf("... %d differences in all", bad)
	}
}
