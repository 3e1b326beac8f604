package hosttool

import (
	"strings"
	"testing"
)

func TestLookPath(t *testing.T) {
	t.Setenv("PATH", "/nonexistent")
	// sh is in /bin, which is not searched: only PATH and the sbin dirs.
	if p, err := LookPath("sh"); err == nil {
		t.Errorf("sh found at %s outside PATH and sbin", p)
	}
	if _, err := LookPath("no-such-tool-xyz"); err == nil || !strings.Contains(err.Error(), "no-such-tool-xyz") {
		t.Errorf("missing tool: %v", err)
	}
	t.Setenv("PATH", "/bin:/usr/bin")
	if p, err := LookPath("sh"); err != nil || !strings.HasSuffix(p, "/sh") {
		t.Errorf("sh on PATH: %q %v", p, err)
	}
}
