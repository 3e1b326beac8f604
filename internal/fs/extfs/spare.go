package extfs

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/fs/memfd"
)

// Spare memfds: the page of a new (or emptied) file takes a memfd made
// ahead by a goroutine of its own, already identified and watched for its
// writers' closes. Making one costs three system calls (memfd_create,
// fstat, inotify_add_watch through /proc), which a tar x or dpkg -i of
// thousands of files would otherwise pay inside each guest's open(O_CREAT).

// spareCount is how many spares are kept ready; the maker tops them up
// when half are gone.
const spareCount = 32

// spare is a memfd made ahead: empty, its host identity known, and
// watched (watchWriters) by the FS's inotify fd. Its name has no inode
// number: messages name pages by page.label.
type spare struct {
	f     *os.File
	wd    int32
	ino   uint64
	mtime unix.Timespec
}

// startSpares starts the maker; it makes nothing until the first spare
// is asked for, so a filesystem that only reads costs nothing.
func (f *FS) startSpares() {
	f.spares = make(chan spare, spareCount)
	f.spareKick = make(chan struct{}, 1)
	f.done.Add(1)
	go f.spareMaker()
}

// takeSpare returns a spare memfd when one is ready.
func (f *FS) takeSpare() (spare, bool) {
	if f.spares == nil {
		return spare{}, false
	}
	select {
	case s := <-f.spares:
		if len(f.spares) < spareCount/2 {
			f.kickSpares()
		}
		return s, true
	default:
		f.kickSpares()
		return spare{}, false
	}
}

func (f *FS) kickSpares() {
	select {
	case f.spareKick <- struct{}{}:
	default:
	}
}

// spareMaker fills the spares when kicked, until the FS stops; then it
// closes those left (their watches go with their inodes).
func (f *FS) spareMaker() {
	defer f.done.Done()
	defer func() {
		for {
			select {
			case s := <-f.spares:
				s.f.Close()
			default:
				return
			}
		}
	}()
	for {
		select {
		case <-f.stop:
			return
		case <-f.spareKick:
		}
		for len(f.spares) < spareCount {
			s, err := f.makeSpare()
			if err != nil {
				f.opts.Logf("extfs: making a memfd ahead: %v", err)
				break
			}
			f.spares <- s // never blocks: the maker is the only sender
		}
	}
}

// makeSpare makes one spare memfd.
func (f *FS) makeSpare() (spare, error) {
	m, err := memfd.New("ext4")
	if err != nil {
		return spare{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(m.Fd()), &st); err != nil {
		m.Close()
		return spare{}, err
	}
	// f.mu across the call, as watch does: stopWatch must not close the
	// inotify fd under it.
	f.mu.Lock()
	wd := -1
	if f.ino >= 0 {
		wd, err = unix.InotifyAddWatch(f.ino, memfd.ProcPath(m), watchWriters)
	}
	f.mu.Unlock()
	if wd < 0 {
		m.Close()
		if err == nil {
			err = unix.EBADF // the watch stopped
		}
		return spare{}, err
	}
	return spare{f: m, wd: int32(wd), ino: st.Ino, mtime: st.Mtim}, nil
}
