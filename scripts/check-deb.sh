#!/bin/sh
# Checks `make deb` on this machine, the way a user would meet it: the .deb
# is installed over Debian's uml-utilities (dpkg -i), must replace it, lay
# its files where Debian's are, create uml-net and make uml_net
# root:uml-net 4754; the init script must honour /etc/default/uml-utilities;
# the C kernel (linux.uml) must work with the installed tools (the Go
# interop tests below, with UMLTEST_BIN=/usr/bin); the installed tools must
# still agree with Debian's (extracted from its .deb into a temporary
# directory); then dpkg -r and dpkg --purge must leave nothing behind.
# At the end, also on failure, Debian's uml-utilities is installed again
# if it was installed before.
#
# It replaces the tools in /usr/bin that other interop tests use as
# oracles, so it must never run alongside them (scripts/test.sh runs it
# after go test). Needs root and dpkg; otherwise it records a SKIP line.
set -eu
cd "$(dirname "$0")/.."
start=$(date +%s)

skip() {
	echo "SKIP: check-deb: $*"
	[ -z "${UMLTEST_SKIPLOG:-}" ] || echo "SKIP: check-deb: $*" >>"$UMLTEST_SKIPLOG"
	exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root: it installs the .deb"
for c in dpkg dpkg-deb dpkg-query dpkg-statoverride; do
	command -v $c >/dev/null 2>&1 || skip "no $c: not a Debian system"
done
export DEBIAN_FRONTEND=noninteractive

fail=0
bad() { echo "check-deb: FAIL: $*"; fail=1; }
ok() { echo "check-deb: ok: $*"; }
status() { dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | tr -d ' ' || true; }
# alive PID: the process runs (a zombie left to an unreaping parent does not).
alive() { s=$(ps -o stat= -p "$1" 2>/dev/null) && [ -n "$s" ] && [ "${s#Z}" = "$s" ]; }
# switches: the installed uml_switch's processes still running (a switch
# of a test run, or the user's own build, is not the package's; after
# dpkg -r the kernel names the binary "… (deleted)").
switches() {
	for p in $(pgrep -x uml_switch); do
		alive "$p" || continue
		case "$(readlink /proc/$p/exe)" in
		/usr/bin/uml_switch | "/usr/bin/uml_switch (deleted)") echo "$p" ;;
		esac
	done
	true
}
# asuser UID GROUPS CMD...: CMD run by UID with only GROUPS, through a
# shell, so that the exec of CMD is checked without root's capabilities
# (setpriv still holds them when it execs).
asuser() {
	u=$1 g=$2
	shift 2
	if [ -n "$g" ]; then g=--groups=$g; else g=--clear-groups; fi
	setpriv --reuid="$u" --regid="$u" "$g" /bin/sh -c 'exec "$0" "$@"' "$@"
}

# Debian's .deb, to restore it and to extract its binaries as oracles.
debver=$(dpkg-query -W -f='${Version}' uml-utilities 2>/dev/null || true)
had_debian=no
[ "$(status uml-utilities)" = ii ] && had_debian=yes
cache=${UMLTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/umltools-test}/debs
mkdir -p "$cache"
debian_deb=""
if [ -n "$debver" ]; then
	enc=$(echo "$debver" | sed 's/:/%3a/')
	for f in /var/cache/apt/archives/uml-utilities_"$enc"_*.deb "$cache"/uml-utilities_"$enc"_*.deb; do
		[ -f "$f" ] && debian_deb=$f && break
	done
	if [ -z "$debian_deb" ] && command -v apt-get >/dev/null; then
		(cd "$cache" && apt-get download -q "uml-utilities=$debver" >/dev/null 2>&1) || true
		for f in "$cache"/uml-utilities_"$enc"_*.deb; do [ -f "$f" ] && debian_deb=$f; done
	fi
fi
if [ $had_debian = yes ] && [ -z "$debian_deb" ]; then
	skip "cannot get Debian's uml-utilities $debver .deb (apt-get download failed), so it could not be restored"
fi

