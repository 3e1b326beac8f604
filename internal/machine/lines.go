package machine

import (
	"fmt"
	"syscall"

	chans "github.com/umltools/umltools/internal/chan"
	"github.com/umltools/umltools/internal/cmdline"
	"github.com/umltools/umltools/internal/kernel"
	"github.com/umltools/umltools/internal/vfs"
)

// This file is the machine's consoles and serial lines beyond con0: conN
// is the guest's /dev/ttyN (4:N) and sslN its /dev/ttySN (4:64+N), each a
// host pty pumped to the line's channel (internal/chan). As in the C
// kernel, a line's channel comes up when the guest first opens the line
// (a getty on it), and logs then (e.g. the pts device it was given);
// port channels listen from boot, as the C kernel's do.

// lineOf returns the line of guest tty device rdev, and its name.
func (m *machine) lineOf(rdev uint64) (*cmdline.Line, bool) {
	if vfs.Major(rdev) != 4 {
		return nil, false
	}
	n := int(vfs.Minor(rdev))
	switch {
	case n >= 1 && n < cmdline.MaxCon:
		return &m.cfg.Con[n], true
	case n >= 64 && n < 64+cmdline.MaxSsl:
		return &m.cfg.Ssl[n-64], true
	}
	return nil, false
}

// lineDev is the guest device number of a line.
func lineDev(l *cmdline.Line) uint64 {
	if l.Kind == "ssl" {
		return vfs.Mkdev(4, uint32(64+l.Unit))
	}
	return vfs.Mkdev(4, uint32(l.Unit))
}

// lineNode is a line's /dev name.
func lineNode(l *cmdline.Line) string {
	if l.Kind == "ssl" {
		return fmt.Sprintf("ttyS%d", l.Unit)
	}
	return fmt.Sprintf("tty%d", l.Unit)
}

// line serves kernel.Config.Lines: the console of guest device rdev,
// brought up on first use.
func (m *machine) line(rdev uint64) (kernel.Console, error) {
	l, ok := m.lineOf(rdev)
	if !ok {
		return nil, syscall.ENXIO
	}
	m.lineMu.Lock()
	defer m.lineMu.Unlock()
	if c := m.lines[rdev]; c != nil {
		return ttyConsole{c}, nil
	}
	if !l.Valid() {
		return nil, syscall.ENXIO
	}
	c, err := chans.New(l.In, l.Out, m.chanOptions(l.Name()))
	if err != nil {
		m.errorf("%v", err) // it names the line
		return nil, syscall.EIO
	}
	m.lines[rdev] = c
	return ttyConsole{c}, nil
}

// startPorts brings up, at boot, the lines with a port channel, so that
// their listeners are there before a getty opens the line.
func (m *machine) startPorts() {
	m.lines = map[uint64]*chans.Console{}
	all := m.otherLines()
	for i := range all {
		if l := &all[i]; l.Valid() && (l.In.Type == cmdline.ChanPort || l.Out.Type == cmdline.ChanPort) {
			m.line(lineDev(l))
		}
	}
}

// otherLines is every line but con0 (the console): con1… then ssl0….
func (m *machine) otherLines() []cmdline.Line {
	return append(append([]cmdline.Line(nil), m.cfg.Con[1:]...), m.cfg.Ssl[:]...)
}

// addLineNodes makes /dev/ttyN and /dev/ttySN for every line that exists.
func (m *machine) addLineNodes(k *kernel.Kernel) {
	all := m.otherLines()
	for i := range all {
		if l := &all[i]; l.Valid() {
			if err := k.AddTTY(lineNode(l), lineDev(l)); err != nil {
				m.logf("%s: /dev node: %v", l.Name(), err)
			}
		}
	}
}

// closeLines closes every line's pty and channel (the machine's end).
func (m *machine) closeLines() {
	m.lineMu.Lock()
	defer m.lineMu.Unlock()
	for rdev, c := range m.lines {
		c.Close()
		delete(m.lines, rdev)
	}
}

// chanOptions are the channel options of line name.
func (m *machine) chanOptions(name string) chans.Options {
	umid := ""
	if m.dir != nil {
		umid = m.dir.Umid
	}
	return chans.Options{Name: name, Logf: m.logf, Xterm: m.cfg.Xterm, Umid: umid, Ports: &m.ports}
}
