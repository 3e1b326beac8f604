package kernel

import (
	"bytes"
	"encoding/binary"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/sandbox"
)

// The addresses the host reports name host paths: while any guest socket
// is bound to a path, the syscalls that report addresses stop at their
// exit (ptrace) and the engine puts back the guest's names.

// unixPending is what a syscall stopped for its exit will report
// addresses into: up to one per message.
type unixPending struct {
	nr    int
	addrs []pendingAddr
}

// pendingAddr is one sockaddr buffer and its socklen_t.
type pendingAddr struct {
	addr, lenAddr uint64
	size          uint32 // the buffer's size at entry
}

// unixTrap decides, at the entry of a syscall that reports a peer or
// local address, whether its exit must be seen: only while some guest
// socket is bound to a path, and only when the caller asked for the
// address.
func (k *Kernel) unixTrap(t *sandbox.Task, regs *abi.Regs) sandbox.Action {
	u := &k.unix
	if u.count.Load() == 0 {
		return sandbox.Native()
	}
	p := unixPending{nr: int(regs.OrigRax)}
	one := func(addr, lenAddr uint64) {
		if addr == 0 || lenAddr == 0 {
			return
		}
		var l [4]byte
		if _, err := t.ReadMem(lenAddr, l[:]); err != nil {
			return
		}
		p.addrs = append(p.addrs, pendingAddr{addr, lenAddr, binary.LittleEndian.Uint32(l[:])})
	}
	msg := func(h uint64) {
		var b [16]byte
		if _, err := t.ReadMem(h, b[:]); err == nil {
			one(binary.LittleEndian.Uint64(b[:]), h+8)
		}
	}
	switch p.nr {
	case abi.SYS_GETSOCKNAME, abi.SYS_GETPEERNAME, abi.SYS_ACCEPT, abi.SYS_ACCEPT4:
		one(regs.Rsi, regs.Rdx)
	case abi.SYS_RECVFROM:
		one(regs.R8, regs.R9)
	case abi.SYS_RECVMSG:
		msg(regs.Rsi)
	case abi.SYS_RECVMMSG:
		n := regs.Rdx
		if n > 1024 {
			n = 1024
		}
		for i := uint64(0); i < n; i++ {
			msg(regs.Rsi + 64*i)
		}
	}
	if len(p.addrs) == 0 {
		return sandbox.Native()
	}
	u.mu.Lock()
	if u.pending == nil {
		u.pending = map[int]unixPending{}
	}
	u.pending[t.Tid] = p
	u.mu.Unlock()
	return sandbox.NativeExit()
}

// unixTrapExit puts the guest's names in the addresses a syscall stopped
// by unixTrap reported.
func (k *Kernel) unixTrapExit(t *sandbox.Task, regs *abi.Regs) {
	u := &k.unix
	u.mu.Lock()
	p, ok := u.pending[t.Tid]
	delete(u.pending, t.Tid)
	u.mu.Unlock()
	if !ok || int64(regs.Rax) < 0 {
		return
	}
	n := len(p.addrs)
	if p.nr == abi.SYS_RECVMMSG && int(regs.Rax) < n {
		n = int(regs.Rax)
	}
	// A name cut to the caller's buffer is asked again in full, where
	// the socket is known.
	var again func() string
	switch p.nr {
	case abi.SYS_GETSOCKNAME:
		again = func() string { return sockName(t.Tid, int(int32(regs.Rdi)), unix.SYS_GETSOCKNAME) }
	case abi.SYS_GETPEERNAME:
		again = func() string { return sockName(t.Tid, int(int32(regs.Rdi)), unix.SYS_GETPEERNAME) }
	case abi.SYS_ACCEPT, abi.SYS_ACCEPT4:
		again = func() string { return sockName(t.Tid, int(int32(regs.Rax)), unix.SYS_GETPEERNAME) }
	}
	for _, a := range p.addrs[:n] {
		u.fixAddr(t, a, again)
	}
}

