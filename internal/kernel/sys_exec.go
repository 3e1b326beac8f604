package kernel

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/sandbox"
	"github.com/umltools/umltools/internal/vfs"
)

// maxInterpDepth is how many "#!" levels exec follows (Linux: 4).
const maxInterpDepth = 4

// sysExec serves execve and execveat on the tracer thread: it resolves the
// program in the vfs, places its image (and its dynamic loader's) in the
// guests' private host root, and rewrites the syscall to exec that copy.
func (k *Kernel) sysExec(t *sandbox.Task, regs *abi.Regs) (act sandbox.Action) {
	th, _ := t.Data.(*Thread)
	if th == nil {
		return sandbox.Fail(abi.ENOSYS)
	}
	c := &call{k: k, mem: t, th: th, p: th.Proc}
	if k.cfg.Trace != nil {
		args := [6]uint64{regs.Rdi, regs.Rsi, regs.Rdx, regs.R10, regs.R8, regs.R9}
		defer func() {
			res := "(the new image runs)"
			if native, v := act.Result(); !native {
				res = strconv.FormatInt(v, 10)
				if v < 0 {
					res = "-1 " + unix.ErrnoName(syscall.Errno(-v)) + " (" + syscall.Errno(-v).Error() + ")"
				}
			}
			k.traceLine(th.NsID(), int(regs.OrigRax), args, c.strs, res)
		}()
	}
	dirfd, pathAddr, flags := abi.AT_FDCWD, regs.Rdi, 0
	if regs.OrigRax == abi.SYS_EXECVEAT {
		dirfd, pathAddr, flags = int(int32(regs.Rdi)), regs.Rsi, int(regs.R8)
	}
	path, r := c.str(pathAddr)
	if r < 0 {
		return sandbox.Emulate(r)
	}
	if flags&^(abi.AT_EMPTY_PATH|abi.AT_SYMLINK_NOFOLLOW) != 0 {
		return sandbox.Fail(abi.EINVAL)
	}
	var d *vfs.Dentry
	if path == "" {
		if flags&abi.AT_EMPTY_PATH == 0 {
			return sandbox.Fail(abi.ENOENT)
		}
		if d, r = c.fdDentry(dirfd); r < 0 {
			return sandbox.Emulate(r)
		}
		path = k.vfs.Path(d, c.p.FS.Root)
	} else {
		w, r := c.walker(dirfd, path)
		if r < 0 {
			return sandbox.Emulate(r)
		}
		var err error
		if d, err = w.Lookup(path, flags&abi.AT_SYMLINK_NOFOLLOW == 0); err != nil {
			return sandbox.Emulate(errno(err))
		}
	}
	host, prefix, skip, exe, err := k.execTarget(c, d, path, 0)
	if err != nil {
		return sandbox.Emulate(errno(err))
	}
	// No other thread may change what is written below before the host
	// reads it: they stay stopped until the exec has run.
	t.HoldSiblings()
	if prefix == nil {
		err = t.RedirectExec(regs, host)
	} else {
		err = t.RewriteExec(regs, host, prefix, skip)
	}
	if err != nil {
		return sandbox.Fail(abi.EFAULT)
	}
	// /proc/self/exe names the ELF that runs: a script's interpreter.
	th.pendingExe = k.vfs.Path(exe, c.p.FS.Root)
	th.pendingComm = commOf(path) // Linux: the basename of the name exec was given
	return sandbox.Native()
}

