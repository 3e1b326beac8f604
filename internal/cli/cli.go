// Package cli holds the conventions every binary of the toolchain shares:
// how a main turns the error returned by its run function into an exit code,
// and how --help and --version are recognised.
//
// A main is tiny:
//
//	func main() { cli.Main("uml_moo", run) }
//
// and run(args, stdin, stdout, stderr) does the work, so tests call it
// without exec.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/umltools/umltools/internal/version"
	"golang.org/x/sys/unix"
)

// RunFunc is the signature of every binary's testable entry point. args
// includes argv[0].
type RunFunc func(args []string, stdin io.Reader, stdout, stderr io.Writer) error

// ExitError asks Main to exit with Code after printing Msg (if any) to
// stderr. It is how a run function reproduces an original tool's exit codes.
type ExitError struct {
	Code int
	Msg  string
}

func (e *ExitError) Error() string {
	if e.Msg != "" {
		return e.Msg
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

// Exit returns an *ExitError with the given code and no message: the caller
// has already printed whatever the original tool prints.
func Exit(code int) error { return &ExitError{Code: code} }

// UsageError reports bad command-line usage. Main prints it and exits 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef builds a *UsageError.
func Usagef(format string, a ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, a...)}
}

// Code maps an error returned by a run function to a process exit code:
// nil is 0, *ExitError carries its own code, *UsageError is 2, anything
// else is 1.
func Code(err error) int {
	var ee *ExitError
	var ue *UsageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.Code
	case errors.As(err, &ue):
		return 2
	default:
		return 1
	}
}

// Report writes err to w the way Main does ("prog: message"), or nothing
// for a message-less *ExitError. It returns the exit code.
func Report(prog string, err error, w io.Writer) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Msg != "" {
		fmt.Fprintf(w, "%s: %v\n", prog, err)
	}
	return Code(err)
}

// Main runs run with the process's arguments and standard streams and exits
// with the code Code gives. prog names the program in error messages.
func Main(prog string, run RunFunc) {
	err := run(os.Args, os.Stdin, os.Stdout, os.Stderr)
	os.Exit(Report(prog, err, os.Stderr))
}

// IsHelp reports whether arg asks for help.
func IsHelp(arg string) bool { return arg == "-h" || arg == "--help" }

// IsVersion reports whether arg asks for the version.
func IsVersion(arg string) bool { return arg == "--version" }

// Standard handles a lone --help or --version anywhere in args[1:]: it
// prints help (to stdout) or the version line and reports true, meaning the
// caller should return nil. Arguments after "--" are not inspected.
func Standard(args []string, stdout io.Writer, help string) bool {
	for _, a := range args[1:] {
		if a == "--" {
			break
		}
		if IsHelp(a) {
			io.WriteString(stdout, help)
			return true
		}
		if IsVersion(a) {
			fmt.Fprintln(stdout, version.String(Prog(args)))
			return true
		}
	}
	return false
}

// Prog returns the program name to print: args[0] as invoked, which is what
// the C tools print, or "?" when args is empty.
func Prog(args []string) string {
	if len(args) == 0 {
		return "?"
	}
	return args[0]
}

// BaseProg returns the base name of args[0].
func BaseProg(args []string) string { return filepath.Base(Prog(args)) }

// NotImplemented is the run function of binaries whose issue has not landed:
// --help and --version work, anything else prints one line and exits 1.
func NotImplemented(name string) RunFunc {
	return func(args []string, _ io.Reader, stdout, stderr io.Writer) error {
		help := fmt.Sprintf("%s: not implemented yet (part of the umltools toolchain)\n", name)
		if Standard(args, stdout, help) {
			return nil
		}
		fmt.Fprintf(stderr, "%s: not implemented yet\n", name)
		return Exit(1)
	}
}

// IsTerminal reports whether v (a reader or writer) is an *os.File open on
// a terminal: progress output and line echo depend on it.
func IsTerminal(v any) bool {
	f, ok := v.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
