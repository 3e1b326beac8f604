package mconsole

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/umltools/umltools/internal/umid"
)

// Target is a machine a client talks to: its socket and, when known, the
// pid of the UML main process (for the local `int` command).
type Target struct {
	Name   string // as given by the user; the prompt shows its first 11 bytes
	Socket string
	Pid    int // 0 when unknown
}

// Resolve finds the mconsole socket for name as the C uml_mconsole does,
// stopping at the first path that exists:
//
//  1. $HOME/.uml/<name>/mconsole, unless name begins with $HOME/.uml
//  2. /tmp/uml/<name>/mconsole, unless name begins with /tmp/uml/
//  3. name itself, as a path
//  4. attempt 1, if it was skipped
//
// Each failed attempt writes "Warning: couldn't stat file: <path> -
// <strerror>" to warn, even when a later one succeeds. The pid comes from
// the pid file beside the socket (the C client finds it only in case 1).
func Resolve(name string, warn io.Writer) (*Target, error) {
	home, haveHome := os.LookupEnv("HOME")
	try := func(sock, dir string) *Target {
		if _, err := os.Stat(sock); err != nil {
			fmt.Fprintf(warn, "Warning: couldn't stat file: %s - %s\n", sock, errText(err))
			return nil
		}
		t := &Target{Name: name, Socket: sock}
		if pid, ok := umid.ReadPid(dir); ok {
			t.Pid = pid
		}
		return t
	}
	umlDir := home + "/.uml"
	homeSock := umlDir + "/" + name + "/mconsole"
	skipped := true
	if haveHome && !strings.HasPrefix(name, umlDir) {
		if t := try(homeSock, umlDir+"/"+name); t != nil {
			return t, nil
		}
		skipped = false
	}
	if !strings.HasPrefix(name, "/tmp/uml/") {
		if t := try("/tmp/uml/"+name+"/mconsole", "/tmp/uml/"+name); t != nil {
			return t, nil
		}
	}
	if t := try(name, filepath.Dir(name)); t != nil {
		return t, nil
	}
	if haveHome && skipped {
		if t := try(homeSock, umlDir+"/"+name); t != nil {
			return t, nil
		}
	}
	return nil, fmt.Errorf("no mconsole socket found for '%s'", name)
}

// Prompt returns the interactive prompt for a target name: "(<first 11
// bytes>) ".
func Prompt(name string) string {
	if len(name) > 11 {
		name = name[:11]
	}
	return "(" + name + ") "
}
