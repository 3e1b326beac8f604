package mconsole

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// RewriteUbdPaths makes the file names of a `config ubdN…=file[,backing]
// [,serial]` command absolute against the client's working directory, as
// the C client does (the kernel resolves relative names against its own
// cwd, which is not the user's). Fields are separated by ',' or ':' as the
// kernel splits them; empty fields stay empty and the serial field is left
// alone — the C client turns "ubd1=F,,SER" into a backing file "<cwd>/".
// A directory that cannot be resolved is reported to warn in the C
// client's words and the name is kept as given. Other commands are
// returned unchanged.
func RewriteUbdPaths(cmd string, warn io.Writer) string {
	if !strings.HasPrefix(cmd, "config") {
		return cmd
	}
	rest := strings.TrimLeft(cmd[len("config"):], " \t\n\v\f\r")
	if !strings.HasPrefix(rest, "ubd") {
		return cmd
	}
	eq := strings.IndexByte(cmd, '=')
	if eq < 0 {
		return cmd
	}
	var b strings.Builder
	b.WriteString(cmd[:eq+1])
	spec := cmd[eq+1:]
	for field := 0; ; field++ {
		i := strings.IndexAny(spec, ",:")
		f := spec
		if i >= 0 {
			f = spec[:i]
		}
		if field < 2 && f != "" {
			f = absolutize(f, warn)
		}
		b.WriteString(f)
		if i < 0 {
			break
		}
		b.WriteByte(spec[i])
		spec = spec[i+1:]
	}
	return b.String()
}

// absolutize resolves the directory part of p physically (like chdir then
// getcwd) and appends the last element.
func absolutize(p string, warn io.Writer) string {
	dir, file := filepath.Split(p)
	if dir == "" {
		cwd, err := unix.Getwd()
		if err != nil {
			fmt.Fprintf(warn, "absolutize : unable to get cwd: %s\n", errText(err))
			return p
		}
		return filepath.Join(cwd, file)
	}
	abs, err := filepath.Abs(dir)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		fmt.Fprintf(warn, "absolutize : Can't cd to '%s', %s\n", strings.TrimSuffix(dir, "/"), errText(err))
		return p
	}
	return filepath.Join(abs, file)
}
