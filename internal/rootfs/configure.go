package rootfs

import (
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// fstab writes /etc/fstab: the root filesystem on the first ubd device
// (and /proc), unless [fstab] keep=yes and one exists.
func (b *builder) fstab(t *Tree) error {
	fsType := strings.ToLower(b.get(GlobalSection, "fstype", "ext4"))
	dev := b.get("fstab", "root", "/dev/ubda")
	opts := b.get("fstab", "options", "defaults,errors=remount-ro")
	body := "# /etc/fstab: written by rootstrap\n" +
		"# <file system> <mount point> <type> <options> <dump> <pass>\n" +
		fmt.Sprintf("%s\t/\t%s\t%s\t0\t1\n", dev, fsType, opts) +
		"proc\t/proc\tproc\tdefaults\t0\t0\n"
	return t.WriteFile("etc/fstab", []byte(body), 0o644)
}

// hostName is the configured host name.
func (b *builder) hostName() string {
	if b.o.Hostname != "" {
		return b.o.Hostname
	}
	if v := b.get("network", "hostname", ""); v != "" {
		return v
	}
	return b.get("hostname", "hostname", "uml")
}

var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?$`)

// ValidHostname reports whether s can be a host name.
func ValidHostname(s string) bool { return hostnameRE.MatchString(s) && !strings.Contains(s, "..") }

// hostname writes /etc/hostname and /etc/hosts.
func (b *builder) hostname(t *Tree) error {
	name := b.hostName()
	if !ValidHostname(name) {
		return fmt.Errorf("bad hostname %q", name)
	}
	short := strings.SplitN(name, ".", 2)[0]
	names := short
	if name != short {
		names = name + " " + short
	}
	addr := "127.0.1.1"
	if ip := b.get("network", "uml", ""); net.ParseIP(ip) != nil {
		addr = ip
	}
	hosts := "127.0.0.1\tlocalhost\n" +
		fmt.Sprintf("%s\t%s\n", addr, names) +
		"\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
	if err := t.WriteFile("etc/hostname", []byte(name+"\n"), 0o644); err != nil {
		return err
	}
	return t.WriteFile("etc/hosts", []byte(hosts), 0o644)
}

// network writes /etc/network/interfaces from [network] (seed keys:
// interface, uml, netmask, gateway, host, nameserver; uml=dhcp or no
// address means DHCP) and /etc/resolv.conf from nameserver. Without a
// [network] section only the loopback is configured.
func (b *builder) network(t *Tree) error {
	body := "# /etc/network/interfaces: written by rootstrap\n\nauto lo\niface lo inet loopback\n"
	if b.c.Section("network") != nil {
		iface := b.get("network", "interface", "eth0")
		if !regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,15}$`).MatchString(iface) {
			return fmt.Errorf("[network] interface %q is not an interface name", iface)
		}
		addr := b.get("network", "uml", "")
		body += fmt.Sprintf("\nauto %s\n", iface)
		if addr == "" || addr == "dhcp" {
			body += fmt.Sprintf("iface %s inet dhcp\n", iface)
		} else {
			if net.ParseIP(addr) == nil {
				if _, _, err := net.ParseCIDR(addr); err != nil {
					return fmt.Errorf("[network] uml=%q is not an address", addr)
				}
			}
			body += fmt.Sprintf("iface %s inet static\n\taddress %s\n", iface, addr)
			for _, k := range []string{"netmask", "gateway", "broadcast", "mtu"} {
				v := b.get("network", k, "")
				if v == "" {
					continue
				}
				if k != "mtu" && net.ParseIP(v) == nil {
					return fmt.Errorf("[network] %s=%q is not an address", k, v)
				}
				body += fmt.Sprintf("\t%s %s\n", k, v)
			}
			if h := b.get("network", "host", ""); h != "" {
				body += fmt.Sprintf("\t# the host end (%s transport): %s\n", b.get("network", "transport", "tuntap"), h)
			}
		}
		if ns := List(b.get("network", "nameserver", "")); len(ns) > 0 {
			var rc strings.Builder
			rc.WriteString("# written by rootstrap\n")
			for _, n := range ns {
				if net.ParseIP(n) == nil {
					return fmt.Errorf("[network] nameserver %q is not an address", n)
				}
				fmt.Fprintf(&rc, "nameserver %s\n", n)
			}
			if d := b.get("network", "domain", ""); d != "" {
				fmt.Fprintf(&rc, "search %s\n", d)
			}
			if err := t.WriteFile("etc/resolv.conf", []byte(rc.String()), 0o644); err != nil {
				return err
			}
		}
	}
	return t.WriteFile("etc/network/interfaces", []byte(body), 0o644)
}

