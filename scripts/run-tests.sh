#!/usr/bin/env bash
# Runs every test file under dist/test with Node's test runner, one file at a time
# (tests mount file systems and create network namespaces; running them in parallel
# would only make them fight over the two cores).
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(find dist/test -name '*.test.js' | sort)
[ "${#files[@]}" -gt 0 ] || { echo "no test files under dist/test" >&2; exit 1; }
exec node --test --test-concurrency=1 --test-reporter=spec "$@" "${files[@]}"
