package machine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/cmdline"
	"github.com/umltools/umltools/internal/kernel"
	"github.com/umltools/umltools/internal/mconsole"
	"github.com/umltools/umltools/internal/usernet"
)

// This file is the machine's side of the management console: what each
// mconsole command does to the running machine (mconsole.Machine), the
// device classes of config/remove, and the notify socket.

// control is the machine as the mconsole server controls it.
type control struct{ m *machine }

// Uname answers `version`: sysname nodename release version machine.
func (c control) Uname() string {
	node := "(none)"
	if k := c.m.kern.Load(); k != nil {
		node = k.Nodename()
	}
	return fmt.Sprintf("Linux %s %s %s x86_64", node, kernel.Release, kernel.UnameVersion())
}

// Halt stops every guest process; the machine then writes back and
// releases its disks and exits 0.
func (c control) Halt() {
	if k := c.m.kern.Load(); k != nil {
		k.Halt(kernel.Halt)
	}
}

// Reboot ends the guest and boots again in this process, same umid.
func (c control) Reboot() {
	if k := c.m.kern.Load(); k != nil {
		k.Halt(kernel.Restart)
	}
}

// CtrlAltDel is the key: a restart, or SIGINT to init once the guest
// disabled it (as sysvinit and busybox init do).
func (c control) CtrlAltDel() {
	if k := c.m.kern.Load(); k != nil {
		k.CtrlAltDel()
	}
}

// Stop freezes every guest thread.
func (c control) Stop() {
	if k := c.m.kern.Load(); k != nil {
		if err := k.Freeze(); err != nil {
			c.m.logf("mconsole stop: %v", err)
		}
	}
}

// Continue thaws what Stop froze.
func (c control) Continue() {
	if k := c.m.kern.Load(); k != nil {
		if err := k.Thaw(); err != nil {
			c.m.logf("mconsole go: %v", err)
		}
	}
}

// Log enters text into the kernel log at warning level (shown on the
// console). The client ends a message with a separate "log \n" request:
// that newline closes the line already logged.
func (c control) Log(text string) {
	text = strings.TrimRight(text, "\n")
	if text != "" {
		c.m.errorf("%s", text)
	}
}

// Proc returns /proc/<path> of the machine's procfs.
func (c control) Proc(path string) ([]byte, error) {
	k := c.m.kern.Load()
	if k == nil {
		return nil, mconsole.Errorf("Proc not available")
	}
	b, err := k.ReadProc(path)
	if err != nil {
		var en syscall.Errno
		if !errors.As(err, &en) {
			en = syscall.EIO
		}
		c.m.logf("open /proc/%s: -%d", path, int(en))
		return nil, mconsole.Errorf("Failed to open file")
	}
	return b, nil
}

// Stack writes guest thread pid's registers and backtrace.
func (c control) Stack(pid int, w io.Writer) error {
	k := c.m.kern.Load()
	if k == nil {
		return mconsole.Errorf("Couldn't find that pid")
	}
	var buf strings.Builder // one write: see Sysrq
	err := k.Stack(pid, &buf)
	if errors.Is(err, kernel.ErrNoPid) {
		return mconsole.Errorf("Couldn't find that pid")
	}
	if err != nil {
		return err
	}
	io.WriteString(w, buf.String())
	return nil
}

// Devices are the config/remove classes, as the C kernel registers them.
func (c control) Devices() []mconsole.Device {
	return []mconsole.Device{ubdClass{c.m}, lineClass{c.m, "con"}, lineClass{c.m, "ssl"}, ethClass{c.m}, memClass{c.m}}
}

// sysrqHelp is the HELP line: the keys the engine serves.
const sysrqHelp = "sysrq: HELP : loglevel(0-9) reboot(b) crash(c) terminate-all-tasks(e) kill-all-tasks(i) show-memory-usage(m) poweroff(o) show-registers(p) sync(s) show-task-states(t) unmount(u) \n"

