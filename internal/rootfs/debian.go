package rootfs

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// DebianDefaults are the host's Debian suite and mirror, the defaults of
// [debian] dist and mirror: the first deb.debian.org-style "deb" source
// in /etc/apt (sources.list and deb822 .sources files), else bookworm on
// http://deb.debian.org/debian.
func DebianDefaults(aptDir string) (dist, mirror string) {
	dist, mirror = "", ""
	if data, err := os.ReadFile("/etc/os-release"); err == nil && aptDir == "/etc/apt" {
		if m := regexp.MustCompile(`(?m)^VERSION_CODENAME=("?)([a-z]+)("?)$`).FindSubmatch(data); m != nil {
			dist = string(m[2])
		}
	}
	var files []string
	files = append(files, filepath.Join(aptDir, "sources.list"))
	more, _ := filepath.Glob(filepath.Join(aptDir, "sources.list.d", "*"))
	files = append(files, more...)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var uri, suite string
		switch {
		case strings.HasSuffix(f, ".list"):
			uri, suite = parseOneLineSources(string(data))
		case strings.HasSuffix(f, ".sources"):
			uri, suite = parseDeb822Sources(string(data))
		}
		if uri != "" {
			mirror = uri
			if dist == "" {
				dist = suite
			}
			break
		}
	}
	if dist == "" {
		dist = "bookworm"
	}
	if mirror == "" {
		mirror = "http://deb.debian.org/debian"
	}
	return dist, mirror
}

// debianArchive reports whether a source URI looks like a Debian archive
// (not security, not a third-party repository).
func debianArchive(uri string) bool {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme == "" {
		return false
	}
	return strings.HasSuffix(strings.TrimRight(u.Path, "/"), "/debian") && !strings.Contains(uri, "security")
}

func parseOneLineSources(s string) (uri, suite string) {
	for _, l := range strings.Split(s, "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		i := 1
		if strings.HasPrefix(f[1], "[") {
			for i < len(f) && !strings.HasSuffix(f[i], "]") {
				i++
			}
			i++
		}
		if i+1 < len(f) && debianArchive(f[i]) && !strings.Contains(f[i+1], "-") {
			return strings.TrimRight(f[i], "/"), f[i+1]
		}
	}
	return "", ""
}

