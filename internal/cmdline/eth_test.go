package cmdline

import (
	"net"
	"reflect"
	"strings"
	"testing"
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

const randomMsg = "Choosing a random ethernet address for device eth0"

func TestEth(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want *Eth // nil: refused
		msgs []string
	}{
		{"tuntap,,,192.168.200.100", &Eth{Transport: "tuntap", Gate: "192.168.200.100"}, []string{randomMsg}},
		{"tuntap,tap0", &Eth{Transport: "tuntap", Dev: "tap0"}, []string{randomMsg}},
		{"tuntap", &Eth{Transport: "tuntap"}, []string{randomMsg}},
		{"tuntap,tap0,fe:fd:0:0:0:1,10.0.0.1", &Eth{Transport: "tuntap", Dev: "tap0", MACText: "fe:fd:0:0:0:1", MAC: mac("fe:fd:00:00:00:01"), Gate: "10.0.0.1"}, nil},
		{"tuntap,tap0,,,x", nil, []string{"tap_setup_common - Extra garbage on specification : 'x'"}},
		{"tuntap,a,b,c,", nil, []string{"tap_setup_common - Extra garbage on specification : ''"}},
		{"ethertap,tap0,fe:fd:0:0:0:1,192.168.0.254", &Eth{Transport: "ethertap", Dev: "tap0", MACText: "fe:fd:0:0:0:1", MAC: mac("fe:fd:00:00:00:01"), Gate: "192.168.0.254"}, nil},
		{"ethertap", nil, []string{"ethertap_setup : Missing tap device name"}},
		{"daemon", &Eth{Transport: "daemon", SockType: "unix", Ctl: DefaultDaemonCtl}, []string{randomMsg}},
		{"daemon,,unix,/tmp/switch1", &Eth{Transport: "daemon", SockType: "unix", Ctl: "/tmp/switch1"}, []string{randomMsg}},
		{"daemon,,,/s,/data", &Eth{Transport: "daemon", SockType: "unix", Ctl: "/s"}, []string{"daemon_setup : Ignoring data socket specification", randomMsg}},
		{"daemon,,inet", nil, []string{"daemon_setup : unknown socket type 'inet' (only unix is supported)"}},
		{"mcast", &Eth{Transport: "mcast", Addr: "239.192.168.1", Port: 1102, RPort: 1102, TTL: 1}, []string{"Configured mcast device: 239.192.168.1:1102-1", randomMsg}},
		{"mcast,52:54:00:12:34:58,230.0.0.1,1234", &Eth{Transport: "mcast", MACText: "52:54:00:12:34:58", MAC: mac("52:54:00:12:34:58"), Addr: "230.0.0.1", Port: 1234, RPort: 1234, TTL: 1}, []string{"Configured mcast device: 230.0.0.1:1234-1"}},
		{"mcast,fe:00:00:00:00:01,1.2.3.4,99,3", &Eth{Transport: "mcast", MACText: "fe:00:00:00:00:01", MAC: mac("fe:00:00:00:00:01"), Addr: "1.2.3.4", Port: 99, RPort: 99, TTL: 3}, []string{"Configured mcast device: 1.2.3.4:99-3"}},
		{"mcast,,,,,,garbage", nil, []string{"mcast_setup - Extra garbage on specification : ',garbage'"}},
		{"mcast,,,x", nil, []string{"mcast_setup - Bad port : 'x'"}},
		{"mcast,,,1,1x", nil, []string{"mcast_setup - Bad ttl : '1x'"}},
		{"ucast", &Eth{Transport: "ucast", Port: 1102, RPort: 1102, Unicast: true}, []string{"Configured ucast device: :1102 -> :1102", randomMsg}},
		{"ucast,,10.0.0.2,2000,3000", &Eth{Transport: "ucast", Addr: "10.0.0.2", Port: 2000, RPort: 3000, Unicast: true}, []string{"Configured ucast device: :2000 -> 10.0.0.2:3000", randomMsg}},
		{"ucast,,a,p", nil, []string{"ucast_setup - Bad listen port : 'p'"}},
		{"ucast,,a,1,r", nil, []string{"ucast_setup - Bad remote port : 'r'"}},
		{"ucast,,a,1,2,3", nil, []string{"ucast_setup - Extra garbage on specification : '3'"}},
		{"slip", &Eth{Transport: "slip"}, []string{randomMsg}},
		{"slip,192.168.0.1", &Eth{Transport: "slip", Gate: "192.168.0.1"}, []string{randomMsg}},
		{"slirp", &Eth{Transport: "slirp", SlirpArgv: []string{"slirp"}}, []string{randomMsg}},
		{"slirp,,/usr/bin/slirp,-P,tty_mode", &Eth{Transport: "slirp", SlirpArgv: []string{"/usr/bin/slirp", "-P", "tty mode"}}, []string{randomMsg}},
		{"vde", &Eth{Transport: "vde", VDEDescr: "UML vde_transport"}, []string{"Configured vde device: (default socket)", randomMsg}},
		{"vde,/tmp/sw,,3,grp,0770,me", &Eth{Transport: "vde", Dev: "/tmp/sw", Port: 3, VDEGroup: "grp", VDEMode: 0o770, VDEDescr: "me"}, []string{"Configured vde device: /tmp/sw", randomMsg}},
		{"vde,,,,,9", nil, []string{"vde_setup - Bad mode : '9'"}},
		{"vde,,,p", nil, []string{"vde_setup - Bad port : 'p'"}},
		{"pcap,wlp2s0", &Eth{Transport: "pcap", Dev: "wlp2s0", PcapPromisc: true}, []string{randomMsg}},
		{"pcap,,tcp,nopromisc,optimize", &Eth{Transport: "pcap", Dev: "eth0", PcapFilter: "tcp", PcapOptimize: true}, []string{randomMsg}},
		{"pcap,,,bad", nil, []string{"pcap_setup : bad option - 'bad'"}},
		{"foo", nil, []string{"eth0: unknown transport 'foo' (known: tuntap, ethertap, daemon, mcast, ucast, slip, slirp, vde, pcap)"}},
		{"tuntapx,a", nil, []string{"eth0: unknown transport 'tuntapx' (known: tuntap, ethertap, daemon, mcast, ucast, slip, slirp, vde, pcap)"}},
		// MAC rules: refused addresses fall back to a random one.
		{"tuntap,tap0,01:00:00:00:00:00", &Eth{Transport: "tuntap", Dev: "tap0", MACText: "01:00:00:00:00:00"}, []string{"Attempt to assign a multicast ethernet address to a device disallowed", randomMsg}},
		{"tuntap,tap1,zz", &Eth{Transport: "tuntap", Dev: "tap1", MACText: "zz"}, []string{"setup_etheraddr: failed to parse 'zz' as an ethernet address", randomMsg}},
		{"tuntap,tap1,0:0:0:0:0:0", &Eth{Transport: "tuntap", Dev: "tap1", MACText: "0:0:0:0:0:0"}, []string{"Attempt to assign an invalid ethernet address to a device disallowed", randomMsg}},
		{"tuntap,tap1,fe:fd:0:0:1", &Eth{Transport: "tuntap", Dev: "tap1", MACText: "fe:fd:0:0:1"}, []string{"setup_etheraddr: failed to parse 'fe:fd:0:0:1' as an ethernet address", randomMsg}},
		{"mcast,00:11:22:33:44:55", &Eth{Transport: "mcast", MACText: "00:11:22:33:44:55", MAC: mac("00:11:22:33:44:55"), Addr: "239.192.168.1", Port: 1102, RPort: 1102, TTL: 1},
			[]string{"Configured mcast device: 239.192.168.1:1102-1", "Warning: Assigning a globally valid ethernet address to a device\nYou should set the 2nd rightmost bit in the first byte of the MAC,\ni.e. 02:11:22:33:44:55"}},
	} {
		c, ws, err := Parse([]string{"eth0=" + tc.spec})
		if err != nil {
			t.Fatal(err)
		}
		var got *Eth
		if len(c.Eth) == 1 {
			got = c.Eth[0]
		}
		if tc.want != nil {
			tc.want.Spec = tc.spec
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.spec, got, tc.want)
		}
		var gotMsgs []string
		for _, w := range ws {
			gotMsgs = append(gotMsgs, w.Msg)
		}
		if !reflect.DeepEqual(gotMsgs, tc.msgs) {
			t.Errorf("%s: messages\n got %q\nwant %q", tc.spec, gotMsgs, tc.msgs)
		}
	}
}

