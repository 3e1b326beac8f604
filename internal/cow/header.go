// Package cow reads and writes the copy-on-write overlay files of User Mode
// Linux block devices (ubd), byte-compatible with the C kernel and Debian's
// uml-utilities.
//
// A COW file starts with a header naming its backing file, followed by a
// bitmap with one bit per sector (bit set: the sector lives in the COW file)
// and the data area, where sector n is stored at DataOffset + n*512.
// Versions 1 (host-endian), 2 and 3 (big-endian) are read, including the
// "broken" 64-bit v3 layout; version 3 is written.
//
// The package offers:
//   - ParseHeader, ReadHeader, Header.Marshal: the on-disk header;
//   - Create: make a new COW file the way uml_mkcow and the kernel do;
//   - Open and File: a block-device view (ReadAt/WriteAt through the
//     bitmap) for the ubd driver;
//   - NewMerge: what uml_moo does, fast and sparse.
package cow

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// Magic is COW_MAGIC. Written big-endian the file starts with "OOOM";
// version 1 files, written in host order, usually start with "MOOO".
const Magic = 0x4F4F4F4D

// SectorSize is the sector size the kernel uses for the bitmap and the data
// area, and the one Create writes.
const SectorSize = 512

// DefaultAlignment is the alignment Create writes: the host page size of
// x86_64, as uml_mkcow (sysconf(_SC_PAGESIZE)) and the kernel use.
const DefaultAlignment = 4096

// On-disk sizes of the header layouts.
const (
	// HeaderV1Size is the packed v1 header: magic, version, 256-byte name,
	// mtime, size, sectorsize.
	HeaderV1Size = 280
	// HeaderV2Size is the packed v2 header: magic, version, 4096-byte
	// name, mtime, size, sectorsize.
	HeaderV2Size = 4120
	// HeaderV3Size is the packed v3 header: magic, version, mtime, size,
	// sectorsize, alignment, cow_format, 4096-byte name.
	HeaderV3Size = 4128
	// HeaderV3BrokenSize is the unpacked v3 struct some 64-bit builds
	// wrote (8-byte mtime, padded to 8 bytes). It is also the size of the
	// C readers' header union, hence how much ReadHeader reads.
	HeaderV3BrokenSize = 4136
	// MaxBackingName is the longest backing path a v3 header holds (the
	// field is 4096 bytes including the terminating NUL).
	MaxBackingName = 4095
)

// Limits this package enforces where the C code would divide by zero,
// overflow or allocate absurd buffers.
const (
	// MaxSectorSize is the largest sector size accepted in a header.
	MaxSectorSize = 16 << 20
	// MaxAlignment is the largest v3 alignment accepted.
	MaxAlignment = 1 << 30
	// MaxSize is the largest backing size accepted (bytes).
	MaxSize = 1 << 60
)

// MsgBrokenV3 is the note the C readers print (stdout in uml_moo, the
// kernel log in linux) when they recover a broken 64-bit v3 header.
const MsgBrokenV3 = "read_cow_header - broken V3 file with 64-bit layout - recovering content."

// Sentinel errors wrapped by *HeaderError; test with errors.Is.
var (
	// ErrNotCOW: the magic does not match. The C code prints nothing
	// and the kernel treats such a file as a plain image.
	ErrNotCOW = errors.New("not a COW file")
	// ErrShortHeader: fewer than 8 bytes could be read.
	ErrShortHeader = errors.New("short COW header")
	// ErrTruncatedHeader: the file ends inside the header of its version.
	ErrTruncatedHeader = errors.New("truncated COW header")
	// ErrAlignZero: a v3 header with alignment 0 (the C tools then crash
	// with a division by zero).
	ErrAlignZero = errors.New("COW header alignment is 0")
	// ErrVersion: a version other than 1, 2 or 3.
	ErrVersion = errors.New("unsupported COW version")
	// ErrGeometry: a sector size, alignment or size the C code cannot
	// handle either (zero or negative sector size, overflow).
	ErrGeometry = errors.New("invalid COW geometry")
)

