package cmdline

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// Eth is an eth<N>=<transport>[,…] network device.
type Eth struct {
	// Unit is N; Spec the text after "ethN=".
	Unit int
	Spec string
	// Transport is the transport name: tuntap, ethertap, daemon, mcast,
	// ucast, slip, slirp, vde or pcap.
	Transport string
	// MACText is the MAC field as given ("" when absent); MAC is the
	// accepted address, nil when absent or rejected (the kernel then
	// chooses a random one).
	MACText string
	MAC     net.HardwareAddr

	// Dev is the host device: the tap of tuntap/ethertap ("" for tuntap
	// means "ask uml_net"), the vde switch socket, the pcap interface.
	Dev string
	// Gate is the host-side IP of tuntap, ethertap and slip.
	Gate string
	// SockType and Ctl are the daemon transport's socket type ("unix")
	// and control socket path.
	SockType, Ctl string
	// Addr, Port, TTL: mcast group (defaults 239.192.168.1, 1102, 1).
	// For ucast Addr is the remote address, Port the listen port and
	// RPort the remote port (both default 1102).
	Addr         string
	Port, RPort  int
	TTL          int
	Unicast      bool
	SlirpArgv    []string // slirp command and arguments ('_' became ' ')
	VDEGroup     string
	VDEMode      uint32 // octal on the command line
	VDEDescr     string
	PcapFilter   string
	PcapPromisc  bool
	PcapOptimize bool
}

// Name returns "ethN".
func (e *Eth) Name() string { return fmt.Sprintf("eth%d", e.Unit) }

// String returns the option as given, "ethN=<spec>".
func (e *Eth) String() string { return e.Name() + "=" + e.Spec }

var ethTransports = []string{"tuntap", "ethertap", "daemon", "mcast", "ucast", "slip", "slirp", "vde", "pcap"}

// EthTransports returns the eth transports this parser knows.
func EthTransports() []string { return append([]string(nil), ethTransports...) }

// netPending is a network option accepted on the command line and
// configured later (in the kernel: at the device initcall).
type netPending struct {
	unit int
	spec string
	word string
}

// splitEthUnit is the kernel's eth_parse: "<n>=<spec>".
func splitEthUnit(rest string) (int, string, error) {
	v, n := strtoul(rest, 0)
	if n == 0 {
		return 0, "", errors.New("Bad device number")
	}
	if n >= len(rest) || rest[n] != '=' {
		return 0, "", errors.New("Expected '=' after device number")
	}
	unit := int(int32(uint32(v)))
	if unit < 0 {
		return 0, "", errors.New("Bad device number")
	}
	return unit, rest[n+1:], nil
}

// ethSetup is the kernel's eth_setup on the text after "eth".
func (p *parser) ethSetup(rest string) {
	unit, spec, err := splitEthUnit(rest)
	if err != nil {
		p.warn(Error, "", "eth_setup - Couldn't parse '%s' : %s", rest, err)
		return
	}
	p.ethQueue = append(p.ethQueue, netPending{unit: unit, spec: spec, word: rest})
}

// ParseEthConfig parses the argument of an mconsole `config ethN=<spec>`
// (rest is the text after "eth"). Whether unit N already exists is the
// caller's check ("Device already configured"). Note the C kernel's
// replies: a bad unit gives "ERR <error>" (err -EINVAL), an unknown
// transport "ERR " with an empty text, and a transport that refuses its
// fields still "OK " (the refusal is only logged).
func ParseEthConfig(rest string) (*Eth, []Warning, error) {
	unit, spec, err := splitEthUnit(rest)
	if err != nil {
		return nil, nil, err
	}
	return ParseEth(unit, spec)
}

