package cow

import (
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"

	"github.com/umltools/umltools/internal/testutil"
)

// craft returns the bytes of a COW file made by the independent
// testutil.CraftCOW.
func craft(t *testing.T, s testutil.COWSpec) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "x.cow")
	testutil.CraftCOW(t, p, s)
	return readFile(t, p)
}

func TestParseHeader(t *testing.T) {
	const mt = 1700000000
	back := "/srv/img/backing.img"
	cases := []struct {
		name string
		spec testutil.COWSpec
		want Header
	}{
		// The spec's examples: 8 MiB backing, data at 12288 (v3),
		// 6656 (v2), 2560 (v1).
		{"v3", testutil.COWSpec{Version: 3, Size: 8 << 20},
			Header{Version: 3, SectorSize: 512, Alignment: 4096, BitmapOffset: 8192, BitmapLen: 2048, DataOffset: 12288}},
		{"v3 junk after name", testutil.COWSpec{Version: 3, Size: 8 << 20, Junk: true},
			Header{Version: 3, SectorSize: 512, Alignment: 4096, BitmapOffset: 8192, BitmapLen: 2048, DataOffset: 12288}},
		{"v2", testutil.COWSpec{Version: 2, Size: 8 << 20},
			Header{Version: 2, SectorSize: 512, Alignment: 512, BitmapOffset: 4120, BitmapLen: 2048, DataOffset: 6656}},
		{"v1", testutil.COWSpec{Version: 1, Size: 8 << 20},
			Header{Version: 1, SectorSize: 512, Alignment: 512, BitmapOffset: 280, BitmapLen: 2048, DataOffset: 2560}},
		{"broken v3", testutil.COWSpec{Version: 3, Broken: true, Size: 8 << 20},
			Header{Version: 3, Broken: true, SectorSize: 512, Alignment: 4096, BitmapOffset: 8192, BitmapLen: 2048, DataOffset: 12288}},
		// v3 rounds the bitmap up: 3 sectors need one byte.
		{"v3 tiny", testutil.COWSpec{Version: 3, Size: 1500},
			Header{Version: 3, SectorSize: 512, Alignment: 4096, BitmapOffset: 8192, BitmapLen: 1, DataOffset: 12288}},
		// v1/v2 keep the old bug: (1500+511)/4096 = 0 bytes of bitmap.
		{"v2 tiny (rounding bug)", testutil.COWSpec{Version: 2, Size: 1500},
			Header{Version: 2, SectorSize: 512, Alignment: 512, BitmapOffset: 4120, BitmapLen: 0, DataOffset: 4608}},
		{"v3 align 512", testutil.COWSpec{Version: 3, Size: 1 << 20, Align: 512},
			Header{Version: 3, SectorSize: 512, Alignment: 512, BitmapOffset: 4608, BitmapLen: 256, DataOffset: 5120}},
		{"v3 sector 1024", testutil.COWSpec{Version: 3, Size: 1 << 20, SectorSize: 1024},
			Header{Version: 3, SectorSize: 1024, Alignment: 4096, BitmapOffset: 8192, BitmapLen: 128, DataOffset: 12288}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := c.spec
			s.Backing, s.Mtime = back, mt
			h, err := ParseHeader(craft(t, s))
			if err != nil {
				t.Fatal(err)
			}
			w := c.want
			w.BackingFile, w.Mtime, w.Size = back, mt, s.Size
			if *h != w {
				t.Fatalf("got  %+v\nwant %+v", *h, w)
			}
		})
	}
}

