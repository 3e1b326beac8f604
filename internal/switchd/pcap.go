package switchd

import (
	"bufio"
	"encoding/binary"
	"io"
	"time"
)

// pcapWriter writes frames in the classic libpcap format (microsecond
// timestamps, LINKTYPE_ETHERNET), readable by tcpdump and tshark.
type pcapWriter struct {
	w   *bufio.Writer
	err error
	hdr [16]byte
}

func newPcapWriter(w io.Writer) *pcapWriter {
	p := &pcapWriter{w: bufio.NewWriterSize(w, 256<<10)}
	var h [24]byte
	le := binary.LittleEndian
	le.PutUint32(h[0:], 0xa1b2c3d4)
	le.PutUint16(h[4:], 2)
	le.PutUint16(h[6:], 4)
	le.PutUint32(h[16:], 65535) // snaplen
	le.PutUint32(h[20:], 1)     // Ethernet
	_, p.err = p.w.Write(h[:])
	return p
}

func (p *pcapWriter) write(frame []byte, t time.Time) {
	if p.err != nil {
		return
	}
	le := binary.LittleEndian
	le.PutUint32(p.hdr[0:], uint32(t.Unix()))
	le.PutUint32(p.hdr[4:], uint32(t.Nanosecond()/1000))
	le.PutUint32(p.hdr[8:], uint32(len(frame)))
	le.PutUint32(p.hdr[12:], uint32(len(frame)))
	if _, p.err = p.w.Write(p.hdr[:]); p.err == nil {
		_, p.err = p.w.Write(frame)
	}
}

func (p *pcapWriter) flush() error {
	if p.err != nil {
		return p.err
	}
	p.err = p.w.Flush()
	return p.err
}
