// Package cmdline parses a User Mode Linux kernel command line the way the
// 6.1 C kernel (Debian's linux.uml) does: the UML options (mem=, umid=,
// uml_dir=, ubd…, con…/ssl…, eth…/vec…, …), the generic kernel options
// (root=, init=, ro/rw, quiet, console=, …) and the words passed on to init
// (key=value words to its environment, bare words to its argv).
//
// The C kernel never refuses a command line: it logs a message and goes
// on. Parse does the same and returns those messages as Warnings (Level
// Error for an option the kernel rejects, with the kernel's wording), so
// the engine can print them in its boot log or refuse to boot. Parse
// returns an error only where the C kernel exits or crashes.
//
// Kernel facts this package follows (verified on Debian's 6.1.176 build):
//
//   - Each argv element is first matched by prefix against the UML setup
//     table (mem=, umid=, uml_dir=, root=, console=, --help, …). umid= (the
//     first accepted one) and xterm= are then dropped; every other word is
//     kept and joined with spaces into the kernel command line, to which
//     "root=98:0" is appended unless some word starts with root=, and
//     "console=tty0" unless some word starts with console=. That text is
//     the guest's /proc/cmdline (see Config.ProcCmdline).
//   - The joined line is then split again (so an argv element holding
//     spaces becomes several words; double quotes group). Words are
//     matched against the kernel's __setup/early_param/parameter tables;
//     unmatched words go to init: name=value to the environment (a later
//     one with the same name replaces the earlier), dotted names are
//     dropped, bare words to argv. init= and rdinit= discard the argv
//     words collected before them. A bare "--" ends option parsing:
//     everything after it, including the appended root=98:0 console=tty0,
//     goes to init's argv.
//   - mem= and uml_dir= and hostfs= are UML options but not generic kernel
//     options, so they also reach init's environment (the kernel's
//     "Unknown kernel command line parameters" line).
//
// Deliberate differences from the C kernel (all reported as Warnings, so
// nothing is silent):
//
//   - Consoles 1–15 without a setting default to "null" (DefaultCon);
//     Debian's CONFIG_CON_CHAN "x-terminal-emulator" is not a channel, so
//     the C kernel logs an error for each and creates none of them.
//   - An unknown eth/vec transport, a vec option that must be a number
//     and is not, a vec without transport= and a daemon socket type other
//     than unix are refused at parse time with a message (the C kernel
//     ignores them silently or fails when the interface is opened).
//   - A second ethN=/vecN: for the same unit is refused with "Device
//     already configured" (the C kernel logs a kobject EEXIST error).
//   - mem= that is not a size, and a umid= longer than 63 characters, are
//     reported (the C kernel sets 0 bytes of RAM, or silently picks a
//     random umid); a bare "initrd" is reported (the C kernel crashes).
//   - A MAC address with fewer than six bytes is refused (the C parser
//     reads past the end of the field).
//   - Generic kernel flags that refuse a value (rw, ro, rootwait, …) are
//     matched exactly; the __setup/early_param tables are those of
//     Debian's build.
package cmdline

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sizes of the device tables in the C kernel.
const (
	MaxUbd      = 16 // ubd0..ubd15 (ubda..ubdp)
	MaxCon      = 16 // con0..con15
	MaxSsl      = 64 // ssl0..ssl63
	MaxUmidLen  = 63 // longer umids are refused (E2BIG)
	MaxInitArgs = 32 // CONFIG_INIT_ENV_ARG_LIMIT: argv and envp slots
	// CommandLineSize is the kernel's COMMAND_LINE_SIZE for UML.
	CommandLineSize = 4096
)

// Debian's build defaults (see the spec, §6.1 and §3.4).
const (
	DefaultDaemonCtl = "/var/run/uml-utilities/uml_switch.ctl"
	DefaultXterm     = "x-terminal-emulator"
	DefaultRootArg   = "root=98:0"
	DefaultConsArg   = "console=tty0"
)

