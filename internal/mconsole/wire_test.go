package mconsole

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

func TestRequestEncode(t *testing.T) {
	tests := []struct {
		text    string
		wantLen uint32
	}{
		{"version", 7},
		{"", 0},
		{strings.Repeat("x", 511), 511},
		{strings.Repeat("x", 600), 511}, // the C client caps len at 511
	}
	for _, tt := range tests {
		b := NewRequest(tt.text).Encode()
		if len(b) != RequestSize {
			t.Fatalf("%q: %d bytes, want 524", tt.text, len(b))
		}
		if !bytes.Equal(b[:4], []byte{0xbe, 0xba, 0xfe, 0xca}) {
			t.Errorf("magic bytes % x", b[:4])
		}
		if v := binary.LittleEndian.Uint32(b[4:]); v != 2 {
			t.Errorf("version %d", v)
		}
		if n := binary.LittleEndian.Uint32(b[8:]); n != tt.wantLen {
			t.Errorf("%q: len %d, want %d", tt.text[:min(10, len(tt.text))], n, tt.wantLen)
		}
		if b[12+tt.wantLen] != 0 && tt.wantLen < 512 {
			t.Errorf("no NUL after text")
		}
		r, err := DecodeRequest(b)
		if err != nil || r.Text != tt.text[:tt.wantLen] {
			t.Errorf("round trip: %q, %v", r.Text, err)
		}
	}
}

func req(magic, version, n uint32, data string, size int) []byte {
	b := make([]byte, size)
	binary.LittleEndian.PutUint32(b, magic)
	if size >= 8 {
		binary.LittleEndian.PutUint32(b[4:], version)
	}
	if size >= 12 {
		binary.LittleEndian.PutUint32(b[8:], n)
		copy(b[12:], data)
	}
	return b
}

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name    string
		b       []byte
		text    string
		version uint32
		err     error
	}{
		{"ok", req(Magic, 2, 7, "version", 524), "version", 2, nil},
		{"short datagram ok", req(Magic, 2, 4, "halt", 16), "halt", 2, nil},
		{"bad magic", req(0x12345678, 2, 4, "halt", 524), "", 0, ErrBadMagic},
		{"too large", req(Magic, 2, 512, "", 524), "", 2, ErrTooLarge},
		{"len beyond datagram", req(Magic, 2, 100, "x", 20), "", 2, ErrBadLength},
		{"tiny", []byte{1, 2}, "", 0, ErrShort},
		{"magic only", req(Magic, 0, 0, "", 4), "", 0, ErrShort},
		{"version 1 decodes", req(Magic, 1, 2, "go", 524), "go", 1, nil},
	}
	for _, tt := range tests {
		r, err := DecodeRequest(tt.b)
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: err %v, want %v", tt.name, err, tt.err)
			continue
		}
		if err == nil && (r.Text != tt.text || r.Version != tt.version) {
			t.Errorf("%s: got %q v%d", tt.name, r.Text, r.Version)
		}
	}
}

func TestReplyEncodeDecode(t *testing.T) {
	// `version` from the 6.1 kernel is a 72-byte datagram with len=60.
	text := "Linux (none) 6.1.176 #1 Sat Jul  4 15:38:16 UTC 2026 x86_64"
	b := Reply{Text: text}.Encode()
	if len(b) != 72 || binary.LittleEndian.Uint32(b[8:]) != 60 || b[71] != 0 {
		t.Fatalf("version reply: %d bytes, len %d", len(b), binary.LittleEndian.Uint32(b[8:]))
	}
	r, err := DecodeReply(b)
	if err != nil || r.Text != text || r.More || r.Err != 0 {
		t.Fatalf("decode: %+v %v", r, err)
	}
	// err is a u32: -19 (ENODEV) round-trips.
	neg := int32(-19)
	r, _ = DecodeReply(Reply{Err: uint32(neg), More: true, Text: "x"}.Encode())
	if int32(r.Err) != -19 || !r.More {
		t.Fatalf("%+v", r)
	}
	// Text stops at the first NUL inside len.
	b = Reply{Text: "abc"}.Encode()
	b[13] = 0
	if r, _ := DecodeReply(b); r.Text != "a" {
		t.Errorf("NUL: %q", r.Text)
	}
	// Bad lengths.
	for _, bad := range [][]byte{{0, 0, 0}, append(make([]byte, 8), 0xff, 0, 0, 0)} {
		if _, err := DecodeReply(bad); err == nil {
			t.Errorf("% x decoded", bad)
		}
	}
}