// Sysrq performs the SysRq action of key. What it prints goes to the
// requester (w) and to the kernel log, as console output does.
func (c control) Sysrq(key byte, w io.Writer) {
	// One write at the end: each write is a reply packet, and a client
	// whose receive queue overflows loses the rest (the C one then hangs).
	var buf strings.Builder
	defer func() { io.WriteString(w, buf.String()) }()
	out := func(format string, a ...any) {
		s := fmt.Sprintf(format, a...)
		buf.WriteString(s)
		c.m.logf("%s", strings.TrimRight(s, "\n"))
	}
	k := c.m.kern.Load()
	if k == nil {
		out("sysrq: no guest is running\n")
		return
	}
	switch key {
	case 'b':
		out("sysrq: Resetting\n")
		k.Halt(kernel.Restart)
	case 'c':
		out("sysrq: Trigger a crash\n")
		c.m.panic("sysrq triggered crash")
		k.Halt(kernel.Halt)
	case 'e':
		out("sysrq: Terminate All Tasks\n")
		k.SignalAll(syscall.SIGTERM)
	case 'i':
		out("sysrq: Kill All Tasks\n")
		k.SignalAll(syscall.SIGKILL)
	case 'm':
		out("sysrq: Show Memory\n")
		total, free := k.MemInfo()
		out("Mem-Info:\n%d pages RAM\n%d pages free\n", total/4096, free/4096)
	case 'o':
		out("sysrq: Power Off\n")
		k.Halt(kernel.PowerOff)
	case 'p':
		out("sysrq: Show Regs\n")
		var regs strings.Builder
		if err := k.Stack(1, &regs); err != nil {
			out("%v\n", err)
		}
		out("%s", regs.String())
	case 's':
		out("sysrq: Emergency Sync\n")
		k.SyncAll()
		c.m.logf("Emergency Sync complete")
	case 't':
		out("sysrq: Show State\n")
		for _, t := range k.Tasks() {
			out("task:%-15s state:%s pid:%-5d tid:%-5d ppid:%-6d host:%d\n", t.Comm, t.State, t.Pid, t.Tid, t.PPid, t.HostTid)
		}
	case 'u':
		out("sysrq: Emergency Remount R/O\n")
		k.RemountReadOnly()
		c.m.logf("Emergency Remount complete")
	default:
		if key >= '0' && key <= '9' {
			out("sysrq: Changing Loglevel\nsysrq: Loglevel set to %c\n", key)
			return
		}
		out("%s", sysrqHelp)
	}
}

// notify sends one datagram to the mconsole=notify: socket, if any.
func (m *machine) notify(typ uint32, data []byte) {
	if m.cfg == nil || m.cfg.MconsoleNotify == "" {
		return
	}
	if err := mconsole.SendNotify(m.cfg.MconsoleNotify, mconsole.Notify{Type: typ, Data: data}); err != nil {
		m.logf("%v", err)
	}
}

// panic logs a kernel panic and tells the notify socket (MCONSOLE_PANIC).
func (m *machine) panic(msg string) {
	m.panicked.Store(true)
	m.errorf("%v", &PanicError{msg})
	m.notify(mconsole.NotifyPanic, append([]byte(msg), 0))
}

// startMconsole binds the mconsole socket in the staged machine
// directory and serves it; the caller publishes the directory once this
// returns, so it appears only when the socket answers. A failure is
// logged and the machine runs without a console, as the C kernel does.
func (m *machine) startMconsole(socket string) *mconsole.Server {
	srv, err := mconsole.Listen(socket, control{m})
	if err != nil {
		m.errorf("mconsole_init : %v", err)
		return nil
	}
	go func() {
		if err := srv.Serve(); err != nil {
			m.errorf("%v", err)
		}
	}()
	return srv
}

// ready writes the ready-fd= line ("<umid> <mconsole socket>") once, when
// init has started, and closes the fd.
func (m *machine) ready() {
	if m.cfg.ReadyFD < 0 || m.readyDone {
		return
	}
	m.readyDone = true
	f := os.NewFile(uintptr(m.cfg.ReadyFD), "ready-fd")
	if _, err := fmt.Fprintf(f, "%s %s\n", m.dir.Umid, m.dir.Socket()); err != nil {
		m.errorf("ready-fd=%d: %v", m.cfg.ReadyFD, err)
	}
	f.Close()
}

