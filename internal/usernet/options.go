package usernet

import (
	"fmt"
	"net/netip"
	"strings"
)

// IsOptions says whether the words after "ethN=slirp,[mac]," configure
// the built-in NAT rather than name a slirp command: no words (the C
// kernel's default command, "slirp"), or words that are all key=value
// with a key Options knows.
func IsOptions(argv []string) bool {
	if len(argv) == 1 && argv[0] == "slirp" {
		return true
	}
	for _, w := range argv {
		k, _, ok := strings.Cut(w, "=")
		if !ok || !optionKeys[k] {
			return false
		}
	}
	return len(argv) > 0
}

var optionKeys = map[string]bool{"hostfwd": true, "resolver": true, "net": true}

// Options reads the built-in NAT's options (IsOptions): hostfwd=<QEMU
// hostfwd> (any number), resolver=<addr>[:port] (the DNS proxy's
// upstream) and net=<IPv4 network>/<bits> (gateway .2, DNS .3, DHCP .15
// of it).
func Options(argv []string) (Config, error) {
	var c Config
	if len(argv) == 1 && argv[0] == "slirp" {
		return c, nil
	}
	for _, w := range argv {
		k, v, _ := strings.Cut(w, "=")
		switch k {
		case "hostfwd":
			f, err := ParseForward(v)
			if err != nil {
				return c, err
			}
			c.Forwards = append(c.Forwards, f)
		case "resolver":
			ap, err := netip.ParseAddrPort(v)
			if err != nil {
				a, err2 := netip.ParseAddr(strings.Trim(v, "[]"))
				if err2 != nil {
					return c, fmt.Errorf("resolver=%s: want an address, with a port or not", v)
				}
				ap = netip.AddrPortFrom(a, 53)
			}
			c.Upstream = ap
		case "net":
			p, err := netip.ParsePrefix(v)
			if err != nil || !p.Addr().Is4() || p.Bits() > 27 {
				return c, fmt.Errorf("net=%s: want an IPv4 network of at least 32 addresses, as 10.0.2.0/24", v)
			}
			p = p.Masked()
			b := p.Addr().As4()
			at := func(i byte) netip.Addr { x := b; x[3] |= i; return netip.AddrFrom4(x) }
			c.Net, c.Gateway, c.DNS, c.Guest = p, at(2), at(3), at(15)
		default:
			return c, fmt.Errorf("unknown option %q", w)
		}
	}
	return c, nil
}

// Banner is the device's boot line after "Netdevice N (mac) : ".
func (n *Net) Banner() string {
	c := n.Config()
	s := fmt.Sprintf("SLIRP backend - built-in user-mode NAT %s: gateway %s (the host's loopback), DNS %s (resolver %s), DHCP %s",
		c.Net, c.Gateway, c.DNS, c.Upstream, c.Guest)
	for _, f := range c.Forwards {
		s += ", hostfwd " + f.String()
	}
	return s
}
