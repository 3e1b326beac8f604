package switchd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DefaultAge is how long a learned MAC address stays without traffic.
const DefaultAge = 100 * time.Second

// DefaultDataPath is the -compat-v0 data socket.
const DefaultDataPath = "/tmp/uml.data"

// Config configures a Switch.
type Config struct {
	// Hub floods every frame to every other port.
	Hub bool
	// CompatV0 binds the data socket to DataPath and accepts version 0
	// requests (which get no reply).
	CompatV0 bool
	DataPath string
	// Age is the MAC ageing time (DefaultAge when zero).
	Age time.Duration
	// Out receives the switch's log lines (uml_switch prints them on
	// stdout, as the C switch does). Nil discards them.
	Out io.Writer
	// Pcap, when set, receives every forwarded frame in pcap format.
	Pcap io.Writer
	// SocketMode, when non-zero, is applied to control sockets.
	SocketMode os.FileMode
	// SocketGroup, when non-nil, is the group ID given to control sockets.
	SocketGroup *int
	// RequestTimeout bounds the wait for a new connection's request
	// (default 30 s): a client that connects and says nothing is dropped.
	RequestTimeout time.Duration
}

// BindError reports a control or data socket that could not be bound.
type BindError struct {
	Path  string
	Data  bool // the -compat-v0 data socket, not the control socket
	InUse bool // another server answers on it
	Err   error
}

func (e *BindError) Error() string {
	kind := "control"
	if e.Data {
		kind = "data"
	}
	if e.InUse {
		return fmt.Sprintf("the %s socket '%s' has another server attached to it", kind, e.Path)
	}
	return fmt.Sprintf("the %s socket '%s' exists, isn't used, but couldn't be removed: %v", kind, e.Path, e.Err)
}

func (e *BindError) Unwrap() error { return e.Err }

type ctlSock struct {
	path string
	abs  string
	vlan uint16
	l    *net.UnixListener
}

// Switch is a running virtual switch.
type Switch struct {
	cfg   Config
	start time.Time
	out   lockedWriter
	age   int64
	pcap  *pcapWriter

	ctls     []*ctlSock
	shared   int  // -compat-v0: the named data socket every port shares; else -1
	dataAddr Addr // its address
	dataAbs  string
	epfd     int // the data loop waits on it for the port sockets
	wakeFD   int // eventfd: wakes the data loop
	dataDone chan struct{}
	// fdMu is read-held by senders outside the data loop; the data loop
	// closes departed ports' sockets under the write lock, so no send
	// can hit a closed (or reused) descriptor.
	fdMu    sync.RWMutex
	dead    []int  // port sockets to close; guarded by portMu
	nameSeq uint64 // makes port socket names unique; guarded by portMu

	mu     sync.Mutex // guards fab, pcap and the learning log
	fab    fabric
	vlans  atomic.Bool // some port is not in the default VLAN
	ports  atomic.Pointer[portSet]
	portMu sync.Mutex // serialises port set changes
	nextID int
	conns  map[net.Conn]struct{}

	unknown atomic.Uint64 // frames from unregistered senders
	started bool
	closing atomic.Bool
	done    chan struct{}
	wg      sync.WaitGroup
}

