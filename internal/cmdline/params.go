package cmdline

import (
	"fmt"
	"strings"
)

// setupTable is the kernel's .init.setup table of Debian's 6.1.176 UML
// build, in link order (read from the binary's ELF section): __setup()
// entries match a word by prefix, early_param() entries (early) need the
// exact name. The UML device options are handled by the parser itself and
// marked with a handler name.
var setupTable = []struct {
	str   string
	early bool
}{
	{"initcall_blacklist=", false}, {"rdinit=", false}, {"init=", false},
	{"bootconfig", true}, {"loglevel", true}, {"quiet", true}, {"debug", true},
	{"reset_devices", false}, {"hostname", true}, {"rootdelay=", false},
	{"rootfstype=", false}, {"rootflags=", false}, {"rootwait", false},
	{"root=", false}, {"rw", false}, {"ro", false}, {"load_ramdisk=", false},
	{"initrd", true}, {"initrdmem", true}, {"noinitrd", false},
	{"initramfs_async=", false}, {"retain_initrd", false}, {"lpj=", false},
	{"earlyprintk", true}, {"con", false}, {"ssl-non-raw", false}, {"ssl", false},
	{"stderr=", false}, {"vec", false}, {"eth", false}, {"mconsole=", false},
	{"udb", false}, {"ubd", false}, {"fake_ide", false},
	{"coredump_filter=", false}, {"panic_on_taint", true}, {"oops", true},
	{"mitigations", true}, {"iomem=", false}, {"reserve=", false},
	{"no_file_caps", false}, {"print-fatal-signals=", false}, {"reboot=", false},
	{"resched_latency_warn_ms=", false}, {"sched_thermal_decay_shift=", false},
	{"mem_sleep_default=", false}, {"keep_bootcon", true},
	{"no_console_suspend", false}, {"console=", false},
	{"console_msg_format=", false}, {"ignore_loglevel", true},
	{"log_buf_len", true}, {"printk.devkmsg=", false}, {"irqpoll", false},
	{"irqfixup", false}, {"noirqdebug", false}, {"highres=", false},
	{"ntp_tick_adj=", false}, {"clock=", false}, {"clocksource=", false},
	{"skew_tick", true}, {"nohz=", false}, {"crashkernel", true},
	{"cgroup_debug", false}, {"cgroup_disable=", false}, {"cgroup_no_v1=", false},
	{"audit_backlog_limit=", false}, {"audit=", false}, {"delayacct", false},
	{"mminit_loglevel", true}, {"slab_merge", false}, {"slab_nomerge", false},
	{"slub_merge", false}, {"slub_nomerge", false}, {"norandmaps", false},
	{"stack_guard_gap=", false}, {"movablecore", true}, {"kernelcore", true},
	{"init_on_free", true}, {"init_on_alloc", true}, {"memblock", true},
	{"slub_min_objects=", false}, {"slub_max_order=", false},
	{"slub_min_order=", false}, {"slub_debug", false}, {"swapaccount=", false},
	{"cgroup.memory=", false}, {"dhash_entries=", false}, {"ihash_entries=", false},
	{"initramfs_options=", false}, {"mphash_entries=", false},
	{"mhash_entries=", false}, {"proc_mem.force_override", true},
	{"ipcmni_extend", true}, {"lsm.debug", false}, {"lsm=", false},
	{"security=", false}, {"checkreqprot=", false}, {"enforcing=", false},
	{"TOMOYO_trigger=", false}, {"TOMOYO_loader=", false}, {"apparmor=", false},
	{"integrity_audit=", false}, {"elevator=", false}, {"blkdevparts=", false},
	{"gpt", false}, {"stack_depot_disable", true}, {"sysrq_always_enabled", false},
	{"random.trust_bootloader", true}, {"random.trust_cpu", true},
	{"fw_devlink.strict", true}, {"fw_devlink", true}, {"driver_async_probe=", false},
	{"deferred_probe_timeout=", false}, {"devtmpfs.mount=", false},
	{"fb_tunnels=", false}, {"thash_entries=", false}, {"tcpmhash_entries=", false},
	{"uhash_entries=", false}, {"no_hash_pointers", true},
	{"debug_boot_weak_hash", true},
}

// coreParams are the built-in kernel parameters without a dot (the
// binary's __param table); they are consumed when the name matches.
var coreParams = []string{
	"initcall_debug", "crash_kexec_post_notifiers", "panic_on_warn",
	"pause_on_oops", "panic_print", "panic", "module_blacklist", "nomodule",
	"ignore_rlimit_data",
}

