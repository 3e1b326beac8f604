// Command uml_moo merges a User Mode Linux copy-on-write (COW) file with its
// backing file, byte-compatible with Debian's uml_moo and much faster.
package main

import "github.com/umltools/umltools/internal/cli"

func main() { cli.Main("uml_moo", run) }
