package sandbox

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// TestSweepExecDirs: a later engine removes the ExecDirs of engines that
// died without Close, and nothing else.
func TestSweepExecDirs(t *testing.T) {
	base := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	mk := func(name, owner string) string {
		d := filepath.Join(base, name)
		os.Mkdir(d, 0o700)
		os.WriteFile(filepath.Join(d, "l1"), []byte("image"), 0o500)
		if owner != "" {
			os.WriteFile(filepath.Join(d, ownerFile), []byte(owner), 0o400)
		}
		return d
	}
	for _, tt := range []struct {
		name, owner string
		kept        bool
	}{
		{"uml100", strconv.Itoa(dead.Process.Pid) + "\n", false},
		{"uml101", strconv.Itoa(os.Getpid()) + "\n", true},
		{"uml102", "", true},                                   // no owner file: not ours to judge
		{"uml103", "junk\n", true},                             // unreadable owner
		{"other", strconv.Itoa(dead.Process.Pid) + "\n", true}, // not an ExecDir name
	} {
		mk(tt.name, tt.owner)
		defer func(name string, kept bool) {
			_, err := os.Stat(filepath.Join(base, name))
			if kept != (err == nil) {
				t.Errorf("%s: kept %v, want %v", name, err == nil, kept)
			}
		}(tt.name, tt.kept)
	}
	sweepExecDirs(base)
	d, err := NewExecDir(-1, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b, err := os.ReadFile(filepath.Join(d.Path, ownerFile))
	if err != nil || string(b) != strconv.Itoa(os.Getpid())+"\n" {
		t.Errorf("owner file %q %v", b, err)
	}
}