tmp=$(mktemp -d)
ns=umldeb$$
defaults=/etc/default/uml-utilities
restore() {
	rc=$?
	set +e
	[ -f "$tmp/defaults.saved" ] && cp -p "$tmp/defaults.saved" $defaults
	[ -x /etc/init.d/uml-utilities ] && /etc/init.d/uml-utilities stop >/dev/null 2>&1
	ip netns del $ns 2>/dev/null
	ip netns del ${ns}d 2>/dev/null
	case "$(status umltools)" in
	"" | un | pn) ;;
	*) dpkg --purge umltools >"$tmp/purge.log" 2>&1 || { echo "check-deb: dpkg --purge umltools failed:"; cat "$tmp/purge.log"; } ;;
	esac
	if [ $had_debian = yes ] && [ "$(status uml-utilities)" != ii ]; then
		if dpkg -i --force-confdef --force-confold "$debian_deb" >"$tmp/restore.log" 2>&1 </dev/null; then
			echo "check-deb: restored Debian's uml-utilities $debver"
		else
			echo "check-deb: FAIL: could not reinstall Debian's uml-utilities from $debian_deb:"
			cat "$tmp/restore.log"
			rc=1
		fi
	fi
	rm -rf "$tmp"
	echo "check-deb: took $(($(date +%s) - start)) s"
	exit $rc
}
trap restore EXIT
trap 'exit 130' INT TERM HUP

# Debian's files: its binaries, run from $tmp/debian, are the oracles.
debian_bins=""
if [ -n "$debian_deb" ]; then
	dpkg-deb -x "$debian_deb" "$tmp/debian"
	debian_bins=$(cd "$tmp/debian" && find usr/bin usr/sbin usr/lib/uml -type f 2>/dev/null | sort)
fi

echo "== make deb"
make -s deb >"$tmp/make.log" 2>&1 || { cat "$tmp/make.log"; bad "make deb failed"; exit 1; }
deb=$(ls -t bin/umltools_*.deb | head -1)
echo "built $deb"

echo "== lintian $deb"
if command -v lintian >/dev/null; then
	lintian --tag-display-limit 0 --show-overrides "$deb" >"$tmp/lintian.log" 2>&1 || true
	errs=$(grep -c '^E: ' "$tmp/lintian.log" || true)
	warns=$(grep -c '^W: ' "$tmp/lintian.log" || true)
	sed 's/^/lintian: /' "$tmp/lintian.log"
	[ "$errs" = 0 ] && ok "lintian: no errors ($warns warnings)" || bad "lintian: $errs errors"
else
	echo "check-deb: SKIP lintian: not installed (apt-get install lintian)"
fi

echo "== dpkg -i $deb (over uml-utilities: $(status uml-utilities) $debver)"
# Conffiles: a changed /etc/default/uml-utilities is kept (it is read as is).
if ! dpkg -i --force-confdef --force-confold "$deb" >"$tmp/install.log" 2>&1 </dev/null; then
	cat "$tmp/install.log"
	bad "dpkg -i failed"
	exit 1
fi
[ "$(status umltools)" = ii ] && ok "umltools installed" || bad "umltools status $(status umltools)"
case "$(status uml-utilities)" in
ii | iU | iF) bad "uml-utilities is still installed ($(status uml-utilities))" ;;
*) ok "uml-utilities replaced (status now '$(status uml-utilities)')" ;;
esac

echo "== layout"
# Every binary of Debian's package is ours at the same path, except the
# ones deliberately not provided; ours not yet written are reported.
for f in $debian_bins; do
	b=${f##*/}
	case $b in
	humfsify | uml_mount | jailtest)
		[ -e "/$f" ] && bad "/$f exists, but umltools does not provide $b" || ok "/$f: not provided (deliberately), gone with uml-utilities"
		continue
		;;
	esac
	if [ ! -x "/$f" ]; then
		src=$b
		[ -d "$src" ] || { echo "check-deb: note: /$f missing: $src/ is not in the tree yet"; continue; }
		bad "/$f missing"
		continue
	fi
	owner=$(dpkg-query -S "/$f" 2>/dev/null | cut -d: -f1)
	[ "$owner" = umltools ] || bad "/$f belongs to '$owner'"