// ParseEth parses the text after "ethN=" for unit n. Warnings are the
// kernel's messages (MAC problems are warnings: the device still comes up
// with a random address); an error means the device is not created.
func ParseEth(unit int, spec string) (*Eth, []Warning, error) {
	e := &Eth{Unit: unit, Spec: spec}
	name, args, _ := strings.Cut(spec, ",")
	e.Transport = name
	var ws []Warning
	w := func(l Level, f string, a ...any) {
		ws = append(ws, Warning{Level: l, Device: e.Name(), Msg: fmt.Sprintf(f, a...)})
	}
	garbage := func(who, rest string) error {
		return fmt.Errorf("%s - Extra garbage on specification : '%s'", who, rest)
	}
	switch name {
	case "tuntap", "ethertap":
		if rest, more := splitIfSpec(args, &e.Dev, &e.MACText, &e.Gate); more {
			return nil, ws, garbage("tap_setup_common", rest)
		}
		if name == "ethertap" && e.Dev == "" {
			return nil, ws, fmt.Errorf("ethertap_setup : Missing tap device name")
		}
	case "daemon":
		e.SockType, e.Ctl = "unix", DefaultDaemonCtl
		if _, more := splitIfSpec(args, &e.MACText, &e.SockType, &e.Ctl); more {
			w(Warn, "daemon_setup : Ignoring data socket specification")
		}
		if e.SockType != "unix" {
			return nil, ws, fmt.Errorf("daemon_setup : unknown socket type '%s' (only unix is supported)", e.SockType)
		}
	case "mcast":
		e.Addr, e.Port, e.RPort, e.TTL = "239.192.168.1", 1102, 1102, 1
		var port, ttl string
		if rest, more := splitIfSpec(args, &e.MACText, &e.Addr, &port, &ttl); more {
			return nil, ws, garbage("mcast_setup", rest)
		}
		if port != "" {
			v, ok := fullUint(port, 10)
			if !ok {
				return nil, ws, fmt.Errorf("mcast_setup - Bad port : '%s'", port)
			}
			e.Port, e.RPort = int(uint16(v)), int(uint16(v))
		}
		if ttl != "" {
			v, ok := fullUint(ttl, 10)
			if !ok {
				return nil, ws, fmt.Errorf("mcast_setup - Bad ttl : '%s'", ttl)
			}
			e.TTL = int(v & 0xffffffff)
		}
		w(Info, "Configured mcast device: %s:%d-%d", e.Addr, e.Port, e.TTL)
	case "ucast":
		e.Port, e.RPort, e.Unicast = 1102, 1102, true
		var lport, rport string
		if rest, more := splitIfSpec(args, &e.MACText, &e.Addr, &lport, &rport); more {
			return nil, ws, garbage("ucast_setup", rest)
		}
		if lport != "" {
			v, ok := fullUint(lport, 10)
			if !ok {
				return nil, ws, fmt.Errorf("ucast_setup - Bad listen port : '%s'", lport)
			}
			e.Port = int(uint16(v))
		}
		if rport != "" {
			v, ok := fullUint(rport, 10)
			if !ok {
				return nil, ws, fmt.Errorf("ucast_setup - Bad remote port : '%s'", rport)
			}
			e.RPort = int(uint16(v))
		}
		w(Info, "Configured ucast device: :%d -> %s:%d", e.Port, e.Addr, e.RPort)
	case "slip":
		e.Gate = args
	case "slirp":
		e.SlirpArgv = []string{"slirp"}
		rest, more := splitIfSpec(args, &e.MACText)
		if more {
			e.SlirpArgv = nil
			for _, a := range strings.Split(rest, ",") {
				if len(e.SlirpArgv) >= 99 {
					w(Warn, "slirp_setup: truncating slirp arguments")
					break
				}
				e.SlirpArgv = append(e.SlirpArgv, strings.ReplaceAll(a, "_", " "))
			}
		}
	case "vde":
		var port, mode string
		if rest, more := splitIfSpec(args, &e.Dev, &e.MACText, &port, &e.VDEGroup, &mode, &e.VDEDescr); more {
			w(Warn, "vde_setup - Ignoring extra data :'%s'", rest)
		}
		if port != "" {
			v, ok := fullUint(port, 10)
			if !ok {
				return nil, ws, fmt.Errorf("vde_setup - Bad port : '%s'", port)
			}
			e.Port = int(v & 0xffffffff)
		}
		if mode != "" {
			v, ok := fullUint(mode, 8)
			if !ok {
				return nil, ws, fmt.Errorf("vde_setup - Bad mode : '%s'", mode)
			}
			e.VDEMode = uint32(v)
		}
		if e.VDEDescr == "" {
			e.VDEDescr = "UML vde_transport"
		}
		sw := e.Dev
		if sw == "" {
			sw = "(default socket)"
		}
		w(Info, "Configured vde device: %s", sw)
	case "pcap":
		e.Dev, e.PcapPromisc = "eth0", true
		var o1, o2 string
		if rest, more := splitIfSpec(args, &e.Dev, &e.PcapFilter, &o1, &o2, &e.MACText); more {
			return nil, ws, garbage("pcap_setup", rest)
		}
		for _, o := range []string{o1, o2} {
			switch o {
			case "":
			case "promisc":
				e.PcapPromisc = true
			case "nopromisc":
				e.PcapPromisc = false
			case "optimize":
				e.PcapOptimize = true
			case "nooptimize":
				e.PcapOptimize = false
			default:
				return nil, ws, fmt.Errorf("pcap_setup : bad option - '%s'", o)
			}
		}
	default:
		return nil, ws, fmt.Errorf("eth%d: unknown transport '%s' (known: %s)", unit, name, strings.Join(ethTransports, ", "))
	}
	mac, mws := ParseMAC(e.MACText, e.Name())
	e.MAC = mac
	ws = append(ws, mws...)
	return e, ws, nil
}

