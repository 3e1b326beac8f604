package ubd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/cow"
)

// lockFile takes a whole-file lock on path without waiting: a write lock
// for a writable device, else a read lock. It uses open-file-description
// locks, which conflict with the C kernel's F_SETLK locks in both
// directions and, unlike them, also between two devices of one process
// and are not dropped when some other descriptor of the file is closed.
// The lock lives as long as the returned file.
func lockFile(path string, write bool) (*os.File, error) {
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR // a write lock needs a descriptor open for writing
	}
	fh, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: io.SeekStart}
	if write {
		lk.Type = unix.F_WRLCK
	}
	if err := unix.FcntlFlock(fh.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		defer fh.Close()
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return nil, &cow.LockedError{Path: path, Pid: lockHolder(fh, lk)}
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return fh, nil
}

// lockHolder finds the pid holding a lock that conflicts with lk. F_GETLK
// reports it for classic locks (the C kernel); for OFD locks (ours) the
// kernel says -1 everywhere except in the owner's /proc/PID/fdinfo, which
// is searched. -1 when no pid can be found.
func lockHolder(fh *os.File, lk unix.Flock_t) int {
	q := lk
	q.Pid = 0
	if unix.FcntlFlock(fh.Fd(), unix.F_OFD_GETLK, &q) == nil && q.Type != unix.F_UNLCK && q.Pid > 0 {
		return int(q.Pid)
	}
	var st unix.Stat_t
	if unix.Fstat(int(fh.Fd()), &st) != nil {
		return -1
	}
	// "lock:	1: OFDLCK ADVISORY  WRITE -1 fe:00:9987265 0 EOF"
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		dir := "/proc/" + p.Name() + "/fdinfo"
		fds, _ := os.ReadDir(dir)
		for _, fd := range fds {
			if pid == os.Getpid() && fd.Name() == strconv.Itoa(int(fh.Fd())) {
				continue
			}
			if holdsLock(dir+"/"+fd.Name(), id, lk.Type == unix.F_RDLCK) {
				return pid
			}
		}
	}
	return -1
}

// holdsLock reports whether the fdinfo file lists an OFD lock on id (a
// write lock when onlyWrite).
func holdsLock(fdinfo, id string, onlyWrite bool) bool {
	f, err := os.Open(fdinfo)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 7 || fs[0] != "lock:" || fs[2] != "OFDLCK" || fs[6] != id {
			continue
		}
		if !onlyWrite || fs[4] == "WRITE" {
			return true
		}
	}
	return false
}