// ubdClass is `config ubdN[=…]` and `remove ubdN`.
type ubdClass struct{ m *machine }

func (ubdClass) Name() string { return "ubd" }

func (u ubdClass) GetConfig(id string) (string, error) {
	u.m.diskMu.Lock()
	defer u.m.diskMu.Unlock()
	s, err := u.m.cfg.Device("ubd" + id)
	if err != nil {
		return "", mconsole.Errorf("%s", err.Error())
	}
	return s, nil
}

func (u ubdClass) Config(spec string) (string, error) {
	sp, err := cmdline.ParseUbd(spec, u.m.cfg.UbdSync)
	if err != nil {
		return "", &mconsole.Error{Code: -int32(unix.EINVAL), Text: err.Error()}
	}
	return "", u.m.plugDisk(sp)
}

func (u ubdClass) Remove(id string) error {
	n, err := ubdUnit(id)
	if err != nil {
		return err
	}
	return u.m.unplugDisk(n)
}

// ubdUnit parses the unit of `remove ubd<unit>`: a number or a letter.
func ubdUnit(id string) (int, error) {
	if len(id) == 1 && id[0] >= 'a' && id[0] <= 'z' {
		id = strconv.Itoa(int(id[0] - 'a'))
	}
	return mconsole.ParseUnit(id, cmdline.MaxUbd-1)
}

// lineClass is consoles (con) and serial lines (ssl).
type lineClass struct {
	m    *machine
	kind string
}

func (l lineClass) Name() string { return l.kind }

func (l lineClass) GetConfig(id string) (string, error) {
	s, err := l.m.cfg.Device(l.kind + id)
	if err != nil {
		return "", mconsole.Errorf("%s", err.Error())
	}
	return s, nil
}

func (l lineClass) Config(spec string) (string, error) {
	line, err := cmdline.ParseLineConfig(l.kind, spec)
	if err != nil {
		return "", mconsole.Errorf("%s", err.Error())
	}
	return "", mconsole.Errorf("%s: changing a line's channel at run time is not supported by this engine", line.Name())
}

func (l lineClass) Remove(id string) error {
	max := cmdline.MaxCon
	if l.kind == "ssl" {
		max = cmdline.MaxSsl
	}
	n, err := mconsole.ParseUnit(id, max-1)
	if err != nil {
		return err
	}
	lines := l.m.cfg.Con[:]
	if l.kind == "ssl" {
		lines = l.m.cfg.Ssl[:]
	}
	if l.kind == "con" && n == 0 && !lines[0].None {
		// The C kernel's answer for the console in use (-EINVAL).
		return &mconsole.Error{Code: -int32(unix.EINVAL), Text: "Device is already open"}
	}
	// Other lines have no channel open in this engine: removing one
	// forgets its configuration.
	lines[n] = cmdline.Line{Kind: lines[n].Kind, Unit: lines[n].Unit, None: true}
	return nil
}

// ethClass is network devices: `config ethN=<transport>,...` adds one to
// the running machine (down, as at boot), `remove ethN` takes one away
// while it is down.
type ethClass struct{ m *machine }

func (ethClass) Name() string { return "eth" }

// GetConfig answers `config ethN` (the C kernel has no query for eth)
// with the device's option, and for a device on the built-in NAT its
// layout and forwards.
func (e ethClass) GetConfig(n string) (string, error) {
	if nat := e.nat("eth" + n); nat != nil {
		return nat.Banner(), nil
	}
	if e.m.net != nil {
		if nic := e.m.net.NIC("eth" + n); nic != nil {
			return nic.Desc, nil
		}
	}
	return "", mconsole.ErrNoGet // the C kernel's answer
}

// nat returns device name's user-mode NAT, or nil.
func (e ethClass) nat(name string) *usernet.Net {
	if e.m.net == nil {
		return nil
	}
	if nic := e.m.net.NIC(name); nic != nil {
		nat, _ := nic.Transport().(*usernet.Net)
		return nat
	}
	return nil
}

