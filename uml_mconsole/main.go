// Command uml_mconsole is the management console client for User Mode
// Linux machines: a drop-in for the C uml_mconsole that never hangs on long
// replies. See uml_mconsole(1).
package main

import "github.com/umltools/umltools/internal/cli"

func main() { cli.Main("uml_mconsole", run) }
