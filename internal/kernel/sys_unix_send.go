package kernel

import (
	"encoding/binary"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
)

// Datagrams a guest sends to paths: the engine sends them on a copy of
// the guest's socket, with its fds and credentials translated.

// outMsg is one datagram a guest sends to a path.
type outMsg struct {
	host    string   // the destination's host path ("" when none)
	data    [][]byte // the iovecs' bytes
	control []byte   // the guest's control messages
	lenAddr uint64   // sendmmsg: where its msg_len goes
}

// msghdr is the x86-64 struct msghdr.
type msghdr struct {
	name    uint64
	namelen uint32
	iov     uint64
	iovlen  uint64
	control uint64
	ctllen  uint64
}

func (c *call) readMsghdr(addr uint64) (msghdr, int64) {
	var b [56]byte
	if r := c.read(addr, b[:]); r < 0 {
		return msghdr{}, r
	}
	le := binary.LittleEndian
	return msghdr{name: le.Uint64(b[0:]), namelen: le.Uint32(b[8:]), iov: le.Uint64(b[16:]),
		iovlen: le.Uint64(b[24:]), control: le.Uint64(b[32:]), ctllen: le.Uint64(b[40:])}, 0
}

// readIov reads the bytes of an iovec array, refusing more than max.
func (c *call) readIov(iov, n uint64, max int) ([][]byte, int64) {
	if n > 1024 {
		return nil, -int64(unix.EMSGSIZE)
	}
	raw := make([]byte, 16*n)
	if r := c.read(iov, raw); n > 0 && r < 0 {
		return nil, r
	}
	out := make([][]byte, 0, n)
	total := 0
	for i := uint64(0); i < n; i++ {
		base, l := binary.LittleEndian.Uint64(raw[16*i:]), binary.LittleEndian.Uint64(raw[16*i+8:])
		if int64(l) < 0 {
			return nil, -abi.EINVAL
		}
		if total += int(l); total > max {
			return nil, -int64(unix.EMSGSIZE)
		}
		b := make([]byte, l)
		if r := c.read(base, b); l > 0 && r < 0 {
			return nil, r
		}
		out = append(out, b)
	}
	return out, 0
}

// unixSendTo serves sendto or sendmsg with a path on guest socket fd:
// datagram sockets send from the engine; the host answers the others
// (a stream socket refuses an address; a seqpacket socket ignores it).
// msg reads the datagram and its control messages, refusing more than
// max bytes.
func (c *call) unixSendTo(fd int, path string, flags int, msg func(max int) ([][]byte, []byte, int64)) int64 {
	s, r := c.dgramSock(fd)
	if s < 0 {
		return r
	}
	data, control, r := msg(sendLimit(s))
	if r < 0 {
		unix.Close(s)
		return r
	}
	host, r := c.unixTarget(path)
	if r < 0 {
		unix.Close(s)
		return r
	}
	return c.unixSend(s, []outMsg{{host: host, data: data, control: control}}, flags, false)
}

// dgramSock copies guest fd n when it is an AF_UNIX datagram socket;
// otherwise s is -1 and r the answer (continued for the other sockets:
// the host refuses or ignores their address itself).
func (c *call) dgramSock(n int) (s int, r int64) {
	s, typ, ok, r := c.unixSock(n)
	if !ok {
		return -1, r
	}
	if typ != unix.SOCK_DGRAM {
		unix.Close(s)
		return -1, continued
	}
	return s, 0
}

// readMsg reads the datagram and control messages of a guest's msghdr.
func (c *call) readMsg(h msghdr, max int) ([][]byte, []byte, int64) {
	data, r := c.readIov(h.iov, h.iovlen, max)
	if r < 0 {
		return nil, nil, r
	}
	if h.control == 0 || h.ctllen == 0 {
		return data, nil, 0
	}
	if h.ctllen > 1<<16 {
		return nil, nil, -int64(unix.ENOBUFS)
	}
	ctl := make([]byte, h.ctllen)
	if r := c.read(h.control, ctl); r < 0 {
		return nil, nil, r
	}
	return data, ctl, 0
}

// sendLimit is the largest datagram guest socket s may send (its send
// buffer; the host refuses more with EMSGSIZE too).
func sendLimit(s int) int {
	if n, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUF); err == nil && n > 0 {
		return n
	}
	return 1 << 20
}