// Config adds a device, or, as `config ethN=hostfwd_add=<hostfwd>` and
// `config ethN=hostfwd_remove=[tcp|udp]:[addr]:port`, changes the
// forwards of a device on the built-in NAT (QEMU's monitor commands).
func (e ethClass) Config(spec string) (string, error) {
	if unit, rest, ok := strings.Cut(spec, "="); ok && (strings.HasPrefix(rest, "hostfwd_add=") || strings.HasPrefix(rest, "hostfwd_remove=")) {
		nat := e.nat("eth" + unit)
		if nat == nil {
			return "", mconsole.Errorf("eth%s is not on the built-in user-mode NAT", unit)
		}
		op, arg, _ := strings.Cut(rest, "=")
		if op == "hostfwd_remove" && !strings.Contains(arg, "-") {
			arg += "-:1" // the guest side does not name a forward
		}
		f, err := usernet.ParseForward(arg)
		if err != nil {
			return "", mconsole.Errorf("%s", err.Error())
		}
		if op == "hostfwd_remove" {
			err = nat.RemoveForward(f)
		} else {
			err = nat.AddForward(f)
		}
		if err != nil {
			return "", mconsole.Errorf("%s", err.Error())
		}
		return "", nil
	}
	eth, ws, err := cmdline.ParseEthConfig(spec)
	for _, w := range ws {
		e.m.logf("%s", w.Msg)
	}
	if err != nil {
		return "", mconsole.Errorf("%s", err.Error())
	}
	if e.m.net == nil {
		return "", mconsole.Errorf("the machine has no network")
	}
	if e.m.net.NIC(eth.Name()) != nil {
		// The C kernel answers OK and logs that registering failed.
		return "", mconsole.Errorf("Device is already configured")
	}
	if !e.m.addEth(e.m.net, eth) {
		return "", mconsole.Errorf("%s: transport not opened (see the kernel log)", eth.Name())
	}
	return "", nil
}

func (e ethClass) Remove(n string) error {
	name := "eth" + n
	if e.m.net == nil {
		return mconsole.ErrNoDevice
	}
	f, ok := e.m.net.Iface(name)
	if !ok || e.m.net.NIC(name) == nil {
		return mconsole.ErrNoDevice
	}
	if f.Up {
		return mconsole.ErrDeviceBusy
	}
	if err := e.m.net.Remove(name); err != nil {
		return mconsole.ErrNoDevice
	}
	return nil
}

// memClass is `config mem`, `config mem=±N` and `remove mem`.
type memClass struct{ m *machine }

func (memClass) Name() string { return "mem" }

// physStart is what the C kernel answers to `config mem`: the start of
// UML's physical memory (0x60000000), not its size. Scripts may parse it.
const physStart = 0x60000000

func (memClass) GetConfig(string) (string, error) { return strconv.Itoa(physStart), nil }

func (mc memClass) Config(spec string) (string, error) {
	s, ok := strings.CutPrefix(spec, "=")
	if !ok {
		return "", mconsole.Errorf("Expected '=' after 'mem'")
	}
	if s == "" || (s[0] != '+' && s[0] != '-') {
		return "", &mconsole.Error{Code: -int32(unix.EINVAL), Text: "Expected increment to start with '-' or '+'"}
	}
	n, rest := cmdline.Memparse(s[1:])
	if rest != "" || s[1:] == "" {
		return "", mconsole.Errorf("Failed to parse memory increment")
	}
	mc.m.diskMu.Lock()
	defer mc.m.diskMu.Unlock()
	cur := mc.m.cfg.Mem
	if cur == 0 {
		cur = kernel.DefaultMem
	}
	if s[0] == '+' {
		cur += n
	} else {
		if n >= cur {
			return "", mconsole.Errorf("Failed to release memory")
		}
		cur -= n
	}
	mc.m.cfg.Mem = cur
	if k := mc.m.kern.Load(); k != nil {
		k.SetMem(cur)
	}
	return "", nil
}

func (memClass) Remove(string) error {
	return &mconsole.Error{Code: -int32(unix.EBUSY), Text: "Memory doesn't support the remove operation"}
}
