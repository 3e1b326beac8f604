package rootfs

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// The busybox profile's boot scripts. /sbin/init is busybox init reading
// /etc/inittab (a shell on the console, respawned); /init is the job
// entry point for init=/init (run a script from the host, or a shell,
// then power off).
const (
	bbInittab = `# /etc/inittab: busybox init (written by rootstrap)
::sysinit:/etc/init.d/rcS
::respawn:-/bin/cttyhack /bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
::restart:/sbin/init
`
	bbRcS = `#!/bin/sh
# Bring the system up (busybox init runs this once; so does /init).
mounted() { grep -q " $1 " /proc/mounts 2>/dev/null; }
mounted /proc || mount -t proc proc /proc
mount -o remount,rw / 2>/dev/null
mounted /sys || mount -t sysfs sysfs /sys
mounted /tmp || mount -t tmpfs -o mode=1777 tmpfs /tmp
[ -e /dev/null ] || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mounted /dev/pts || mount -t devpts devpts /dev/pts
[ -s /etc/hostname ] && hostname -F /etc/hostname
[ -e /proc/net/dev ] && ifconfig lo 127.0.0.1 up 2>/dev/null
[ -x /etc/rc.local ] && /etc/rc.local
true
`
	bbInit = `#!/bin/sh
# Job entry point (boot with init=/init): bring the system up, then run
# DIR/run.sh when the kernel command line has umlrun=DIR (or umltest=DIR),
# DIR being a host directory mounted with hostfs on /host; otherwise a
# shell on the console. Power off when it ends.
/etc/init.d/rcS
dir=${umlrun:-$umltest}
if [ -n "$dir" ]; then
	if mount -t hostfs -o "$dir" hostfs /host; then
		/bin/sh /host/run.sh
	else
		echo "init: cannot mount hostfs $dir"
	fi
else
	/bin/setsid /bin/cttyhack /bin/sh
fi
sync
poweroff -f
`
)

// busybox builds the tiny profile: Debian's busybox-static with its applet
// links, /dev nodes, mount points, /etc/passwd and the init scripts.
func (b *builder) busybox(t *Tree) error {
	bin, err := b.busyboxBinary(t)
	if err != nil {
		return err
	}
	b.p.Phase(PhaseUnpack)
	for _, d := range []struct {
		path string
		perm os.FileMode
	}{
		{"bin", 0o755}, {"sbin", 0o755}, {"usr/bin", 0o755}, {"usr/sbin", 0o755},
		{"etc/init.d", 0o755}, {"etc/network", 0o755}, {"dev/pts", 0o755}, {"proc", 0o555}, {"sys", 0o555},
		{"tmp", 0o1777 | os.ModeSticky}, {"root", 0o700}, {"home", 0o755}, {"mnt", 0o755}, {"host", 0o755},
		{"run", 0o755}, {"var/log", 0o755}, {"var/tmp", 0o1777 | os.ModeSticky}, {"lib/modules", 0o755},
	} {
		if err := t.Mkdir(d.path, d.perm); err != nil {
			return err
		}
	}
	if err := t.Symlink("/run", "var/run"); err != nil {
		return err
	}
	// Applet links: ask the binary (it is static, so it runs here).
	out, err := exec.Command(bin, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("%s --list-full: %w", bin, err)
	}
	links := strings.Fields(string(out))
	sort.Strings(links)
	n := 0
	for _, l := range links {
		l = clean(l)
		if l == "bin/busybox" || l == "" || t.Exists(l) {
			continue
		}
		if err := t.Symlink("/bin/busybox", l); err != nil {
			return err
		}
		n++
	}
	b.p.Infof("busybox: %d applet links", n)

	b.p.Phase(PhaseConfigure)
	devs := []struct {
		name         string
		typ          byte
		perm         uint32
		major, minor uint32
	}{
		{"console", 'c', 0o600, 5, 1}, {"tty", 'c', 0o666, 5, 0}, {"tty0", 'c', 0o620, 4, 0},
		{"ptmx", 'c', 0o666, 5, 2}, {"null", 'c', 0o666, 1, 3}, {"zero", 'c', 0o666, 1, 5},
		{"full", 'c', 0o666, 1, 7}, {"random", 'c', 0o666, 1, 8}, {"urandom", 'c', 0o666, 1, 9},
		{"ubda", 'b', 0o660, 98, 0}, {"ubdb", 'b', 0o660, 98, 16},
	}
	for _, d := range devs {
		if err := t.Mknod("dev/"+d.name, d.typ, d.perm, d.major, d.minor, 0, 0); err != nil {
			return err
		}
	}
	files := []struct {
		path string
		body string
		perm os.FileMode
	}{
		{"etc/inittab", bbInittab, 0o644},
		{"etc/init.d/rcS", bbRcS, 0o755},
		{"init", bbInit, 0o755},
		{"etc/passwd", "root::0:0:root:/root:/bin/sh\n", 0o644},
		{"etc/group", "root:x:0:\n", 0o644},
		{"etc/shells", "/bin/sh\n/bin/ash\n", 0o644},
		{"etc/profile", "export PATH=/sbin:/usr/sbin:/bin:/usr/bin\nexport PS1='\\h:\\w\\$ '\n", 0o644},
		{"etc/securetty", "console\ntty0\n", 0o644},
	}
	for _, f := range files {
		if t.Exists(f.path) {
			continue
		}
		if err := t.WriteFile(f.path, []byte(f.body), f.perm); err != nil {
			return err
		}
	}
	return nil
}

