package cmdline

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// seedExamples are the kernel command lines and options quoted in the
// project's seed documents (/work/shared/seeds). Each must parse; the
// ones the real kernel refuses carry the kernel's message. "text" is the
// example as printed in the seed (checked against the file when the seeds
// are present); "args" is what is parsed (shell variables and the docs'
// vecX placeholders filled in).
var seedExamples = []struct {
	file   string
	text   string
	args   string
	errors []string // Error-level messages the C kernel prints for it
	check  func(t *testing.T, c *Config)
}{
	{file: "000", text: "./linux ubda=rootfs.img umid=debian mem=512M", check: func(t *testing.T, c *Config) {
		if c.Ubd[0] == nil || c.Ubd[0].File != "rootfs.img" || c.Umid != "debian" || c.Mem != 512<<20 {
			t.Errorf("%+v %q %d", c.Ubd[0], c.Umid, c.Mem)
		}
	}},
	{file: "000", text: "./linux ubda=rootfs.img umid=debian mem=512M eth0=tuntap,,,192.168.200.100", check: func(t *testing.T, c *Config) {
		if len(c.Eth) != 1 || c.Eth[0].Transport != "tuntap" || c.Eth[0].Dev != "" || c.Eth[0].Gate != "192.168.200.100" {
			t.Errorf("%+v", c.Eth)
		}
	}},
	{file: "000", text: "./linux ubda=rootfs.img umid=debian mem=512M eth0=tuntap,tap0", check: func(t *testing.T, c *Config) {
		if len(c.Eth) != 1 || c.Eth[0].Dev != "tap0" {
			t.Errorf("%+v", c.Eth)
		}
	}},
	{file: "000", text: "./linux ubda=rootfs.img umid=debian mem=512M eth0=mcast,52:54:00:12:34:58,230.0.0.1,1234", check: func(t *testing.T, c *Config) {
		if len(c.Eth) != 1 || c.Eth[0].MAC.String() != "52:54:00:12:34:58" || c.Eth[0].Addr != "230.0.0.1" || c.Eth[0].Port != 1234 || c.Eth[0].TTL != 1 {
			t.Errorf("%+v", c.Eth)
		}
	}},
	{file: "000", text: "./linux ubda=rootfs.img umid=debian mem=512M eth0=pcap,wlp2s0", check: func(t *testing.T, c *Config) {
		if len(c.Eth) != 1 || c.Eth[0].Transport != "pcap" || c.Eth[0].Dev != "wlp2s0" || !c.Eth[0].PcapPromisc {
			t.Errorf("%+v", c.Eth)
		}
	}},
	{file: "000", text: "./linux ubda=rootfs.img umid=debian mem=512M vec0:transport=tap,ifname=tap0,depth=128,gro=1", check: func(t *testing.T, c *Config) {
		if len(c.Vec) != 1 || c.Vec[0].Transport != "tap" {
			t.Errorf("%+v", c.Vec)
		}
		if v, _ := c.Vec[0].Get("ifname"); v != "tap0" {
			t.Errorf("ifname %q", v)
		}
	}},
	{file: "000", text: "./linux ubda=rootfs.img umid=debian mem=512M vec0:transport=raw,ifname=p-veth0,depth=128,gro=1"},
	{file: "001", text: "vecX:transport=tap,ifname=tap0,depth=128,gro=1", args: "vec0:transport=tap,ifname=tap0,depth=128,gro=1"},
	{file: "001", text: "vecX:transport=hybrid,ifname=tap0,depth=128,gro=1", args: "vec0:transport=hybrid,ifname=tap0,depth=128,gro=1"},
	{file: "001", text: "vecX:transport=raw,ifname=p-veth0,depth=128,gro=1", args: "vec0:transport=raw,ifname=p-veth0,depth=128,gro=1"},
	{file: "001", text: "vec0:transport=raw,ifname=p-veth0,depth=128,gro=1"},
	{file: "001", text: "vecX:transport=gre,src=$src_host,dst=$dst_host", args: "vec1:transport=gre,src=192.168.128.1,dst=192.168.129.1"},
	{file: "001", text: "vec0:transport=l2tpv3,udp=1,src=$src_host,dst=$dst_host,srcport=$src_port,dstport=$dst_port,depth=128,rx_session=0xffffffff,tx_session=0xffff",
		args: "vec0:transport=l2tpv3,udp=1,src=127.0.0.1,dst=127.0.0.1,srcport=1706,dstport=1707,depth=128,rx_session=0xffffffff,tx_session=0xffff"},
	{file: "001", text: "vecX:transport=bess,src=$unix_src,dst=$unix_dst", args: "vec2:transport=bess,src=/tmp/a,dst=/tmp/b"},
	{file: "001", text: "ubd0=Filesystem.cow,Filesystem.img", check: func(t *testing.T, c *Config) {
		if c.Ubd[0].File != "Filesystem.cow" || c.Ubd[0].Backing != "Filesystem.img" {
			t.Errorf("%+v", c.Ubd[0])
		}
	}},
	{file: "001", text: "con1=fd:0,fd:1"},
	{file: "001", text: "con=null", check: func(t *testing.T, c *Config) {
		if c.Con[0].In.Type != ChanNull || c.Con[7].In.Type != ChanNull {
			t.Errorf("%+v", c.Con[0])
		}
	}},
	{file: "001", text: "con1=port:4321", check: func(t *testing.T, c *Config) {
		if c.Con[1].In.Port != 4321 {
			t.Errorf("%+v", c.Con[1])
		}
	}},
	// The doc's tty example lacks the "tty:" prefix; the kernel refuses it.
	{file: "001", text: "con1=/dev/tty8", errors: []string{"setup_one_line failed for device 1 : failed to parse channel pair"}},
	{file: "001", text: "linux mem=2048M umid=TEST \\\nubd0=Filesystem.img \\\nvec0:transport=tap,ifname=tap0,depth=128,gro=1 \\\nroot=/dev/ubda con=null con0=null,fd:2 con1=fd:0,fd:1", check: func(t *testing.T, c *Config) {
		if c.Mem != 2048<<20 || c.Umid != "TEST" || c.Root != "/dev/ubda" || c.Con[0].Out.FD != 2 || c.Con[1].In.FD != 0 || c.Con[2].In.Type != ChanNull || len(c.Vec) != 1 {
			t.Errorf("%+v", c)
		}
	}},
	{file: "001", text: "config ubd3=/home/jdike/incoming/roots/root_fs_debian22", args: "ubd3=/home/jdike/incoming/roots/root_fs_debian22"},
	{file: "001", text: "ubd0=root_fs_cow,root_fs_debian_22"},
	{file: "001", text: "ubd0=/path/to/uml/root/directory"},
	{file: "003", text: "ssl=pty ssl0=tty:/dev/tty0 ssl1=tty:/dev/tty1", check: func(t *testing.T, c *Config) {
		if c.Ssl[0].In.Dev != "/dev/tty0" || c.Ssl[1].In.Dev != "/dev/tty1" || c.Ssl[2].In.Type != ChanPty {
			t.Errorf("%+v %+v", c.Ssl[0], c.Ssl[2])
		}
	}},
	{file: "003", text: "con1=tty:/dev/tty3"},
	{file: "003", text: "con1=port:9000"},
	{file: "003", text: "ssl=port:9000"},
	{file: "003", text: "con0=fd:0,fd:1 con=pts", check: func(t *testing.T, c *Config) {
		if c.Con[0].In.Type != ChanFD || c.Con[1].In.Type != ChanPts {
			t.Errorf("%+v %+v", c.Con[0], c.Con[1])
		}
	}},
	{file: "003", text: "ssl3=tty:/dev/tty2,xterm", check: func(t *testing.T, c *Config) {
		if c.Ssl[3].In.Type != ChanTTY || c.Ssl[3].Out.Type != ChanXterm {
			t.Errorf("%+v", c.Ssl[3])
		}
	}},
	{file: "003", text: "con=pty con0=fd:0,fd:1"},
	{file: "003", text: "con1=tty:/dev/tty6"},
	{file: "003", text: "ssl1=pty"},
	{file: "003", text: "ssl1=tty:/dev/ttyp1"},
	{file: "003", text: "eth0=ethertap,tap0,fe:fd:0:0:0:1,192.168.0.254", check: func(t *testing.T, c *Config) {
		if len(c.Eth) != 1 || c.Eth[0].Dev != "tap0" || c.Eth[0].MAC.String() != "fe:fd:00:00:00:01" || c.Eth[0].Gate != "192.168.0.254" {
			t.Errorf("%+v", c.Eth)
		}
	}},
	{file: "004", text: "linux eth0=tuntap,,,192.168.10.1 ubd0=root_fs"},
	{file: "004", text: "linux eth0=tuntap,,,192.168.10.1 ubd0=root_fs con1=pts con2=pts con3=pts con4=pts con5=pts con6=pts", check: func(t *testing.T, c *Config) {
		for i := 1; i <= 6; i++ {
			if c.Con[i].In.Type != ChanPts {
				t.Errorf("con%d: %+v", i, c.Con[i])
			}
		}
		if c.Con[7].In.Type != ChanNull {
			t.Errorf("con7 default: %+v", c.Con[7])
		}
	}},
	{file: "004", text: "linux eth0=tuntap,,,192.168.10.1 ubd0=root_fs con1=pts con2=pts con3=pts \ncon4=pts con5=pts con6=pts umid=woody", check: func(t *testing.T, c *Config) {
		if c.Umid != "woody" {
			t.Errorf("umid %q", c.Umid)
		}
	}},
	{file: "004", text: "linux eth0=tuntap,,,192.168.10.1 ubd0=root_fs-1-cow,root_fs con1=pts con2=pts con3=pts \ncon4=pts con5=pts con6=pts umid=root_fs-1", check: func(t *testing.T, c *Config) {
		if c.Ubd[0].File != "root_fs-1-cow" || c.Ubd[0].Backing != "root_fs" || c.Umid != "root_fs-1" {
			t.Errorf("%+v %q", c.Ubd[0], c.Umid)
		}
	}},
	{file: "004", text: "linux eth0=tuntap,,,192.168.10.1 ubd0=root_fs-2-cow con1=pts con2=pts con3=pts \ncon4=pts con5=pts con6=pts umid=root_fs-2"},
	{file: "004", text: "config ubd1=root_fs_data", args: "ubd1=root_fs_data"},
	{file: "004", text: "eth0=slirp", check: func(t *testing.T, c *Config) {
		if len(c.Eth) != 1 || !reflect.DeepEqual(c.Eth[0].SlirpArgv, []string{"slirp"}) {
			t.Errorf("%+v", c.Eth)
		}
	}},
	{file: "004", text: "eth0=tuntap,,,192.168.1.201"},
	{file: "004", text: "eth0=daemon,,unix,/tmp/switch1", check: func(t *testing.T, c *Config) {
		if len(c.Eth) != 1 || c.Eth[0].Ctl != "/tmp/switch1" || c.Eth[0].SockType != "unix" {
			t.Errorf("%+v", c.Eth)
		}
	}},
}

