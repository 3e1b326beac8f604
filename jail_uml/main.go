// Command jail_uml runs a User Mode Linux kernel (or any command) chrooted
// into a directory as an unprivileged user, a drop-in replacement for
// uml-utilities' jail_uml.
package main

import (
	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/jail"
)

func main() { cli.Main("jail_uml", jail.Run) }
