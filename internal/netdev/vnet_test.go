package netdev

import (
	"bytes"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The vnet header of a frame: nothing for a plain one; the checksum's
// place for a TCP segment; GSO type and MSS too when it is longer than
// one MSS (struct virtio_net_hdr, little-endian).
func TestVnetHeader(t *testing.T) {
	gso4 := stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: 16, MSS: 1448, L3HdrLen: 20}
	gso6 := stack.GSO{Type: stack.GSOTCPv6, NeedsCsum: true, CsumOffset: 16, MSS: 1428, L3HdrLen: 40}
	for _, tc := range []struct {
		name            string
		gso             stack.GSO
		hdrLen, dataLen int
		want            []byte
	}{
		{"plain", stack.GSO{}, 54, 100, make([]byte, 10)},
		{"one segment", gso4, 66, 1000, []byte{1, 0, 66, 0, 0, 0, 34, 0, 16, 0}},
		{"tcp4 gso", gso4, 66, 30000, []byte{1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0}},
		{"tcp6 gso", gso6, 86, 30000, []byte{1, 4, 86, 0, 0x94, 0x05, 54, 0, 16, 0}},
	} {
		h := bytes.Repeat([]byte{0xee}, vnetHdrLen)
		vnetHeader(h, tc.gso, tc.hdrLen, tc.dataLen)
		if !bytes.Equal(h, tc.want) {
			t.Errorf("%s: % x, want % x", tc.name, h, tc.want)
		}
	}
}
