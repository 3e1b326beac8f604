package tuntap

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/umltools/umltools/internal/testutil"
	"golang.org/x/sys/unix"
)

func TestValidName(t *testing.T) {
	for _, s := range []string{"tap0", "foo%d", "a-b_c.d", "012345678901234"} {
		if !ValidName(s) {
			t.Errorf("ValidName(%q) = false", s)
		}
	}
	for _, s := range []string{"", ".", "..", "a/b", "a:b", "a b", "a\tb", "a\x00", "0123456789012345"} {
		if ValidName(s) {
			t.Errorf("ValidName(%q) = true", s)
		}
	}
}

func TestStrerror(t *testing.T) {
	cases := map[error]string{
		unix.ENOENT:                      "No such file or directory",
		unix.EBUSY:                       "Device or resource busy",
		&NetlinkError{Errno: unix.EPERM}: "Operation not permitted",
		errors.New("plain"):              "plain",
	}
	for err, want := range cases {
		if got := Strerror(err); got != want {
			t.Errorf("Strerror(%v) = %q, want %q", err, got, want)
		}
	}
}

func TestOpenLongName(t *testing.T) {
	if _, _, err := Open("", "0123456789abcdef"); err == nil {
		t.Fatal("16-byte name accepted")
	}
}

// TestNetlink exercises every ioctl and netlink request in a fresh network
// namespace: a persistent tap with owner and group, its address, state,
// host route, proxy entry and proxy_arp sysctl, then removal.
func TestNetlink(t *testing.T) {
	ns := testutil.NetNS(t)
	err := testutil.InNetNS(t, ns, func() error {
		f, name, err := Open("", "utap%d")
		if err != nil {
			return err
		}
		if name != "utap0" {
			t.Errorf("name %q", name)
		}
		if err := SetPersist(f, true); err != nil {
			return err
		}
		if err := SetOwner(f, 1234); err != nil {
			return err
		}
		if err := SetGroup(f, 99); err != nil {
			return err
		}
		f.Close()
		nl, err := DialNetlink()
		if err != nil {
			return err
		}
		defer nl.Close()
		l, err := nl.LinkByName(name)
		if err != nil {
			return err
		}
		if l.Kind != "tun" || l.Tun == nil || *l.Tun != (TunInfo{Tap: true, Owner: 1234, Group: 99, Persist: true}) || l.Up() {
			t.Errorf("link %+v tun %+v", l, l.Tun)
		}
		if _, err := nl.LinkByName("nosuch0"); !errors.Is(err, unix.ENODEV) {
			t.Errorf("missing link: %v", err)
		}
		p := netip.MustParsePrefix("10.7.0.1/32")
		if err := nl.AddAddr(l.Index, p); err != nil {
			return err
		}
		if err := nl.AddAddr(l.Index, p); !errors.Is(err, unix.EEXIST) {
			t.Errorf("second add: %v", err)
		}
		if err := nl.SetLinkUp(l.Index, true); err != nil {
			return err
		}
		if l, _ = nl.LinkByName(name); !l.Up() {
			t.Error("link not up")
		}
		addrs, err := nl.Addrs()
		if err != nil {
			return err
		}
		if !containsAddr(addrs, Addr{l.Index, p}) {
			t.Errorf("addresses %v lack %v", addrs, p)
		}
		guest := netip.MustParseAddr("10.7.0.2")
		if err := nl.AddHostRoute(guest, l.Index); err != nil {
			return err
		}
		rs, err := nl.Routes()
		if err != nil {
			return err
		}
		if !containsRoute(rs, Route{Dst: netip.PrefixFrom(guest, 32), Oif: l.Index}) {
			t.Errorf("routes %v lack %v", rs, guest)
		}
		if err := nl.AddProxy(guest, l.Index); err != nil {
			return err
		}
		ps, err := nl.Proxies()
		if err != nil {
			return err
		}
		if len(ps) != 1 || ps[0] != (Proxy{l.Index, guest}) {
			t.Errorf("proxies %v", ps)
		}
		if err := SetProxyARP(name, true); err != nil {
			return err
		}
		if b, _ := os.ReadFile("/proc/sys/net/ipv4/conf/" + name + "/proxy_arp"); strings.TrimSpace(string(b)) != "1" {
			t.Errorf("proxy_arp %q", b)
		}
		if err := SetProxyARP("../../x", true); err == nil {
			t.Error("SetProxyARP accepted a path")
		}
		if err := nl.DelProxy(guest, l.Index); err != nil {
			return err
		}
		if err := nl.DelHostRoute(guest, l.Index); err != nil {
			return err
		}
		if err := nl.DelAddr(l.Index, p); err != nil {
			return err
		}
		if ps, _ := nl.Proxies(); len(ps) != 0 {
			t.Errorf("proxies left: %v", ps)
		}
		if err := nl.SetLinkUp(l.Index, false); err != nil {
			return err
		}
		// Non-persistent again: the device goes when this fd closes.
		g, _, err := Open("", name)
		if err != nil {
			return err
		}
		if err := SetPersist(g, false); err != nil {
			return err
		}
		g.Close()
		if _, err := nl.LinkByName(name); !errors.Is(err, unix.ENODEV) {
			t.Errorf("%s still exists: %v", name, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func containsAddr(as []Addr, want Addr) bool {
	for _, a := range as {
		if a == want {
			return true
		}
	}
	return false
}

func containsRoute(rs []Route, want Route) bool {
	for _, r := range rs {
		if r.Dst == want.Dst && r.Oif == want.Oif {
			return true
		}
	}
	return false
}

// FuzzParseAttrs feeds arbitrary bytes to the attribute and link parsers:
// they must never panic, whatever the kernel (or a fuzzer) sends.
func FuzzParseAttrs(f *testing.F) {
	f.Add(attr(attr(nil, unix.IFLA_IFNAME, []byte("tap0\x00")), unix.IFLA_MTU, u32(1500)))
	f.Add([]byte{4, 0, 1, 0, 255, 255, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		parseAttrs(b)
		parseLink(append(make([]byte, unix.SizeofIfInfomsg), b...))
	})
}
