// Package hosttool finds the host programs the toolchain drives (mke2fs,
// debugfs, e2fsck, debootstrap, …), many of which live in sbin
// directories that ordinary users lack on PATH.
package hosttool

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// LookPath finds name on PATH, then in /usr/sbin and /sbin.
func LookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found on PATH, /usr/sbin or /sbin", name)
}
