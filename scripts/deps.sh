#!/bin/sh
# Installs the interop oracles (the C kernel and Debian's uml-utilities)
# and the tools tests use, when running as root on a Debian-like machine.
# Otherwise it says why not; the tests that need them then SKIP.
pkgs="user-mode-linux uml-utilities e2fsprogs busybox-static debootstrap mmdebstrap iproute2 net-tools telnetd lintian vde2"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "deps: not root, not installing:$missing (interop tests will SKIP)"
	exit 0
fi
if ! command -v apt-get >/dev/null; then
	echo "deps: no apt-get, not installing:$missing (interop tests will SKIP)"
	exit 0
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq $missing >/dev/null \
	|| echo "deps: apt-get failed (interop tests will SKIP)"
