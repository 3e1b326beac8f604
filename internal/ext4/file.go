package ext4

import (
	"fmt"
	"io"
	"sync"
	"syscall"
)

// File is an open inode: its decoded inode and its block map, loaded on
// first use and again after any write to the filesystem. It is safe for
// concurrent ReadAt calls.
type File struct {
	fs     *FS
	ino    uint32
	mu     sync.Mutex
	in     *Inode
	gen    uint64 // f.wgen the handle was loaded at
	loaded bool
	runs   []run
	data   []byte // inline data (inline_data inodes)
	err    error
}

// Open returns a handle on inode ino for reading its data.
func (f *FS) Open(ino uint32) (*File, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.open(ino)
}

func (f *FS) open(ino uint32) (*File, error) {
	in, err := f.inode(ino)
	if err != nil {
		return nil, err
	}
	return &File{fs: f, ino: ino, in: in, gen: f.wgen}, nil
}

// Inode returns the decoded inode of the handle (as of Open or the last
// ReadAt).
func (fl *File) Inode() *Inode {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.in
}

// Size is the file size in bytes (as of Open or the last ReadAt).
func (fl *File) Size() int64 { return int64(fl.Inode().Size) }

// load decodes the block map, again when the filesystem was written since
// (the caller holds fl.fs.mu for reading).
func (fl *File) load() error {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.gen != fl.fs.wgen {
		fl.gen, fl.loaded = fl.fs.wgen, false
		fl.in, fl.err = fl.fs.inode(fl.ino)
		if fl.err != nil {
			return fl.err
		}
	}
	if !fl.loaded {
		fl.loaded = true
		fl.runs, fl.data = nil, nil
		in := fl.in
		switch {
		case in.Flags&flagEncrypt != 0:
			fl.err = fmt.Errorf("inode %d: encrypted: %w", in.Ino, syscall.EOPNOTSUPP)
		case in.Flags&flagInlineData != 0:
			fl.data, fl.err = fl.fs.inlineData(in)
		case in.Mode&S_IFMT == S_IFLNK && fl.fs.fastSymlink(in):
			fl.data = in.iblock[:in.Size]
		case in.Mode&S_IFMT == S_IFCHR, in.Mode&S_IFMT == S_IFBLK,
			in.Mode&S_IFMT == S_IFIFO, in.Mode&S_IFMT == S_IFSOCK:
			// No data blocks.
		default:
			fl.runs, fl.err = fl.fs.blockMap(in)
		}
	}
	return fl.err
}

// ReadAt reads file data at off. Holes and uninitialised extents read as
// zeros. It returns io.EOF when the read reaches the end of the file.
func (fl *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("inode %d: negative offset: %w", fl.ino, syscall.EINVAL)
	}
	fl.fs.mu.RLock()
	defer fl.fs.mu.RUnlock()
	if err := fl.load(); err != nil {
		return 0, err
	}
	fl.mu.Lock()
	in, runs, data := fl.in, fl.runs, fl.data
	fl.mu.Unlock()
	return fl.readAt(in, runs, data, p, off)
}

func (fl *File) readAt(in *Inode, runs []run, data []byte, p []byte, off int64) (int, error) {
	size := int64(in.Size)
	if off >= size {
		return 0, io.EOF
	}
	want := int64(len(p))
	if want > size-off {
		want = size - off
	}
	if data != nil || in.Flags&flagInlineData != 0 {
		n := 0
		if off < int64(len(data)) {
			n = copy(p[:want], data[off:])
		}
		clear(p[n:want])
		return fl.finish(p, int(want))
	}
	f := fl.fs
	bs := int64(f.bs)
	n := int64(0)
	for n < want {
		pos := off + n
		lblk := uint64(pos / bs)
		i, ok := findRun(runs, lblk)
		if !ok {
			chunk := want - n
			if i < len(runs) {
				if hole := int64(runs[i].lblk)*bs - pos; hole < chunk {
					chunk = hole
				}
			}
			clear(p[n : n+chunk])
			n += chunk
			continue
		}
		r := runs[i]
		chunk := want - n
		if end := int64(r.lblk+r.n)*bs - pos; end < chunk {
			chunk = end
		}
		if r.uninit {
			clear(p[n : n+chunk])
			n += chunk
			continue
		}
		pblk := r.pblk + (lblk - r.lblk)
		dst := p[n : n+chunk]
		if err := f.readRaw(dst, int64(pblk)*bs+pos%bs); err != nil {
			return int(n), fmt.Errorf("inode %d: %w", in.Ino, err)
		}
		if f.overlay != nil {
			if err := f.patchOverlay(dst, pblk, pos%bs); err != nil {
				return int(n), err
			}
		}
		n += chunk
	}
	return fl.finish(p, int(want))
}

