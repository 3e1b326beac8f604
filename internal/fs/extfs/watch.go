package extfs

import (
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/fs/memfd"
)

// Close notifications: an inotify watch on each memfd tells the engine
// when a guest closes a descriptor that was open for writing (the last
// writer of that open file description, mappings included), which is
// when Linux's last-close write-back happens, and when any descriptor
// of an unlinked file goes, which is when it may be freed.

// A page is watched only once it matters: IN_CLOSE_WRITE from its first
// open for writing, IN_CLOSE_NOWRITE too once it is an orphan. Pages only
// ever read (most of them) cost no watch and wake nobody at close.
const (
	watchWriters = unix.IN_CLOSE_WRITE
	watchAll     = unix.IN_CLOSE_WRITE | unix.IN_CLOSE_NOWRITE
)

func (f *FS) startWatch() error {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return err
	}
	f.ino, f.inoWake = fd, wake
	f.done.Add(1)
	go f.watchLoop(fd, wake)
	return nil
}

// stopWatch ends the watch loop (Close, Abandon), which closes the
// inotify fd.
func (f *FS) stopWatch() {
	f.mu.Lock()
	wake := f.inoWake
	f.ino, f.inoWake = -1, -1
	f.mu.Unlock()
	if wake >= 0 {
		var one = [8]byte{1}
		unix.Write(wake, one[:])
	}
}

// watch makes sure p's watch covers mask.
func (f *FS) watch(p *page, mask uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ino < 0 || p.wmask&mask == mask {
		return
	}
	p.mu.Lock()
	path := ""
	if p.f != nil {
		path = memfd.ProcPath(p.f)
	}
	p.mu.Unlock()
	if path == "" {
		return
	}
	wd, err := unix.InotifyAddWatch(f.ino, path, p.wmask|mask)
	if err != nil {
		f.opts.Logf("extfs: no close notification for %s: %v", p.name, err)
		return
	}
	p.wd, p.wmask = int32(wd), p.wmask|mask
	f.wd[p.wd] = p
}

// unwatch removes p's watch (f.mu held).
func (f *FS) unwatch(p *page) {
	if p.wd >= 0 && f.ino >= 0 {
		unix.InotifyRmWatch(f.ino, uint32(p.wd))
		delete(f.wd, p.wd)
		p.wd, p.wmask = -1, 0
	}
}

// closeBatch is how long the watch loop lets close notifications gather
// before it writes back: a tar x that closes thousands of files a second
// wakes it a few dozen times, not once per file, and a file closed twice
// in that time is written back once.
const closeBatch = 20 * time.Millisecond

// watchLoop writes back pages whose last writer closed, and wakes the
// reaper for orphans. The inotify fd is not in Go's poller: the loop waits in poll(2) for it
// (or its eventfd, which stopWatch writes) only when it wants events, and
// while it lets them gather nobody sleeps on the fd, so a close wakes no
// thread (in the poller, every close woke the poller's thread).
func (f *FS) watchLoop(ino, wake int) {
	defer f.done.Done()
	defer unix.Close(wake)
	defer unix.Close(ino)
	buf := make([]byte, 4096*unix.SizeofInotifyEvent) // watches on files: no names
	closed := map[*page]bool{}
	pfd := []unix.PollFd{{Fd: int32(ino), Events: unix.POLLIN}, {Fd: int32(wake), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(pfd, -1); err != nil && err != unix.EINTR {
			f.opts.Logf("extfs: close notifications: %v", err)
			return
		}
		if pfd[1].Revents != 0 {
			return // stopWatch
		}
		overflow, orphans := false, false
		for {
			n, err := unix.Read(ino, buf)
			if err != nil || n <= 0 {
				break // EAGAIN: drained
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				e := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				off += unix.SizeofInotifyEvent + int(e.Len)
				if e.Mask&unix.IN_Q_OVERFLOW != 0 {
					overflow = true
					continue
				}
				f.mu.Lock()
				p := f.wd[e.Wd]
				f.mu.Unlock()
				if p == nil {
					continue
				}
				if e.Mask&unix.IN_CLOSE_WRITE != 0 {
					closed[p] = true
				}
				orphans = orphans || p.isOrphan()
			}
		}
		if overflow {
			// Closes were lost: write back every page that may
			// have had a writer.
			if err := f.Sync(); err != nil {
				f.opts.Logf("extfs: write-back: %v", err)
			}
		}
		for p := range closed {
			if err := f.writeback(p, true); err != nil {
				f.opts.Logf("extfs: write-back at close: %v", err)
			}
			delete(closed, p)
		}
		if orphans || overflow {
			f.reapSoon()
		}
		select {
		case <-f.stop:
			return
		case <-time.After(closeBatch):
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
	if err := p.identify(); err != nil {
		p.mu.Unlock()
		f.fs().Forget(ino)
		return false
	}
	p.orphan = true
	p.mu.Unlock()
	f.watch(p, watchAll) // before reap asks who holds it: no close is missed
	return true
}

// reap frees orphan p unless held says a guest still holds it.
func (f *FS) reap(p *page, held map[uint64]bool) {
	p.mu.Lock()
	if !p.orphan || p.f == nil || held[p.hostIno] {
		p.mu.Unlock()
		return
	}
	p.orphan = false
	p.mu.Unlock()
	f.drop(p)
	f.changed()
	if err := f.fs().Forget(p.ino); err != nil {
		f.opts.Logf("extfs: freeing unlinked inode %d: %v", p.ino, err)
	}
}

// drop takes p out of the cache and closes its memfd. The caller has
// claimed p under p.mu (cleared orphan, or set evicted) and let go of
// p.mu: f.mu comes first.
func (f *FS) drop(p *page) {
	f.mu.Lock()
	f.unwatch(p)
	if f.cache[p.ino] == p {
		delete(f.cache, p.ino)
	}
	f.mu.Unlock()
	p.mu.Lock()
	p.f.Close()
	p.f = nil
	f.bytes.Add(-p.size)
	p.mu.Unlock()
}

// reapOrphans frees every orphan no guest holds, asking who holds what
// once for all of them.
func (f *FS) reapOrphans() {
	if f.opts.Held == nil {
		return
	}
	var orphans []*page
	for _, p := range f.pages() {
		if p.isOrphan() {
			orphans = append(orphans, p)
		}
	}
	if len(orphans) == 0 {
		return
	}
	held := f.opts.Held()
	if held == nil {
		return
	}
	for _, p := range orphans {
		f.reap(p, held)
	}
}

// reapSoon asks the reaper to look at the orphans.
func (f *FS) reapSoon() {
	if f.reapc == nil {
		return
	}
	select {
	case f.reapc <- struct{}{}:
	default:
	}
}

// reaper frees orphans in batches: an rm -r of many files that were
// open costs one look at the guest's processes per batch, not one per
// file. Statfs and the periodic write-back reap too.
func (f *FS) reaper() {
	defer f.done.Done()
	for {
		select {
		case <-f.stop:
			return
		case <-f.reapc:
		}
		select {
		case <-f.stop:
			return
		case <-time.After(20 * time.Millisecond): // let the batch gather
		}
		f.reapOrphans()
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