done
for b in linux rootstrap; do [ -x /usr/bin/$b ] || bad "/usr/bin/$b missing"; done
# A man page for every shipped program in a bin directory.
for p in $(dpkg -L umltools | grep -E '^/usr/s?bin/'); do
	[ -f "$p" ] || continue
	b=${p##*/}
	ls /usr/share/man/man*/"$b".*.gz >/dev/null 2>&1 || bad "no man page for $p"
	"$p" --version 2>/dev/null | grep -q "(umltools)" || bad "$p --version"
done
for f in /etc/default/uml-utilities /etc/init.d/uml-utilities /etc/network/if-pre-up.d/uml-utilities \
	/etc/network/if-up.d/uml-utilities /lib/systemd/system/uml-utilities.service; do
	[ "$(dpkg-query -S "$f" 2>/dev/null | cut -d: -f1)" = umltools ] || bad "$f is not umltools'"
done
if command -v systemd-analyze >/dev/null; then
	out=$(systemd-analyze verify /lib/systemd/system/uml-utilities.service 2>&1) || bad "systemd-analyze verify: $out"
	[ -z "$out" ] || echo "systemd-analyze verify: $out"
fi
ok "$(dpkg -L umltools | while read -r f; do [ -f "$f" ] && echo; done | wc -l) files; binaries: $(dpkg -L umltools | grep -E '/(s?bin|lib/uml)/' | tr '\n' ' ')"

echo "== uml-net and uml_net"
getent passwd uml-net >/dev/null && getent group uml-net >/dev/null && ok "user and group uml-net exist" || bad "no uml-net user or group"
st=$(stat -c '%U:%G %a' /usr/bin/uml_net) || true
[ "$st" = "root:uml-net 4754" ] && ok "/usr/bin/uml_net is $st" || bad "/usr/bin/uml_net is $st, want root:uml-net 4754"
dpkg-statoverride --list /usr/bin/uml_net | grep -q '^root uml-net 4754 /usr/bin/uml_net$' && ok "dpkg-statoverride: $(dpkg-statoverride --list /usr/bin/uml_net)" || bad "no stat override for /usr/bin/uml_net"
gid=$(getent group uml-net | cut -d: -f3)
if asuser 65534 "" /usr/bin/uml_net --version >/dev/null 2>&1; then
	bad "a user outside uml-net can run /usr/bin/uml_net"
else
	ok "a user outside uml-net cannot run /usr/bin/uml_net"
fi
asuser 65534 "$gid" /usr/bin/uml_net --version >/dev/null 2>&1 && ok "a member of uml-net can run it" ||
	bad "a member of uml-net cannot run /usr/bin/uml_net"
# A member of uml-net gets a tap made for it: proof that the installed
# helper really runs with root's privileges. The helper talks over a
# datagram socket on its standard output, made here by python3.
py=$(command -v /usr/bin/python3 python3 2>/dev/null | head -1 || true)
if [ -n "$py" ] && ip netns add $ns 2>/dev/null; then
	if out=$("$py" - "$ns" "$gid" <<'EOF' 2>&1
import socket, subprocess, sys
ns, gid = sys.argv[1], sys.argv[2]
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
p = subprocess.run(["ip", "netns", "exec", ns, "setpriv", "--reuid=65534", "--regid=65534",
                    "--groups=" + gid, "/bin/sh", "-c", 'exec "$0" "$@"', "/usr/bin/uml_net", "4", "tuntap", "up", "10.0.1.1"],
                   stdout=b, stderr=subprocess.PIPE, timeout=20, env={"PATH": "/usr/bin:/bin"})
b.close()
a.settimeout(5)
msg, fds, _, _ = socket.recv_fds(a, 4096, 4)
name = msg[:16].rstrip(b"\0").decode()
link = subprocess.run(["ip", "-n", ns, "-d", "link", "show", name], capture_output=True, text=True).stdout
print("rc", p.returncode, "tap", name, "fds", len(fds), "|", p.stderr.decode().strip())
ok = p.returncode == 0 and len(fds) == 1 and "tun type tap" in link and "user nobody" in link
sys.exit(0 if ok else 1)
EOF
	); then
		ok "uml_net run by a uml-net member (uid 65534) made a tap: $out"
	else
		bad "uml_net as a uml-net member: $out"
	fi
	ip netns del $ns
else
	echo "check-deb: note: no python3 or no netns: the setuid tap creation was not tried"
fi

echo "== the switch service (/etc/init.d/uml-utilities, /etc/default/uml-utilities)"
cp -p $defaults "$tmp/defaults.saved"
ctl=/run/uml-utilities/uml_switch.ctl
initd=/etc/init.d/uml-utilities
# The postinst started it unless policy-rc.d forbade that; start afresh.
$initd stop >/dev/null 2>&1 || true
if $initd start >"$tmp/init.log" 2>&1 && [ -S $ctl ]; then
	pid=$(cat /run/uml-utilities/uml_switch.pid) || true
	user=$(ps -o user= -p "$pid") || true
	args=$(ps -o args= -p "$pid") || true
	mode=$(stat -c '%a %U' $ctl) || true
	[ "$user" = uml-net ] && [ "$mode" = "666 uml-net" ] &&
		ok "defaults: runs as $user, $ctl ($mode): $args" || bad "defaults: user $user, socket $mode: $args"
	"$py" -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])" $ctl 2>/dev/null &&
		ok "$ctl accepts connections" || bad "$ctl refuses connections"
	$initd stop >/dev/null 2>&1 || bad "$initd stop failed"
	sleep 0.3
	[ ! -e $ctl ] && ! alive "$pid" && ok "stop: switch gone, socket removed" || bad "stop left the switch or its socket"