// busyboxBinary puts /bin/busybox into the tree and returns its host path.
// In order: [busybox] binary=PATH, [busybox] deb=FILE, `apt-get download
// busybox-static` (so the image does not depend on what the host has
// installed), a busybox-static .deb in apt's cache, and last the host's
// own static /bin/busybox.
func (b *builder) busyboxBinary(t *Tree) (string, error) {
	b.p.Phase(PhaseDownload)
	if p := b.get("busybox", "binary", ""); p != "" {
		return b.copyBusybox(t, p)
	}
	if deb := b.get("busybox", "deb", ""); deb != "" {
		return b.unpackDeb(t, deb)
	}
	dl := filepath.Join(b.tmp, "download")
	if err := os.Mkdir(dl, 0o755); err != nil {
		return "", err
	}
	pkg := b.get("busybox", "package", "busybox-static")
	var dlErr error
	if apt, err := exec.LookPath("apt-get"); err == nil {
		dlErr = b.run(runSpec{name: "apt-get download " + pkg, path: apt, args: []string{"download", pkg}, dir: dl})
		if dlErr == nil {
			if debs, _ := filepath.Glob(filepath.Join(dl, "*.deb")); len(debs) == 1 {
				return b.unpackDeb(t, debs[0])
			}
			dlErr = fmt.Errorf("apt-get download %s: no .deb arrived", pkg)
		}
	} else {
		dlErr = fmt.Errorf("apt-get not found")
	}
	b.p.Warnf("cannot download %s (%v); trying local copies", pkg, dlErr)
	if debs, _ := filepath.Glob("/var/cache/apt/archives/" + pkg + "_*.deb"); len(debs) > 0 {
		sort.Strings(debs)
		return b.unpackDeb(t, debs[len(debs)-1])
	}
	if isStatic("/bin/busybox") {
		b.p.Warnf("using the host's /bin/busybox")
		return b.copyBusybox(t, "/bin/busybox")
	}
	return "", fmt.Errorf("no busybox: %v, no %s in apt's cache, and no static /bin/busybox on the host", dlErr, pkg)
}

// unpackDeb extracts a .deb's files into the tree with dpkg-deb.
func (b *builder) unpackDeb(t *Tree, deb string) (string, error) {
	b.p.Phase(PhaseUnpack)
	dpkg, err := exec.LookPath("dpkg-deb")
	if err != nil {
		return "", fmt.Errorf("dpkg-deb not found: cannot unpack %s", deb)
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(b.ctx, dpkg, "--fsys-tarfile", deb)
	cmd.Stdout = &out
	lw := &lineWriter{p: b.p}
	cmd.Stderr = lw
	b.p.Debugf("run: %s --fsys-tarfile %s", dpkg, deb)
	if err := cmd.Run(); err != nil {
		lw.flush()
		return "", fmt.Errorf("dpkg-deb --fsys-tarfile %s: %v: %s", deb, err, lw.lastError())
	}
	if err := t.AddTar(&out, nil); err != nil {
		return "", fmt.Errorf("%s: %w", deb, err)
	}
	bin := filepath.Join(t.Root, "bin/busybox")
	if !isStatic(bin) {
		return "", fmt.Errorf("%s has no static /bin/busybox", deb)
	}
	b.p.Infof("busybox from %s", filepath.Base(deb))
	return bin, nil
}

func (b *builder) copyBusybox(t *Tree, src string) (string, error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	if !isStatic(src) {
		return "", fmt.Errorf("%s is not a static executable", src)
	}
	if err := t.WriteFile("bin/busybox", data, 0o755); err != nil {
		return "", err
	}
	return filepath.Join(t.Root, "bin/busybox"), nil
}

// isStatic reports whether path is an ELF executable without an
// interpreter (so it runs in an empty root).
func isStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return f.Type == elf.ET_EXEC || f.Type == elf.ET_DYN
}

// fromTar unpacks --from-tar FILE (or - for standard input).
func (b *builder) fromTar(t *Tree) error {
	b.p.Phase(PhaseUnpack)
	src := b.o.FromTar
	var f *os.File
	r := b.o.Stdin
	if src != "-" {
		var err error
		if f, err = os.Open(src); err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	if r == nil {
		return fmt.Errorf("--from-tar -: no standard input")
	}
	n := 0
	if err := t.AddTar(r, func() { n++; b.p.Count(n, 0) }); err != nil {
		return err
	}
	b.p.Infof("unpacked %d tar members", n)
	return nil
}

// fromDir copies --from-dir DIR.
func (b *builder) fromDir(t *Tree) error {
	b.p.Phase(PhaseUnpack)
	fi, err := os.Stat(b.o.FromDir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", b.o.FromDir)
	}
	n := 0
	if err := t.AddDir(b.o.FromDir, func() { n++; b.p.Count(n, 0) }); err != nil {
		return err
	}
	b.p.Infof("copied %d files from %s", n, b.o.FromDir)
	return nil
}