// parseArgs is the kernel's parse_args("Booting kernel", …,
// unknown_bootoption) followed by the init-argument pass after "--".
func (p *parser) parseArgs(line string) error {
	args := strings.TrimLeft(line, " \t\n\v\f\r")
	for args != "" {
		var name, val string
		var hasVal bool
		name, val, hasVal, args = nextArg(args)
		word := name
		if hasVal {
			word = name + "=" + val
		}
		if !hasVal && name == "--" {
			return p.initArgs(args)
		}
		if p.knownParam(name) {
			continue
		}
		if p.obsoleteSetup(word) {
			continue
		}
		if strings.Contains(name, ".") {
			p.c.Dotted = append(p.c.Dotted, word)
			continue
		}
		if hasVal {
			replaced := false
			for i, e := range p.env {
				if strings.HasPrefix(e, name+"=") {
					p.env[i] = word
					replaced = true
					break
				}
			}
			if !replaced {
				if len(p.env) >= MaxInitArgs {
					return fmt.Errorf("Too many boot env vars at `%s'", word)
				}
				p.env = append(p.env, word)
			}
		} else {
			if len(p.argv)+1 >= MaxInitArgs {
				return fmt.Errorf("Too many boot init vars at `%s'", word)
			}
			p.argv = append(p.argv, word)
		}
	}
	p.c.Unknown = append(append([]string{}, p.argv...), p.env[2:]...)
	return nil
}

// initArgs handles the words after "--": all of them go to init's argv.
func (p *parser) initArgs(rest string) error {
	p.c.Unknown = append(append([]string{}, p.argv...), p.env[2:]...)
	for rest != "" {
		var name, val string
		var hasVal bool
		name, val, hasVal, rest = nextArg(rest)
		if hasVal {
			name += "=" + val
		}
		if len(p.argv)+1 >= MaxInitArgs {
			return fmt.Errorf("Too many boot init vars at `%s'", name)
		}
		p.argv = append(p.argv, name)
	}
	return nil
}

func (p *parser) knownParam(name string) bool {
	for _, k := range coreParams {
		if paramEq(name, k) {
			return true
		}
	}
	return false
}

// obsoleteSetup is the kernel's obsolete_checksetup on "name[=value]": it
// reports whether a setup handler consumed the word.
func (p *parser) obsoleteSetup(line string) bool {
	hadEarly := false
	for _, s := range setupTable {
		if !paramHasPrefix(line, s.str) {
			continue
		}
		rest := line[len(s.str):]
		if s.early {
			if rest == "" || rest[0] == '=' {
				hadEarly = true
				p.early(s.str, rest)
			}
			continue
		}
		if p.setup(s.str, rest) {
			return true
		}
	}
	return hadEarly
}

// early applies the early parameters the engine cares about.
func (p *parser) early(name, rest string) {
	switch name {
	case "quiet":
		p.c.Quiet = true
	case "initrd":
		if rest == "" {
			// The C kernel dereferences NULL here and crashes.
			p.warn(Error, "", "initrd: missing value (the C kernel crashes on a bare initrd)")
		}
	}
}

// setup runs one __setup handler; it returns the handler's result
// (true: consumed).
func (p *parser) setup(name, rest string) bool {
	c := p.c
	switch name {
	case "init=":
		c.Init = rest
		p.argv = nil
	case "rdinit=":
		c.RDInit = rest
		p.argv = nil
	case "root=":
		c.Root = rest
	case "rootfstype=":
		c.RootFSType = rest
	case "rootflags=":
		c.RootFlags = rest
	case "rw", "ro", "rootwait", "reset_devices", "noinitrd", "retain_initrd",
		"irqpoll", "irqfixup", "noirqdebug", "no_console_suspend", "delayacct",
		"slab_merge", "slab_nomerge", "slub_merge", "slub_nomerge", "norandmaps",
		"no_file_caps", "cgroup_debug", "sysrq_always_enabled", "gpt":
		// Flag handlers refuse a value (the word then reaches init).
		if rest != "" {
			return false
		}
		switch name {
		case "rw":
			c.ReadOnly, c.ReadOnlySet = false, true
		case "ro":
			c.ReadOnly, c.ReadOnlySet = true, true
		}
	case "console=":
		c.Console = append(c.Console, rest)
	case "con":
		if rest == "sole=tty0" || rest == "sole=tty" {
			return false
		}
		p.lineSetup("con", rest)
	case "ssl-non-raw":
		c.SSLNonRaw = true
	case "ssl":
		p.lineSetup("ssl", rest)
	case "ubd":
		p.ubdSetup(rest)
	case "udb":
		p.warn(Error, "", "udb%s specified on command line is almost certainly a ubd -> udb TYPO", rest)
	case "fake_ide":
		p.warn(Warn, "", "The fake_ide option has been removed")
	case "eth":
		p.ethSetup(rest)
	case "vec":
		p.vecSetup(rest)
	case "mconsole=":
		if v, ok := strings.CutPrefix(rest, "notify:"); ok {
			c.MconsoleNotify = v
		} else {
			p.warn(Error, "", "mconsole_setup : Unknown option - '%s'", rest)
		}
	}
	return true
}
