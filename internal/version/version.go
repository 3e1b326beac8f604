// Package version holds the toolchain version stamped in at build time.
package version

// Version is set by the Makefile with -ldflags "-X …/internal/version.Version=…"
// from `git describe`. Builds outside the Makefile report "dev".
var Version = "dev"

// String returns the one-line --version text for the program prog.
func String(prog string) string {
	return prog + " (umltools) " + Version
}