// unixSend sends msgs on s (a copy of a guest socket, closed here): at
// once, or, when the receiver's queue is full and the guest's socket
// blocks, on another goroutine until it fits. mmsg says whether the
// result is a message count (sendmmsg) or a byte count.
func (c *call) unixSend(s int, msgs []outMsg, flags int, mmsg bool) int64 {
	fl, err := unix.FcntlInt(uintptr(s), unix.F_GETFL, 0)
	if err != nil {
		unix.Close(s)
		return errno(err)
	}
	block := fl&unix.O_NONBLOCK == 0 && flags&unix.MSG_DONTWAIT == 0
	job := &sendJob{c: c, s: s, flags: flags | unix.MSG_DONTWAIT, mmsg: mmsg}
	for _, m := range msgs {
		oob, fds, r := c.hostControl(m.control)
		if r < 0 {
			job.close()
			closeAll(fds)
			return r
		}
		job.msgs = append(job.msgs, m)
		job.oob = append(job.oob, oob)
		job.fds = append(job.fds, fds...)
	}
	r, again := job.try()
	if !again || !block {
		job.close()
		return r
	}
	deadline := time.Time{}
	if tv, err := unix.GetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_SNDTIMEO); err == nil && (tv.Sec != 0 || tv.Usec != 0) {
		deadline = time.Now().Add(time.Duration(tv.Nano()))
	}
	later, tid := c.n.Detach(), c.th.Tid
	c.detached = true
	go c.k.finishLater(c, later, func() int64 {
		defer job.close()
		pause := time.Millisecond
		for {
			time.Sleep(pause)
			if pause < 20*time.Millisecond {
				pause *= 2
			}
			r, again := job.try()
			if !again {
				return r
			}
			if interrupted(tid, later) {
				return -errRestartSys
			}
			if !deadline.IsZero() && time.Now().After(deadline) {
				return r
			}
		}
	})
	return answered
}

// sendJob is what one sendto, sendmsg or sendmmsg to paths still has to
// send.
type sendJob struct {
	c     *call
	s     int
	flags int
	mmsg  bool
	msgs  []outMsg
	oob   [][]byte
	fds   []int
	sent  int // messages sent so far
}

// try sends what it can without waiting. again is true when the receiver
// was full before anything was sent (the caller may wait and try again).
func (j *sendJob) try() (r int64, again bool) {
	for j.sent < len(j.msgs) {
		m := j.msgs[j.sent]
		var to unix.Sockaddr
		if m.host != "" {
			to = &unix.SockaddrUnix{Name: m.host}
		}
		n, err := j.sendOne(m.data, j.oob[j.sent], to)
		if err != nil {
			if j.mmsg && j.sent > 0 {
				return int64(j.sent), false
			}
			return errno(err), err == unix.EAGAIN
		}
		if !j.mmsg {
			return int64(n), false
		}
		var l [4]byte
		binary.LittleEndian.PutUint32(l[:], uint32(n))
		j.c.mem.WriteMem(m.lenAddr, l[:])
		j.sent++
	}
	return int64(j.sent), false
}

// sendOne sends one datagram with the guest's credentials, or without
// any when the host refuses to let the engine speak for the guest.
func (j *sendJob) sendOne(data [][]byte, oob []byte, to unix.Sockaddr) (int, error) {
	u := &j.c.k.unix
	if !u.noCreds.Load() {
		withCreds := append(append([]byte(nil), oob...), j.c.hostCreds()...)
		n, err := unix.SendmsgBuffers(j.s, data, withCreds, to, j.flags)
		if err != unix.EPERM {
			return n, err
		}
		u.noCreds.Store(true)
	}
	return unix.SendmsgBuffers(j.s, data, oob, to, j.flags)
}

