// Command rootstrap builds a bootable root filesystem image for User Mode
// Linux in one command, without root where the host allows it: a Debian
// bootstrap (mmdebstrap or debootstrap), a tiny busybox system, or an
// existing tar or directory, configured by modules and packed with
// mkfs.ext4 -d. See rootstrap(1) and rootstrap.conf(5).
package main

import "github.com/umltools/umltools/internal/cli"

func main() { cli.Main("rootstrap", run) }
