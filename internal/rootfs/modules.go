package rootfs

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// module is one step of a build.
type module struct {
	name   string
	source bool   // it produces the tree (runs first)
	path   string // an external executable, or "" for the built-in
}

func (m module) origin() string {
	if m.path != "" {
		return m.path
	}
	return "built in"
}

// builtin is a built-in module; section is the config section named after
// it.
type builtin struct {
	source bool
	run    func(b *builder, t *Tree) error
	doc    string
}

// builtins are rootstrap's own modules. Sources come first in a plan;
// the others run in the configured order.
var builtins = map[string]builtin{
	"debian":     {source: true, run: (*builder).debian, doc: "bootstrap Debian with mmdebstrap or debootstrap ([debian] dist, mirror, variant, include, exclude, components, arch)"},
	"busybox":    {source: true, run: (*builder).busybox, doc: "a tiny system from Debian's busybox-static ([busybox] deb, binary)"},
	"tar":        {source: true, run: (*builder).fromTar, doc: "unpack --from-tar FILE|-"},
	"dir":        {source: true, run: (*builder).fromDir, doc: "copy --from-dir DIR"},
	"fstab":      {run: (*builder).fstab, doc: "/etc/fstab with the root filesystem on /dev/ubda"},
	"hostname":   {run: (*builder).hostname, doc: "/etc/hostname and /etc/hosts ([global] or [network] hostname)"},
	"network":    {run: (*builder).network, doc: "/etc/network/interfaces and /etc/resolv.conf from [network]"},
	"root":       {run: (*builder).rootLogin, doc: "root's password (empty by default; [root] password or password_hash)"},
	"console":    {run: (*builder).console, doc: "a getty on the UML console, securetty"},
	"umlmodules": {run: (*builder).umlModules, doc: "copy the UML kernel's modules from /usr/lib/uml/modules"},
}

// legacy modules of the original are jobs rootstrap does itself now.
var legacy = map[string]bool{"uml": true, "mkfs": true, "mount": true, "umount": true, "partition": true}

// defaultModules are the plans used when [global] modules is not set.
var defaultModules = map[string]string{
	"debian":  "debian fstab hostname network root console umlmodules",
	"busybox": "busybox fstab hostname network root",
	"tar":     "tar",
	"dir":     "dir",
}

// Modules returns the built-in module names and one-line descriptions,
// sorted (for --list-modules).
func Modules() []string {
	var out []string
	for n, m := range builtins {
		out = append(out, fmt.Sprintf("%-11s %s", n, m.doc))
	}
	sort.Strings(out)
	return out
}

// sourceName is the source module the options ask for.
func (b *builder) sourceName() (string, error) {
	switch {
	case b.o.FromTar != "" && b.o.FromDir != "":
		return "", fmt.Errorf("--from-tar and --from-dir exclude each other")
	case b.o.FromTar != "":
		return "tar", nil
	case b.o.FromDir != "":
		return "dir", nil
	}
	switch b.o.Profile {
	case "", "debian":
		return "debian", nil
	case "busybox":
		return "busybox", nil
	}
	return "", fmt.Errorf("unknown profile %q (want debian or busybox)", b.o.Profile)
}

// plan resolves [global] modules (or the default for the source) into the
// modules to run: the source first, then the others in order. An external
// executable in a module directory overrides the built-in of that name.
func (b *builder) plan() ([]module, error) {
	src, err := b.sourceName()
	if err != nil {
		return nil, err
	}
	names := List(defaultModules[src])
	if v, ok := b.c.Get(GlobalSection, "modules"); ok && strings.TrimSpace(v) != "" {
		names = List(v)
	}
	dirs := b.o.ModuleDirs
	if dirs == nil {
		dirs = []string{"/etc/rootstrap/modules"}
	}
	var plan []module
	haveSource := false
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		bi, isBuiltin := builtins[n]
		if bi.source {
			// The command line picks the source; a configured one is
			// replaced by it.
			if haveSource {
				continue
			}
			n, bi = src, builtins[src]
		}
		m := module{name: n, source: bi.source}
		if p := findModule(dirs, n); p != "" {
			m.path = p
		} else if !isBuiltin {
			if legacy[n] {
				b.p.Debugf("module %s: done by rootstrap itself, skipped", n)
				continue
			}
			return nil, fmt.Errorf("unknown module %q (not built in, not found in %s)", n, strings.Join(dirs, ", "))
		}
		if m.source {
			haveSource = true
			plan = append([]module{m}, plan...)
			continue
		}
		plan = append(plan, m)
	}
	if !haveSource {
		m := module{name: src, source: true}
		if p := findModule(dirs, src); p != "" {
			m.path = p
		}
		plan = append([]module{m}, plan...)
	}
	return plan, nil
}

func findModule(dirs []string, name string) string {
	if strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return ""
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// runModule runs one module over the tree.
func (b *builder) runModule(t *Tree, m module, image string) error {
	if m.path == "" {
		return builtins[m.name].run(b, t)
	}
	// An external module gets the environment, [global] and its own
	// section's keys, TARGET (the tree) and IMAGE (the final image name).
	env := append([]string(nil), b.env...)
	env = append(env, b.c.Env(m.name)...)
	priv := "0"
	if t.Privileged {
		priv = "1"
	}
	env = append(env, "TARGET="+t.Root, "IMAGE="+image, "ROOTSTRAP_MODULE="+m.name, "ROOTSTRAP_PRIVILEGED="+priv)
	return b.run(runSpec{name: m.path, path: m.path, dir: t.Root, env: env})
}

// get is the configured value of key for a module's section.
func (b *builder) get(section, key, def string) string { return b.c.GetDefault(section, key, def) }