func TestChunk(t *testing.T) {
	tests := []struct {
		n       int
		packets []int
	}{
		{0, []int{0}},
		{10, []int{10}},
		{511, []int{511}},
		{512, []int{511, 1}},
		{722, []int{511, 211}}, // `help`: 524- and 224-byte datagrams
		{1100, []int{511, 511, 78}},
	}
	for _, tt := range tests {
		ps := Chunk(strings.Repeat("a", tt.n), 7)
		if len(ps) != len(tt.packets) {
			t.Fatalf("%d: %d packets", tt.n, len(ps))
		}
		for i, p := range ps {
			if len(p.Text) != tt.packets[i] || p.More != (i < len(ps)-1) {
				t.Errorf("%d: packet %d: len %d more %v", tt.n, i, len(p.Text), p.More)
			}
			if (i == 0) != (p.Err == 7) {
				t.Errorf("%d: packet %d: err %d", tt.n, i, p.Err)
			}
		}
	}
	ps := Chunk(HelpText, 0)
	if len(ps) != 2 || len(ps[0].Encode()) != 524 || len(ps[1].Encode()) != 224 {
		t.Errorf("help reply should be datagrams of 524 and 224 bytes, as the 6.1 kernel sends")
	}
}

func TestNotify(t *testing.T) {
	// MCONSOLE_SOCKET for /root/.uml/t2/mconsole: len=23, 39 bytes.
	n := Notify{Type: NotifySocket, Data: []byte("/root/.uml/t2/mconsole\x00")}
	b := n.Encode()
	if len(b) != 39 || binary.LittleEndian.Uint32(b[12:]) != 23 {
		t.Fatalf("%d bytes", len(b))
	}
	got, err := DecodeNotify(b)
	if err != nil || got.Type != NotifySocket || string(got.Data) != string(n.Data) {
		t.Fatalf("%+v %v", got, err)
	}
	if _, err := DecodeNotify(b[:15]); err == nil {
		t.Error("short notify decoded")
	}
	b[0] = 0
	if _, err := DecodeNotify(b); !errors.Is(err, ErrBadMagic) {
		t.Errorf("bad magic: %v", err)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add(NewRequest("version").Encode())
	f.Add(req(Magic, 2, 600, "", 30))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err == nil {
			if len(r.Text) >= MaxData {
				t.Fatalf("text of %d bytes accepted", len(r.Text))
			}
			r2, err := DecodeRequest(NewRequest(r.Text).Encode())
			if err != nil || r2.Text != r.Text {
				t.Fatalf("re-encode: %q vs %q (%v)", r2.Text, r.Text, err)
			}
		}
	})
}

func FuzzDecodeReply(f *testing.F) {
	f.Add(Reply{Text: "hello", More: true}.Encode())
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeReply(b)
		if err == nil && len(r.Text) > MaxData {
			t.Fatalf("text of %d bytes", len(r.Text))
		}
	})
}

func FuzzDecodeNotify(f *testing.F) {
	f.Add(Notify{Type: NotifyPanic, Data: []byte("boom\x00")}.Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := DecodeNotify(b)
		if err == nil && len(n.Data) > MaxData {
			t.Fatalf("data of %d bytes", len(n.Data))
		}
	})
}
