#!/bin/sh
# Checks what `make install DESTDIR=... PREFIX=/usr` lays out: Debian's
# uml-utilities layout (the tools in /usr/bin, jail_uml in /usr/sbin,
# port-helper in /usr/lib/uml) plus linux and rootstrap in /usr/bin; a man
# page and a completion per finished binary; no setuid bit; the installed
# binaries answer --help (exit 0, stdout) and --version; the switch's unit
# and the /etc compatibility files (default/uml-utilities, the init script,
# the ifupdown hooks) with their paths rewritten.
set -eu
cd "$(dirname "$0")/.."
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
make -s install DESTDIR="$dest" PREFIX=/usr >/dev/null
fail=0
bad() { echo "install: $*"; fail=1; }
bins="bin/linux bin/uml_mconsole bin/uml_moo bin/uml_mkcow bin/uml_switch bin/uml_net bin/tunctl bin/rootstrap"
# Added to the tree one by one; each is checked once its directory exists.
[ -d uml_watchdog ] && bins="$bins bin/uml_watchdog"
[ -d jail_uml ] && bins="$bins sbin/jail_uml"
[ -d port-helper ] && bins="$bins lib/uml/port-helper"
for rel in $bins; do
	b=${rel##*/}
	p="$dest/usr/$rel"
	[ -x "$p" ] || { bad "missing $p"; continue; }
	[ -u "$p" ] && bad "$p is setuid: packagers set that, not make install"
	out=$("$p" --help) || bad "$b --help exited $?"
	[ -n "$out" ] || bad "$b --help printed nothing on stdout"
	"$p" --version | grep -q "(umltools)" || bad "$b --version"
	# A finished binary has a man page and a completion (port-helper,
	# which only the kernel runs, needs neither).
	[ "$b" = port-helper ] && continue
	if ! "$p" --help | grep -q "not implemented yet"; then
		ls "$dest"/usr/share/man/man*/"$b".* >/dev/null 2>&1 || bad "no man page for $b"
		[ -f "$dest/usr/share/bash-completion/completions/$b" ] || bad "no bash completion for $b"
	fi
done
unit="$dest/usr/lib/systemd/system/uml-utilities.service"
grep -q '^ExecStart=.* /usr/bin/uml_switch ' "$unit" 2>/dev/null || bad "uml-utilities.service missing or its ExecStart not rewritten to BINDIR"
grep -q '^EnvironmentFile=-/etc/default/uml-utilities$' "$unit" 2>/dev/null || bad "uml-utilities.service does not read /etc/default/uml-utilities"
grep -q '^Alias=uml_switch.service$' "$unit" 2>/dev/null || bad "uml-utilities.service has no alias uml_switch.service"
if command -v systemd-analyze >/dev/null 2>&1; then
	out=$(systemd-analyze verify "$unit" 2>&1) && [ -z "$out" ] || bad "systemd-analyze verify: $out"
fi
grep -q '^UML_SWITCH_CTL=' "$dest/etc/default/uml-utilities" && bad "etc/default/uml-utilities sets a value (it documents defaults, commented out)"
for f in init.d/uml-utilities network/if-pre-up.d/uml-utilities network/if-up.d/uml-utilities; do
	[ -x "$dest/etc/$f" ] || { bad "missing /etc/$f"; continue; }
	grep -q '@[A-Z]*@' "$dest/etc/$f" && bad "/etc/$f: placeholder not substituted"
	sh -n "$dest/etc/$f" || bad "/etc/$f: shell syntax"
done
grep -q '^DAEMON=/usr/bin/uml_switch$' "$dest/etc/init.d/uml-utilities" || bad "init script does not run /usr/bin/uml_switch"
# PREFIX=/usr/local keeps everything under the prefix.
make -s install DESTDIR="$dest/local" PREFIX=/usr/local >/dev/null
outside=$(cd "$dest/local" && find . -type f ! -path './usr/local/*')
[ -z "$outside" ] || bad "PREFIX=/usr/local installs outside it: $outside"
grep -q '^DAEMON=/usr/local/bin/uml_switch$' "$dest/local/usr/local/etc/init.d/uml-utilities" || bad "PREFIX=/usr/local: init script DAEMON"
grep -q '/usr/local/etc/default/uml-utilities' "$dest/local/usr/local/lib/systemd/system/uml-utilities.service" || bad "PREFIX=/usr/local: unit reads the wrong settings file"
[ $fail -eq 0 ] && echo "install layout ok: $(cd "$dest" && find . -path ./local -prune -o -type f -print | wc -l) files"
exit $fail
