package kernel

import (
	"encoding/binary"
	"syscall"

	"github.com/umltools/umltools/internal/abi"
	"github.com/umltools/umltools/internal/sandbox"
)

// Terminal requests the host pty cannot answer as the guest's consoles
// should. The consoles and lines are host ptys; every ioctl on them runs
// natively, but for those the filter traps (ioctlTrapBit).

// ioctlTrapBit selects the ioctl numbers the filter traps: KD* (0x4Bxx)
// and socket SIOC* (0x89xx) requests have it, the termios (0x54xx) and
// block (0x12xx) ones do not.
const ioctlTrapBit = 0x800

// KDGKBMODE asks a virtual console its keyboard mode; K_UNICODE is UTF-8.
const (
	kdgkbmode = 0x4b44
	kUnicode  = 3
)

// ioctlTrap serves a trapped ioctl. The console and lines answer
// KDGKBMODE as a Linux virtual console in UTF-8 mode: agetty then treats
// them as the virtual consoles they stand for (no second waiting for a
// modem to settle, UTF-8 input). Everything else runs on the host.
func (k *Kernel) ioctlTrap(t *sandbox.Task, regs *abi.Regs) sandbox.Action {
	if a, ok := k.netIoctl(t, uint32(regs.Rsi), regs.Rdx); ok {
		return a
	}
	if uint32(regs.Rsi) != kdgkbmode || !k.isTerminalFd(t.Tid, int(int32(regs.Rdi))) {
		return sandbox.Native()
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], kUnicode)
	if _, err := t.WriteMem(regs.Rdx, b[:]); err != nil {
		return sandbox.Fail(int(syscall.EFAULT))
	}
	return sandbox.Emulate(0)
}

// isTerminalFd reports whether fd of host thread tid is the console or a
// line's pty.
func (k *Kernel) isTerminalFd(tid, fd int) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	o, r := k.fdObject(tid, fd)
	return r == 0 && k.ttyName(&o.st) != ""
}