// HeaderError reports a COW header that cannot be used. Msg is the line the
// C readers print for it ("read_cow_header - short header", ...), empty for
// ErrNotCOW, which they report silently. Err is one of the sentinels above.
type HeaderError struct {
	Msg     string
	Err     error
	Version uint32 // the version word, when the magic matched
	Broken  bool   // the C readers printed MsgBrokenV3 before Msg
}

func (e *HeaderError) Error() string {
	if e.Msg != "" {
		return e.Msg
	}
	return e.Err.Error()
}

// Unwrap returns the sentinel.
func (e *HeaderError) Unwrap() error { return e.Err }

// Header is a decoded COW header plus the layout derived from it the way
// the C function cow_sizes computes it.
type Header struct {
	// Version is 1, 2 or 3.
	Version uint32
	// Broken marks a v3 header in the unpacked 64-bit layout.
	Broken bool
	// BackingFile is the backing path, cut at its first NUL (the kernel
	// leaves junk after it).
	BackingFile string
	// Mtime is the backing file's modification time in seconds, stored as
	// an unsigned 32-bit number.
	Mtime int64
	// Size is the backing file's size in bytes.
	Size uint64
	// SectorSize is the header's sector size (512 in practice). The
	// kernel always uses 512-byte bitmap units; uml_moo uses this value.
	SectorSize int
	// Alignment of the bitmap and data area (v3), or SectorSize (v1, v2).
	Alignment uint32
	// Format is v3's cow_format (0 = bitmap).
	Format uint32

	// BitmapOffset is where the bitmap starts.
	BitmapOffset int64
	// BitmapLen is the bitmap length in bytes. For v1 and v2 it keeps the
	// C code's rounding bug, (size+ss-1)/(8*ss), which can be one byte
	// short: sectors past BitmapLen*8 then have no bit.
	BitmapLen int64
	// DataOffset is where sector 0's data starts.
	DataOffset int64
}

// Sectors returns the number of whole sectors (of SectorSize bytes) in the
// backing file: the sectors uml_moo merges.
func (h *Header) Sectors() int64 { return int64(h.Size / uint64(h.SectorSize)) }

// BitSectors returns how many sectors have a bit in the on-disk bitmap:
// min(ceil(Size/SectorSize), 8*BitmapLen).
func (h *Header) BitSectors() int64 {
	n := int64((h.Size + uint64(h.SectorSize) - 1) / uint64(h.SectorSize))
	if m := 8 * h.BitmapLen; n > m {
		n = m
	}
	return n
}

// nativeEndian is the host byte order, in which v1 headers are written.
var nativeEndian = binary.NativeEndian