// seedArgs turns a seed example into argv: the program name, "sudo",
// "./linux"/"linux" and the mconsole "config" verb are dropped, and
// backslash-newline continuations joined.
func seedArgs(text string) []string {
	var out []string
	for _, f := range strings.Fields(strings.ReplaceAll(text, "\\\n", " ")) {
		switch f {
		case "sudo", "./linux", "linux", "config", "\\":
			continue
		}
		out = append(out, f)
	}
	return out
}

func TestSeedExamples(t *testing.T) {
	seedDir := "/work/shared/seeds"
	files, _ := filepath.Glob(filepath.Join(seedDir, "*.txt"))
	for _, ex := range seedExamples {
		args := seedArgs(ex.text)
		if ex.args != "" {
			args = strings.Fields(ex.args)
		}
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			// The example must really be in its seed document.
			for _, f := range files {
				if strings.HasPrefix(filepath.Base(f), ex.file+"_") {
					b, err := os.ReadFile(f)
					if err != nil {
						t.Fatal(err)
					}
					if !strings.Contains(string(b), ex.text) {
						t.Errorf("example %q not found in %s", ex.text, f)
					}
				}
			}
			c, ws, err := Parse(args)
			if err != nil {
				t.Fatal(err)
			}
			if got := msgs(ws, Error); !reflect.DeepEqual(got, ex.errors) {
				t.Errorf("errors: got %q, want %q", got, ex.errors)
			}
			if len(c.InitArgs) != 0 {
				t.Errorf("words leaked to init argv: %q", c.InitArgs)
			}
			if ex.check != nil {
				ex.check(t, c)
			}
		})
	}
}
