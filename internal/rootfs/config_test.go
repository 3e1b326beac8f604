package rootfs

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		sec  string
		key  string
		want string
	}{
		{"plain", "[global]\nfstype=ext4\n", "global", "fstype", "ext4"},
		{"colon", "[global]\nfstype: ext3\n", "global", "fstype", "ext3"},
		{"spaces", "[global]\n  \nfstype = ext2 \n", "global", "fstype", "ext2"},
		{"inline hash comment", "[global]\nfstype=ext2\t\t# comment\n", "global", "fstype", "ext2"},
		{"inline semicolon comment", "[global]\nfstype=ext2 ; comment\n", "global", "fstype", "ext2"},
		{"hash inside value kept", "[debian]\nmirror=http://x/debian#frag\n", "debian", "mirror", "http://x/debian#frag"},
		{"continuation", "[global]\nmodules=busybox\n  fstab\n\thostname\n", "global", "modules", "busybox\nfstab\nhostname"},
		{"global fallback", "[global]\nPATH=/bin\n[debian]\ndist=sid\n", "debian", "path", "/bin"},
		{"section overrides global", "[global]\ndist=a\n[debian]\ndist=b\n", "debian", "dist", "b"},
		{"interpolation", "[global]\nbase=http://m\n[debian]\nmirror=%(base)s/debian\n", "debian", "mirror", "http://m/debian"},
		{"percent escape", "[global]\nx=100%%\n", "global", "x", "100%"},
		{"unknown interpolation kept", "[global]\nx=%(nope)s\n", "global", "x", "%(nope)s"},
		{"self reference bounded", "[global]\nx=%(x)s\n", "global", "x", strings.Repeat("", 0) + "%(x)s"},
		{"case-insensitive get", "[global]\nInitialSize=10\n", "global", "initialsize", "10"},
		{"later key wins", "[global]\nx=1\nx=2\n", "global", "x", "2"},
		{"crlf and bom", "\ufeff[global]\r\nx=1\r\n", "global", "x", "1"},
		{"comment lines", "# c\n; c\n[global]\n# x=2\nx=1\n", "global", "x", "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader(tt.in), "test.conf")
			if err != nil {
				t.Fatal(err)
			}
			got, ok := c.Get(tt.sec, tt.key)
			if tt.name == "self reference bounded" {
				// Any finite answer is fine; it must not hang or panic.
				if !ok {
					t.Fatal("missing")
				}
				return
			}
			if !ok || got != tt.want {
				t.Fatalf("Get(%s,%s) = %q,%v; want %q", tt.sec, tt.key, got, ok, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in   string
		line int
		msg  string
	}{
		{"x=1\n", 1, "before the first"},
		{"[global\n", 1, "without ']'"},
		{"[]\n", 1, "empty section"},
		{"[global]\njunk\n", 2, "expected key=value"},
		{"[global]\n=1\n", 2, "expected key=value"},
		{"[global]\n  indented\n", 2, "continuation"},
		{"[global] x\n", 1, "unexpected text"},
		{"[global]\na b=1\n", 2, "bad option name"},
	}
	for _, tt := range tests {
		_, err := Parse(strings.NewReader(tt.in), "f.conf")
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("Parse(%q) = %v; want a ParseError", tt.in, err)
			continue
		}
		if pe.Line != tt.line || !strings.Contains(pe.Error(), tt.msg) || !strings.HasPrefix(pe.Error(), "f.conf:") {
			t.Errorf("Parse(%q) = %q (line %d); want line %d containing %q", tt.in, pe, pe.Line, tt.line, tt.msg)
		}
	}
}

// TestSeed004 parses the configuration of seed 004 as its user wrote it
// (tab-separated trailing comments, trailing spaces, a commented key).
func TestSeed004(t *testing.T) {
	c, err := ParseFile("testdata/seed004.conf")
	if err != nil {
		t.Fatal(err)
	}
	want := map[[2]string]string{
		{"global", "fstype"}: "ext2", {"global", "initialsize"}: "150", {"global", "freespace"}: "0",
		{"network", "interface"}: "eth0", {"network", "transport"}: "tuntap", {"network", "host"}: "192.168.10.1",
		{"network", "uml"}: "192.168.10.2", {"network", "netmask"}: "255.255.255.252",
		{"network", "gateway"}: "192.168.10.1", {"network", "nameserver"}: "168.95.1.1",
		{"debian", "dist"}: "bookworm", {"debian", "mirror"}: "http://deb.debian.org/debian",
	}
	for k, v := range want {
		if got, _ := c.Get(k[0], k[1]); got != v {
			t.Errorf("[%s] %s = %q; want %q", k[0], k[1], got, v)
		}
	}
	if _, ok := c.Get("network", "host_if"); ok {
		t.Error("commented host_if was parsed")
	}
	if got := c.Sections(); !reflect.DeepEqual(got, []string{"global", "network", "debian"}) {
		t.Errorf("sections %v", got)
	}
	env := c.Env("network")
	for _, kv := range []string{"fstype=ext2", "uml=192.168.10.2", "nameserver=168.95.1.1"} {
		if !contains(env, kv) {
			t.Errorf("Env(network) lacks %q: %v", kv, env)
		}
	}
	if contains(c.Env("network"), "dist=bookworm") {
		t.Error("[debian] keys leaked into the network module's environment")
	}
}

func TestEnvOverride(t *testing.T) {
	c, err := Parse(strings.NewReader("[global]\nPATH=/bin\nx=g\n[m]\nx=m\ny=%(x)s!\n"), "c")
	if err != nil {
		t.Fatal(err)
	}
	got := c.Env("m")
	want := []string{"PATH=/bin", "x=m", "y=m!"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Env = %v; want %v", got, want)
	}
}

func TestLoadConfigLayers(t *testing.T) {
	d := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(d, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sys := write("sys.conf", "[global]\nfstype=ext2\ninitialsize=100\n[debian]\ndist=sid\n")
	user := write("user.conf", "[global]\nfstype=ext3\n")
	explicit := write("x.conf", "[debian]\ndist=bookworm\n")
	c, err := LoadConfig([]string{sys, filepath.Join(d, "missing.conf"), user}, []string{explicit})
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range [][3]string{{"global", "fstype", "ext3"}, {"global", "initialsize", "100"}, {"debian", "dist", "bookworm"}} {
		if got, _ := c.Get(kv[0], kv[1]); got != kv[2] {
			t.Errorf("[%s] %s = %q; want %q", kv[0], kv[1], got, kv[2])
		}
	}
	if len(c.Files) != 3 {
		t.Errorf("Files = %v", c.Files)
	}
	if _, err := LoadConfig(nil, []string{filepath.Join(d, "missing.conf")}); err == nil || !strings.Contains(err.Error(), "missing.conf") {
		t.Errorf("explicit missing config: %v", err)
	}
	bad := write("bad.conf", "[global\n")
	if _, err := LoadConfig([]string{bad}, nil); err == nil || !strings.Contains(err.Error(), "bad.conf:1") {
		t.Errorf("bad layer: %v", err)
	}
}

func TestDefaultConfigPaths(t *testing.T) {
	env := map[string]string{"HOME": "/home/u"}
	got := DefaultConfigPaths(func(k string) string { return env[k] })
	want := []string{"/etc/rootstrap/rootstrap.conf", "/home/u/.config/rootstrap/rootstrap.conf", "rootstrap.conf"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%v", got)
	}
	env["XDG_CONFIG_HOME"] = "/x"
	if got := DefaultConfigPaths(func(k string) string { return env[k] }); got[1] != "/x/rootstrap/rootstrap.conf" {
		t.Errorf("%v", got)
	}
}

func TestList(t *testing.T) {
	got := List(" a,b\n\tc  d,,")
	if !reflect.DeepEqual(got, []string{"a", "b", "c", "d"}) {
		t.Errorf("%v", got)
	}
}

func TestParseMB(t *testing.T) {
	for in, want := range map[string]int64{"150": 150, "2G": 2048, "64M": 64, " 8 ": 8} {
		if got, err := ParseMB(in); err != nil || got != want {
			t.Errorf("ParseMB(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "0", "-1", "abc", "1.5", "10K", "99999999999999"} {
		if _, err := ParseMB(in); err == nil {
			t.Errorf("ParseMB(%q) succeeded", in)
		}
	}
}

// FuzzParse: any input parses or fails with an error, never panics, and a
// parsed configuration re-parses from its String form to the same values.
func FuzzParse(f *testing.F) {
	seed, _ := os.ReadFile("testdata/seed004.conf")
	f.Add(string(seed))
	f.Add("[global]\nx=1\n  y\n[a]\nb=%(x)s\n")
	f.Add("[g]\nk=%(k)s%(k)s\n")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Parse(strings.NewReader(in), "fuzz")
		if err != nil {
			return
		}
		for _, s := range c.Sections() {
			for _, k := range c.Section(s).Keys() {
				if k == "" {
					t.Fatalf("empty key in [%s]", s)
				}
				c.Get(s, k)
			}
			c.Env(s)
		}
		_ = c.String()
	})
}
