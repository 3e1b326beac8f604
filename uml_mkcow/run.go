package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/cow"
)

const help = `Usage: uml_mkcow [-f] <COW file> <backing file>

Create a copy-on-write file for a User Mode Linux block device: a v3 COW
header naming the backing file (made absolute), its size and mtime, an
empty bitmap, and a sparse data area. Boot it with ubd0=<COW file>.

  -f         overwrite an existing COW file (it is truncated first)
  -h, --help show this help
  --version  show the version

Exit status: 0 ok, 1 error, 2 usage.
`

func usage(stderr io.Writer, prog string) error {
	fmt.Fprintf(stderr, "%s usage: \n\t%s [-f] <COW file> <backing file>\n\t-f forces overwrite of an existing COW file\n", prog, prog)
	return cli.Exit(2)
}

func run(args []string, _ io.Reader, stdout, stderr io.Writer) error {
	if cli.Standard(args, stdout, help) {
		return nil
	}
	prog := cli.Prog(args)
	a := args[1:]
	if len(a) < 1 {
		return usage(stderr, prog)
	}
	force := a[0] == "-f"
	if force {
		a = a[1:]
	}
	if len(a) < 2 {
		return usage(stderr, prog)
	}
	_, err := cow.Create(a[0], a[1], force)
	if err == nil {
		return nil
	}
	var ce *cow.CreateError
	if errors.As(err, &ce) {
		fmt.Fprintln(stdout, ce.Msg)
		fmt.Fprintln(stderr, "write_cow_header: "+cow.Strerror(ce.Err))
	} else {
		fmt.Fprintln(stderr, cow.Perror(err))
	}
	return cli.Exit(1)
}
