// Command tunctl creates and deletes persistent tap devices owned by a user
// or group, a drop-in replacement for the uml-utilities tunctl.
package main

import "github.com/umltools/umltools/internal/cli"

func main() { cli.Main("tunctl", run) }