// Level classifies a Warning.
type Level int

// Warning levels, after the kernel's printk levels.
const (
	// Info is an informational line (e.g. "ubd: Synchronous mode").
	Info Level = iota
	// Warn is a warning; the option still took effect.
	Warn
	// Error means the option (or device) was rejected and has no effect.
	Error
)

// String returns "info", "warning" or "error".
func (l Level) String() string {
	switch l {
	case Info:
		return "info"
	case Warn:
		return "warning"
	}
	return "error"
}

// Warning is one boot-log message about the command line, worded like the
// C kernel's where the kernel prints one.
type Warning struct {
	Level Level
	// Device names the device the message concerns ("ubd0", "con2",
	// "eth1", "vec0"), when there is one.
	Device string
	// Msg is the message text, one or more lines without a trailing
	// newline.
	Msg string
}

// String returns the message text.
func (w Warning) String() string { return w.Msg }

// Warnings is the list Parse returns.
type Warnings []Warning

// Err returns an error joining every Error-level message, or nil.
func (ws Warnings) Err() error {
	var msgs []string
	for _, w := range ws {
		if w.Level == Error {
			msgs = append(msgs, w.Msg)
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("kernel command line: %s", strings.Join(msgs, "; "))
}

// IOMem is an iomem=<name>,<file> region.
type IOMem struct {
	Name, File string
}

// Xterm is the xterm= setting: emulator, title switch, exec switch.
type Xterm struct {
	Emulator, TitleSwitch, ExecSwitch string
}

// Config is a parsed kernel command line.
type Config struct {
	// Args is the argv the kernel got (without argv[0]).
	Args []string

	// Mem is mem= in bytes (the last mem= wins); 0 when not given.
	Mem uint64
	// Umid is the machine id (first accepted umid=); "" means random.
	Umid string
	// UMLDir is the uml_dir= base directory with a trailing '/'; "" means
	// the default ($HOME/.uml/).
	UMLDir string

	// Root is root= as the kernel sees it: the given value, or "98:0"
	// (ubda) from the appended default; "" when the default landed after
	// "--" (the C kernel then panics: no root device).
	Root string
	// ReadOnly is true for "ro", false for "rw" (the last one wins);
	// ReadOnlySet tells whether either was given.
	ReadOnly, ReadOnlySet bool
	// Init is init= (the init program path); RDInit is rdinit=.
	Init, RDInit string
	// RootFSType and RootFlags are rootfstype= and rootflags=.
	RootFSType, RootFlags string
	// Console lists the console= values in order ("tty0" from the
	// appended default when none was given).
	Console []string
	// Initrd is initrd=<file>.
	Initrd string
	// HostFS is the hostfs= root directory; HostFSAppend its ",append" flag.
	HostFS       string
	HostFSAppend bool
	// HostFSAllow is hostfs_allow=<dir> (the engine's own): hostfs mount
	// paths are host paths, allowed beneath dir.
	HostFSAllow string
	// IOMem lists iomem= regions.
	IOMem []IOMem
	// Xterm is the xterm= setting (Debian's default when not given).
	Xterm Xterm
	// MconsoleNotify is the socket of mconsole=notify:<socket>.
	MconsoleNotify string
	// Trace is trace=<file>, an engine extension: one line per trapped
	// guest syscall is appended to the file. The word does not reach init.
	Trace string
	// ReadyFD is ready-fd=<n>, an engine extension: when init has started
	// the engine writes one line to its host fd n and closes it; -1 when
	// not given. The word does not reach init.
	ReadyFD int

	// Quiet is the generic kernel's "quiet".
	Quiet bool
	// NoReboot is UML's noreboot (exit instead of rebooting).
	NoReboot bool
	// Debug is set by "debug" (a no-op in the C kernel besides a message).
	Debug bool
	// NoSysemu is UML's nosysemu.
	NoSysemu bool
	// SSLNonRaw is ssl-non-raw.
	SSLNonRaw bool

	// Help, Version and ShowConfig: the kernel prints and exits 0 as soon
	// as it meets one of them (by prefix); Parse stops there too.
	Help, Version, ShowConfig bool

	// UbdSync is ubd=sync (applies to ubd options after it).
	UbdSync bool
	// Ubd holds the configured block devices by unit (nil: none).
	Ubd [MaxUbd]*Ubd
	// Con and Ssl are the consoles and serial lines with their effective
	// channels (defaults applied).
	Con [MaxCon]Line
	Ssl [MaxSsl]Line
	// ConAll and SslAll are the con= and ssl= values (nil when not given).
	ConAll, SslAll *string
	// Eth and Vec are the network devices in command-line order, one per
	// unit (a duplicate unit is reported and dropped).
	Eth []*Eth
	Vec []*Vec

	// InitArgs is init's argv after argv[0], following the kernel's rules
	// exactly (see the package comment).
	InitArgs []string
	// InitEnv is init's environment: HOME=/ and TERM=linux, then the
	// unknown name=value words.
	InitEnv []string
	// Unknown is what the kernel lists in "Unknown kernel command line
	// parameters" (argv words, then environment words, before "--").
	Unknown []string
	// AfterDashes holds the argv elements after the first element that is
	// exactly "--" (nil when there is none), intact: not re-split at
	// spaces, without the appended root=/console= words, and without the
	// words the kernel drops (umid=, xterm=). The kernel itself does not
	// keep them apart; an engine that wants `linux … -- -c 'a b'` to reach
	// init as two arguments can use this instead of the tail of InitArgs.
	AfterDashes []string
	// Dotted lists the module-style parameters (name.param=value), which
	// the kernel consumes (or drops when unknown).
	Dotted []string

	cmdline  []string // kept words (the kernel's command_line)
	haveRoot bool
	haveCons bool
}

// ProcCmdline returns the text of the guest's /proc/cmdline (without the
// trailing newline): the argv words minus the ones the kernel drops
// (umid=, xterm=), plus root=98:0 and console=tty0 unless given.
func (c *Config) ProcCmdline() string {
	words := append([]string(nil), c.cmdline...)
	if !c.haveRoot {
		words = append(words, DefaultRootArg)
	}
	if !c.haveCons {
		words = append(words, DefaultConsArg)
	}
	return strings.Join(words, " ")
}

// UnknownLine returns the kernel's boot-log line about unknown parameters,
// or "" when there are none. The kernel prints it at notice level, so
// "quiet" hides it.
func (c *Config) UnknownLine() string {
	if len(c.Unknown) == 0 {
		return ""
	}
	return fmt.Sprintf("Unknown kernel command line parameters \"%s\", will be passed to user space.", strings.Join(c.Unknown, " "))
}

// Device answers an mconsole `config <name>` query the way the 6.1 kernel
// does (verified with Debian's uml_mconsole against linux.uml): the device
// is matched by prefix ("ubd", "con", "ssl", "eth", "vec"); a ubd reports
// "<file>[,<backing>]" ("" when unused), a line its channel text (only the
// input channel for a two-channel line other than con0, because the kernel
// splits its copy of the string in place) or "none". Errors carry the
// kernel's reply text. The "mem" device is the engine's business.
func (c *Config) Device(name string) (string, error) {
	switch {
	case strings.HasPrefix(name, "ubd"):
		n, _, ok := parseUbdUnit(name[3:])
		if !ok || n >= MaxUbd {
			return "", errors.New("ubd_get_config : device number out of range")
		}
		if u := c.Ubd[n]; u != nil {
			return u.ConfigString(), nil
		}
		return "", nil
	case strings.HasPrefix(name, "con"), strings.HasPrefix(name, "ssl"):
		v, ok := fullUint(name[3:], 0)
		if !ok {
			return "", errors.New("line_get_config failed to parse device number")
		}
		if name[0] == 'c' && v < MaxCon {
			return c.Con[v].ConfigString(), nil
		}
		if name[0] == 's' && v < MaxSsl {
			return c.Ssl[v].ConfigString(), nil
		}
		return "", errors.New("device number out of range")
	case strings.HasPrefix(name, "eth"), strings.HasPrefix(name, "vec"):
		return "", errors.New("No get_config routine defined")
	}
	return "", errors.New("Bad configuration option")
}

// parser carries the state of one Parse call.
type parser struct {
	c        *Config
	ws       Warnings
	umidSet  bool
	argv     []string // init argv after argv[0]
	env      []string // init env, starting with HOME=/ TERM=linux
	conConf  [MaxCon]*string
	sslConf  [MaxSsl]*string
	ethQueue []netPending
	vecQueue []netPending
}

func (p *parser) warn(l Level, dev, format string, a ...any) {
	p.ws = append(p.ws, Warning{Level: l, Device: dev, Msg: fmt.Sprintf(format, a...)})
}

// Parse parses the kernel command line args (argv without argv[0]).
func Parse(args []string) (*Config, Warnings, error) {
	c := &Config{Args: append([]string(nil), args...), Xterm: Xterm{DefaultXterm, "-T", "-e"}, ReadyFD: -1}
	p := &parser{c: c, env: []string{"HOME=/", "TERM=linux"}}

	// Phase 1: the UML setup table, on each argv element by prefix.
	length, dashes := 0, false
	for i, a := range args {
		if i == 0 && strings.HasPrefix(a, " ") {
			continue
		}
		a, add, exit := p.umlSetup(a)
		if exit {
			return c, p.ws, nil
		}
		if !add {
			continue
		}
		if err := addArg(&length, a); err != nil {
			return c, p.ws, err
		}
		c.cmdline = append(c.cmdline, a)
		if dashes {
			c.AfterDashes = append(c.AfterDashes, a)
		} else if a == "--" {
			dashes = true
			c.AfterDashes = []string{}
		}
	}

	// The appended defaults count against COMMAND_LINE_SIZE too.
	var defaults []string
	if !c.haveRoot {
		defaults = append(defaults, DefaultRootArg)
	}
	if !c.haveCons {
		defaults = append(defaults, DefaultConsArg)
	}
	for _, a := range defaults {
		if err := addArg(&length, a); err != nil {
			return c, p.ws, err
		}
	}

	// Phase 2: the generic kernel's parse_args on the joined line.
	line := c.ProcCmdline()
	if err := p.parseArgs(line); err != nil {
		return c, p.ws, err
	}

	// Phase 3: device set-up in initcall order (what the kernel logs
	// later during boot).
	p.setupUbdDefaults()
	p.setupLines()
	p.setupEth()
	p.setupVec()

	c.InitArgs = p.argv
	c.InitEnv = p.env
	return c, p.ws, nil
}

// addArg is the kernel's add_arg length check (COMMAND_LINE_SIZE); the C
// kernel prints the error and exits 1.
func addArg(length *int, a string) error {
	if *length+len(a)+1 > CommandLineSize {
		return errors.New("add_arg: Too many command line arguments!")
	}
	if *length > 0 {
		*length++
	}
	*length += len(a)
	return nil
}

// umlSetup applies the UML setup table to one argv element. It returns
// the word as the handlers leave it (iomem= and hostfs= cut it at the
// first ',' in place, so the command line keeps only that part), whether
// it stays on the kernel command line, and whether the kernel would exit
// here (--help, --version, --showconfig).
func (p *parser) umlSetup(a string) (word string, add, exit bool) {
	c := p.c
	word, add = a, true
	switch {
	case strings.HasPrefix(a, "--showconfig"):
		c.ShowConfig = true
		return word, add, true
	case strings.HasPrefix(a, "--help"):
		c.Help = true
		return word, add, true
	case strings.HasPrefix(a, "--version"):
		c.Version = true
		return word, add, true
	}
	if v, ok := strings.CutPrefix(a, "iomem="); ok {
		name, file, found := strings.Cut(v, ",")
		if !found {
			p.warn(Error, "", "parse_iomem : failed to parse iomem")
		} else {
			word = "iomem=" + name
			c.IOMem = append(c.IOMem, IOMem{name, file})
		}
	}
	if v, ok := strings.CutPrefix(a, "mem="); ok {
		n, _ := Memparse(v)
		if n == 0 {
			p.warn(Error, "", "mem=%s: not a memory size (keeping the default)", v)
		} else {
			c.Mem = n
		}
	}
	if v, ok := strings.CutPrefix(a, "console="); ok {
		_ = v
		c.haveCons = true
	}
	if strings.HasPrefix(a, "debug") {
		c.Debug = true
		p.warn(Info, "", "'debug' is not necessary to gdb UML in skas mode - run\n'gdb linux'")
	}
	if strings.HasPrefix(a, "root=") {
		c.haveRoot = true
	}
	if v, ok := strings.CutPrefix(a, "umid="); ok {
		if p.umidSet {
			p.warn(Warn, "", "umid already set")
		} else {
			add = false
			if len(v) > MaxUmidLen {
				p.warn(Error, "", "umid=%s: longer than %d characters (a random umid is used)", v, MaxUmidLen)
			} else {
				c.Umid = v
				p.umidSet = true
			}
		}
	}
	if v, ok := strings.CutPrefix(a, "initrd="); ok {
		c.Initrd = v
	}
	if v, ok := strings.CutPrefix(a, "xterm="); ok {
		add = false
		x := Xterm{}
		if rest, more := splitIfSpec(v, &x.Emulator, &x.TitleSwitch, &x.ExecSwitch); more && rest != "" || x.Emulator == "" && v != "" {
			p.warn(Warn, "", "xterm_setup : ignoring extra data '%s'", rest)
		}
		if x.Emulator != "" {
			c.Xterm.Emulator = x.Emulator
		}
		if x.TitleSwitch != "" {
			c.Xterm.TitleSwitch = x.TitleSwitch
		}
		if x.ExecSwitch != "" {
			c.Xterm.ExecSwitch = x.ExecSwitch
		}
	}
	if strings.HasPrefix(a, "nosysemu") {
		c.NoSysemu = true
	}
	if v, ok := strings.CutPrefix(a, "uml_dir="); ok {
		if v == "" {
			p.warn(Error, "", "uml_dir can't be an empty string")
		} else {
			if !strings.HasSuffix(v, "/") {
				v += "/"
			}
			c.UMLDir = v
		}
	}
	if strings.HasPrefix(a, "noreboot") {
		c.NoReboot = true
	}
	if v, ok := strings.CutPrefix(a, "trace="); ok && v != "" {
		add = false
		c.Trace = v
	}
	if v, ok := strings.CutPrefix(a, "hostfs_allow="); ok && v != "" {
		add = false
		c.HostFSAllow = v
	}
	if v, ok := strings.CutPrefix(a, "ready-fd="); ok {
		add = false
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			c.ReadyFD = n
		} else {
			p.warn(Error, "", "ready-fd=%s: not a file descriptor number", v)
		}
	}
	if v, ok := strings.CutPrefix(a, "hostfs="); ok {
		dir, flags, _ := strings.Cut(v, ",")
		word = "hostfs=" + dir
		if dir != "" {
			c.HostFS = dir
		}
		for _, f := range strings.Split(flags, ",") {
			switch f {
			case "":
			case "append":
				c.HostFSAppend = true
			default:
				p.warn(Warn, "", "hostfs_args - unsupported option - %s", f)
			}
		}
	}
	return word, add, false
}