// New returns a switch with no sockets yet; call Listen and Start.
func New(cfg Config) *Switch {
	if cfg.Age == 0 {
		cfg.Age = DefaultAge
	}
	if cfg.DataPath == "" {
		cfg.DataPath = DefaultDataPath
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	s := &Switch{cfg: cfg, start: time.Now(), done: make(chan struct{}), conns: map[net.Conn]struct{}{}, nextID: 5, shared: -1, epfd: -1, wakeFD: -1}
	s.out.w = cfg.Out
	s.age = int64(cfg.Age)
	s.fab = fabric{hub: cfg.Hub, age: s.age, table: map[tkey]*entry{}, quiet: map[tkey]int64{}, logf: s.logf}
	s.ports.Store(&portSet{byAddr: map[Addr]*Port{}, byID: map[int]*Port{}})
	if cfg.Pcap != nil {
		s.pcap = newPcapWriter(cfg.Pcap)
	}
	return s
}

func (s *Switch) logf(format string, a ...any) { fmt.Fprintf(&s.out, format, a...) }

// Listen binds a control socket at path whose ports join VLAN vlan (0 is
// the default, untagged VLAN). A stale socket file (nobody answers) is
// replaced; a live one is a *BindError with InUse set.
func (s *Switch) Listen(path string, vlan uint16) error {
	fd, err := bindUnix(path, unix.SOCK_STREAM, false)
	if err != nil {
		return err
	}
	if s.cfg.SocketGroup != nil {
		if err := os.Lchown(path, -1, *s.cfg.SocketGroup); err != nil {
			unix.Close(fd)
			os.Remove(path)
			return fmt.Errorf("control socket %s: %w", path, err)
		}
	}
	if s.cfg.SocketMode != 0 {
		if err := os.Chmod(path, s.cfg.SocketMode); err != nil {
			unix.Close(fd)
			os.Remove(path)
			return fmt.Errorf("control socket %s: %w", path, err)
		}
	}
	if err := unix.Listen(fd, 128); err != nil {
		unix.Close(fd)
		os.Remove(path)
		return fmt.Errorf("listen %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	if vlan != 0 {
		s.vlans.Store(true)
	}
	// Remember the absolute path too: the process may chdir (-daemon).
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	s.ctls = append(s.ctls, &ctlSock{path: path, abs: abs, vlan: vlan, l: ul})
	return nil
}

// bindUnix creates a non-blocking AF_UNIX socket bound to path, taking
// over a stale socket file: if bind reports EADDRINUSE and connecting to
// the path is refused, nobody serves it, so it is removed and bound again.
func bindUnix(path string, typ int, data bool) (int, error) {
	addr, err := PathAddr(path)
	if err != nil {
		return -1, &BindError{Path: path, Data: data, Err: err}
	}
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket for %s: %w", path, err)
	}
	err = bindRaw(fd, &addr)
	if errors.Is(err, unix.EADDRINUSE) {
		if stillUsed(path, typ) {
			unix.Close(fd)
			return -1, &BindError{Path: path, Data: data, InUse: true, Err: err}
		}
		os.Remove(path)
		err = bindRaw(fd, &addr)
	}
	if err != nil {
		unix.Close(fd)
		return -1, &BindError{Path: path, Data: data, Err: err}
	}
	return fd, nil
}

// stillUsed reports whether a server answers on the socket file path.
func stillUsed(path string, typ int) bool {
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return true
	}
	defer unix.Close(fd)
	err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
	return !errors.Is(err, unix.ECONNREFUSED)
}

// ControlPaths lists the bound control sockets.
func (s *Switch) ControlPaths() []string {
	var p []string
	for _, c := range s.ctls {
		p = append(p, c.path)
	}
	return p
}

// DataAddr is the address of the shared -compat-v0 data socket (the zero
// Addr otherwise: each port then gets a data socket of its own).
func (s *Switch) DataAddr() Addr { return s.dataAddr }

// Start binds the data socket (with -compat-v0) and starts serving.
func (s *Switch) Start() error {
	if s.started {
		return errors.New("switch already started")
	}
	var err error
	if s.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	if s.wakeFD, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	if err := s.watch(s.wakeFD, wakeKey); err != nil {
		return err
	}
	if s.cfg.CompatV0 {
		fd, err := bindUnix(s.cfg.DataPath, unix.SOCK_DGRAM, true)
		if err != nil {
			return err
		}
		s.dataAddr, _ = PathAddr(s.cfg.DataPath)
		if s.dataAbs, err = filepath.Abs(s.cfg.DataPath); err != nil {
			s.dataAbs = s.cfg.DataPath
		}
		bigBuffers(fd)
		s.shared = fd
		if err := s.watch(fd, sharedKey); err != nil {
			return err
		}
	}
	s.dataDone = make(chan struct{})
	s.started = true
	for _, c := range s.ctls {
		s.wg.Add(1)
		go s.acceptLoop(c)
	}
	go s.dataLoop()
	s.wg.Add(1)
	go s.gcLoop()
	for _, p := range s.ports.Load().list {
		if p.tap != nil {
			s.wg.Add(1)
			go s.tapLoop(p)
		}
	}
	return nil
}

// Keys of the data loop's epoll events; port sockets use the port ID.
const (
	wakeKey   = -1
	sharedKey = -2
)

func (s *Switch) watch(fd int, key int32) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: key}
	if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll add: %w", err)
	}
	return nil
}

