package machine

import (
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
	mac := v.MAC
	if mac == nil {
		mac = netdev.RandomMAC()
	}
	f, banner, err := netdev.OpenVec(v)
	if err != nil {
		m.errorf("%s: %v", v.Name(), err)
		return false
	}
	if _, err := st.AddDesc(v.Name(), mac, f, v.String()); err != nil {
		f.Close()
		m.errorf("%s: %v", v.Name(), err)
		return false
	}
	m.logf("%s (%s): %s", v.Name(), mac, banner)
	return true
}

// addEth opens device e's transport and adds it to the stack.
func (m *machine) addEth(st *netdev.Stack, e *cmdline.Eth) bool {
	mac := e.MAC
	if mac == nil {
		mac = netdev.RandomMAC()
	}
	f, banner, err := netdev.Open(e, mac)
	if err != nil {
		m.errorf("%s: %v", e.Name(), err)
		return false
	}
	if _, err := st.AddDesc(e.Name(), mac, f, e.String()); err != nil {
		f.Close()
		m.errorf("%s: %v", e.Name(), err)
		return false
	}
	m.logf("Netdevice %d (%s) : %s", e.Unit, mac, banner)
	return true
}