func TestEthWords(t *testing.T) {
	for _, tc := range []struct{ word, msg string }{
		{"eth0", "eth_setup - Couldn't parse '0' : Expected '=' after device number"},
		{"ethernet", "eth_setup - Couldn't parse 'ernet' : Bad device number"},
		{"eth", "eth_setup - Couldn't parse '' : Bad device number"},
		{"vector", "vector_setup - Couldn't parse 'tor' : Expected ':' after device number"},
		{"vec", "vector_setup - Couldn't parse '' : Expected ':' after device number"},
		{"vec1transport=tap", "vector_setup - Couldn't parse '1transport=tap' : Expected ':' after device number"},
		{"vecx:transport=tap", "vector_setup - Couldn't parse 'x' : Bad device number"},
		{"vec0:depth=1", "missing transport for unit 0"},
		{"vec0:transport=tap,a=b=c", "vector_setup - Couldn't parse 'transport=tap,a=b=c'"},
		{"vec0:transport=foo", "vec0: unknown transport 'foo' (known: tap, raw, hybrid, gre, l2tpv3, bess, fd)"},
		{"vec0:transport=tap,depth=lots", "vec0: option depth=lots is not a number"},
	} {
		c, ws, _ := Parse([]string{tc.word})
		if got := msgs(ws, Error); !reflect.DeepEqual(got, []string{tc.msg}) {
			t.Errorf("%s: got %q, want %q", tc.word, got, tc.msg)
		}
		if len(c.Eth)+len(c.Vec) != 0 || len(c.InitArgs) != 0 {
			t.Errorf("%s: device created or word passed to init", tc.word)
		}
	}
	// Duplicates: the first one wins (the C kernel fails to register the
	// second).
	c, ws, _ := Parse([]string{"eth0=mcast", "eth0=slip", "eth1=tuntap,tap1", "vec0:transport=tap,ifname=a", "vec0:transport=raw"})
	if len(c.Eth) != 2 || c.Eth[0].Transport != "mcast" || c.Eth[1].Dev != "tap1" || len(c.Vec) != 1 || c.Vec[0].Transport != "tap" {
		t.Errorf("duplicates: %+v %+v", c.Eth, c.Vec)
	}
	for _, m := range []string{"eth_setup - Couldn't parse '0=slip' : Device already configured", "vector_setup - Couldn't parse '0:transport=raw' : Device already configured"} {
		if !hasMsg(ws, m) {
			t.Errorf("missing %q in %q", m, ws)
		}
	}
	if c.Eth[1].String() != "eth1=tuntap,tap1" || c.Vec[0].String() != "vec0:transport=tap,ifname=a" {
		t.Errorf("String: %s %s", c.Eth[1], c.Vec[0])
	}
}