func (j *sendJob) close() {
	unix.Close(j.s)
	closeAll(j.fds)
	j.fds = nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// hostCreds is an SCM_CREDENTIALS message with the caller's host
// identity: its host pid and the host ids it runs as (what the receiver
// would have seen from the guest itself). Explicit credentials the guest
// passes were checked and replaced by the same (hostControl).
func (c *call) hostCreds() []byte {
	var st unix.Stat_t
	uid, gid := uint32(os.Geteuid()), uint32(os.Getegid())
	if unix.Stat("/proc/"+strconv.Itoa(c.p.Tgid), &st) == nil {
		uid, gid = st.Uid, st.Gid
	}
	return unix.UnixCredentials(&unix.Ucred{Pid: int32(c.p.Tgid), Uid: uid, Gid: gid})
}

// hostControl translates a guest's control messages for a send from the
// engine: SCM_RIGHTS fds become the engine's copies of the guest's fds
// (returned to be closed after the send), SCM_CREDENTIALS are checked as
// Linux checks them and dropped (hostCreds adds the caller's), the rest
// pass unchanged.
func (c *call) hostControl(b []byte) ([]byte, []int, int64) {
	if len(b) == 0 {
		return nil, nil, 0
	}
	msgs, err := unix.ParseSocketControlMessage(b)
	if err != nil {
		return nil, nil, -abi.EINVAL
	}
	var out []byte
	var fds []int
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_RIGHTS:
			var mine []int
			for i := 0; i+4 <= len(m.Data); i += 4 {
				g := int(int32(binary.LittleEndian.Uint32(m.Data[i:])))
				h, err := c.takeGuestFd(g)
				if err != nil {
					closeAll(fds)
					closeAll(mine)
					return nil, nil, -abi.EBADF
				}
				mine = append(mine, h)
			}
			fds = append(fds, mine...)
			out = append(out, unix.UnixRights(mine...)...)
		case m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_CREDENTIALS:
			if len(m.Data) < 12 {
				closeAll(fds)
				return nil, nil, -abi.EINVAL
			}
			if r := c.checkCreds(m.Data); r < 0 {
				closeAll(fds)
				return nil, nil, r
			}
		default:
			h := make([]byte, unix.CmsgSpace(len(m.Data)))
			binary.LittleEndian.PutUint64(h[0:], uint64(unix.CmsgLen(len(m.Data))))
			binary.LittleEndian.PutUint32(h[8:], uint32(m.Header.Level))
			binary.LittleEndian.PutUint32(h[12:], uint32(m.Header.Type))
			copy(h[unix.CmsgLen(0):], m.Data)
			out = append(out, h...)
		}
	}
	return out, fds, 0
}

// checkCreds applies Linux's rule to a guest's struct ucred: its own pid
// and one of its own ids, unless it is root.
func (c *call) checkCreds(d []byte) int64 {
	pid := int(int32(binary.LittleEndian.Uint32(d)))
	uid, gid := binary.LittleEndian.Uint32(d[4:]), binary.LittleEndian.Uint32(d[8:])
	cr := c.p.Cred
	if cr.root() {
		if pid != c.p.Pid() && c.k.byPid(pid) == nil {
			return -abi.ESRCH
		}
		return 0
	}
	if pid != c.p.Pid() || (uid != cr.Uid && uid != cr.Euid && uid != cr.Suid) ||
		(gid != cr.Gid && gid != cr.Egid && gid != cr.Sgid) {
		return -abi.EPERM
	}
	return 0
}

// unixSendmmsg serves a sendmmsg any of whose messages names a path:
// the engine sends them all, in order.
func (c *call) unixSendmmsg(fd int, vec uint64, vlen int, flags int) int64 {
	if vlen > 1024 {
		vlen = 1024
	}
	hdrs := make([]msghdr, vlen)
	paths := make([]string, vlen)
	named := false
	for i := range hdrs {
		h, r := c.readMsghdr(vec + uint64(64*i))
		if r < 0 {
			return r
		}
		hdrs[i] = h
		if h.name != 0 {
			p, ok, r := c.unixPath(h.name, int(h.namelen))
			if r < 0 {
				return r
			}
			if ok {
				paths[i], named = p, true
			}
		}
	}
	if !named {
		return continued
	}
	s, r := c.dgramSock(fd)
	if s < 0 {
		return r
	}
	max := sendLimit(s)
	msgs := make([]outMsg, 0, vlen)
	for i, h := range hdrs {
		m := outMsg{lenAddr: vec + uint64(64*i) + 56}
		if paths[i] != "" {
			host, r := c.unixTarget(paths[i])
			if r < 0 {
				if i == 0 {
					unix.Close(s)
					return r
				}
				break // the ones before it are sent; this one fails next time
			}
			m.host = host
		}
		if m.data, m.control, r = c.readMsg(h, max); r < 0 {
			if i == 0 {
				unix.Close(s)
				return r
			}
			break
		}
		msgs = append(msgs, m)
	}
	return c.unixSend(s, msgs, flags, true)
}
