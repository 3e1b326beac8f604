// Command port-helper hands its terminal to a User Mode Linux kernel's port
// or xterm console channel, a drop-in replacement for uml-utilities'
// /usr/lib/uml/port-helper.
package main

import (
	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/porthelper"
)

func main() { cli.Main("port-helper", porthelper.Run) }
