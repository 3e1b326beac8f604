package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/rootfs"
	"github.com/umltools/umltools/internal/testutil"
)

// testdata returns the absolute path of a file in internal/rootfs/testdata
// (taken before isolate changes directory).
func testdata(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "internal", "rootfs", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSeed004Network is acceptance 3, fast half: seed 004's configuration
// file, as its user wrote it, drives a build (busybox profile, so no
// Debian download): fstype ext2, initialsize 150, and the [network]
// values land in /etc/network/interfaces and /etc/resolv.conf.
func TestSeed004Network(t *testing.T) {
	conf := testdata(t, "seed004.conf")
	dir := isolate(t)
	testutil.NeedCmd(t, "mke2fs", "debugfs", "dumpe2fs", "dpkg-deb")
	if _, e, code := runRS(t, "-q", "-c", conf, "--profile", "busybox", "seed.img"); code != 0 {
		t.Fatalf("%d %s", code, e)
	}
	img := filepath.Join(dir, "seed.img")
	checkSeedNetwork(t, img)
	if fi, _ := os.Stat(img); fi == nil || fi.Size() != 150<<20 {
		t.Errorf("initialsize=150 not honoured: %v", fi)
	}
	out, _ := exec.Command(testutil.NeedCmd(t, "dumpe2fs")[0], "-h", img).CombinedOutput()
	if strings.Contains(string(out), "has_journal") || !strings.Contains(string(out), "Filesystem features:") {
		t.Errorf("fstype=ext2 not honoured:\n%s", out)
	}
}

func checkSeedNetwork(t *testing.T, img string) {
	t.Helper()
	ifaces := debugfs(t, img, "cat /etc/network/interfaces")
	for _, want := range []string{"auto eth0\n", "iface eth0 inet static\n", "\taddress 192.168.10.2\n", "\tnetmask 255.255.255.252\n", "\tgateway 192.168.10.1\n", "192.168.10.1"} {
		if !strings.Contains(ifaces, want) {
			t.Errorf("/etc/network/interfaces lacks %q:\n%s", want, ifaces)
		}
	}
	if rc := debugfs(t, img, "cat /etc/resolv.conf"); !strings.Contains(rc, "nameserver 168.95.1.1\n") {
		t.Errorf("/etc/resolv.conf:\n%s", rc)
	}
}

// debianRecipe names the cached Debian image: the configuration and the
// sources of internal/rootfs (a change there rebuilds it).
func debianRecipe(t *testing.T, conf string) string {
	h := sha256.New()
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	h.Write(b)
	srcs, _ := filepath.Glob(filepath.Join(filepath.Dir(filepath.Dir(conf)), "*.go"))
	sort.Strings(srcs)
	for _, s := range srcs {
		if strings.HasSuffix(s, "_test.go") {
			continue
		}
		f, err := os.Open(s)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(h, f)
		f.Close()
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// debianImage returns a fresh copy of the Debian bookworm sysvinit image
// (acceptance 2's configuration), built once by rootstrap and cached.
func debianImage(t *testing.T) string {
	t.Helper()
	conf := testdata(t, "debian-sysvinit.conf")
	testutil.NeedCmd(t, "mke2fs", "debugfs", "e2fsck")
	cached := filepath.Join(testutil.CacheDir(t), "rootstrap-debian-"+debianRecipe(t, conf)+".img")
	if _, err := os.Stat(cached); err != nil {
		_, hasMM := exec.LookPath("mmdebstrap")
		switch {
		case os.Geteuid() == 0:
			testutil.NeedCmd(t, "debootstrap")
		case hasMM == nil && rootfs.UsernsWorks() && rootfs.HasSubIDs():
		default:
			testutil.Skip(t, "a Debian bootstrap needs root (debootstrap) or mmdebstrap with user namespaces and /etc/subuid ranges")
		}
		if b, err := exec.Command("curl", "-sfI", "--max-time", "10", "http://deb.debian.org/debian/dists/bookworm/InRelease").CombinedOutput(); err != nil {
			testutil.Skip(t, "deb.debian.org unreachable: %v %s", err, b)
		}
		start := time.Now()
		bin := testutil.Bin(t, "rootstrap")
		tmp := cached + ".tmp"
		log := filepath.Join(t.TempDir(), "build.log")
		cmd := exec.Command(bin, "-q", "-o", log, "-c", conf, tmp)
		cmd.Dir = t.TempDir()
		cmd.Env = append(os.Environ(), "HOME="+cmd.Dir, "XDG_CONFIG_HOME="+cmd.Dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			l, _ := os.ReadFile(log)
			t.Fatalf("rootstrap -c %s: %v\n%s\nlog tail:\n%s", conf, err, out, tail(string(l)))
		}
		if err := os.Rename(tmp, cached); err != nil {
			t.Fatal(err)
		}
		// Older recipes' images only take space.
		old, _ := filepath.Glob(filepath.Join(filepath.Dir(cached), "rootstrap-debian-*.img"))
		for _, o := range old {
			if o != cached {
				os.Remove(o)
			}
		}
		t.Logf("built the Debian image in %.0fs", time.Since(start).Seconds())
	}
	img := filepath.Join(t.TempDir(), "debian.img")
	if b, err := exec.Command("cp", "--sparse=always", cached, img).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, b)
	}
	return img
}

// waitRE waits until the machine's output matches re.
func waitRE(t *testing.T, u *testutil.UML, re *regexp.Regexp, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !re.MatchString(u.Output()) {
		if time.Now().After(deadline) {
			t.Fatalf("timeout waiting for %v; output tail:\n%s", re, tail(u.Output()))
		}
		select {
		case <-u.Done():
			if !re.MatchString(u.Output()) {
				t.Fatalf("machine exited before %v; output tail:\n%s", re, tail(u.Output()))
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestDebianSysvinit is acceptance 2 (and 3 on a real Debian tree): the
// bookworm minbase + sysvinit-core image rootstrap builds boots in the C
// kernel to a login prompt on the console, root logs in without a
// password, hostname prints the configured name, poweroff ends the
// process, and the image checks clean afterwards.
func TestDebianSysvinit(t *testing.T) {
	img := debianImage(t)
	testutil.E2fsck(t, img)
	checkSeedNetwork(t, img)
	if got := owner(t, img, "/usr/bin/passwd"); got != "0 0" {
		t.Errorf("/usr/bin/passwd owned by %s", got)
	}
	if st := debugfs(t, img, "stat /usr/bin/passwd"); !strings.Contains(st, "Mode:  04755") {
		t.Errorf("passwd lost its setuid bit:\n%s", st)
	}

	start := time.Now()
	c := bootConsole(t, "ubd0="+img)
	c.u.WaitOutput(t, "umlbox login:", 180*time.Second)
	t.Logf("login prompt after %.1fs", time.Since(start).Seconds())
	c.send("root\n")
	c.u.WaitOutput(t, "root@umlbox:~#", 60*time.Second)
	c.send("hostname\n")
	waitRE(t, c.u, regexp.MustCompile(`(?m)[\r\n]umlbox\r?$`), 30*time.Second)
	c.send("echo LOGGED-IN-AS-$(id -un)\n")
	c.u.WaitOutput(t, "LOGGED-IN-AS-root", 30*time.Second)
	c.poweroff("poweroff", 120*time.Second)
	t.Logf("boot, login, poweroff: %.1fs", time.Since(start).Seconds())
	testutil.E2fsck(t, img)
}