func (s *Switch) wake() {
	var one [8]byte
	one[0] = 1
	unix.Write(s.wakeFD, one[:])
}

// portSocket makes the data socket of one port: bound to a fresh abstract
// name laid out like the C switch's ({0, pad, pid, usec}, then a sequence
// number) and connected to the client's data socket. Being connected, it
// only accepts frames from that client, and the kernel lets the client
// queue more than net.unix.max_dgram_qlen frames to it.
func (s *Switch) portSocket(client *Addr) (int, Addr, error) {
	var a Addr
	binary.LittleEndian.PutUint16(a[:], 1)
	binary.LittleEndian.PutUint32(a[6:], uint32(os.Getpid()))
	binary.LittleEndian.PutUint32(a[10:], uint32(time.Now().Nanosecond()/1000))
	s.portMu.Lock()
	s.nameSeq++
	binary.LittleEndian.PutUint64(a[14:], s.nameSeq)
	s.portMu.Unlock()
	binary.LittleEndian.PutUint64(a[22:], uint64(s.start.UnixNano()))
	fd, err := dgramFD(&a, "port data socket")
	if err != nil {
		return -1, a, err
	}
	bigBuffers(fd)
	if _, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&client[0])), AddrLen); e != 0 {
		unix.Close(fd)
		return -1, a, e
	}
	return fd, a, nil
}