func TestParseHeaderErrors(t *testing.T) {
	good := craft(t, testutil.COWSpec{Version: 3, Backing: "/b", Mtime: 1, Size: 1 << 20})
	v1 := craft(t, testutil.COWSpec{Version: 1, Backing: "/b", Mtime: 1, Size: 1 << 20})
	v2 := craft(t, testutil.COWSpec{Version: 2, Backing: "/b", Mtime: 1, Size: 1 << 20})
	broken := craft(t, testutil.COWSpec{Version: 3, Broken: true, Backing: "/b", Mtime: 1, Size: 1 << 20})
	edit := func(b []byte, f func([]byte)) []byte {
		c := append([]byte(nil), b...)
		f(c)
		return c
	}
	be := binary.BigEndian
	cases := []struct {
		name   string
		b      []byte
		err    error
		msg    string
		broken bool
	}{
		{"empty", nil, ErrShortHeader, "read_cow_header - short header", false},
		{"7 bytes", good[:7], ErrShortHeader, "read_cow_header - short header", false},
		{"magic", edit(good, func(b []byte) { b[3] = 'X' }), ErrNotCOW, "", false},
		{"v1 truncated", v1[:279], ErrTruncatedHeader, "read_cow_header - failed to read V1 header", false},
		{"v2 truncated", v2[:4119], ErrTruncatedHeader, "read_cow_header - failed to read V2 header", false},
		{"v3 truncated", good[:4127], ErrTruncatedHeader, "read_cow_header - failed to read V3 header", false},
		{"broken truncated", broken[:4135], ErrTruncatedHeader, "read_cow_header - failed to read V3 header", true},
		{"version 4", edit(good, func(b []byte) { be.PutUint32(b[4:], 4) }), ErrVersion, "read_cow_header - invalid COW version", false},
		{"version 0", edit(good, func(b []byte) { be.PutUint32(b[4:], 0) }), ErrVersion, "read_cow_header - invalid COW version", false},
		{"align 0", edit(good, func(b []byte) { be.PutUint32(b[24:], 0) }), ErrAlignZero, "read_cow_header - invalid COW header, align == 0", false},
		{"broken align 0", edit(broken, func(b []byte) { be.PutUint32(b[28:], 0) }), ErrAlignZero, "read_cow_header - invalid COW header, align == 0", true},
		{"sector size 0", edit(good, func(b []byte) { be.PutUint32(b[20:], 0) }), ErrGeometry, "read_cow_header - invalid COW header, sector size 0", false},
		{"sector size negative", edit(v2, func(b []byte) { be.PutUint32(b[4116:], 0xfffffe00) }), ErrGeometry, "read_cow_header - invalid COW header, sector size -512", false},
		{"huge align", edit(good, func(b []byte) { be.PutUint32(b[24:], 0x80000000) }), ErrGeometry, "read_cow_header - invalid COW header, align == 2147483648", false},
		{"huge size", edit(good, func(b []byte) { be.PutUint64(b[12:], 1<<63) }), ErrGeometry, "read_cow_header - invalid COW header, size 9223372036854775808", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, err := ParseHeader(c.b)
			var he *HeaderError
			if h != nil || !errors.Is(err, c.err) || !errors.As(err, &he) {
				t.Fatalf("got %v, %v; want %v", h, err, c.err)
			}
			if he.Msg != c.msg || he.Broken != c.broken {
				t.Fatalf("msg %q broken %v; want %q %v", he.Msg, he.Broken, c.msg, c.broken)
			}
		})
	}
}

// A v1 header whose magic is big-endian has its version read big-endian
// but, as in C, its fields in host order.
func TestV1BigEndianMagic(t *testing.T) {
	b := craft(t, testutil.COWSpec{Version: 1, Backing: "/b", Mtime: 7, Size: 4096})
	binary.BigEndian.PutUint32(b[0:], Magic)
	binary.BigEndian.PutUint32(b[4:], 1)
	h, err := ParseHeader(b)
	if err != nil || h.Version != 1 || h.Mtime != 7 || h.Size != 4096 {
		t.Fatalf("%+v %v", h, err)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	h, err := NewHeader("/abs/backing.img", 0x1_2345_6789, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	if h.Mtime != 0x2345_6789 {
		t.Fatalf("mtime not truncated to 32 bits: %#x", h.Mtime)
	}
	b, err := h.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := craft(t, testutil.COWSpec{Version: 3, Backing: "/abs/backing.img", Mtime: 0x2345_6789, Size: 8 << 20})
	if string(b) != string(want[:HeaderV3Size]) {
		t.Fatalf("header differs from the independent encoder")
	}
	back, err := ParseHeader(b)
	if err != nil || *back != *h {
		t.Fatalf("round trip: %+v %v\nwant %+v", back, err, h)
	}
	for _, bad := range []*Header{{Version: 2}, {Version: 3, Broken: true}, {Version: 3, BackingFile: ""}, {Version: 3, BackingFile: "a\x00b"}} {
		if _, err := bad.Marshal(); err == nil {
			t.Errorf("Marshal(%+v) succeeded", bad)
		}
	}
	if _, err := NewHeader(string(make([]byte, 4096)), 0, 0); err == nil {
		t.Errorf("4096-byte name accepted")
	}
}

func TestBits(t *testing.T) {
	bm := []byte{0x3c, 0x00, 0x81}
	for n, want := range map[int64]bool{0: false, 1: false, 2: true, 5: true, 6: false, 16: true, 23: true, 22: false, 24: false, 1000: false} {
		if TestBit(bm, n) != want {
			t.Errorf("bit %d: want %v", n, want)
		}
	}
	for n, want := range map[int64]int64{0: 0, 3: 1, 6: 4, 8: 4, 17: 5, 24: 6, 100: 6} {
		if got := CountBits(bm, n); got != want {
			t.Errorf("CountBits(%d) = %d, want %d", n, got, want)
		}
	}
	b := make([]byte, 2)
	SetBit(b, 9)
	if b[1] != 2 {
		t.Errorf("SetBit(9) = %x", b)
	}
}
