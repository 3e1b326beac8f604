#!/bin/sh
# Runs every `func FuzzXxx` target in the module for FUZZTIME each.
set -eu
cd "$(dirname "$0")/.."
t=${FUZZTIME:-10s}
rc=0
for f in $(grep -rl --include='*_test.go' '^func Fuzz' . | sort); do
	pkg=./$(dirname "${f#./}")
	for name in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$f"); do
		echo "fuzz $pkg $name ($t)"
		if ! go test -run='^$' -fuzz="^$name\$" -fuzztime="$t" -fuzzminimizetime=5s "$pkg" >/tmp/fuzz.$$.log 2>&1; then
			cat /tmp/fuzz.$$.log; rc=1
		fi
	done
done
rm -f /tmp/fuzz.$$.log
exit $rc
