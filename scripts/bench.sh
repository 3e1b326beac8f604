#!/bin/sh
# make bench: each benchmark runs ours and the C original in one run and
# prints the ratio. Benchmarks live in Go tests named TestBench*, gated by
# UMLBENCH=1 so that make test does not run them.
set -eu
cd "$(dirname "$0")/.."
export UMLBENCH=1 UMLTEST_BIN="$(pwd)/bin"
go test -count=1 -run '^TestBench' -v -timeout 30m ./... 2>&1 | grep -E '^(BENCH|SKIP|--- FAIL|FAIL|ok|panic)|BENCH:|SKIP:' || true