func TestVec(t *testing.T) {
	c, ws, err := Parse([]string{"vec0:transport=l2tpv3,udp=1,src=192.168.128.1,dst=192.168.129.1,srcport=1706,dstport=1707,depth=128,rx_session=0xffffffff,tx_session=0xffff,mac=fe:fd:00:00:00:02"})
	if err != nil || len(msgs(ws, Error)) != 0 || len(c.Vec) != 1 {
		t.Fatalf("%v %q %+v", err, ws, c.Vec)
	}
	v := c.Vec[0]
	if v.Transport != "l2tpv3" || v.MAC.String() != "fe:fd:00:00:00:02" || len(v.Options) != 10 {
		t.Errorf("%+v", v)
	}
	if s, ok := v.Get("rx_session"); !ok || s != "0xffffffff" {
		t.Errorf("rx_session = %q", s)
	}
	if _, ok := v.Get("nope"); ok {
		t.Error("Get of a missing key")
	}
	c, _, _ = Parse([]string{"vec0x2:transport=tap,ifname=tap0"})
	if len(c.Vec) != 1 || c.Vec[0].Unit != 2 || c.Vec[0].Name() != "vec2" {
		t.Errorf("hex unit: %+v", c.Vec)
	}
}

func TestParseMAC(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"fe:fd:0:0:0:1", "fe:fd:00:00:00:01"},
		{"FE:FD:0A:0B:0C:0D", "fe:fd:0a:0b:0c:0d"},
		{"fe:fd:0:0:0:1:7", "fe:fd:00:00:00:01"},
		{"0xfe:0:0:0:0:1", "fe:00:00:00:00:01"},
		{"fe-fd-0-0-0-1", ""},
		{"", ""},
	} {
		m, _ := ParseMAC(tc.in, "eth0")
		got := ""
		if m != nil {
			got = m.String()
		}
		if got != tc.want {
			t.Errorf("ParseMAC(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if s := strings.Join(EthTransports(), ","); !strings.Contains(s, "pcap") {
		t.Error(s)
	}
}
