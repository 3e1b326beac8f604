// Command uml_mkcow is part of the umltools toolchain. It is not implemented yet:
// it prints one line and exits 1.
package main

import "github.com/umltools/umltools/internal/cli"

func main() { cli.Main("uml_mkcow", cli.NotImplemented("uml_mkcow")) }