func parseDeb822Sources(s string) (uri, suite string) {
	for _, stanza := range strings.Split(s, "\n\n") {
		fields := map[string]string{}
		for _, l := range strings.Split(stanza, "\n") {
			if strings.HasPrefix(l, "#") {
				continue
			}
			if k, v, ok := strings.Cut(l, ":"); ok && !strings.HasPrefix(l, " ") {
				fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		}
		if !strings.Contains(fields["types"], "deb") || strings.EqualFold(fields["enabled"], "no") {
			continue
		}
		for _, u := range strings.Fields(fields["uris"]) {
			if debianArchive(u) {
				su := ""
				for _, x := range strings.Fields(fields["suites"]) {
					if !strings.Contains(x, "-") {
						su = x
						break
					}
				}
				return strings.TrimRight(u, "/"), su
			}
		}
	}
	return "", ""
}

var pkgNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]*(:[a-z0-9-]+)?$`)

// debian bootstraps Debian into the tree with mmdebstrap (root, or
// unprivileged through user namespaces) or debootstrap (root only).
func (b *builder) debian(t *Tree) error {
	hostDist, hostMirror := DebianDefaults("/etc/apt")
	dist := b.get("debian", "dist", hostDist)
	mirror := strings.TrimRight(b.get("debian", "mirror", hostMirror), "/")
	variant := b.get("debian", "variant", "minbase")
	includes := List(b.get("debian", "include", ""))
	includes = append(includes, b.o.Include...)
	if b.c.Section("network") != nil && !contains(includes, "ifupdown") {
		includes = append(includes, "ifupdown")
	}
	for _, p := range includes {
		if !pkgNameRE.MatchString(p) {
			return fmt.Errorf("bad package name %q in include", p)
		}
	}
	excludes := List(b.get("debian", "exclude", ""))
	components := List(b.get("debian", "components", "main"))
	arch := b.get("debian", "arch", "")
	if !regexp.MustCompile(`^[a-z0-9-]+$`).MatchString(dist) {
		return fmt.Errorf("bad dist %q", dist)
	}
	if err := checkMirror(mirror, dist); err != nil {
		return err
	}
	b.p.Infof("Debian %s (%s) from %s, include: %s", dist, variant, mirror, strings.Join(includes, " "))

	driver := b.get("debian", "driver", "")
	mm, _ := exec.LookPath("mmdebstrap")
	db, _ := lookTool("debootstrap")
	root := os.Geteuid() == 0
	if driver == "" {
		switch {
		case mm != "" && (root || UsernsWorks() && HasSubIDs()):
			driver = "mmdebstrap"
		case db != "" && root:
			driver = "debootstrap"
		case root:
			return fmt.Errorf("neither mmdebstrap nor debootstrap is installed")
		case mm == "":
			return fmt.Errorf("bootstrapping Debian unprivileged needs mmdebstrap (or run as root with debootstrap); --profile busybox needs neither")
		default:
			return fmt.Errorf("mmdebstrap --mode=unshare needs user namespaces and subordinate ids for this user in /etc/subuid and /etc/subgid (or run as root); --profile busybox needs neither")
		}
	}
	b.p.Phase(PhaseDownload)
	phases := func(line string) {
		switch {
		case strings.HasPrefix(line, "I: Retrieving "), strings.Contains(line, "downloading packages"):
			if b.p.Current() != PhaseDownload {
				b.p.Phase(PhaseDownload)
			}
			b.p.Step()
		case strings.HasPrefix(line, "I: Extracting "), strings.HasPrefix(line, "I: Unpacking "),
			strings.Contains(line, "extracting archives"), strings.Contains(line, "installing essential"):
			if b.p.Current() != PhaseUnpack {
				b.p.Phase(PhaseUnpack)
			}
			b.p.Step()
		case strings.HasPrefix(line, "I: Configuring "), strings.Contains(line, "installing remaining"):
			if b.p.Current() != PhaseConfigure {
				b.p.Phase(PhaseConfigure)
			}
			b.p.Step()
		}
	}
	switch driver {
	case "mmdebstrap":
		if mm == "" {
			return fmt.Errorf("mmdebstrap not installed")
		}
		args := []string{"--variant=" + variant, "--components=" + strings.Join(components, ",")}
		if len(includes) > 0 {
			args = append(args, "--include="+strings.Join(includes, ","))
		}
		if arch != "" {
			args = append(args, "--architectures="+arch)
		}
		for _, x := range excludes {
			args = append(args, "--dpkgopt=path-exclude="+x)
		}
		if root {
			args = append(args, "--mode=root", dist, t.Root, mirror)
			return b.run(runSpec{name: "mmdebstrap", path: mm, args: args, hook: phases})
		}
		// Unprivileged: a tar keeps the owners and device nodes the
		// tree cannot hold; the tree records them for the image.
		tarPath := filepath.Join(b.tmp, "debian.tar")
		args = append(args, "--mode=unshare", "--format=tar", dist, tarPath, mirror)
		if err := b.run(runSpec{name: "mmdebstrap", path: mm, args: args, hook: phases}); err != nil {
			return err
		}
		f, err := os.Open(tarPath)
		if err != nil {
			return err
		}
		defer f.Close()
		b.p.Phase(PhaseUnpack)
		err = t.AddTar(f, b.p.Step)
		os.Remove(tarPath)
		return err
	case "debootstrap":
		if db == "" {
			return fmt.Errorf("debootstrap not installed")
		}
		if !root {
			return fmt.Errorf("debootstrap needs root")
		}
		args := []string{"--variant=" + variant, "--components=" + strings.Join(components, ",")}
		if len(includes) > 0 {
			args = append(args, "--include="+strings.Join(includes, ","))
		}
		if len(excludes) > 0 {
			args = append(args, "--exclude="+strings.Join(excludes, ","))
		}
		if arch != "" {
			args = append(args, "--arch="+arch)
		}
		args = append(args, dist, t.Root, mirror)
		return b.run(runSpec{name: "debootstrap", path: db, args: args, hook: phases})
	}
	return fmt.Errorf("[debian] driver=%q: want mmdebstrap or debootstrap", driver)
}

// HasSubIDs reports whether /etc/subuid and /etc/subgid give the current
// user a range of subordinate ids (needed by mmdebstrap --mode=unshare).
func HasSubIDs() bool {
	names := []string{strconv.Itoa(os.Getuid())}
	if u, err := user.Current(); err == nil {
		names = append(names, u.Username)
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		data, err := os.ReadFile(f)
		if err != nil {
			return false
		}
		found := false
		for _, l := range strings.Split(string(data), "\n") {
			if n, _, ok := strings.Cut(l, ":"); ok && contains(names, n) {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// checkMirror fails fast, with a clear message, when the mirror does not
// serve the suite (unreachable host, wrong path or suite).
func checkMirror(mirror, dist string) error {
	u, err := url.Parse(mirror)
	if err != nil || u.Host == "" && u.Scheme != "file" {
		return fmt.Errorf("bad mirror %q", mirror)
	}
	switch u.Scheme {
	case "file":
		if _, err := os.Stat(filepath.Join(u.Path, "dists", dist)); err != nil {
			return fmt.Errorf("mirror %s: %w", mirror, err)
		}
		return nil
	case "http", "https":
	default:
		return fmt.Errorf("mirror %s: unsupported scheme %q", mirror, u.Scheme)
	}
	client := &http.Client{Timeout: 20 * time.Second}
	var last error
	for _, f := range []string{"InRelease", "Release"} {
		resp, err := client.Head(mirror + "/dists/" + dist + "/" + f)
		if err != nil {
			last = err
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
		last = fmt.Errorf("%s", resp.Status)
	}
	return fmt.Errorf("mirror %s does not serve %s: %v", mirror, dist, last)
}
