package netdev

import (
	"encoding/binary"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/umltools/umltools/internal/tuntap"
)

// A tap opened with IFF_VNET_HDR puts a struct virtio_net_hdr before
// each frame. The engine uses it to hand the host TCP segments of up to
// 32 KiB with their checksum left to fill in, which the host cuts to the
// MTU (GSO, as the C kernel's vector tap does with "vnet headers for
// tso"): one write carries what took twenty, and netstack's TCP handles
// a twentieth of the segments. Frames from the host come whole (the tap
// is not told it may send large ones), and their header is dropped.

// vnetHdrLen is the size of struct virtio_net_hdr, a tap's default.
const vnetHdrLen = 10

// virtio_net_hdr's flags and GSO types.
const (
	vnetNeedsCsum = 1
	vnetGSOTCPv4  = 1
	vnetGSOTCPv6  = 4
)

// gsoFrames is a transport that takes TCP segments larger than the MTU,
// with their checksum to fill in, and has the host cut them.
type gsoFrames interface {
	Frames
	// GSO reports whether the transport can.
	GSO() bool
	// WriteGSO writes one such segment: frame is the whole frame,
	// hdrLen its headers' length (Ethernet, IP, TCP), dataLen its
	// payload's.
	WriteGSO(frame []byte, gso stack.GSO, hdrLen, dataLen int) error
}

// vnetHeader fills h for a frame of netstack's with GSO options gso.
func vnetHeader(h []byte, gso stack.GSO, hdrLen, dataLen int) {
	clear(h[:vnetHdrLen])
	if gso.Type == stack.GSONone {
		return
	}
	binary.LittleEndian.PutUint16(h[2:], uint16(hdrLen))
	if gso.NeedsCsum {
		h[0] = vnetNeedsCsum
		binary.LittleEndian.PutUint16(h[6:], uint16(header.EthernetMinimumSize)+gso.L3HdrLen) // csum_start
		binary.LittleEndian.PutUint16(h[8:], gso.CsumOffset)
	}
	if dataLen > int(gso.MSS) {
		switch gso.Type {
		case stack.GSOTCPv4:
			h[1] = vnetGSOTCPv4
		case stack.GSOTCPv6:
			h[1] = vnetGSOTCPv6
		}
		binary.LittleEndian.PutUint16(h[4:], gso.MSS)
	}
}

// openTapVnet attaches to the existing tap dev with a vnet header, or
// without one where the host refuses it.
func openTapVnet(dev string) (*tapFrames, error) {
	f, _, err := tuntap.OpenFlags("", dev, unix.IFF_VNET_HDR)
	if err != nil {
		return openTap(dev)
	}
	t, err := tapFile(f, dev)
	if err != nil {
		return nil, err
	}
	t.vnet = true
	t.rc, err = t.f.SyscallConn()
	if err != nil {
		t.f.Close()
		return nil, err
	}
	return t, nil
}

// GSO reports whether the tap has a vnet header.
func (t *tapFrames) GSO() bool { return t.vnet }

// readVnet reads a frame after its vnet header.
func (t *tapFrames) readVnet(b []byte) (int, error) {
	var hdr [vnetHdrLen]byte
	var n int
	var err error
	if rerr := t.rc.Read(func(fd uintptr) bool {
		n, err = unix.Readv(int(fd), [][]byte{hdr[:], b})
		return err != unix.EAGAIN
	}); rerr != nil {
		return 0, rerr
	}
	if err != nil {
		return 0, &os.PathError{Op: "read", Path: t.f.Name(), Err: err}
	}
	if n < vnetHdrLen {
		return 0, &os.PathError{Op: "read", Path: t.f.Name(), Err: syscall.EIO}
	}
	return n - vnetHdrLen, nil
}

// WriteGSO implements gsoFrames.
func (t *tapFrames) WriteGSO(frame []byte, gso stack.GSO, hdrLen, dataLen int) error {
	var hdr [vnetHdrLen]byte
	vnetHeader(hdr[:], gso, hdrLen, dataLen)
	return t.writev(hdr[:], frame)
}

func (t *tapFrames) writev(hdr, frame []byte) error {
	var err error
	if werr := t.rc.Write(func(fd uintptr) bool {
		_, err = unix.Writev(int(fd), [][]byte{hdr, frame})
		return err != unix.EAGAIN
	}); werr != nil {
		return werr
	}
	if err != nil {
		return &os.PathError{Op: "write", Path: t.f.Name(), Err: err}
	}
	return nil
}