// AddTap adds an open tap device (raw Ethernet frames, no packet
// information header) as a port in VLAN vlan, or as an 802.1Q trunk with
// native VLAN vlan. The switch owns f from now on.
func (s *Switch) AddTap(f *os.File, name string, vlan uint16, trunk bool) (*Port, error) {
	// A pollable duplicate lets the read wait in the runtime poller and
	// lets Close wake it.
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	nfd := -1
	rc.Control(func(fd uintptr) {
		nfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err != nil {
		return nil, fmt.Errorf("tap %s: dup: %w", name, err)
	}
	f.Close()
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	p := &Port{Kind: "tap", Name: name, VLAN: vlan, Trunk: trunk, fd: -1, tap: os.NewFile(uintptr(nfd), "tap "+name)}
	if vlan != 0 || trunk {
		s.vlans.Store(true)
	}
	s.addPort(p)
	if s.started {
		s.wg.Add(1)
		go s.tapLoop(p)
	}
	return p, nil
}

func (s *Switch) addPort(p *Port) {
	s.portMu.Lock()
	defer s.portMu.Unlock()
	old := s.ports.Load()
	n := &portSet{byAddr: make(map[Addr]*Port, len(old.byAddr)+1), byID: make(map[int]*Port, len(old.byID)+1), list: append([]*Port(nil), old.list...)}
	for k, v := range old.byAddr {
		n.byAddr[k] = v
	}
	for k, v := range old.byID {
		n.byID[k] = v
	}
	if p.ID == 0 {
		p.ID = s.nextID
		s.nextID++
	}
	if p.Kind == "unix" {
		n.byAddr[p.addr] = p
	}
	n.byID[p.ID] = p
	n.list = append(n.list, p)
	s.ports.Store(n)
	if p.fd >= 0 {
		if err := s.watch(p.fd, int32(p.ID)); err != nil {
			s.logf("port %d: %v\n", p.ID, err)
		}
	}
}

func (s *Switch) removePort(p *Port) {
	s.portMu.Lock()
	old := s.ports.Load()
	n := &portSet{byAddr: make(map[Addr]*Port, len(old.byAddr)), byID: make(map[int]*Port, len(old.byID)), list: make([]*Port, 0, len(old.list))}
	for k, v := range old.byAddr {
		if v != p {
			n.byAddr[k] = v
		}
	}
	for k, v := range old.byID {
		if v != p {
			n.byID[k] = v
		}
	}
	for _, q := range old.list {
		if q != p {
			n.list = append(n.list, q)
		}
	}
	s.ports.Store(n)
	p.removed.Store(true)
	if p.fd >= 0 {
		unix.EpollCtl(s.epfd, unix.EPOLL_CTL_DEL, p.fd, nil)
		s.dead = append(s.dead, p.fd)
	}
	s.portMu.Unlock()
	if p.fd >= 0 {
		s.wake()
	}
	s.mu.Lock()
	s.fab.forget(p)
	s.mu.Unlock()
}

func (s *Switch) acceptLoop(c *ctlSock) {
	defer s.wg.Done()
	for {
		conn, err := c.l.AcceptUnix()
		if err != nil {
			if s.closing.Load() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.logf("accept: %v\n", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		s.portMu.Lock()
		if s.closing.Load() {
			s.portMu.Unlock()
			conn.Close()
			return
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.portMu.Unlock()
		go s.serveConn(conn, c.vlan)
	}
}

// serveConn handles one control connection: one request, the reply, then
// the stream as the port's lifetime.
func (s *Switch) serveConn(conn *net.UnixConn, vlan uint16) {
	defer s.wg.Done()
	defer func() {
		s.portMu.Lock()
		delete(s.conns, conn)
		s.portMu.Unlock()
		conn.Close()
	}()
	buf := make([]byte, ReqMax)
	conn.SetReadDeadline(time.Now().Add(s.cfg.RequestTimeout))
	n, err := conn.Read(buf)
	if err != nil {
		if s.closing.Load() {
			return
		}
		if errors.Is(err, io.EOF) {
			s.logf("EOF from new port\n")
		} else {
			s.logf("Reading request : %v\n", err)
		}
		return
	}
	conn.SetReadDeadline(time.Time{})
	req, err := ParseRequest(buf[:n], s.cfg.CompatV0)
	if err != nil {
		s.logf("%v\n", err)
		return
	}
	if s.ports.Load().byAddr[req.Addr] != nil {
		s.logf("Bad request : data socket %s is already a port\n", req.Addr.String())
		return
	}
	p := &Port{Kind: "unix", Name: req.Addr.String(), VLAN: vlan, addr: req.Addr, fd: -1}
	reply := s.dataAddr
	if s.shared < 0 {
		fd, local, err := s.portSocket(&req.Addr)
		if err != nil {
			s.logf("Bad request : data socket %s : %v\n", req.Addr.String(), err)
			return
		}
		p.fd, reply = fd, local
	}
	s.addPort(p)
	s.logf("New connection\n")
	if req.Version != 0 {
		if _, err := conn.Write(reply[:]); err != nil {
			s.logf("Sending data socket name : %v\n", err)
			s.removePort(p)
			return
		}
	}
	var b [64]byte
	for {
		n, err := conn.Read(b[:])
		if n > 0 {
			s.logf("Bad request\n")
		}
		if err != nil {
			s.removePort(p)
			if !s.closing.Load() {
				if errors.Is(err, io.EOF) {
					s.logf("Disconnect\n")
				} else {
					s.logf("Reading request : %v\n", err)
				}
			}
			return
		}
	}
}

// gcLoop ages out MAC entries every 2 s and flushes the pcap file.
func (s *Switch) gcLoop() {
	defer s.wg.Done()
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.mu.Lock()
			s.fab.expire(s.nanotime())
			if s.pcap != nil {
				s.pcap.flush()
			}
			s.mu.Unlock()
		}
	}
}

// Close stops the switch: it closes every socket and tap, removes the
// control socket files (and the -compat-v0 data socket file) and flushes
// the pcap output. It returns the removal errors, each naming its path.
func (s *Switch) Close() error {
	if !s.closing.CompareAndSwap(false, true) {
		return nil
	}
	close(s.done)
	var errs []error
	for _, c := range s.ctls {
		c.l.Close()
		if err := os.Remove(c.abs); err != nil {
			errs = append(errs, &UnlinkError{Path: c.path, Err: err})
		}
	}
	s.portMu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.portMu.Unlock()
	for _, p := range s.ports.Load().list {
		if p.tap != nil {
			p.tap.Close()
		}
	}
	if s.dataDone != nil {
		s.wake()
		<-s.dataDone
	}
	s.wg.Wait()
	s.portMu.Lock()
	for _, p := range s.ports.Load().list {
		if p.fd >= 0 {
			unix.Close(p.fd)
		}
	}
	for _, fd := range s.dead {
		unix.Close(fd)
	}
	s.dead = nil
	s.portMu.Unlock()
	for _, fd := range []int{s.shared, s.wakeFD, s.epfd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	if s.shared >= 0 && s.cfg.CompatV0 {
		if err := os.Remove(s.dataAbs); err != nil {
			errs = append(errs, &UnlinkError{Path: s.cfg.DataPath, Data: true, Err: err})
		}
	}
	if s.pcap != nil {
		s.mu.Lock()
		if err := s.pcap.flush(); err != nil {
			errs = append(errs, fmt.Errorf("pcap: %w", err))
		}
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

// UnlinkError is a socket file Close could not remove.
type UnlinkError struct {
	Path string
	Data bool
	Err  error
}

func (e *UnlinkError) Error() string {
	kind := "control"
	if e.Data {
		kind = "data"
	}
	return fmt.Sprintf("Couldn't remove %s socket '%s' : %v", kind, e.Path, e.Err)
}

func (e *UnlinkError) Unwrap() error { return e.Err }

// PortStats are one port's counters.
type PortStats struct {
	ID       int    `json:"id"`
	Kind     string `json:"kind"`
	Name     string `json:"name"`
	VLAN     uint16 `json:"vlan"`
	Trunk    bool   `json:"trunk,omitempty"`
	RxFrames uint64 `json:"rx_frames"`
	RxBytes  uint64 `json:"rx_bytes"`
	TxFrames uint64 `json:"tx_frames"`
	TxBytes  uint64 `json:"tx_bytes"`
	Drops    uint64 `json:"drops"`
}

// MACStats is one learned address.
type MACStats struct {
	MAC  string  `json:"mac"`
	VLAN uint16  `json:"vlan"`
	Port int     `json:"port"`
	Age  float64 `json:"age_seconds"`
}

// Stats is a snapshot of the switch.
type Stats struct {
	Hub           bool        `json:"hub"`
	Ports         []PortStats `json:"ports"`
	MACs          []MACStats  `json:"macs"`
	UnknownFrames uint64      `json:"unknown_sender_frames"`
}

// Stats returns the ports, their counters and the learned addresses.
func (s *Switch) Stats() Stats {
	st := Stats{Hub: s.cfg.Hub, Ports: []PortStats{}, MACs: []MACStats{}, UnknownFrames: s.unknown.Load()}
	for _, p := range s.ports.Load().list {
		st.Ports = append(st.Ports, PortStats{ID: p.ID, Kind: p.Kind, Name: p.Name, VLAN: p.VLAN, Trunk: p.Trunk,
			RxFrames: p.rxFrames.Load(), RxBytes: p.rxBytes.Load(), TxFrames: p.txFrames.Load(), TxBytes: p.txBytes.Load(), Drops: p.drops.Load()})
	}
	now := s.nanotime()
	s.mu.Lock()
	for k, e := range s.fab.table {
		if now-e.seen <= s.age {
			st.MACs = append(st.MACs, MACStats{MAC: k.mac.String(), VLAN: k.vid, Port: e.port.ID, Age: float64(now-e.seen) / 1e9})
		}
	}
	s.mu.Unlock()
	sort.Slice(st.Ports, func(i, j int) bool { return st.Ports[i].ID < st.Ports[j].ID })
	sort.Slice(st.MACs, func(i, j int) bool { return st.MACs[i].MAC < st.MACs[j].MAC })
	return st
}

// WriteText writes st for people.
func (st Stats) WriteText(w io.Writer) {
	mode := "switch"
	if st.Hub {
		mode = "hub"
	}
	fmt.Fprintf(w, "%s: %d ports, %d learned addresses, %d frames from unknown senders\n", mode, len(st.Ports), len(st.MACs), st.UnknownFrames)
	for _, p := range st.Ports {
		v := ""
		if p.VLAN != 0 || p.Trunk {
			v = fmt.Sprintf(" vlan %d", p.VLAN)
			if p.Trunk {
				v += " trunk"
			}
		}
		fmt.Fprintf(w, "port %d %s %s%s: rx %d frames %d bytes, tx %d frames %d bytes, %d dropped\n",
			p.ID, p.Kind, p.Name, v, p.RxFrames, p.RxBytes, p.TxFrames, p.TxBytes, p.Drops)
	}
	for _, m := range st.MACs {
		fmt.Fprintf(w, "mac %s vlan %d port %d age %.1fs\n", m.MAC, m.VLAN, m.Port, m.Age)
	}
}

// nanotime is the switch's monotonic clock in nanoseconds.
func (s *Switch) nanotime() int64 { return int64(time.Since(s.start)) }

// lockedWriter serialises log lines from the switch's goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	if l.w == nil {
		return len(p), nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