// ParseMAC parses an Ethernet address the way the kernel's
// setup_etheraddr does (six hex bytes separated by ':'), returning nil
// with the kernel's messages when the address is absent or refused (the
// kernel then picks a random address). A globally administered address is
// accepted with the kernel's three-line warning.
func ParseMAC(s, dev string) (net.HardwareAddr, []Warning) {
	var ws []Warning
	w := func(l Level, f string, a ...any) {
		ws = append(ws, Warning{Level: l, Device: dev, Msg: fmt.Sprintf(f, a...)})
	}
	random := func() (net.HardwareAddr, []Warning) {
		w(Info, "Choosing a random ethernet address for device %s", dev)
		return nil, ws
	}
	if s == "" {
		return random()
	}
	addr := make(net.HardwareAddr, 6)
	str := s
	for i := 0; i < 6; i++ {
		v, n := strtoul(str, 16)
		if n == 0 || (n < len(str) && str[n] != ':' && str[n] != ',') {
			w(Error, "setup_etheraddr: failed to parse '%s' as an ethernet address", s)
			return random()
		}
		if n == len(str) && i < 5 {
			// The C code reads past the end of the string here; refuse.
			w(Error, "setup_etheraddr: failed to parse '%s' as an ethernet address", s)
			return random()
		}
		addr[i] = byte(v)
		if n < len(str) {
			str = str[n+1:]
		} else {
			str = ""
		}
	}
	if addr[0]&1 != 0 {
		w(Error, "Attempt to assign a multicast ethernet address to a device disallowed")
		return random()
	}
	if addr[0]|addr[1]|addr[2]|addr[3]|addr[4]|addr[5] == 0 {
		w(Error, "Attempt to assign an invalid ethernet address to a device disallowed")
		return random()
	}
	if addr[0]&2 == 0 {
		w(Warn, "Warning: Assigning a globally valid ethernet address to a device\nYou should set the 2nd rightmost bit in the first byte of the MAC,\ni.e. %02x:%02x:%02x:%02x:%02x:%02x",
			addr[0]|2, addr[1], addr[2], addr[3], addr[4], addr[5])
	}
	return addr, ws
}

func (p *parser) setupEth() {
	p.setupNet(p.ethQueue, "eth", "eth_setup", func(q netPending) ([]Warning, error) {
		e, ws, err := ParseEth(q.unit, q.spec)
		if err == nil {
			p.c.Eth = append(p.c.Eth, e)
		}
		return ws, err
	})
}

// setupNet configures queued network devices in order; a unit given twice
// keeps its first configuration (the C kernel fails to register the
// second device under the same name).
func (p *parser) setupNet(queue []netPending, kind, who string, configure func(netPending) ([]Warning, error)) {
	seen := map[int]bool{}
	for _, q := range queue {
		dev := fmt.Sprintf("%s%d", kind, q.unit)
		if seen[q.unit] {
			p.warn(Error, dev, "%s - Couldn't parse '%s' : %s", who, q.word, "Device already configured")
			continue
		}
		ws, err := configure(q)
		p.ws = append(p.ws, ws...)
		if err != nil {
			p.warn(Error, dev, "%s", err)
			continue
		}
		seen[q.unit] = true
	}
}

// Vec is a vec<N>:transport=<t>,<key>=<value>,… vector network device.
type Vec struct {
	Unit int
	// Spec is the text after "vecN:".
	Spec      string
	Transport string
	// Options holds every key=value in order (transport included).
	Options []Option
	// MAC is the mac= option when accepted (nil: random).
	MAC net.HardwareAddr
}

// Option is one key=value of a vector device.
type Option struct{ Key, Value string }

// Name returns "vecN".
func (v *Vec) Name() string { return fmt.Sprintf("vec%d", v.Unit) }

