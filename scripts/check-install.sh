#!/bin/sh
# Checks what `make install DESTDIR=... PREFIX=...` lays out: every binary,
# a man page and a completion per finished binary, no setuid bit, and that
# the installed binaries answer --help (exit 0, stdout) and --version.
set -eu
cd "$(dirname "$0")/.."
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
make -s install DESTDIR="$dest" PREFIX=/usr >/dev/null
fail=0
bad() { echo "install: $*"; fail=1; }
for b in linux uml_mconsole uml_moo uml_mkcow uml_switch uml_net tunctl rootstrap; do
	p="$dest/usr/bin/$b"
	[ -x "$p" ] || { bad "missing $p"; continue; }
	[ -u "$p" ] && bad "$p is setuid: packagers set that, not make install"
	out=$("$p" --help) || bad "$b --help exited $?"
	[ -n "$out" ] || bad "$b --help printed nothing on stdout"
	"$p" --version | grep -q "(umltools)" || bad "$b --version"
	# A finished binary has a man page and a completion.
	if ! "$p" --help | grep -q "not implemented yet"; then
		ls "$dest"/usr/share/man/man*/"$b".* >/dev/null 2>&1 || bad "no man page for $b"
		[ -f "$dest/usr/share/bash-completion/completions/$b" ] || bad "no bash completion for $b"
	fi
done
unit="$dest/usr/lib/systemd/system/uml_switch.service"
grep -q '^ExecStart=/usr/bin/uml_switch ' "$unit" 2>/dev/null || bad "uml_switch.service missing or its ExecStart not rewritten to BINDIR"
[ $fail -eq 0 ] && echo "install layout ok: $(cd "$dest" && find . -type f | wc -l) files"
exit $fail