// ParseHeader decodes a COW header from b, which holds the first bytes of
// the file (up to HeaderV3BrokenSize are looked at). It follows the C
// read_cow_header: the magic decides how the version word is read (host
// order, or big-endian), the version decides the layout; v1 fields are in
// host order, v2 and v3 fields big-endian; v3 whose name field starts with
// four zero bytes is the broken 64-bit layout.
func ParseHeader(b []byte) (*Header, error) {
	if len(b) < 8 {
		return nil, &HeaderError{Msg: "read_cow_header - short header", Err: ErrShortHeader}
	}
	var version uint32
	var magicLE [4]byte
	nativeEndian.PutUint32(magicLE[:], Magic)
	switch {
	case bytes.Equal(b[0:4], magicLE[:]):
		version = nativeEndian.Uint32(b[4:8])
	case binary.BigEndian.Uint32(b[0:4]) == Magic:
		version = binary.BigEndian.Uint32(b[4:8])
	default:
		return nil, &HeaderError{Err: ErrNotCOW}
	}
	be := binary.BigEndian
	h := &Header{Version: version}
	truncated := func() error {
		return &HeaderError{Msg: fmt.Sprintf("read_cow_header - failed to read V%d header", version),
			Err: ErrTruncatedHeader, Version: version, Broken: h.Broken}
	}
	switch {
	case version == 1:
		if len(b) < HeaderV1Size {
			return nil, truncated()
		}
		h.BackingFile = cString(b[8:264])
		h.Mtime = int64(nativeEndian.Uint32(b[264:268]))
		h.Size = nativeEndian.Uint64(b[268:276])
		h.SectorSize = int(int32(nativeEndian.Uint32(b[276:280])))
		h.BitmapOffset = HeaderV1Size
	case version == 2:
		if len(b) < HeaderV2Size {
			return nil, truncated()
		}
		h.BackingFile = cString(b[8:4104])
		h.Mtime = int64(be.Uint32(b[4104:4108]))
		h.Size = be.Uint64(b[4108:4116])
		h.SectorSize = int(int32(be.Uint32(b[4116:4120])))
		h.BitmapOffset = HeaderV2Size
	case version == 3 && (len(b) < 36 || nativeEndian.Uint32(b[32:36]) != 0):
		if len(b) < HeaderV3Size {
			return nil, truncated()
		}
		h.Mtime = int64(be.Uint32(b[8:12]))
		h.Size = be.Uint64(b[12:20])
		h.SectorSize = int(int32(be.Uint32(b[20:24])))
		h.Alignment = be.Uint32(b[24:28])
		h.Format = be.Uint32(b[28:32])
		h.BackingFile = cString(b[32:4128])
	case version == 3:
		h.Broken = true
		if len(b) < HeaderV3BrokenSize {
			return nil, truncated()
		}
		// Only the first 4 bytes of the 8-byte mtime count, big-endian.
		h.Mtime = int64(be.Uint32(b[8:12]))
		h.Size = be.Uint64(b[16:24])
		h.SectorSize = int(int32(be.Uint32(b[24:28])))
		h.Alignment = be.Uint32(b[28:32])
		h.Format = be.Uint32(b[32:36])
		h.BackingFile = cString(b[36:4132])
	default:
		return nil, &HeaderError{Msg: "read_cow_header - invalid COW version", Err: ErrVersion, Version: version}
	}
	if version < 3 {
		h.Alignment = uint32(h.SectorSize)
	} else if h.Alignment == 0 {
		return nil, &HeaderError{Msg: "read_cow_header - invalid COW header, align == 0",
			Err: ErrAlignZero, Version: version, Broken: h.Broken}
	}
	if err := h.layout(); err != nil {
		return nil, &HeaderError{Msg: "read_cow_header - " + err.Error(), Err: ErrGeometry, Version: version, Broken: h.Broken}
	}
	return h, nil
}

// layout validates the geometry and fills BitmapOffset (v3), BitmapLen and
// DataOffset as cow_sizes does.
func (h *Header) layout() error {
	ss := h.SectorSize
	if ss <= 0 || ss > MaxSectorSize {
		return fmt.Errorf("invalid COW header, sector size %d", ss)
	}
	if h.Size > MaxSize {
		return fmt.Errorf("invalid COW header, size %d", h.Size)
	}
	if h.Version >= 3 {
		if h.Alignment > MaxAlignment {
			return fmt.Errorf("invalid COW header, align == %d", h.Alignment)
		}
		hs := int64(HeaderV3Size)
		if h.Broken {
			hs = HeaderV3BrokenSize
		}
		h.BitmapOffset = roundUp(hs, int64(h.Alignment))
		sectors := (int64(h.Size) + int64(ss) - 1) / int64(ss)
		h.BitmapLen = (sectors + 7) / 8
		h.DataOffset = roundUp(h.BitmapOffset+h.BitmapLen, int64(h.Alignment))
	} else {
		h.BitmapLen = (int64(h.Size) + int64(ss) - 1) / (8 * int64(ss))
		h.DataOffset = roundUp(h.BitmapOffset+h.BitmapLen, int64(ss))
	}
	return nil
}

