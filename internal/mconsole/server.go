package mconsole

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Error is a command failure: Text is the reply text and Code the err word
// (1, or a negative errno such as -19 for ENODEV, which the C client turns
// into exit code 237).
type Error struct {
	Code int32
	Text string
}

func (e *Error) Error() string { return e.Text }

// Errorf returns an *Error with code 1.
func Errorf(format string, a ...any) *Error {
	return &Error{Code: 1, Text: fmt.Sprintf(format, a...)}
}

// Kernel error texts for device commands, shared by every Device.
var (
	ErrNoDevice   = &Error{Code: -int32(unix.ENODEV), Text: "Device doesn't exist"}
	ErrDeviceBusy = &Error{Code: -int32(unix.EBUSY), Text: "Device is currently open"}
	ErrNoGet      = &Error{Code: 1, Text: "No get_config routine defined"}
)

// Device is a hot-pluggable device class ("ubd", "con", "ssl", "eth",
// "mem"), the server side of `config` and `remove`.
type Device interface {
	// Name is matched as a prefix of the text after "config "/"remove ".
	Name() string
	// Config adds or changes a device; spec is the text after Name, e.g.
	// "0=root.img" for ubd or "=+64M" for mem. It returns the reply text
	// (usually empty) or an *Error.
	Config(spec string) (string, error)
	// GetConfig answers `config <name><id>` (no '='); return ErrNoGet when
	// the class has no query.
	GetConfig(id string) (string, error)
	// Remove answers `remove <name><id>`.
	Remove(id string) error
}

// Machine is what an mconsole server controls. The engine implements it;
// tests use a fake.
type Machine interface {
	// Uname returns "sysname nodename release version machine".
	Uname() string
	// Halt, Reboot and CtrlAltDel are called after the reply is sent.
	Halt()
	Reboot()
	CtrlAltDel()
	// Stop pauses the guest; Continue resumes it. The server keeps serving
	// requests in between, as the kernel does.
	Stop()
	Continue()
	// Log enters text into the kernel log at warning level.
	Log(text string)
	// Sysrq performs the SysRq action for key, writing console output to w.
	Sysrq(key byte, w io.Writer)
	// Proc returns the contents of /proc/<path>, or an *Error.
	Proc(path string) ([]byte, error)
	// Stack writes the stack of process pid to w, or returns an *Error.
	Stack(pid int, w io.Writer) error
	// Devices lists the device classes for config/remove, in match order.
	Devices() []Device
}

// HelpText is the kernel's reply to `help` (the 6.1 text, byte for byte).
const HelpText = `Commands: 
    version - Get kernel version 
    help - Print this message 
    halt - Halt UML 
    reboot - Reboot UML 
    config <dev>=<config> - Add a new device to UML;  
	same syntax as command line 
    config <dev> - Query the configuration of a device 
    remove <dev> - Remove a device from UML 
    sysrq <letter> - Performs the SysRq action controlled by the letter 
    cad - invoke the Ctrl-Alt-Del handler 
    stop - pause the UML; it will do nothing until it receives a 'go' 
    go - continue the UML after a 'stop' 
    log <string> - make UML enter <string> into the kernel log
    proc <file> - returns the contents of the UML's /proc/<file>
    stack <pid> - returns the stack of the specified pid
`

// Server is the mconsole socket of one machine.
type Server struct {
	path    string
	fd      int
	wake    int // eventfd that interrupts Serve
	m       Machine
	mu      sync.Mutex
	closed  bool
	stopped bool
}

// Listen binds a non-blocking, close-on-exec SOCK_DGRAM socket at path
// (normally ~/.uml/<umid>/mconsole) for m.
func Listen(path string, m Machine) (*Server, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("mconsole: socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mconsole: bind %s: %w", path, err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		os.Remove(path)
		return nil, fmt.Errorf("mconsole: eventfd: %w", err)
	}
	return &Server{path: path, fd: fd, wake: wake, m: m}, nil
}

// Path returns the socket path.
func (s *Server) Path() string { return s.path }

// Close stops Serve, closes the socket and unlinks it.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var one [8]byte
	one[0] = 1
	unix.Write(s.wake, one[:])
	err := os.Remove(s.path)
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return err
}

// Serve handles requests until Close. It returns nil after Close.
func (s *Server) Serve() error {
	defer func() {
		unix.Close(s.fd)
		unix.Close(s.wake)
	}()
	buf := make([]byte, RequestSize)
	fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}, {Fd: int32(s.wake), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
			return fmt.Errorf("mconsole: poll %s: %w", s.path, err)
		}
		if fds[1].Revents != 0 {
			return nil
		}
		for {
			n, from, err := recvFrom(s.fd, buf)
			if err == unix.EAGAIN || err == unix.EINTR {
				break
			}
			if err != nil {
				return fmt.Errorf("mconsole: receive on %s: %w", s.path, err)
			}
			s.handle(buf[:n], from)
		}
	}
}

// replier sends the reply packets of one request.
type replier struct {
	s  *Server
	to rawAddr
}

func (r replier) send(p Reply) { sendTo(r.s.fd, p.Encode(), r.to) }

// reply sends text as a complete reply (chunked).
func (r replier) reply(text string, err int32) {
	for _, p := range Chunk(text, uint32(err)) {
		r.send(p)
	}
}

