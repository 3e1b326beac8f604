package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/mconsole"
)

const help = `Usage: uml_mconsole [options] socket-name [command ...]

Talk to the management console of a User Mode Linux machine. socket-name
is a umid (looked up as ~/.uml/<umid>/mconsole, then /tmp/uml/<umid>/mconsole)
or the path of an mconsole socket. With a command, send it once and exit
with the low 8 bits of the machine's error code; without, read commands
from standard input with a prompt.

Machine commands: version, help, halt, reboot, config <dev>[=<config>],
remove <dev>, sysrq <letter>, cad, stop, go, log <string>, proc <file>,
stack <pid>.
Local commands: quit, switch <socket-name>, log -f <filename>,
mconsole-version, int.

Options (before socket-name):
  --json           print each reply as {"ok":bool,"err":n,"text":"..."}
  --timeout DUR    wait at most DUR for each reply packet (default 10s)
  -h, --help       show this help
  --version        show the version
`

// run parses leading options; everything from socket-name on belongs to
// the C client's interface.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	con := &mconsole.Console{Out: stdout, Err: stderr}
	rest := args[1:]
	for len(rest) > 0 && strings.HasPrefix(rest[0], "-") {
		a := rest[0]
		rest = rest[1:]
		switch {
		case a == "--":
			goto done
		case cli.IsHelp(a), cli.IsVersion(a):
			cli.Standard([]string{args[0], a}, stdout, help)
			return nil
		case a == "--json":
			con.JSON = true
		case a == "--timeout" || strings.HasPrefix(a, "--timeout="):
			v, ok := strings.CutPrefix(a, "--timeout=")
			if !ok {
				if len(rest) == 0 {
					return cli.Usagef("--timeout needs a duration (e.g. 30s)")
				}
				v, rest = rest[0], rest[1:]
			}
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return cli.Usagef("--timeout %q: want a positive duration such as 30s", v)
			}
			con.Timeout = d
		default:
			return cli.Usagef("unknown option %q (try --help)", a)
		}
	}
done:
	if len(rest) == 0 {
		// The C client's usage line and exit code 1.
		fmt.Fprintf(stderr, "Usage : uml_mconsole socket-name [command]\n")
		return cli.Exit(1)
	}
	defer con.Close()
	name := rest[0]
	if err := con.Switch(name); err != nil {
		fmt.Fprintf(stderr, "uml_mconsole: %v\n", err)
		if len(rest) > 1 {
			return cli.Exit(1)
		}
	}
	if len(rest) > 1 {
		code, err := con.Exec(strings.Join(rest[1:], " "))
		if err != nil && !errors.Is(err, mconsole.ErrQuit) {
			return err
		}
		return cli.Exit(int(code & 0xff))
	}
	return interactive(con, stdin, stdout)
}

// interactive is the prompt loop. On a terminal the terminal echoes the
// line; otherwise the line is echoed after the prompt, as readline does,
// so a transcript reads the same.
func interactive(con *mconsole.Console, stdin io.Reader, stdout io.Writer) error {
	con.Interactive = true
	echo := !cli.IsTerminal(stdin) && !con.JSON
	prompt := !con.JSON
	in := bufio.NewReader(stdin)
	for {
		name := "[None]"
		if t := con.Target(); t != nil {
			name = t.Name
		}
		if prompt {
			io.WriteString(stdout, mconsole.Prompt(name))
		}
		line, err := in.ReadString('\n')
		if line == "" && err != nil {
			if prompt {
				io.WriteString(stdout, "\n")
			}
			return nil
		}
		line = strings.TrimSuffix(line, "\n")
		if echo {
			io.WriteString(stdout, line+"\n")
		}
		if _, err := con.Exec(line); errors.Is(err, mconsole.ErrQuit) {
			return nil
		}
	}
}