// rootPasswordField is the password field for root: "" (no password),
// or a crypt(3) hash.
func (b *builder) rootPasswordField() (string, error) {
	pw := b.o.RootPassword
	if pw == "" {
		if h := b.get("root", "password_hash", ""); h != "" {
			pw = h
		} else {
			pw = b.get("root", "password", "")
		}
	}
	if pw == "" {
		return "", nil
	}
	if strings.HasPrefix(pw, "$") {
		if strings.ContainsAny(pw, ":\n") {
			return "", fmt.Errorf("bad password hash")
		}
		return pw, nil
	}
	return SHA512Crypt(pw, "")
}

// rootLogin sets root's password: in /etc/shadow when the tree has one,
// else in /etc/passwd.
func (b *builder) rootLogin(t *Tree) error {
	field, err := b.rootPasswordField()
	if err != nil {
		return err
	}
	file, idx := "etc/shadow", 1
	if !t.Exists(file) {
		file = "etc/passwd"
	}
	data, err := t.ReadFile(file)
	if err != nil {
		return fmt.Errorf("reading /%s: %w", file, err)
	}
	lines := strings.Split(string(data), "\n")
	found := false
	for i, l := range lines {
		f := strings.Split(l, ":")
		if len(f) > idx && f[0] == "root" {
			f[idx] = field
			lines[i] = strings.Join(f, ":")
			found = true
		}
	}
	if !found {
		return fmt.Errorf("/%s has no root entry", file)
	}
	if file == "etc/shadow" {
		// passwd must point at shadow for root.
		if pd, err := t.ReadFile("etc/passwd"); err == nil {
			pl := strings.Split(string(pd), "\n")
			for i, l := range pl {
				f := strings.Split(l, ":")
				if len(f) > 1 && f[0] == "root" && f[1] != "x" {
					f[1] = "x"
					pl[i] = strings.Join(f, ":")
				}
			}
			if err := t.WriteFile("etc/passwd", []byte(strings.Join(pl, "\n")), 0o644); err != nil {
				return err
			}
		}
	}
	if field == "" {
		b.p.Infof("root has no password (log in on the console; set one with --root-password)")
	}
	return t.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o640)
}

var gettyLine = regexp.MustCompile(`^([0-9]+):[0-9]*:respawn:\S*getty\b.*\btty[0-9]+\s*$`)

// console makes the UML console (con0, /dev/console) a login terminal:
// with sysvinit the tty1-6 gettys give way to one on the console; with
// systemd console-getty.service is enabled; /etc/securetty, if present,
// lists the console.
func (b *builder) console(t *Tree) error {
	if data, err := t.ReadFile("etc/inittab"); err == nil {
		var out []string
		done := false
		for _, l := range strings.Split(string(data), "\n") {
			if gettyLine.MatchString(l) {
				l = "#" + l + "\t# rootstrap: the UML console is below"
			}
			if strings.HasPrefix(l, "co:") {
				done = true
			}
			out = append(out, l)
		}
		if !done {
			for len(out) > 0 && out[len(out)-1] == "" {
				out = out[:len(out)-1]
			}
			out = append(out, "", "# rootstrap: a login on the UML console (con0)",
				"co:2345:respawn:/sbin/getty --noclear -L console 115200 vt100", "")
		}
		if err := t.WriteFile("etc/inittab", []byte(strings.Join(out, "\n")), 0o644); err != nil {
			return err
		}
	} else if t.Exists("lib/systemd/system/console-getty.service") {
		if err := t.Symlink("/lib/systemd/system/console-getty.service",
			"etc/systemd/system/getty.target.wants/console-getty.service"); err != nil {
			return err
		}
	} else {
		b.p.Warnf("console: neither /etc/inittab nor systemd's console-getty.service: no login on the console")
	}
	if data, err := t.ReadFile("etc/securetty"); err == nil {
		s := string(data)
		for _, tty := range []string{"console", "tty0"} {
			if !regexp.MustCompile(`(?m)^` + tty + `$`).MatchString(s) {
				if s != "" && !strings.HasSuffix(s, "\n") {
					s += "\n"
				}
				s += tty + "\n"
			}
		}
		return t.WriteFile("etc/securetty", []byte(s), 0o644)
	}
	return nil
}

// umlModules copies the UML kernel's modules (Debian's user-mode-linux
// package keeps them in /usr/lib/uml/modules) into /lib/modules.
func (b *builder) umlModules(t *Tree) error {
	src := b.get("umlmodules", "source", "/usr/lib/uml/modules")
	if _, err := os.Stat(src); err != nil {
		b.p.Debugf("umlmodules: %s not present, skipped", src)
		return nil
	}
	n := 0
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		dst := filepath.Join("lib/modules", rel)
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return t.Mkdir(dst, fi.Mode().Perm())
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return t.Symlink(target, dst)
		case fi.Mode().IsRegular():
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			data, err := io.ReadAll(f)
			if err != nil {
				return err
			}
			n++
			return t.WriteFile(dst, data, fi.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	}
	b.p.Infof("copied %d UML kernel module files from %s", n, src)
	return nil
}
