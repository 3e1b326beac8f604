// Package ubd provides the block devices behind the guest's /dev/ubdX:
// a raw image file or a COW file over a backing image (internal/cow),
// opened with the flags of the kernel's ubdN[rsdct]=file[,backing] option
// (parsed by internal/cmdline), and host fcntl locks on the files so that
// two machines can never write one image.
package ubd

import "github.com/umltools/umltools/internal/cmdline"

// Spec is one ubd option as internal/cmdline parses it (cmdline.ParseUbd):
// File, Backing and the r (ReadOnly), s (Sync), d (NoCOW), c (Shared) and
// t (NoTrim) flags.
type Spec = cmdline.Ubd
