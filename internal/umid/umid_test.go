package umid

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestCreateAndRemove(t *testing.T) {
	base := t.TempDir() // no trailing slash: Create adds it
	d, err := Create(base, "m1", 4242)
	if err != nil {
		t.Fatal(err)
	}
	if d.Path() != base+"/m1" || d.Socket() != base+"/m1/mconsole" {
		t.Errorf("paths %s %s", d.Path(), d.Socket())
	}
	b, err := os.ReadFile(d.File("pid"))
	if err != nil || string(b) != "4242\n" {
		t.Fatalf("pid file %q %v", b, err)
	}
	st, _ := os.Stat(d.File("pid"))
	if st.Mode().Perm() != 0o644&^currentUmask() {
		t.Errorf("pid mode %v", st.Mode())
	}
	os.WriteFile(d.Socket(), nil, 0o600)
	if err := d.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory left behind: %v", err)
	}
}

func currentUmask() os.FileMode {
	f := filepath.Join(os.TempDir(), "umask-probe")
	os.Remove(f)
	os.WriteFile(f, nil, 0o777)
	st, _ := os.Stat(f)
	os.Remove(f)
	return 0o777 &^ st.Mode().Perm()
}

func TestStaleTakeoverAndLiveRefusal(t *testing.T) {
	base := t.TempDir() + "/"
	// A dead pid: start and reap a process.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := cmd.Process.Pid
	os.MkdirAll(base+"stale", 0o777)
	os.WriteFile(base+"stale/pid", []byte(itoa(dead)+"\n"), 0o644)
	os.WriteFile(base+"stale/mconsole", nil, 0o644)
	d, err := Create(base, "stale", os.Getpid())
	if err != nil {
		t.Fatalf("stale takeover: %v", err)
	}
	if _, err := os.Stat(d.Socket()); err == nil {
		t.Error("old socket file survived the takeover")
	}
	if pid, ok := ReadPid(d.Path()); !ok || pid != os.Getpid() {
		t.Errorf("pid %d %v", pid, ok)
	}
	// Now it is ours and we are alive: a second Create is refused.
	_, err = Create(base, "stale", 1)
	var inUse *InUseError
	if !errors.As(err, &inUse) || inUse.Pid != os.Getpid() {
		t.Fatalf("live owner: %v", err)
	}
	want := `umid "stale" is already in use by pid ` + itoa(os.Getpid())
	if err.Error() != want {
		t.Errorf("message %q, want %q", err.Error(), want)
	}
	var logs []string
	d2, err := CreateOrRandom(base, "stale", 1, func(f string, a ...any) { logs = append(logs, f) })
	if err != nil || len(d2.Umid) != 6 || len(logs) != 2 {
		t.Errorf("fallback: %v %v %v", d2, err, logs)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestRandomAndLimits(t *testing.T) {
	base := t.TempDir()
	a, err := Create(base, "", 1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Create(base, "", 1)
	if len(a.Umid) != 6 || a.Umid == b.Umid {
		t.Errorf("random umids %q %q", a.Umid, b.Umid)
	}
	if _, err := Create(base, strings.Repeat("u", 64), 1); !errors.Is(err, ErrTooLong) {
		t.Errorf("64 chars: %v", err)
	}
	if _, err := Create(base, strings.Repeat("u", 63), 1); err != nil {
		t.Errorf("63 chars: %v", err)
	}
	for _, bad := range []string{"a/b", "..", "."} {
		if _, err := Create(base, bad, 1); err == nil {
			t.Errorf("umid %q accepted", bad)
		}
	}
	t.Setenv("HOME", base)
	d, err := Create("", "h", 1)
	if err != nil || d.Path() != base+"/.uml/h" {
		t.Errorf("default base: %v %v", d, err)
	}
}

func TestParseUlong(t *testing.T) {
	for _, tt := range []struct {
		in string
		n  int
		ok bool
	}{
		{"7670\n", 7670, true}, {"0x1f", 31, true}, {"017", 15, true}, {"  12abc", 12, true},
		{"", 0, false}, {"abc", 0, false}, {"0", 0, false}, {"99999999999", 0, false},
	} {
		n, ok := parseUlong(tt.in)
		if n != tt.n || ok != tt.ok {
			t.Errorf("%q: %d %v", tt.in, n, ok)
		}
	}
}

// TestStagePublish: a staged directory is hidden until Publish, which
// never replaces a directory that appeared meanwhile.
func TestStagePublish(t *testing.T) {
	base := t.TempDir()
	d, err := Stage(base, "m2", 4243)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(base + "/m2"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staged directory visible as m2: %v", err)
	}
	if !strings.HasPrefix(filepath.Base(d.Path()), ".") {
		t.Errorf("staged path %s is not hidden", d.Path())
	}
	if b, err := os.ReadFile(d.File(PidFile)); err != nil || string(b) != "4243\n" {
		t.Errorf("staged pid file %q %v", b, err)
	}
	os.WriteFile(d.Socket(), nil, 0o600) // what the caller puts in
	if err := d.Publish(); err != nil {
		t.Fatal(err)
	}
	if d.Path() != base+"/m2" {
		t.Errorf("published path %s", d.Path())
	}
	if _, err := os.Stat(base + "/m2/mconsole"); err != nil {
		t.Errorf("published socket: %v", err)
	}
	// A live owner (this process) keeps its umid.
	os.WriteFile(d.File(PidFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	if _, err := Stage(base, "m2", 1); err == nil {
		t.Error("staged over a live machine's directory")
	} else if !errors.As(err, new(*InUseError)) {
		t.Errorf("live owner: %v", err)
	}
	// A directory that appears between Stage and Publish is not replaced.
	e, err := Stage(base, "m3", 4244)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(base+"/m3", 0o777); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(base+"/m3/pid", []byte("1\n"), 0o644)
	if err := e.Publish(); !errors.As(err, new(*InUseError)) {
		t.Errorf("publish over a new directory: %v", err)
	}
	var logged []string
	if err := e.PublishOrRandom(func(f string, a ...any) { logged = append(logged, f) }); err != nil {
		t.Fatal(err)
	}
	if e.Umid == "m3" || len(e.Umid) != 6 || len(logged) != 2 {
		t.Errorf("fallback: umid %q, %d log lines", e.Umid, len(logged))
	}
	if b, _ := os.ReadFile(base + "/m3/pid"); string(b) != "1\n" {
		t.Errorf("the other machine's directory was touched: pid %q", b)
	}
	// A stale directory (dead pid) is taken over at Stage.
	os.Mkdir(base+"/m4", 0o777)
	os.WriteFile(base+"/m4/pid", []byte("999999\n"), 0o644)
	f, err := Stage(base, "m4", 4245)
	if err != nil {
		t.Fatalf("stale directory: %v", err)
	}
	if err := f.Publish(); err != nil {
		t.Fatal(err)
	}
	for _, x := range []*Dir{d, e, f} {
		if err := x.Remove(); err != nil {
			t.Error(err)
		}
	}
}
