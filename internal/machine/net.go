package machine

import (
	"fmt"
	"net"

	"github.com/umltools/umltools/internal/cmdline"
	"github.com/umltools/umltools/internal/netdev"
)

// startNet makes the machine's network stack and its ethN devices, with
// the C kernel's boot lines: "Netdevice N (mac) : <transport line>" for
// each device up, its transport's error for each that cannot open (the
// device is then left out, as the C kernel leaves it unregistered).
func (m *machine) startNet() (*netdev.Stack, error) {
	st, err := netdev.New()
	if err != nil {
		return nil, err
	}
	for _, e := range m.cfg.Eth {
		m.addEth(st, e)
	}
	for _, v := range m.cfg.Vec {
		m.addVec(st, v)
	}
	return st, nil
}

// addVec opens vector device v's transport and adds it to the stack as
// vecN.
func (m *machine) addVec(st *netdev.Stack, v *cmdline.Vec) bool {
	return m.addDevice(st, v.Name(), v.String(), v.MAC,
		func(net.HardwareAddr) (netdev.Frames, string, error) { return netdev.OpenVec(v) },
		func(mac net.HardwareAddr, banner string) string {
			return fmt.Sprintf("%s (%s): %s", v.Name(), mac, banner)
		})
}

// addEth opens device e's transport and adds it to the stack.
func (m *machine) addEth(st *netdev.Stack, e *cmdline.Eth) bool {
	return m.addDevice(st, e.Name(), e.String(), e.MAC,
		func(mac net.HardwareAddr) (netdev.Frames, string, error) { return netdev.Open(e, mac) },
		func(mac net.HardwareAddr, banner string) string {
			return fmt.Sprintf("Netdevice %d (%s) : %s", e.Unit, mac, banner)
		})
}

// addDevice opens a device's transport with open (given its address,
// mac or a random one) and adds it to the stack as name, described by
// desc; it logs line's text, or the error.
func (m *machine) addDevice(st *netdev.Stack, name, desc string, mac net.HardwareAddr,
	open func(net.HardwareAddr) (netdev.Frames, string, error), line func(net.HardwareAddr, string) string) bool {
	if mac == nil {
		mac = netdev.RandomMAC()
	}
	f, banner, err := open(mac)
	if err != nil {
		m.errorf("%s: %v", name, err)
		return false
	}
	if _, err := st.AddDesc(name, mac, f, desc); err != nil {
		f.Close()
		m.errorf("%s: %v", name, err)
		return false
	}
	m.logf("%s", line(mac, banner))
	return true
}