// execTarget checks that d may be executed and returns the guest-root
// path of the image to run; for a script, also the argv prefix that
// replaces argv[0] (skip=1).
func (k *Kernel) execTarget(c *call, d *vfs.Dentry, path string, depth int) (host string, prefix []string, skip int, exe *vfs.Dentry, err error) {
	a, err := d.Node.Attr()
	if err != nil {
		return "", nil, 0, nil, err
	}
	if a.IsDir() || a.Type() != syscall.S_IFREG {
		return "", nil, 0, nil, syscall.EACCES
	}
	if d.Mount.Flags&vfs.NoExec != 0 {
		return "", nil, 0, nil, syscall.EACCES
	}
	if r := c.permit(&a, 1); r < 0 {
		return "", nil, 0, nil, syscall.EACCES
	}
	f, key, err := k.openImage(c, d)
	if err != nil {
		return "", nil, 0, nil, err
	}
	defer f.Close()
	head := make([]byte, 256)
	n, _ := f.ReadAt(head, 0)
	head = head[:n]
	if interp, arg, ok, err := sandbox.Shebang(head); ok {
		if err != nil {
			return "", nil, 0, nil, syscall.ENOEXEC
		}
		if depth >= maxInterpDepth {
			return "", nil, 0, nil, syscall.ELOOP
		}
		w := &vfs.Walker{V: k.vfs, Ctx: c.ctx(), Root: c.p.FS.Root, Cwd: c.p.FS.Cwd}
		id, err := w.Lookup(interp, true)
		if err != nil {
			return "", nil, 0, nil, err
		}
		h, p2, skip2, ie, err := k.execTarget(c, id, interp, depth+1)
		if err != nil {
			return "", nil, 0, nil, err
		}
		pre := []string{interp}
		if arg != "" {
			pre = append(pre, arg)
		}
		pre = append(pre, path)
		if p2 != nil {
			// A script whose interpreter is a script: its prefix goes
			// first, replacing the interpreter's argv[0].
			pre = append(p2, pre[skip2:]...)
		}
		return h, pre, 1, ie, nil
	}
	if h, ok := k.execs[key]; ok {
		return h, nil, 0, d, nil
	}
	img, err := io.ReadAll(io.NewSectionReader(f, 0, key.size))
	if err != nil {
		return "", nil, 0, nil, err
	}
	ip, err := sandbox.Interp(img)
	if err != nil {
		return "", nil, 0, nil, syscall.ENOEXEC
	}
	if ip == "" {
		h, err := k.placeImage(commOf(path), img, d)
		if err == nil {
			k.execs[key] = h
		}
		return h, nil, 0, d, err
	}
	w := &vfs.Walker{V: k.vfs, Ctx: c.ctx(), Root: c.p.FS.Root, Cwd: c.p.FS.Root}
	ld, err := w.Lookup(ip, true)
	if err != nil {
		return "", nil, 0, nil, err
	}
	la, err := ld.Node.Attr()
	if err != nil {
		return "", nil, 0, nil, err
	}
	if la.Type() != syscall.S_IFREG {
		return "", nil, 0, nil, syscall.ELIBBAD
	}
	lh, ok := k.loaders[ld]
	if !ok {
		lf, _, err := k.openImage(c, ld)
		if err != nil {
			return "", nil, 0, nil, err
		}
		limg, err := io.ReadAll(lf)
		lf.Close()
		if err != nil {
			return "", nil, 0, nil, err
		}
		if lh, err = k.placeImage("", limg, ld); err != nil {
			return "", nil, 0, nil, err
		}
		k.loaders[ld] = lh
	}
	patched, err := sandbox.PatchInterp(img, lh)
	if err != nil {
		return "", nil, 0, nil, syscall.ENOEXEC
	}
	h, err := k.placeImage(commOf(path), patched, d)
	if err == nil {
		k.execs[key] = h
	}
	return h, nil, 0, d, err
}

// openImage opens an executable's content through its page cache and
// returns the key that identifies this version of it.
func (k *Kernel) openImage(c *call, d *vfs.Dentry) (*os.File, imageKey, error) {
	on, ok := d.Node.(vfs.OpenNode)
	if !ok {
		return nil, imageKey{}, syscall.EACCES
	}
	f, err := on.Open(c.ctx(), syscall.O_RDONLY)
	if err != nil {
		return nil, imageKey{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, imageKey{}, err
	}
	return f, imageKey{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano()}, nil
}

// placeImage writes an image into the private root (once per content) and
// returns its path as the guests see it. Executables live at
// /e<n>/<name> so that the host's comm is the guest's; loaders at /l<n>,
// short enough for any PT_INTERP. The host identity of the copy is
// remembered as d's, so /proc/<pid>/maps names the guest's file.
func (k *Kernel) placeImage(name string, img []byte, d *vfs.Dentry) (string, error) {
	k.nextFile++
	rel := "l" + strconv.Itoa(k.nextFile)
	if name != "" {
		rel = "e" + strconv.Itoa(k.nextFile) + "/" + name
	}
	if _, err := k.execDir.Add(rel, img); err != nil {
		return "", err
	}
	var st unix.Stat_t
	if unix.Stat(filepath.Join(k.priv, rel), &st) == nil {
		k.images[hostKey{st.Dev, st.Ino}] = d
	}
	return "/" + rel, nil
}

// prepareExec resolves the guest's init for the stub: the guest-root path
// to exec and the argv (rewritten for scripts).
func (k *Kernel) prepareExec(w *vfs.Walker, p *Process, path string, argv []string) (string, []string, error) {
	d, err := w.Lookup(path, true)
	if err != nil {
		return "", nil, err
	}
	c := &call{k: k, th: &Thread{nsID: 1, Proc: p}, p: p}
	host, prefix, skip, exe, err := k.execTarget(c, d, path, 0)
	if err != nil {
		return "", nil, err
	}
	p.Exe = k.vfs.Path(exe, w.Root)
	if prefix == nil {
		return host, argv, nil
	}
	rest := argv
	if len(rest) >= skip {
		rest = rest[skip:]
	}
	return host, append(append([]string(nil), prefix...), rest...), nil
}

// ErrNoInit is returned when no init program can be run.
var ErrNoInit = errors.New("No working init found.  Try passing init= option to kernel. See Linux Documentation/admin-guide/init.rst for guidance.")
