package ubd

import (
	"testing"

	"github.com/umltools/umltools/internal/cmdline"
)

// TestSpecFromCmdline: the flags parsed by cmdline reach the device.
func TestSpecFromCmdline(t *testing.T) {
	img := tempImage(t, 4096)
	sp, err := cmdline.ParseUbd("1rt="+img, false)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Open(sp, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !d.ReadOnly() {
		t.Errorf("ubd1rt= opened writable")
	}
	if err := d.Discard(0, 512); err == nil {
		t.Errorf("discard allowed on a read-only, no-trim device")
	}
}
