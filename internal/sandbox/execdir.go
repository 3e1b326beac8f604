package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ExecDir is an engine-private host directory holding the executables that
// guest execs are redirected to (RedirectExec). A guest in its own user
// namespace cannot open /proc/<engine>/fd/N (the ptrace access check needs
// CAP_SYS_PTRACE in the engine's namespace), so redirected images live in
// a 0700 directory owned by the host id the guest's root maps to. Guests
// never learn the path: every path syscall is served by the engine.
type ExecDir struct {
	// Path is the directory. Short on purpose: a dynamic ELF's rewritten
	// PT_INTERP must fit the original's 27 bytes.
	Path string
}

// NewExecDir creates an ExecDir on a tmpfs that allows exec (/dev/shm)
// when there is one, else in os.TempDir(). uid and gid are the host ids of
// the guest's root (-1 to keep the engine's).
func NewExecDir(uid, gid int) (*ExecDir, error) {
	var errs []error
	for _, base := range []string{"/dev/shm", os.TempDir()} {
		var st unix.Statfs_t
		if err := unix.Statfs(base, &st); err != nil || st.Flags&unix.ST_NOEXEC != 0 {
			continue
		}
		sweepExecDirs(base)
		d, err := os.MkdirTemp(base, "uml")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// Its owner, for the sweep of a later engine if this one is
		// killed before Close (SIGKILL leaves the directory behind).
		if err := os.WriteFile(filepath.Join(d, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o400); err != nil {
			os.RemoveAll(d)
			return nil, fmt.Errorf("exec dir %s: %w", d, err)
		}
		if uid >= 0 || gid >= 0 {
			if err := os.Chown(d, uid, gid); err != nil {
				os.Remove(d)
				return nil, fmt.Errorf("exec dir %s: %w", d, err)
			}
		}
		return &ExecDir{Path: d}, nil
	}
	return nil, fmt.Errorf("no exec-capable directory for guest executables: %v", errs)
}

// ownerFile names the engine that made an ExecDir ("<pid>\n").
const ownerFile = ".owner"

// sweepExecDirs removes the ExecDirs in base that engines killed before
// their Close left behind: ours (same owner), with an owner file naming a
// process that no longer exists.
func sweepExecDirs(base string) {
	ents, err := os.ReadDir(base)
	if err != nil {
		return
	}
	uid := os.Getuid()
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "uml") {
			continue
		}
		d := filepath.Join(base, e.Name())
		var st unix.Stat_t
		if unix.Lstat(d, &st) != nil || int(st.Uid) != uid {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue // not ours to judge (no owner file yet, or another kind)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if unix.Kill(pid, 0) == unix.ESRCH {
			os.RemoveAll(d)
		}
	}
}

// Add writes an executable image under name ("file", or "dir/file" to
// give the image a base name of its choice, which becomes the host comm)
// and returns its host path.
func (d *ExecDir) Add(name string, image []byte) (string, error) {
	p := filepath.Join(d.Path, name)
	if dir := filepath.Dir(p); dir != d.Path {
		if filepath.Dir(dir) != d.Path || filepath.Base(p) == "." {
			return "", fmt.Errorf("exec dir: bad name %q", name)
		}
		if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
			return "", fmt.Errorf("exec dir: %w", err)
		}
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o555)
	if err != nil {
		return "", fmt.Errorf("exec dir: %w", err)
	}
	if _, err := f.Write(image); err != nil {
		f.Close()
		os.Remove(p)
		return "", fmt.Errorf("exec dir: %s: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("exec dir: %s: %w", p, err)
	}
	return p, nil
}

// Close removes the directory and everything in it.
func (d *ExecDir) Close() error { return os.RemoveAll(d.Path) }