// sockName returns the host's name for guest fd n of host thread tid
// (getsockname or getpeername, by nr), "" when there is none.
func sockName(tid, n int, nr uintptr) string {
	s, _, ok := hostSock(tid, n)
	if !ok {
		return ""
	}
	defer unix.Close(s)
	var b [sunPathMax + 1]byte
	l := uint32(sunPathMax)
	if _, _, e := unix.RawSyscall(nr, uintptr(s), uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&l))); e != 0 || l <= 2 {
		return ""
	}
	p := b[2:min(l, sunPathMax)]
	if i := bytes.IndexByte(p, 0); i >= 0 {
		p = p[:i]
	}
	return string(p)
}

// fixAddr rewrites one reported address naming a host path. again, when
// not nil, gives the full host name of a cut one.
func (u *unixNames) fixAddr(t *sandbox.Task, a pendingAddr, again func() string) {
	var l [4]byte
	if _, err := t.ReadMem(a.lenAddr, l[:]); err != nil {
		return
	}
	got := binary.LittleEndian.Uint32(l[:])
	if got <= 2 || got > sunPathMax {
		return
	}
	n := min(got, a.size)
	if n <= 2 {
		return
	}
	b := make([]byte, n)
	if _, err := t.ReadMem(a.addr, b); err != nil {
		return
	}
	if binary.LittleEndian.Uint16(b) != afUnix || b[2] == 0 {
		return
	}
	host := string(b[2:])
	if i := strings.IndexByte(host, 0); i >= 0 {
		host = host[:i]
	}
	full := n == got
	if !full && again != nil {
		if h := again(); strings.HasPrefix(h, host) {
			host, full = h, true
		}
	}
	guest, ok := u.guestName(host, full)
	if !ok {
		return
	}
	out := make([]byte, 2, 2+len(guest)+1)
	binary.LittleEndian.PutUint16(out, afUnix)
	out = append(append(out, guest...), 0)
	binary.LittleEndian.PutUint32(l[:], uint32(len(out)))
	if int(a.size) < len(out) {
		out = out[:a.size]
	}
	t.WriteMem(a.addr, out)
	t.WriteMem(a.lenAddr, l[:])
}

// unixPolicy makes the address-reporting syscalls stop for the tracer
// (unixTrap): always getsockname and getpeername and the recvmsg family
// (whose address buffer is in memory the filter cannot see), accept and
// recvfrom only when they pass an address buffer.
func unixPolicy(p *sandbox.Policy) {
	trace := sandbox.Rule{Else: sandbox.RetTrace}
	for _, nr := range []int{abi.SYS_GETSOCKNAME, abi.SYS_GETPEERNAME, abi.SYS_RECVMSG, abi.SYS_RECVMMSG} {
		p.Rules[nr] = trace
	}
	p.Rules[abi.SYS_ACCEPT] = sandbox.Rule{Else: sandbox.RetAllow, Arg: 1, Mask: ^uint64(0), IfSet: sandbox.RetTrace}
	p.Rules[abi.SYS_ACCEPT4] = sandbox.Rule{Else: sandbox.RetAllow, Arg: 1, Mask: ^uint64(0), IfSet: sandbox.RetTrace}
	p.Rules[abi.SYS_RECVFROM] = sandbox.Rule{Else: sandbox.RetAllow, Arg: 4, Mask: ^uint64(0), IfSet: sandbox.RetTrace}
}

// isUnixTrap reports whether nr is one of unixPolicy's syscalls.
func isUnixTrap(nr uint64) bool {
	switch nr {
	case abi.SYS_GETSOCKNAME, abi.SYS_GETPEERNAME, abi.SYS_ACCEPT, abi.SYS_ACCEPT4,
		abi.SYS_RECVFROM, abi.SYS_RECVMSG, abi.SYS_RECVMMSG:
		return true
	}
	return false
}
