package jail

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/testutil"
)

const cJail = "/usr/sbin/jail_uml"

func TestParseUID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"0", 0, true}, {"1234", 1234, true}, {"0x10", 16, true}, {"010", 8, true}, {" 7", 7, true},
		{"4294967294", 4294967294, true},
		{"", 0, false}, {"4294967295", 0, false}, {"4294967296", 0, false}, {"-1", 0, false}, {"+1", 0, false},
		{"12abc", 0, false}, {"nobody", 0, false}, {"0x", 0, false}, {"09", 0, false}, {"1 ", 0, false},
	} {
		got, ok := ParseUID(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseUID(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func writeDB(t *testing.T) Files {
	t.Helper()
	d := t.TempDir()
	f := Files{Passwd: filepath.Join(d, "passwd"), Group: filepath.Join(d, "group")}
	passwd := `root:x:0:0:root:/root:/bin/bash
# a comment
+nisuser::::::
alice:x:1001:1001:Alice:/home/alice:/bin/sh
bob:x:1002:100::/home/bob:/bin/sh
1234:x:2000:2000:digits for a name:/:/bin/sh
broken:x:notanumber:1:::
short:x:5
`
	group := `root:x:0:
users:x:100:alice,carol
alice:x:1001:
audio:x:29:bob,alice
video:x:44: alice
dup:x:100:alice
bad:x:zz:alice
`
	os.WriteFile(f.Passwd, []byte(passwd), 0o644)
	os.WriteFile(f.Group, []byte(group), 0o644)
	return f
}

func TestResolve(t *testing.T) {
	f := writeDB(t)
	for _, tc := range []struct {
		arg  string
		want string // fmt of Creds, or "" for not ok
	}{
		{"alice", "{1001 1001 [1001 100 29 44]}"},
		{"bob", "{1002 100 [100 29]}"},
		{"root", "{0 0 [0]}"},
		{"1234", "{2000 2000 [2000]}"}, // a name first, as getpwnam comes first
		{"1001", "{1001 99 [99]}"},     // a number that is no name: gid 99
		{"0x10", "{16 99 [99]}"},
		{"0", "{0 99 [99]}"},
		{"carol", ""}, // in a group but not in passwd
		{"broken", ""},
		{"short", ""},
		{"nisuser", ""},
		{"+nisuser", ""},
		{"", ""},
		{"-1", ""},
		{"4294967296", ""},
	} {
		c, ok, err := Resolve(tc.arg, f)
		got := ""
		if ok {
			got = fmt.Sprint(c)
		}
		if err != nil || got != tc.want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", tc.arg, got, err, tc.want)
		}
	}
	// No group file: the primary group alone.
	if c, ok, err := Resolve("alice", Files{Passwd: f.Passwd, Group: "/nonexistent"}); !ok || err != nil || fmt.Sprint(c.Groups) != "[1001]" {
		t.Errorf("without a group file: %v %v %v", c, ok, err)
	}
	if _, _, err := Resolve("alice", Files{Passwd: "/nonexistent", Group: f.Group}); err == nil {
		t.Errorf("missing passwd file: no error")
	}
}

// TestArgs covers the paths that end before any privileged step.
func TestArgs(t *testing.T) {
	f := writeDB(t)
	root := func() int { return 0 }
	user := func() int { return 1000 }
	for _, tc := range []struct {
		args   []string
		euid   func() int
		code   int
		stderr string
	}{
		{nil, user, 1, "jail_uml must be run as root\n"},
		{[]string{"/", "alice", "/bin/true"}, user, 1, "jail_uml must be run as root\n"},
		{nil, root, 1, usage},
		{[]string{"/"}, root, 1, usage},
		{[]string{"/", "alice"}, root, 1, usage},
		{[]string{"/", "carol", "/bin/true"}, root, 1, usage},
		{[]string{"/", "12abc", "/bin/true"}, root, 1, usage},
		{[]string{"/", "", "/bin/true"}, root, 1, usage},
	} {
		var o, e bytes.Buffer
		err := run(append([]string{"jail_uml"}, tc.args...), &o, &e, f, tc.euid)
		if code := codeOf(err); code != tc.code || e.String() != tc.stderr || o.Len() != 0 {
			t.Errorf("%q: rc %d stdout %q stderr %q; want rc %d stderr %q", tc.args, code, o.String(), e.String(), tc.code, tc.stderr)
		}
	}
	for _, a := range []string{"--help", "-h", "--version"} {
		var o, e bytes.Buffer
		if err := run([]string{"jail_uml", a}, &o, &e, f, user); err != nil || o.Len() == 0 || e.Len() != 0 {
			t.Errorf("%s: %v %q %q", a, err, o.String(), e.String())
		}
	}
	var o, e bytes.Buffer
	if err := run(nil, &o, &e, f, user); codeOf(err) != 1 {
		t.Errorf("empty argv: %v", err)
	}
}

func codeOf(err error) int { return cli.Code(err) }

// probeC prints the credentials, groups, working directory, arguments and
// one environment variable of the process, and whether the host's
// /etc/passwd is visible (it is not, inside the jail).
const probeC = `
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <limits.h>
int main(int argc, char **argv) {
	gid_t g[256]; int n = getgroups(256, g), i; char cwd[PATH_MAX];
	const char *e = getenv("JAIL_TEST");
	if (!getcwd(cwd, sizeof cwd)) cwd[0] = 0;
	printf("uid=%d euid=%d gid=%d egid=%d groups=", (int)getuid(), (int)geteuid(), (int)getgid(), (int)getegid());
	for (i = 0; i < n; i++) printf("%s%d", i ? "," : "", (int)g[i]);
	printf(" cwd=%s passwd=%s env=%s argv=", cwd, access("/etc/passwd", F_OK) ? "no" : "yes", e ? e : "-");
	for (i = 0; i < argc; i++) printf("%s[%s]", i ? " " : "", argv[i]);
	printf("\n");
	return 3;
}
`

// TestRealJail runs our binary, and Debian's when installed, as root: the
// probe inside a fresh jail directory reports the credentials each tool
// gave it. Both must agree, and match what the user argument means.
func TestRealJail(t *testing.T) {
	testutil.NeedRoot(t)
	probe := testutil.StaticC(t, "jailprobe", probeC)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	b, err := os.ReadFile(probe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "probe"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	ours := testutil.Bin(t, "jail_uml")
	nobody, ok, err := Resolve("nobody", System())
	if !ok || err != nil {
		testutil.Skip(t, "no user nobody in /etc/passwd")
	}
	groups := strings.Trim(strings.ReplaceAll(fmt.Sprint(nobody.Groups), " ", ","), "[]")
	for _, tc := range []struct {
		user, want string
	}{
		{"nobody", fmt.Sprintf("uid=%d euid=%d gid=%d egid=%d groups=%s cwd=/ passwd=no env=kept argv=[/probe] [a b] [--help]\n",
			nobody.UID, nobody.UID, nobody.GID, nobody.GID, groups)},
		{"4321", "uid=4321 euid=4321 gid=99 egid=99 groups=99 cwd=/ passwd=no env=kept argv=[/probe] [a b] [--help]\n"},
		{"0x10e1", "uid=4321 euid=4321 gid=99 egid=99 groups=99 cwd=/ passwd=no env=kept argv=[/probe] [a b] [--help]\n"},
	} {
		for name, bin := range map[string]string{"ours": ours, "debian": cJail} {
			if _, err := os.Stat(bin); err != nil {
				continue
			}
			cmd := exec.Command(bin, dir, tc.user, "/probe", "a b", "--help")
			cmd.Env = append(os.Environ(), "JAIL_TEST=kept")
			r := testutil.RunCmd(t, cmd, 20*time.Second)
			if r.Code != 3 || r.Stdout != tc.want || r.Stderr != "" {
				t.Errorf("%s %s: %+v\nwant stdout %q", name, tc.user, r, tc.want)
			}
		}
	}
	// Failures, with the C tool's messages.
	for _, tc := range []struct {
		args   []string
		stderr string
	}{
		{[]string{filepath.Join(dir, "nonexistent"), "nobody", "/probe"}, "chdir: No such file or directory\n"},
		{[]string{dir, "nobody", "nothere"}, "execve of nothere failed : No such file or directory\n"},
		{[]string{dir, "nobody", "probe"}, "-"}, // relative to the jail's /, like execv
		{[]string{dir, "nobody", "/missing"}, "execve of /missing failed : No such file or directory\n"},
		{[]string{dir, "nobody"}, ""},
	} {
		r := testutil.RunCmd(t, exec.Command(ours, tc.args...), 20*time.Second)
		if tc.stderr == "-" {
			if r.Code != 3 || !strings.Contains(r.Stdout, "argv=[probe]") {
				t.Errorf("ours %q: %+v, want the probe run", tc.args, r)
			}
			continue
		}
		if tc.stderr == "" {
			tc.stderr = usage // ours: usage, the C tool: execve of (null)
		}
		if r.Code != 1 || r.Stderr != tc.stderr || r.Stdout != "" {
			t.Errorf("ours %q: %+v, want rc 1 stderr %q", tc.args, r, tc.stderr)
		}
		if len(tc.args) == 3 {
			if _, err := os.Stat(cJail); err == nil {
				if c := testutil.RunCmd(t, exec.Command(cJail, tc.args...), 20*time.Second); c != r {
					t.Errorf("debian %q: %+v, ours %+v", tc.args, c, r)
				}
			}
		}
	}
}