// Extent is a stretch of a file's data on the device: Len bytes at file
// offset Off are stored at device offset Dev.
type Extent struct{ Off, Dev, Len int64 }

// Extents returns where the file's data lies on the device, in file
// order and clipped to its size; holes and unwritten extents (which read
// as zeros) are left out. ok is false when the data cannot be read
// straight from the device (inline data, a journal replayed in memory):
// then ReadAt must be used.
func (fl *File) Extents() (ext []Extent, ok bool, err error) {
	fl.fs.mu.RLock()
	defer fl.fs.mu.RUnlock()
	if err := fl.load(); err != nil {
		return nil, false, err
	}
	fl.mu.Lock()
	in, runs, data := fl.in, fl.runs, fl.data
	fl.mu.Unlock()
	size := int64(in.Size)
	if data != nil || in.Flags&flagInlineData != 0 || fl.fs.overlay != nil {
		return nil, false, nil
	}
	bs := int64(fl.fs.bs)
	for _, r := range runs {
		off, n := int64(r.lblk)*bs, int64(r.n)*bs
		if r.uninit || off >= size {
			continue
		}
		n = min(n, size-off)
		if l := len(ext); l > 0 && ext[l-1].Off+ext[l-1].Len == off && ext[l-1].Dev+ext[l-1].Len == int64(r.pblk)*bs {
			ext[l-1].Len += n
			continue
		}
		ext = append(ext, Extent{Off: off, Dev: int64(r.pblk) * bs, Len: n})
	}
	return ext, true, nil
}

func (fl *File) finish(p []byte, n int) (int, error) {
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// patchOverlay copies journal-replayed blocks over dst, which holds device
// data starting at byte skip of block pblk.
func (f *FS) patchOverlay(dst []byte, pblk uint64, skip int64) error {
	bs := int64(f.bs)
	for done := int64(0); done < int64(len(dst)); pblk++ {
		chunk := bs - skip
		if chunk > int64(len(dst))-done {
			chunk = int64(len(dst)) - done
		}
		if _, ok := f.overlay[pblk]; ok {
			b, err := f.overlayBlock(pblk)
			if err != nil {
				return err
			}
			copy(dst[done:done+chunk], b[skip:skip+chunk])
		}
		done += chunk
		skip = 0
	}
	return nil
}

// ReadAt reads inode ino's data at off (see File.ReadAt). A VFS that reads
// one inode repeatedly should keep a File from Open instead.
func (f *FS) ReadAt(ino uint32, p []byte, off int64) (int, error) {
	fl, err := f.Open(ino)
	if err != nil {
		return 0, err
	}
	if fl.Inode().IsDir() {
		return 0, fmt.Errorf("inode %d: %w", ino, ErrIsDir)
	}
	return fl.ReadAt(p, off)
}

// fastSymlink reports whether a symlink keeps its target in i_block (the
// kernel's and e2fsprogs' rule: not inline, 0 < size < 60).
func (f *FS) fastSymlink(in *Inode) bool {
	return in.Flags&flagInlineData == 0 && in.Size > 0 && in.Size < 60
}

// Readlink returns the target of symlink ino.
func (f *FS) Readlink(ino uint32) (string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.readlink(ino)
}

func (f *FS) readlink(ino uint32) (string, error) {
	fl, err := f.open(ino)
	if err != nil {
		return "", err
	}
	if !fl.in.IsSymlink() {
		return "", fmt.Errorf("inode %d: not a symlink: %w", ino, ErrInvalid)
	}
	if fl.in.Size > uint64(f.bs) || fl.in.Size > 4096 {
		return "", corrupt(fl.in.block, "inode %d: symlink length %d", ino, fl.in.Size)
	}
	buf := make([]byte, fl.in.Size)
	if err := fl.load(); err != nil {
		return "", err
	}
	if _, err := fl.readAt(fl.in, fl.runs, fl.data, buf, 0); err != nil && err != io.EOF {
		return "", err
	}
	return string(buf), nil
}
