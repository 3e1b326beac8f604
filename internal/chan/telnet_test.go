package chans

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

func TestTelnetFeed(t *testing.T) {
	for _, tc := range []struct {
		name, in, data, reply string
		ws                    *unix.Winsize
	}{
		{"plain", "abc", "abc", "", nil},
		{"CR LF", "a\r\nb", "a\rb", "", nil},
		{"CR NUL", "a\r\x00b", "a\rb", "", nil},
		{"bare CR", "a\rb", "a\rb", "", nil},
		{"CR CR LF", "\r\r\n", "\r\r", "", nil},
		{"bare LF", "a\nb", "a\nb", "", nil},
		{"IAC IAC", "\xff\xff", "\xff", "", nil},
		{"CR IAC IAC", "\r\xff\xff", "\r\xff", "", nil},
		{"commands ignored", "a\xff\xf1b\xff\xf9c\xff\xf4", "abc", "", nil},
		{"acks not answered", "\xff\xfd\x01\xff\xfd\x03\xff\xfb\x03\xff\xfb\x1f", "", "", nil},
		{"refused WILL", "\xff\xfb\x18", "", "\xff\xfe\x18", nil},
		{"refused DO", "\xff\xfd\x00", "", "\xff\xfc\x00", nil},
		{"DONT ECHO", "\xff\xfe\x01\xff\xfe\x01", "", "\xff\xfc\x01", nil},
		{"DONT ECHO then DO ECHO", "\xff\xfe\x01\xff\xfd\x01", "", "\xff\xfc\x01\xff\xfb\x01", nil},
		{"WONT NAWS", "\xff\xfc\x1f\xff\xfc\x1f", "", "\xff\xfe\x1f", nil},
		{"unasked WONT", "\xff\xfc\x18", "", "", nil},
		{"NAWS", "\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0x", "x", "", &unix.Winsize{Col: 80, Row: 24}},
		{"NAWS with IAC IAC", "\xff\xfa\x1f\x01\xff\xff\x00\x18\xff\xf0", "", "", &unix.Winsize{Col: 0x1ff, Row: 24}},
		{"other SB", "\xff\xfa\x18\x00xterm\xff\xf0y", "y", "", nil},
		{"long SB", "\xff\xfa\x18" + string(bytes.Repeat([]byte{'a'}, 1000)) + "\xff\xf0z", "z", "", nil},
		{"SB cut by a command", "\xff\xfa\x18ab\xff\xfb\x18c", "c", "\xff\xfe\x18", nil},
	} {
		// Whole, and byte by byte (state across calls).
		for _, split := range []bool{false, true} {
			tn := newTelnet()
			var data, reply []byte
			var ws *unix.Winsize
			feed := func(p []byte) {
				d, r, w := tn.feed(p)
				data, reply = append(data, d...), append(reply, r...)
				if w != nil {
					ws = w
				}
			}
			if split {
				for i := range len(tc.in) {
					feed([]byte{tc.in[i]})
				}
			} else {
				feed([]byte(tc.in))
			}
			if string(data) != tc.data || string(reply) != tc.reply {
				t.Errorf("%s (split %v): data %q reply %q, want %q %q", tc.name, split, data, reply, tc.data, tc.reply)
			}
			if (ws == nil) != (tc.ws == nil) || ws != nil && *ws != *tc.ws {
				t.Errorf("%s (split %v): window %+v, want %+v", tc.name, split, ws, tc.ws)
			}
		}
	}
}

func TestTelnetEscape(t *testing.T) {
	for in, want := range map[string]string{"": "", "abc": "abc", "\xff": "\xff\xff", "a\xff\xffb": "a\xff\xff\xff\xffb"} {
		if got := string(telnetEscape([]byte(in))); got != want {
			t.Errorf("telnetEscape(%q) = %q, want %q", in, got, want)
		}
	}
}