func roundUp(x, align int64) int64 { return (x + align - 1) / align * align }

// cString returns b up to its first NUL (all of b if there is none).
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// ReadHeader reads and parses the header at the start of r.
func ReadHeader(r io.ReaderAt) (*Header, error) {
	buf := make([]byte, HeaderV3BrokenSize)
	n, err := r.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		return nil, err
	}
	return ParseHeader(buf[:n])
}

// NewHeader returns the v3 header uml_mkcow and the kernel write for a
// backing file: absolute path backing, its mtime (truncated to 32 bits as
// the C code does) and size, sector size 512, alignment 4096, bitmap
// format.
func NewHeader(backing string, mtime int64, size uint64) (*Header, error) {
	if len(backing) > MaxBackingName {
		return nil, fmt.Errorf("backing file name %q is too long: names are limited to %d characters", backing, MaxBackingName)
	}
	h := &Header{
		Version:     3,
		BackingFile: backing,
		Mtime:       int64(uint32(mtime)),
		Size:        size,
		SectorSize:  SectorSize,
		Alignment:   DefaultAlignment,
	}
	if err := h.layout(); err != nil {
		return nil, err
	}
	return h, nil
}

// Marshal encodes h as a v3 header (HeaderV3Size bytes) with a zero-filled
// name tail, byte-identical to uml_mkcow's. Only version 3, non-broken
// headers can be encoded.
func (h *Header) Marshal() ([]byte, error) {
	if h.Version != 3 || h.Broken {
		return nil, fmt.Errorf("cow: only v3 headers are written (have v%d)", h.Version)
	}
	if len(h.BackingFile) > MaxBackingName {
		return nil, fmt.Errorf("cow: backing file name longer than %d bytes", MaxBackingName)
	}
	if h.BackingFile == "" || h.BackingFile[0] == 0 || bytes.IndexByte([]byte(h.BackingFile), 0) >= 0 {
		// An empty name or one with a NUL would read back as the broken
		// layout or a different name.
		return nil, fmt.Errorf("cow: invalid backing file name %q", h.BackingFile)
	}
	be := binary.BigEndian
	b := make([]byte, HeaderV3Size)
	be.PutUint32(b[0:4], Magic)
	be.PutUint32(b[4:8], 3)
	be.PutUint32(b[8:12], uint32(h.Mtime))
	be.PutUint64(b[12:20], h.Size)
	be.PutUint32(b[20:24], uint32(h.SectorSize))
	be.PutUint32(b[24:28], h.Alignment)
	be.PutUint32(b[28:32], h.Format)
	copy(b[32:], h.BackingFile)
	return b, nil
}

// WriteHeader writes h's v3 encoding at offset 0 of w.
func WriteHeader(w io.WriterAt, h *Header) error {
	b, err := h.Marshal()
	if err != nil {
		return err
	}
	_, err = w.WriteAt(b, 0)
	return err
}

// TestBit reports whether bit n of an LSB-first bitmap is set (false past
// its end).
func TestBit(bitmap []byte, n int64) bool {
	i := n >> 3
	return i < int64(len(bitmap)) && bitmap[i]&(1<<(n&7)) != 0
}

// SetBit sets bit n of an LSB-first bitmap, which must be long enough.
func SetBit(bitmap []byte, n int64) { bitmap[n>>3] |= 1 << (n & 7) }

// CountBits returns how many of the first n bits of bitmap are set.
func CountBits(bitmap []byte, n int64) int64 {
	if max := int64(len(bitmap)) * 8; n > max {
		n = max
	}
	var c int64
	full := n >> 3
	for _, x := range bitmap[:full] {
		c += int64(bits.OnesCount8(x))
	}
	if r := n & 7; r != 0 {
		c += int64(bits.OnesCount8(bitmap[full] & (1<<r - 1)))
	}
	return c
}