else
	bad "$initd start: $(cat "$tmp/init.log")"
fi
# Every setting of Debian's file.
ctl2=$tmp/other.ctl
getent passwd nobody >/dev/null
chmod 0777 "$tmp"
printf 'UML_SWITCH_OPTIONS="-hub -mode 0600"\nUML_SWITCH_USER="nobody"\nUML_SWITCH_CTL="%s"\n' "$ctl2" >$defaults
if $initd start >"$tmp/init.log" 2>&1 && [ -S "$ctl2" ]; then
	pid=$(cat /run/uml-utilities/uml_switch.pid) || true
	args=$(ps -o args= -p "$pid") || true
	st=$(stat -c '%a %U' "$ctl2") || true
	case "$(ps -o user= -p "$pid") $st $args" in
	"nobody 600 nobody "*-hub*) ok "UML_SWITCH_USER/OPTIONS/CTL: nobody, $ctl2 ($st): $args" ;;
	*) bad "settings not honoured: $(ps -o user= -p "$pid") $st $args" ;;
	esac
	$initd stop >/dev/null 2>&1
else
	bad "start with settings: $(cat "$tmp/init.log")"
fi
echo 'UML_SWITCH_START="false"' >$defaults
if $initd start >"$tmp/init.log" 2>&1 && [ -z "$(switches)" ] && [ ! -e $ctl ]; then
	ok "UML_SWITCH_START=false: not started"
else
	bad "UML_SWITCH_START=false: $(cat "$tmp/init.log")"
	$initd stop >/dev/null 2>&1
fi
cp -p "$tmp/defaults.saved" $defaults

echo "== ifupdown hooks"
if ip netns add $ns 2>/dev/null; then
	if ip netns exec $ns env IFACE=tapdeb0 IF_TUNCTL_USER=nobody /etc/network/if-pre-up.d/uml-utilities >/dev/null &&
		ip -n $ns -d link show tapdeb0 | grep -q "persist on user nobody"; then
		ok "if-pre-up.d: tunctl_user made tapdeb0, persistent, owned by nobody"
	else
		bad "if-pre-up.d hook: $(ip -n $ns -d link show tapdeb0 2>&1)"
	fi
	ip -n $ns link add ethdeb type veth peer name ethdeb1 && ip -n $ns link set ethdeb up &&
		ip -n $ns link set tapdeb0 up || bad "could not set up the namespace for if-up.d"
	if ip netns exec $ns env IFACE=tapdeb0 IF_UML_PROXY_ARP="10.9.9.2 10.9.9.3" IF_UML_PROXY_ETHER=ethdeb \
		/etc/network/if-up.d/uml-utilities &&
		[ "$(ip netns exec $ns cat /proc/sys/net/ipv4/conf/tapdeb0/proxy_arp)" = 1 ] &&
		ip -n $ns route show 10.9.9.3 | grep -q "dev tapdeb0" &&
		[ "$(ip -n $ns neigh show proxy dev ethdeb | wc -l)" = 2 ]; then
		ok "if-up.d: uml_proxy_arp: proxy_arp on, host routes via tapdeb0, proxy ARP on ethdeb"
	else
		bad "if-up.d hook: $(ip -n $ns route; ip -n $ns neigh show proxy)"
	fi
	ip netns del $ns
fi

echo "== the installed tools against Debian's (extracted from $debian_deb)"
if [ -n "$debian_deb" ]; then
	# tunctl: the same command sequence in two fresh namespaces, the same
	# argv[0], the same output and exit codes.
	ip netns add $ns && ip netns add ${ns}d
	same=0
	for args in "-u nobody -t t0" "-t t1 -g 100" "-b" "-x" "-t" "-u zzz -t t2" "-d t0" "-d t1"; do
		# shellcheck disable=SC2086
		o=$(ip netns exec $ns bash -c 'exec -a tunctl "$@"' - /usr/bin/tunctl $args 2>&1 && echo rc=0 || echo "rc=$?")
		# shellcheck disable=SC2086
		d=$(ip netns exec ${ns}d bash -c 'exec -a tunctl "$@"' - "$tmp/debian/usr/bin/tunctl" $args 2>&1 && echo rc=0 || echo "rc=$?")
		[ "$o" = "$d" ] && same=$((same + 1)) || bad "tunctl $args: ours '$o', Debian's '$d'"
	done
	ok "tunctl: $same command lines give Debian's output and exit code"
	ip netns del $ns && ip netns del ${ns}d
	# uml_mkcow: byte-identical COW files for the same backing file.
	truncate -s 9M "$tmp/back.img"
	printf 'not zeros' | dd of="$tmp/back.img" bs=1 seek=4096 conv=notrunc 2>/dev/null
	/usr/bin/uml_mkcow "$tmp/ours.cow" "$tmp/back.img" && "$tmp/debian/usr/bin/uml_mkcow" "$tmp/debian.cow" "$tmp/back.img" &&
		cmp -s "$tmp/ours.cow" "$tmp/debian.cow" && ok "uml_mkcow: COW file byte-identical to Debian's" || bad "uml_mkcow differs from Debian's"
	# uml_moo: Debian's COW merged by ours equals Debian's merge (the
	# kernel-written COW files are merged in TestKernelCOW below).
	/usr/bin/uml_moo "$tmp/debian.cow" "$tmp/ours.img" && "$tmp/debian/usr/bin/uml_moo" "$tmp/debian.cow" "$tmp/debian.img" >/dev/null &&
		cmp -s "$tmp/ours.img" "$tmp/debian.img" && ok "uml_moo: merge byte-identical to Debian's" || bad "uml_moo differs from Debian's"
