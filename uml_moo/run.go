package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/cow"
)

const help = `Usage: uml_moo [-q] [-b <backing file>] <COW file> <new image>
       uml_moo [-q] [-b <backing file>] -d <COW file>
       uml_moo --info [--json] [-b <backing file>] <COW file>

Merge a User Mode Linux copy-on-write (COW) file with its backing file.
The first form writes the merged disk to a new sparse image; -d merges in
place into the backing file (other COW files of that backing file become
invalid). COW versions 1, 2 and 3 are read; the COW file is never changed.

  -b FILE    use FILE as the backing file instead of the one in the header
  -d         merge in place; an interrupted -d merge can simply be re-run
  -q         no progress display (shown on a terminal only)
  --info     describe the COW file: version, backing file, size, mtime,
             sectors present, whether the backing file matches
  --json     with --info: print a JSON object
  -h, --help show this help
  --version  show the version

Exit status: 0 ok, 1 error (also for usage errors, as the C uml_moo).
`

const usageText = `%[1]s usage:
	%[1]s [ -b <actual backing file> ] <COW file> <new backing file>
	%[1]s [ -b <actual backing file> ] -d <COW file>
Creates a new filesystem image from the COW file and its backing file.
Specifying -d will cause a destructive, in-place merge of the COW file into
its current backing file
Specifying -b overrides the backing_file specified in the COW file.  This is
needed when dealing with a COW file that was created inside a chroot jail.
%[1]s supports version 1,2 and 3 COW files.
`

type options struct {
	inPlace, quiet, info, json bool
	backing                    string
	files                      []string
}

func usage(stderr io.Writer, prog, why string) error {
	if why != "" && why != "-b" {
		fmt.Fprintf(stderr, "%s: %s\n", prog, why)
	}
	fmt.Fprintf(stderr, usageText, prog)
	return cli.Exit(1)
}

// parse reads options up to the first operand (so "uml_moo cow -d" still
// writes a new file named "-d", as with the C tool), in any order.
func parse(a []string) (options, string) {
	var o options
	i := 0
	for ; i < len(a); i++ {
		switch s := a[i]; s {
		case "-d":
			o.inPlace = true
		case "-q":
			o.quiet = true
		case "--info":
			o.info = true
		case "--json":
			o.json = true
		case "-b":
			if i+1 >= len(a) {
				return o, "-b" // the C tool prints the bare usage
			}
			i++
			o.backing = a[i]
		case "--":
			i++
			o.files = a[i:]
			return o, ""
		default:
			if len(s) > 1 && s[0] == '-' {
				return o, "unknown option " + s
			}
			o.files = a[i:]
			return o, ""
		}
	}
	return o, ""
}

func run(args []string, _ io.Reader, stdout, stderr io.Writer) error {
	if cli.Standard(args, stdout, help) {
		return nil
	}
	prog := cli.Prog(args)
	if len(args) < 2 {
		return usage(stderr, prog, "")
	}
	o, why := parse(args[1:])
	switch {
	case why != "":
		return usage(stderr, prog, why)
	case o.info && (len(o.files) != 1 || o.inPlace):
		return usage(stderr, prog, "")
	case o.json && !o.info:
		return usage(stderr, prog, "--json goes with --info")
	case o.info:
		return info(o, stdout, stderr)
	case o.inPlace && len(o.files) != 1, !o.inPlace && len(o.files) != 2:
		return usage(stderr, prog, "")
	}
	mo := cow.MergeOptions{Backing: o.backing, Log: stdout, Warnf: func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s: warning: %s\n", prog, fmt.Sprintf(format, a...))
	}}
	if !o.inPlace {
		mo.Output = o.files[1]
	}
	m, err := cow.NewMerge(o.files[0], mo)
	if err != nil {
		return report(err, stderr)
	}
	defer m.Close()
	if o.inPlace {
		if m.Resumed() {
			fmt.Fprintf(stderr, "%s: resuming the interrupted in-place merge into %s\n", prog, m.BackingFile())
		}
		fmt.Fprintf(stderr, "%s: warning: merging into %s in place: other COW files based on it will no longer match it\n", prog, m.BackingFile())
	}
	var p *progress
	if !o.quiet && isTerminal(stderr) {
		now := time.Now() // first drawn after 200 ms: quick merges stay silent
		p = &progress{w: stderr, total: m.Total(), start: now, last: now}
	}
	_, err = m.Run(p.update)
	p.finish()
	if err == nil {
		err = m.Close()
	}
	if err != nil {
		return report(err, stderr)
	}
	return nil
}