// replyErr sends err's text and code, or an empty OK reply for nil.
func (r replier) replyErr(text string, err error) {
	if err == nil {
		r.reply(text, 0)
		return
	}
	var me *Error
	if errors.As(err, &me) {
		r.reply(me.Text, me.Code)
		return
	}
	r.reply(err.Error(), 1)
}

// stream is an io.Writer that sends each write as more=1 packets; end sends
// the closing empty packet. It carries console output for sysrq and stack.
type stream struct{ r replier }

func (w stream) Write(b []byte) (int, error) {
	for t := string(b); len(t) > 0; {
		n := min(len(t), MaxChunk)
		w.r.send(Reply{Text: t[:n], More: true})
		t = t[n:]
	}
	return len(b), nil
}

func (w stream) end() { w.r.send(Reply{}) }

// commands is the kernel's table, in its match order: the first name that
// is a prefix of the request text wins.
var commands = []string{"version", "halt", "reboot", "config", "remove", "sysrq",
	"help", "cad", "stop", "go", "log", "proc", "stack"}

func (s *Server) handle(b []byte, from rawAddr) {
	r := replier{s: s, to: from}
	req, err := DecodeRequest(b)
	switch {
	case errors.Is(err, ErrBadMagic):
		sendTo(s.fd, []byte(Version0Reply), from)
		return
	case errors.Is(err, ErrTooLarge):
		r.reply("Request too large", 1)
		return
	case err != nil:
		r.reply("Bad request", 1)
		return
	}
	if req.Version != Version {
		r.reply("This driver only supports version 2 clients", 1)
	}
	text := req.Text
	for _, name := range commands {
		if strings.HasPrefix(text, name) {
			s.run(name, text, r)
			return
		}
	}
	r.reply("Unknown command", 1)
}

// arg returns the text after the command name with leading spaces skipped.
func arg(text, name string) string {
	return strings.TrimLeft(text[len(name):], " \t\n\v\f\r")
}

func (s *Server) run(name, text string, r replier) {
	m := s.m
	switch name {
	case "version":
		r.reply(m.Uname(), 0)
	case "halt":
		r.reply("", 0)
		m.Halt()
	case "reboot":
		r.reply("", 0)
		m.Reboot()
	case "cad":
		r.reply("", 0)
		m.CtrlAltDel()
	case "help":
		r.reply(HelpText, 0)
	case "stop":
		if s.stopped {
			r.reply("Already stopped", 1)
			return
		}
		s.stopped = true
		m.Stop()
		r.reply("stopped", 0)
	case "go":
		if !s.stopped {
			r.reply("Not stopped", 1)
			return
		}
		s.stopped = false
		m.Continue()
		r.reply("", 0)
	case "log":
		// The kernel skips exactly "log " and logs the rest as sent.
		if len(text) > 4 {
			m.Log(text[4:])
		}
		r.reply("", 0)
	case "proc":
		data, err := m.Proc(arg(text, name))
		if err != nil {
			r.replyErr("", err)
			return
		}
		w := stream{r}
		w.Write([]byte("\n"))
		w.Write(data)
		w.end()
	case "sysrq":
		a := arg(text, name)
		var key byte
		if a != "" {
			key = a[0]
		}
		if key == 'b' {
			r.reply("", 0)
		}
		w := stream{r}
		m.Sysrq(key, w)
		w.end()
	case "stack":
		a := arg(text, name)
		pid, err := strconv.Atoi(strings.TrimSpace(a))
		if a == "" || err != nil {
			r.reply("Please specify a pid", 1)
			return
		}
		w := stream{r}
		if err := m.Stack(pid, w); err != nil {
			r.replyErr("", err)
			return
		}
		w.end()
	case "config":
		s.config(arg(text, name), r)
	case "remove":
		s.remove(arg(text, name), r)
	}
}

func (s *Server) findDevice(a string) Device {
	for _, d := range s.m.Devices() {
		if strings.HasPrefix(a, d.Name()) {
			return d
		}
	}
	return nil
}

func (s *Server) config(a string, r replier) {
	d := s.findDevice(a)
	if d == nil || a == "" {
		r.reply("Bad configuration option", 1)
		return
	}
	rest := a[len(d.Name()):]
	if strings.Contains(rest, "=") {
		r.replyErr(d.Config(rest))
		return
	}
	r.replyErr(d.GetConfig(rest))
}

func (s *Server) remove(a string, r replier) {
	d := s.findDevice(a)
	if d == nil || a == "" {
		r.reply("Bad remove option", 1)
		return
	}
	r.replyErr("", d.Remove(a[len(d.Name()):]))
}

// ParseUnit parses a device number for `remove` the way the kernel does,
// with its messages: "Couldn't parse device number" and "Invalid device
// number - must be between 0 and max".
func ParseUnit(id string, max int) (int, error) {
	n, err := strconv.ParseInt(id, 0, 32)
	if err != nil {
		return 0, Errorf("Couldn't parse device number")
	}
	if n < 0 || int(n) > max {
		return 0, Errorf("Invalid device number - must be between 0 and %d", max)
	}
	return int(n), nil
}

// SendNotify sends one notification datagram to a notify socket
// (mconsole=notify:<path>) from an unbound socket, as the kernel does.
func SendNotify(path string, n Notify) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("mconsole notify: socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, n.Encode(), 0, &unix.SockaddrUnix{Name: path}); err != nil {
		return fmt.Errorf("mconsole notify %s: %w", path, err)
	}
	return nil
}