// String returns the option as given, "vecN:<spec>".
func (v *Vec) String() string { return v.Name() + ":" + v.Spec }

// Get returns the value of the first option named key.
func (v *Vec) Get(key string) (string, bool) {
	for _, o := range v.Options {
		if o.Key == key {
			return o.Value, true
		}
	}
	return "", false
}

var vecTransports = []string{"tap", "raw", "hybrid", "gre", "l2tpv3", "bess", "fd"}

// VecTransports returns the vector transports of the 6.1 kernel.
func VecTransports() []string { return append([]string(nil), vecTransports...) }

// vecNumeric are the options whose values the kernel reads as numbers.
var vecNumeric = map[string]bool{
	"depth": true, "gro": true, "mtu": true, "headroom": true, "vec": true, "v6": true,
	"udp": true, "srcport": true, "dstport": true, "rx_key": true, "tx_key": true,
	"sequence": true, "pin_sequence": true, "rx_session": true, "tx_session": true,
	"rx_cookie": true, "tx_cookie": true, "cookie64": true, "counter": true,
	"pin_counter": true, "bpfflash": true, "fd": true,
}

// splitVecUnit is the kernel's vector_parse: "<n>:<spec>". On error it
// also returns the text the kernel shows (cut at the ':').
func splitVecUnit(rest string) (int, string, string, error) {
	i := strings.IndexByte(rest, ':')
	if i < 0 {
		return 0, "", rest, errors.New("Expected ':' after device number")
	}
	num := rest[:i]
	v, ok := fullUint(strings.TrimPrefix(num, "+"), 0)
	if !ok || v > 0xffffffff || len(num) > 12 {
		return 0, "", num, errors.New("Bad device number")
	}
	return int(v), rest[i+1:], "", nil
}

// vecSetup is the kernel's vector_setup on the text after "vec".
func (p *parser) vecSetup(rest string) {
	unit, spec, shown, err := splitVecUnit(rest)
	if err != nil {
		p.warn(Error, "", "vector_setup - Couldn't parse '%s' : %s", shown, err)
		return
	}
	p.vecQueue = append(p.vecQueue, netPending{unit: unit, spec: spec, word: rest})
}

// ParseVecConfig parses the argument of an mconsole `config vecN:<spec>`
// (rest is the text after "vec").
func ParseVecConfig(rest string) (*Vec, []Warning, error) {
	unit, spec, _, err := splitVecUnit(rest)
	if err != nil {
		return nil, nil, err
	}
	return ParseVec(unit, spec)
}

// ParseVec parses the text after "vecN:" for unit n.
func ParseVec(unit int, spec string) (*Vec, []Warning, error) {
	v := &Vec{Unit: unit, Spec: spec}
	var ws []Warning
	// The kernel's uml_parse_vector_ifspec: tokens split at ',' and the
	// first '='; a second '=' in one item is an error.
	if spec != "" {
		for _, item := range strings.Split(spec, ",") {
			k, val, _ := strings.Cut(item, "=")
			if strings.Contains(val, "=") {
				return nil, ws, fmt.Errorf("vector_setup - Couldn't parse '%s'", spec)
			}
			if k == "" && val == "" {
				continue
			}
			v.Options = append(v.Options, Option{k, val})
		}
	}
	t, ok := v.Get("transport")
	if !ok || t == "" {
		return nil, ws, fmt.Errorf("missing transport for unit %d", unit)
	}
	v.Transport = t
	known := false
	for _, k := range vecTransports {
		known = known || k == t
	}
	if !known {
		return nil, ws, fmt.Errorf("vec%d: unknown transport '%s' (known: %s)", unit, t, strings.Join(vecTransports, ", "))
	}
	for _, o := range v.Options {
		if vecNumeric[o.Key] {
			if _, ok := fullUint(o.Value, 0); !ok {
				return nil, ws, fmt.Errorf("vec%d: option %s=%s is not a number", unit, o.Key, o.Value)
			}
		}
	}
	mac, _ := v.Get("mac")
	var mws []Warning
	v.MAC, mws = ParseMAC(mac, v.Name())
	ws = append(ws, mws...)
	return v, ws, nil
}

func (p *parser) setupVec() {
	p.setupNet(p.vecQueue, "vec", "vector_setup", func(q netPending) ([]Warning, error) {
		v, ws, err := ParseVec(q.unit, q.spec)
		if err == nil {
			p.c.Vec = append(p.c.Vec, v)
		}
		return ws, err
	})
}
