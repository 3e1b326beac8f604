package extfs

import (
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Close notifications: an inotify watch on each memfd tells the engine
// when a guest closes a descriptor that was open for writing (the last
// writer of that open file description, mappings included), which is
// when Linux's last-close write-back happens, and when any descriptor
// of an unlinked file goes, which is when it may be freed.

const watchMask = unix.IN_CLOSE_WRITE | unix.IN_CLOSE_NOWRITE

func (f *FS) startWatch() error {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return err
	}
	f.ino = fd
	f.done.Add(1)
	go f.watchLoop(fd)
	return nil
}

// watch adds p's watch (f.mu held).
func (f *FS) watch(p *page) {
	if f.ino < 0 {
		return
	}
	wd, err := unix.InotifyAddWatch(f.ino, "/proc/self/fd/"+strconv.Itoa(int(p.f.Fd())), watchMask)
	if err != nil {
		f.opts.Logf("extfs: no close notification for %s: %v", p.name, err)
		return
	}
	p.wd = int32(wd)
	f.wd[p.wd] = p
}

// unwatch removes p's watch (f.mu held).
func (f *FS) unwatch(p *page) {
	if p.wd >= 0 && f.ino >= 0 {
		unix.InotifyRmWatch(f.ino, uint32(p.wd))
		delete(f.wd, p.wd)
		p.wd = -1
	}
}

func (f *FS) watchLoop(fd int) {
	defer f.done.Done()
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+16))
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		select {
		case <-f.stop:
			return
		default:
		}
		// Poll with a timeout so that Close's stop is seen.
		if n, err := unix.Poll(pfd, 200); err != nil && err != unix.EINTR || n <= 0 {
			continue
		}
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			continue
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			e := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			off += unix.SizeofInotifyEvent + int(e.Len)
			f.mu.Lock()
			p := f.wd[e.Wd]
			f.mu.Unlock()
			if p == nil {
				continue
			}
			if e.Mask&unix.IN_CLOSE_WRITE != 0 {
				if err := f.writeback(p, true); err != nil {
					f.opts.Logf("extfs: write-back at close: %v", err)
				}
			}
			if p.isOrphan() {
				f.reap(p)
			}
		}
	}
}

func (p *page) isOrphan() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.orphan
}

// orphan marks ino's page, if any, as belonging to a file whose last link
// is about to go, and holds the inode in the driver so that its blocks
// stay until no guest uses it. It reports whether it did.
func (f *FS) orphan(ino uint32) bool {
	p := f.cached(ino)
	if p == nil {
		return false
	}
	if err := f.fs().Hold(ino); err != nil {
		return false
	}
	p.mu.Lock()
	p.orphan = true
	p.mu.Unlock()
	return true
}

// reap frees an orphan nobody holds any more.
func (f *FS) reap(p *page) {
	if f.opts.InUse == nil {
		return
	}
	p.mu.Lock()
	if !p.orphan || p.f == nil || f.opts.InUse(p.name, p.hostIno) {
		p.mu.Unlock()
		return
	}
	p.orphan = false
	p.mu.Unlock()
	f.mu.Lock()
	f.unwatch(p)
	if f.cache[p.ino] == p {
		delete(f.cache, p.ino)
	}
	f.mu.Unlock()
	p.mu.Lock()
	p.f.Close()
	p.f = nil
	p.mu.Unlock()
	f.changed()
	if err := f.fs().Forget(p.ino); err != nil {
		f.opts.Logf("extfs: freeing unlinked inode %d: %v", p.ino, err)
	}
}

// reapOrphans tries every orphan (the periodic write-back calls it).
func (f *FS) reapOrphans() {
	for _, p := range f.pages() {
		if p.isOrphan() {
			f.reap(p)
		}
	}
}

// Orphans is the number of unlinked files kept for guests that hold them.
func (f *FS) Orphans() int {
	n := 0
	for _, p := range f.pages() {
		if p.isOrphan() {
			n++
		}
	}
	return n
}
