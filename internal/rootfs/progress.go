package rootfs

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Phases of a build, in order. A failure names the phase it happened in.
const (
	PhaseResolve   = "resolve"
	PhaseDownload  = "download"
	PhaseUnpack    = "unpack"
	PhaseConfigure = "configure"
	PhasePack      = "pack"
)

// Progress reports a build's phases. On a terminal it keeps one status
// line ("[download] 12/40  3.1s") updated in place; otherwise it prints
// plain "I: …" lines. Everything, including the output of the commands
// rootstrap runs, also goes to the log writer when one is set.
type Progress struct {
	mu      sync.Mutex
	w       io.Writer // stderr
	tty     bool
	quiet   bool
	verbose bool
	log     io.Writer
	start   time.Time
	phase   string
	pstart  time.Time
	done    int
	total   int
	status  bool // a status line is on screen
	now     func() time.Time

	stop     chan struct{}
	finished bool
}

// NewProgress returns a reporter writing to w (stderr). tty selects the
// in-place status line; quiet silences everything but errors; verbose
// also shows the commands' output. log, if not nil, receives everything.
func NewProgress(w io.Writer, tty, quiet, verbose bool, log io.Writer) *Progress {
	p := &Progress{w: w, tty: tty, quiet: quiet, verbose: verbose, log: log, now: time.Now, stop: make(chan struct{})}
	p.start = p.now()
	if tty && !quiet {
		// Keep the elapsed time moving while a tool works silently.
		go func() {
			tk := time.NewTicker(500 * time.Millisecond)
			defer tk.Stop()
			for {
				select {
				case <-p.stop:
					return
				case <-tk.C:
					p.mu.Lock()
					if p.phase != "" && !p.finished {
						p.drawLocked()
					}
					p.mu.Unlock()
				}
			}
		}()
	}
	return p
}

// Phase starts a new phase.
func (p *Progress) Phase(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if name == p.phase {
		return
	}
	if p.phase != "" && p.done > 0 {
		// Close the previous phase with its count.
		msg := fmt.Sprintf("%s: %d in %s", p.phase, p.done, p.elapsed(p.pstart))
		p.logf("I: %s", msg)
		if !p.quiet && !p.tty {
			fmt.Fprintf(p.w, "I: %s\n", msg)
		}
	}
	p.phase, p.pstart, p.done, p.total = name, p.now(), 0, 0
	p.logf("I: phase %s", name)
	if p.quiet {
		return
	}
	if p.tty {
		p.drawLocked()
		return
	}
	fmt.Fprintf(p.w, "I: %s\n", name)
}

// Current returns the phase in progress.
func (p *Progress) Current() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.phase
}

// Count updates the phase's item counter (total 0: unknown).
func (p *Progress) Count(done, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done, p.total = done, total
	if p.tty && !p.quiet {
		p.drawLocked()
	}
}

// Step adds one to the phase's counter.
func (p *Progress) Step() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done++
	if p.tty && !p.quiet {
		p.drawLocked()
	}
}

// Infof reports a notable event: an "I: " line (above the status line on a
// terminal).
func (p *Progress) Infof(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	msg := fmt.Sprintf(format, a...)
	p.logf("I: %s", msg)
	if p.quiet {
		return
	}
	p.printLocked("I: " + msg)
}

// Warnf reports a problem that does not stop the build ("W: " line, shown
// even with -q).
func (p *Progress) Warnf(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	msg := fmt.Sprintf(format, a...)
	p.logf("W: %s", msg)
	p.printLocked("W: " + msg)
}

// Debugf is shown only with -v; it always reaches the log.
func (p *Progress) Debugf(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	msg := fmt.Sprintf(format, a...)
	p.logf("D: %s", msg)
	if p.verbose && !p.quiet {
		p.printLocked("D: " + msg)
	}
}

// Output records a line of a command's output: always in the log, on
// screen only with -v.
func (p *Progress) Output(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.logf("%s", line)
	if p.verbose && !p.quiet {
		p.printLocked("  " + line)
	}
}

// Done finishes the display (clears the status line) and logs the total.
func (p *Progress) Done(ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.finished {
		p.finished = true
		close(p.stop)
	}
	if p.status {
		fmt.Fprint(p.w, "\r\033[K")
		p.status = false
	}
	state := "done"
	if !ok {
		state = "failed"
	}
	p.logf("I: %s after %s", state, p.elapsed(p.start))
}

// Elapsed returns the time since the build started.
func (p *Progress) Elapsed() time.Duration { return p.now().Sub(p.start) }

func (p *Progress) elapsed(since time.Time) string {
	d := p.now().Sub(since)
	return fmt.Sprintf("%.1fs", d.Seconds())
}

func (p *Progress) printLocked(line string) {
	if p.status {
		fmt.Fprint(p.w, "\r\033[K")
		p.status = false
	}
	fmt.Fprintln(p.w, line)
	if p.tty && p.phase != "" {
		p.drawLocked()
	}
}

func (p *Progress) drawLocked() {
	var b strings.Builder
	fmt.Fprintf(&b, "\r\033[K[%s]", p.phase)
	switch {
	case p.total > 0:
		fmt.Fprintf(&b, " %d/%d", p.done, p.total)
	case p.done > 0:
		fmt.Fprintf(&b, " %d", p.done)
	}
	fmt.Fprintf(&b, "  %s (total %s)", p.elapsed(p.pstart), p.elapsed(p.start))
	fmt.Fprint(p.w, b.String())
	p.status = true
}

func (p *Progress) logf(format string, a ...any) {
	if p.log == nil {
		return
	}
	fmt.Fprintf(p.log, format+"\n", a...)
}

// lineWriter turns a command's output stream into Progress.Output lines,
// calling hook (if set) on each line.
type lineWriter struct {
	p    *Progress
	hook func(string)
	buf  []byte
	tail []string // last lines, for error messages
}

func (l *lineWriter) Write(b []byte) (int, error) {
	l.buf = append(l.buf, b...)
	for {
		i := strings.IndexByte(string(l.buf), '\n')
		if i < 0 {
			break
		}
		l.line(string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
	return len(b), nil
}

func (l *lineWriter) line(s string) {
	s = strings.TrimRight(s, "\r")
	l.p.Output(s)
	l.tail = append(l.tail, s)
	if len(l.tail) > 20 {
		l.tail = l.tail[1:]
	}
	if l.hook != nil {
		l.hook(s)
	}
}

func (l *lineWriter) flush() {
	if len(l.buf) > 0 {
		l.line(string(l.buf))
		l.buf = nil
	}
}

// lastError returns the last "E: " line seen, or the last non-empty line.
func (l *lineWriter) lastError() string {
	for i := len(l.tail) - 1; i >= 0; i-- {
		if strings.HasPrefix(l.tail[i], "E: ") {
			return strings.TrimPrefix(l.tail[i], "E: ")
		}
	}
	for i := len(l.tail) - 1; i >= 0; i-- {
		if strings.TrimSpace(l.tail[i]) != "" {
			return strings.TrimSpace(l.tail[i])
		}
	}
	return ""
}
