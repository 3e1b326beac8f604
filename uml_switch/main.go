// Command uml_switch is a virtual Ethernet switch (or hub) for User Mode
// Linux machines using the daemon network transport. It is command-line
// and protocol compatible with the uml_switch of Debian's uml-utilities.
package main

import "github.com/umltools/umltools/internal/cli"

func main() { cli.Main("uml_switch", run) }
