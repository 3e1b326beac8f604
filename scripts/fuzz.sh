#!/bin/sh
# Runs every `func FuzzXxx` target in the module for FUZZTIME each;
# FUZZTIME_<target> (e.g. FUZZTIME_FuzzWriteOps=60s) sets one target's.
#
# A failure that wrote no reproducer ("Failing input written to …") is Go's
# fuzz-coordinator race (golang/go#75804: "context deadline exceeded"), not
# a finding: that target is run once more. A real finding fails at once.
set -eu
cd "$(dirname "$0")/.."
t=${FUZZTIME:-10s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
rc=0
fuzz() {
	go test -run='^$' -fuzz="^$2\$" -fuzztime="$3" -fuzzminimizetime=5s "$1" >"$log" 2>&1
}
for f in $(grep -rl --include='*_test.go' '^func Fuzz' . | sort); do
	pkg=./$(dirname "${f#./}")
	for name in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$f"); do
		tt=$(printenv "FUZZTIME_$name" || echo "$t")
		echo "fuzz $pkg $name ($tt)"
		fuzz "$pkg" "$name" "$tt" && continue
		if ! grep -q "Failing input written to" "$log"; then
			echo "fuzz $pkg $name: failed without a reproducer (Go fuzz coordinator); running it again"
			fuzz "$pkg" "$name" "$tt" && continue
		fi
		cat "$log"; rc=1
	done
done
exit $rc
