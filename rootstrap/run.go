package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	ucli "github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/umltools/umltools/internal/cli"
	"github.com/umltools/umltools/internal/rootfs"
	"github.com/umltools/umltools/internal/version"
)

const helpText = `Usage: rootstrap [options] imagefile

Build a bootable root filesystem image for User Mode Linux.

Options (compatible with the original rootstrap):
  -s, --image-size MB     image size in megabytes (overrides [global] initialsize;
                          default: the tree plus free space)
  -o FILE                 write the full log to FILE
  -u, --umlargs ARGS      accepted for compatibility; ignored (no UML boot is needed)

Sources (default: Debian, per [debian] in rootstrap.conf):
      --profile NAME      debian (default) or busybox (a tiny image, built in seconds)
      --from-tar FILE     pack a tar archive (- reads standard input), e.g. docker export
      --from-dir DIR      pack a directory tree

Configuration:
  -c, --config FILE       read FILE after the default configuration layers
                          (/etc/rootstrap/rootstrap.conf, ~/.config/rootstrap/rootstrap.conf,
                          ./rootstrap.conf); may be repeated
      --hostname NAME     host name of the image (default: [network] hostname, else "uml")
      --root-password PW  root's password (a value starting with $ is a crypt hash;
                          default: none, root logs in on the console without one)
      --include PKGS      extra Debian packages (comma-separated; may be repeated)
      --fstype TYPE       ext2, ext3 or ext4 (overrides [global] fstype; default ext4)
      --modules-dir DIR   look for executable modules in DIR (default /etc/rootstrap/modules)
      --list-modules      list the built-in modules and exit

Output:
  -q, --quiet             only errors and warnings
  -v, --verbose           show the output of the tools rootstrap runs
  -h, --help              show this help and exit
      --version           show the version and exit

Boot the result with:  linux ubd0=imagefile con0=fd:0,fd:1 con=null
`

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var runErr error
	app := &ucli.App{
		Name:                   "rootstrap",
		HideVersion:            true,
		UseShortOptionHandling: true,
		CustomAppHelpTemplate:  helpText,
		Writer:                 stdout,
		ErrWriter:              stderr,
		ExitErrHandler:         func(*ucli.Context, error) {},
		OnUsageError: func(_ *ucli.Context, err error, _ bool) error {
			msg := err.Error()
			if f, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
				msg = "unknown option " + asTyped(args, f)
			}
			return cli.Usagef("%s (try --help)", msg)
		},
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "image-size", Aliases: []string{"s"}},
			&ucli.StringFlag{Name: "o"},
			&ucli.StringSliceFlag{Name: "umlargs", Aliases: []string{"u"}},
			&ucli.StringFlag{Name: "profile"},
			&ucli.StringFlag{Name: "from-tar"},
			&ucli.StringFlag{Name: "from-dir"},
			&ucli.StringSliceFlag{Name: "config", Aliases: []string{"c"}},
			&ucli.StringFlag{Name: "hostname"},
			&ucli.StringFlag{Name: "root-password"},
			&ucli.StringSliceFlag{Name: "include"},
			&ucli.StringFlag{Name: "fstype"},
			&ucli.StringSliceFlag{Name: "modules-dir"},
			&ucli.BoolFlag{Name: "list-modules"},
			&ucli.BoolFlag{Name: "quiet", Aliases: []string{"q"}},
			&ucli.BoolFlag{Name: "verbose", Aliases: []string{"v"}},
			&ucli.BoolFlag{Name: "version"},
		},
		Action: func(c *ucli.Context) error {
			runErr = action(c, stdin, stdout, stderr)
			return nil
		},
	}
	if err := app.Run(args); err != nil {
		var ue *cli.UsageError
		if errors.As(err, &ue) {
			return err
		}
		return cli.Usagef("%v (try --help)", err)
	}
	return runErr
}

func action(c *ucli.Context, stdin io.Reader, stdout, stderr io.Writer) error {
	if c.Bool("version") {
		fmt.Fprintln(stdout, version.String("rootstrap"))
		return nil
	}
	if c.Bool("list-modules") {
		for _, m := range rootfs.Modules() {
			fmt.Fprintln(stdout, m)
		}
		return nil
	}
	switch c.NArg() {
	case 0:
		return cli.Usagef("missing imagefile (try --help)")
	case 1:
	default:
		return cli.Usagef("too many arguments: %s (options go before imagefile)", strings.Join(c.Args().Slice()[1:], " "))
	}
	image := c.Args().First()
	if image == "" {
		return cli.Usagef("empty imagefile name")
	}
	o := rootfs.Options{
		Image:        image,
		Profile:      c.String("profile"),
		FromTar:      c.String("from-tar"),
		FromDir:      c.String("from-dir"),
		Hostname:     c.String("hostname"),
		RootPassword: c.String("root-password"),
		ModuleDirs:   c.StringSlice("modules-dir"),
		Stdin:        stdin,
	}
	switch o.Profile {
	case "", "debian", "busybox":
	default:
		return cli.Usagef("unknown profile %q (want debian or busybox)", o.Profile)
	}
	if o.FromTar != "" && o.FromDir != "" {
		return cli.Usagef("--from-tar and --from-dir exclude each other")
	}
	if (o.FromTar != "" || o.FromDir != "") && o.Profile != "" {
		return cli.Usagef("--profile and --from-tar/--from-dir exclude each other")
	}
	if o.Hostname != "" && !rootfs.ValidHostname(o.Hostname) {
		return cli.Usagef("bad hostname %q", o.Hostname)
	}
	if s := c.String("image-size"); s != "" {
		n, err := rootfs.ParseMB(s)
		if err != nil {
			return cli.Usagef("-s/--image-size: %v", err)
		}
		o.SizeMB = n
	}
	for _, inc := range c.StringSlice("include") {
		o.Include = append(o.Include, rootfs.List(inc)...)
	}
	cfg, err := rootfs.LoadConfig(rootfs.DefaultConfigPaths(os.Getenv), c.StringSlice("config"))
	if err != nil {
		return err
	}
	if fs := c.String("fstype"); fs != "" {
		cfg.Set(rootfs.GlobalSection, "fstype", fs)
	}
	if u := c.StringSlice("umlargs"); len(u) > 0 {
		cfg.Set(rootfs.GlobalSection, "umlargs", strings.Join(u, " "))
	}

	var logw io.Writer
	if lf := c.String("o"); lf != "" {
		f, err := os.Create(lf)
		if err != nil {
			return fmt.Errorf("log file: %w", err)
		}
		defer f.Close()
		logw = f
	}
	o.Progress = rootfs.NewProgress(stderr, isTTY(stderr), c.Bool("quiet"), c.Bool("verbose"), logw)
	o.Config = cfg
	for _, f := range cfg.Files {
		o.Progress.Debugf("config: %s", f)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return rootfs.Build(ctx, o)
}

// asTyped returns the argument the user typed for the option the flag
// package names as -name (it strips one or two dashes).
func asTyped(args []string, flag string) string {
	name := strings.TrimLeft(flag, "-")
	for _, a := range args[1:] {
		if a == "--" {
			break
		}
		if n, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "="); n == name && strings.HasPrefix(a, "-") {
			return a
		}
	}
	return flag
}

func isTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
