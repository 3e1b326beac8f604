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
		m.errorf("vec%d: the %s transport is not implemented in this version of the engine; interface skipped", v.Unit, v.Transport)
	}
	return st, nil
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
	if _, err := st.Add(e.Name(), mac, f); err != nil {
		f.Close()
		m.errorf("%s: %v", e.Name(), err)
		return false
	}
	m.logf("Netdevice %d (%s) : %s", e.Unit, mac, banner)
	return true
}
