package ubd

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	ok := []struct {
		arg  string
		want Spec
	}{
		{"0=root.img", Spec{Unit: 0, File: "root.img"}},
		{"a=root.img", Spec{Unit: 0, File: "root.img"}},
		{"b=cow,back", Spec{Unit: 1, File: "cow", Backing: "back"}},
		{"1r=img", Spec{Unit: 1, ReadOnly: true, File: "img"}},
		{"2rsdct=img", Spec{Unit: 2, ReadOnly: true, Sync: true, NoCOW: true, Shared: true, NoTrim: true, File: "img"}},
		{"3c=cow:back:serial1", Spec{Unit: 3, Shared: true, File: "cow", Backing: "back", Serial: "serial1"}},
		{"0x0f=img", Spec{Unit: 15, File: "img"}},
		{"010=img", Spec{Unit: 8, File: "img"}},
		{"p=img", Spec{Unit: 15, File: "img"}},
		{"0=", Spec{Unit: 0}},
		{"0=/a/b,", Spec{Unit: 0, File: "/a/b"}},
		{"0rrrrrr=img", Spec{Unit: 0, ReadOnly: true, File: "img"}},
	}
	for _, c := range ok {
		got, err := Parse(c.arg)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.arg, err)
			continue
		}
		if *got != c.want {
			t.Errorf("Parse(%q) = %+v, want %+v", c.arg, *got, c.want)
		}
	}
	bad := []struct{ arg, msg string }{
		{"rs=img", "Device number out of range"}, // r is unit 17
		{"16=img", "Device number out of range"},
		{"0x=img", "Expected '=' or flag letter (r, s, c, t or d)"},
		{"0q=img", "Expected '=' or flag letter (r, s, c, t or d)"},
		{"0", "Expected '=' or flag letter (r, s, c, t or d)"},
		{"0rrrrrrr=img", "Too many flags specified"},
		{"0rrrrrrrr", "Missing '='"},
		{"0d=cow,back", "Can't specify both 'd' and a cow file"},
		{"", "Couldn't parse device number"},
		{"=img", "Couldn't parse device number"},
	}
	for _, c := range bad {
		_, err := Parse(c.arg)
		var se *SpecError
		if !errors.As(err, &se) || se.Msg != c.msg {
			t.Errorf("Parse(%q) = %v, want %q", c.arg, err, c.msg)
		}
	}
	if e := (&SpecError{Arg: "0q=x", Msg: "m"}).Error(); e != `Failed to initialize device with "0q=x" : m` {
		t.Errorf("SpecError text %q", e)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"0=img", "brsdct=cow,back:ser", "0x1=", "z", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sp, err := Parse(s)
		if err == nil && (sp.Unit < 0 || sp.Unit >= MaxDevices || sp.NoCOW && sp.Backing != "") {
			t.Fatalf("Parse(%q) = %+v", s, sp)
		}
	})
}
