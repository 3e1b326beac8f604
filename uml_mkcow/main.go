// Command uml_mkcow creates a copy-on-write (COW) file for a User Mode Linux
// block device, byte-compatible with Debian's uml_mkcow.
package main

import "github.com/umltools/umltools/internal/cli"

func main() { cli.Main("uml_mkcow", run) }