fi

echo "== the C kernel with the installed tools (UMLTEST_BIN=/usr/bin go test)"
# Tests whose oracle was Debian's /usr/bin tool now compare the installed
# tool with itself, so only tests that pair the C kernel with our
# installed tools are run; their "c" and "debian" cases are left out.
runtest() {
	pkg=$1 pat=$2
	echo "-- go test -run '$pat' ./$pkg/"
	if UMLTEST_BIN=/usr/bin go test -count=1 -v -timeout 10m -run "$pat" "./$pkg/" >"$tmp/go.log" 2>&1; then
		grep -E '^ *--- (PASS|SKIP)|^ok ' "$tmp/go.log"
		[ "$(grep -c -- '--- PASS' "$tmp/go.log")" -gt 0 ] || bad "$pkg: no test ran"
	else
		grep -E -- '--- (FAIL|PASS|SKIP)|^(FAIL|ok) |^panic' "$tmp/go.log"
		tail -40 "$tmp/go.log"
		bad "go test ./$pkg/ -run '$pat'"
	fi
}
runtest uml_switch '^TestKernelsPing$/^ours-|^TestTapNetns$'
runtest uml_mconsole '^TestInteropCKernel$|^TestInteropLongReplies$'
runtest uml_moo '^TestKernelCOW$'
runtest uml_mkcow '^TestKernelBootsOurCOW$'
runtest uml_net '^TestGuestPing$/^ours-|^TestTuntapUpAndChange$/^suid$'

echo "== dpkg -r umltools"
files=$(dpkg -L umltools | grep -v '^/etc/')
if dpkg -r umltools >"$tmp/remove.log" 2>&1; then
	left=""
	# Directories (and /lib, a symlink to usr/lib on merged-/usr systems)
	# are shared with other packages.
	for f in $files; do
		[ -d "$f" ] && continue
		{ [ -e "$f" ] || [ -L "$f" ]; } && left="$left $f"
	done
	[ -z "$left" ] && ok "removed: no file of umltools is left outside /etc" || bad "left behind:$left"
	[ "$(status umltools)" = rc ] && ok "status rc: the conffiles stay until purge" || bad "status after -r: $(status umltools)"
	dpkg-statoverride --list /usr/bin/uml_net >/dev/null && bad "the stat override of uml_net stayed" || ok "stat override removed"
	[ -z "$(switches)" ] || bad "a switch still runs: $(switches)"
else
	cat "$tmp/remove.log"
	bad "dpkg -r umltools failed"
fi
echo "== dpkg --purge umltools"
if dpkg --purge umltools >"$tmp/purge.log" 2>&1; then
	left=""
	for f in /etc/default/uml-utilities /etc/init.d/uml-utilities /etc/network/if-pre-up.d/uml-utilities \
		/etc/network/if-up.d/uml-utilities /run/uml-utilities $(ls /etc/rc?.d/*uml-utilities 2>/dev/null); do
		[ -e "$f" ] && left="$left $f"
	done
	[ -z "$left" ] && [ -z "$(status umltools)" -o "$(status umltools)" = un -o "$(status umltools)" = pn ] &&
		ok "purged: conffiles, rc links and /run/uml-utilities gone" || bad "after purge:$left (status $(status umltools))"
else
	cat "$tmp/purge.log"
	bad "dpkg --purge umltools failed"
fi

[ $fail -eq 0 ] && echo "check-deb: PASS" || echo "check-deb: FAIL"
exit $fail