// report prints err the way the C uml_moo does and returns exit status 1.
func report(err error, stderr io.Writer) error {
	var he *cow.HeaderError
	var le *cow.LockedError
	switch {
	case errors.As(err, &he):
		fmt.Fprintln(stderr, "Reading COW header failed")
	case errors.As(err, &le):
		fmt.Fprintf(stderr, "%s is locked by process %d (is a UML using it?)\n", le.Path, le.Pid)
	default:
		fmt.Fprintln(stderr, cow.Perror(err))
	}
	return cli.Exit(1)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// progress draws "done / total, rate, ETA" on one terminal line.
type progress struct {
	w     io.Writer
	total int64
	start time.Time
	last  time.Time
	shown bool
}

func (p *progress) update(done int64) {
	if p == nil {
		return
	}
	now := time.Now()
	if now.Sub(p.last) < 200*time.Millisecond {
		return
	}
	p.last = now
	el := now.Sub(p.start).Seconds()
	rate := float64(done) / max(el, 1e-3)
	eta := "?"
	if rate > 0 {
		eta = (time.Duration(float64(p.total-done)/rate) * time.Second).Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "\r%s / %s  %s/s  ETA %s   ", human(done), human(p.total), human(int64(rate)), eta)
	p.shown = true
}

func (p *progress) finish() {
	if p != nil && p.shown {
		fmt.Fprint(p.w, "\r"+strings.Repeat(" ", 60)+"\r")
	}
}

func human(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n)/1024, 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, units[i])
}

// infoJSON is the --info --json object.
type infoJSON struct {
	COW            string `json:"cow"`
	Version        uint32 `json:"version"`
	Broken         bool   `json:"broken_v3_layout"`
	BackingFile    string `json:"backing_file"`
	Size           uint64 `json:"size"`
	Mtime          int64  `json:"mtime"`
	SectorSize     int    `json:"sector_size"`
	Alignment      uint32 `json:"alignment"`
	BitmapOffset   int64  `json:"bitmap_offset"`
	BitmapLen      int64  `json:"bitmap_len"`
	DataOffset     int64  `json:"data_offset"`
	Sectors        int64  `json:"sectors"`
	SectorsPresent int64  `json:"sectors_present"`
	BackingStatus  string `json:"backing_status"`
	MergeMarker    bool   `json:"interrupted_merge"`
}

func info(o options, stdout, stderr io.Writer) error {
	path := o.files[0]
	f, err := os.Open(path)
	if err != nil {
		return report(&cow.OpError{Op: "COW file open", Path: path, Err: err}, stderr)
	}
	defer f.Close()
	h, err := cow.ReadHeader(f)
	if err != nil {
		var he *cow.HeaderError
		if errors.As(err, &he) && he.Msg == "" {
			fmt.Fprintf(stderr, "%s: not a COW file\n", path)
			return cli.Exit(1)
		}
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return cli.Exit(1)
	}
	bm := make([]byte, h.BitmapLen)
	if n, err := f.ReadAt(bm, h.BitmapOffset); n != len(bm) {
		return report(&cow.OpError{Op: "Reading COW bitmap", Path: path, Err: err}, stderr)
	}
	backing := h.BackingFile
	if o.backing != "" {
		backing = o.backing
	}
	status := "ok"
	if err := cow.CheckBacking(h, backing); err != nil {
		status = cow.Perror(err)
	}
	_, merr := os.Stat(cow.MarkerPath(backing))
	j := infoJSON{
		COW: path, Version: h.Version, Broken: h.Broken, BackingFile: h.BackingFile,
		Size: h.Size, Mtime: h.Mtime, SectorSize: h.SectorSize, Alignment: h.Alignment,
		BitmapOffset: h.BitmapOffset, BitmapLen: h.BitmapLen, DataOffset: h.DataOffset,
		Sectors: h.BitSectors(), SectorsPresent: cow.CountBits(bm, h.BitSectors()),
		BackingStatus: status, MergeMarker: merr == nil,
	}
	if o.json {
		b, _ := json.MarshalIndent(j, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		return nil
	}
	layout := ""
	if h.Broken {
		layout = " (broken 64-bit layout)"
	}
	pct := 0.0
	if j.Sectors > 0 {
		pct = 100 * float64(j.SectorsPresent) / float64(j.Sectors)
	}
	fmt.Fprintf(stdout, "COW file:        %s\n", path)
	fmt.Fprintf(stdout, "version:         %d%s\n", h.Version, layout)
	fmt.Fprintf(stdout, "backing file:    %s\n", h.BackingFile)
	fmt.Fprintf(stdout, "size:            %d (%s)\n", h.Size, human(int64(h.Size)))
	fmt.Fprintf(stdout, "mtime:           %d (%s)\n", h.Mtime, time.Unix(h.Mtime, 0).UTC().Format(time.RFC3339))
	fmt.Fprintf(stdout, "sector size:     %d\n", h.SectorSize)
	fmt.Fprintf(stdout, "alignment:       %d\n", h.Alignment)
	fmt.Fprintf(stdout, "bitmap:          %d bytes at %d\n", h.BitmapLen, h.BitmapOffset)
	fmt.Fprintf(stdout, "data offset:     %d\n", h.DataOffset)
	fmt.Fprintf(stdout, "sectors present: %d of %d (%.1f%%, %s)\n", j.SectorsPresent, j.Sectors, pct, human(j.SectorsPresent*int64(h.SectorSize)))
	fmt.Fprintf(stdout, "backing check:   %s\n", status)
	if j.MergeMarker {
		fmt.Fprintf(stdout, "note:            an in-place merge into %s was interrupted; run uml_moo -d again\n", backing)
	}
	return nil
}
