#!/bin/sh
# The project's test run (make test): installs the interop oracles when it
# can, checks formatting and vet, runs every test, then every fuzz target
# for FUZZTIME (10s). Tests that cannot run here record a "SKIP: <reason>"
# line, printed at the end.
set -eu
cd "$(dirname "$0")/.."

./scripts/deps.sh || true

echo "== gofmt"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$bad" ]; then
	echo "gofmt would change:"; echo "$bad"; exit 1
fi

echo "== go vet"
go vet ./...

skiplog=$(mktemp)
trap 'rm -f "$skiplog"' EXIT
export UMLTEST_SKIPLOG="$skiplog"
export UMLTEST_BIN="$(pwd)/bin"

echo "== go test"
rc=0
go test -count=1 -timeout 30m ${GOTESTFLAGS:-} ./... || rc=$?

echo "== make install layout"
./scripts/check-install.sh || rc=1

echo "== make deb, installed over uml-utilities (after go test: it replaces the oracles)"
./scripts/check-deb.sh || rc=1

echo "== fuzz (${FUZZTIME:-10s} per target)"
if [ $rc -eq 0 ]; then
	# The ext4 write side's differential fuzzer gets a minute (issue 10).
	FUZZTIME=${FUZZTIME:-10s} FUZZTIME_FuzzWriteOps=${FUZZTIME_FuzzWriteOps:-60s} ./scripts/fuzz.sh || rc=$?
fi

if [ -s "$skiplog" ]; then
	echo "== skipped"
	sort -u "$skiplog"
fi
[ $rc -eq 0 ] && echo "== PASS" || echo "== FAIL"
exit $rc
