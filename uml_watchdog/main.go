// Command uml_watchdog is the host helper of a User Mode Linux kernel's
// harddog watchdog, a drop-in replacement for uml-utilities' uml_watchdog.
package main

import (
	"os"

	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/watchdog"
)

func main() { cli.Main("uml_watchdog", watchdog.Main(os.Getenv)) }
