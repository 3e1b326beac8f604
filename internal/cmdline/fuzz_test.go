package cmdline

import (
	"strings"
	"testing"
)

// FuzzParse: no input may panic, and the results keep their invariants.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"ubd0=a,b,c\x00con0=fd:0,fd:1\x00con=null\x00eth0=tuntap,,,1.2.3.4",
		"mem=64M\x00umid=x\x00init=/bin/sh\x00--\x00-c\x00echo hi",
		"vec0:transport=l2tpv3,udp=1,rx_session=0xffffffff\x00eth1=mcast,fe:0:0:0:0:1,1.2.3.4,1,2",
		"ubd0rrrrrrr=x\x00ubdq=1\x00udb\x00con70=null\x00ssl=port:1\x00a=\"b c\"",
		"eth3=slirp,,cmd,a_b\x00eth4=vde,,,,,777\x00eth5=pcap,,,promisc\x00eth6=daemon,,,,x",
		"\"\x00=\x00--help",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		args := strings.Split(in, "\x00")
		c, ws, err := Parse(args)
		if c == nil {
			t.Fatal("nil config")
		}
		_ = ws.Err()
		for _, w := range ws {
			_ = w.String() + w.Level.String()
		}
		if err != nil {
			return
		}
		pc := c.ProcCmdline()
		if strings.Contains(pc, "umid=") && !strings.Contains(strings.Join(args, " "), "umid=") {
			t.Fatalf("umid= invented: %q", pc)
		}
		for i, u := range c.Ubd {
			if u != nil && (u.Unit != i || (u.NoCOW && u.Backing != "")) {
				t.Fatalf("bad ubd %d: %+v", i, u)
			}
			if u != nil {
				_ = u.String() + u.ConfigString() + u.Name()
			}
		}
		for i := range c.Con {
			_ = c.Con[i].String() + c.Con[i].GuestDev()
		}
		for i := range c.Ssl {
			_ = c.Ssl[i].String()
		}
		seen := map[int]bool{}
		for _, e := range c.Eth {
			if seen[e.Unit] {
				t.Fatalf("duplicate eth%d", e.Unit)
			}
			seen[e.Unit] = true
			if e.MAC != nil && (len(e.MAC) != 6 || e.MAC[0]&1 != 0) {
				t.Fatalf("bad MAC accepted: %v", e.MAC)
			}
			_ = e.String()
		}
		for _, v := range c.Vec {
			_ = v.String()
		}
		if len(c.InitArgs) >= MaxInitArgs || len(c.InitEnv) > MaxInitArgs {
			t.Fatalf("too many init words: %d %d", len(c.InitArgs), len(c.InitEnv))
		}
		for _, name := range []string{"ubd0", "ubda", "con0", "ssl63", "eth0", "vec0", "ubdz", "con99"} {
			c.Device(name)
		}
		_ = c.UnknownLine()
	})
}
